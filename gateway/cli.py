"""``moments``: the command line of the gateway.

Every subcommand has ``--help``. Exit codes: 0 success, 1 a command found a problem (for
example an input that did not decode), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar, cast

from firmware_sim import cli as sim_cli
from gateway import __version__
from gateway.config import load_config
from gateway.errors import ConfigError, MomentsError
from gateway.hq import cli as hq_cli
from gateway.logs import configure_logging
from gateway.store import cli as store_cli

if TYPE_CHECKING:
    from gateway.store import Database
    from gateway.store.writer import WriteOp
    from gateway.tokens import Role

log = logging.getLogger("gateway.cli")

__all__ = ["main"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_T = TypeVar("_T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"moments: configuration error: {exc}", file=sys.stderr)
        return 2
    except MomentsError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moments", description="Moments: the in-store personalization gateway."
    )
    parser.add_argument("--version", action="version", version=f"moments {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway: HTTP app, LMDB store, store broker link. With no "
        "configuration file it starts on built-in defaults (data in $MOMENTS_DATA_DIR or ./var, "
        "broker 127.0.0.1:1883, HTTP 127.0.0.1:8080). Stops cleanly on SIGTERM or Ctrl-C.",
    )
    run.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser(
        "config",
        help="validate and print the effective configuration",
        description="Load the configuration (file plus MOMENTS_* overrides), validate it and "
        "print it as JSON; exits 2 naming the bad key when it is invalid.",
    )
    check.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    check.set_defaults(handler=_cmd_config)

    decode = sub.add_parser(
        "decode",
        help="decode advertisement payloads",
        description="Decode BLE advertisement payloads (AD structures, in hex) and print one "
        'JSON object per input: {"type": ..., fields} or {"type": null, "error": ...}. '
        "Use - to read one payload per line from standard input.",
    )
    decode.add_argument("payloads", nargs="*", metavar="HEX", help="payloads, or - for stdin")
    decode.set_defaults(handler=_cmd_decode)

    eid = sub.add_parser(
        "eid",
        help="Eddystone-EID: compute an EID, derive an identity key",
        description="Eddystone-EID as its specification computes it.",
    )
    eid.set_defaults(handler=_help_of(eid))
    eid_sub = eid.add_subparsers(title="eid commands", metavar="COMMAND")
    compute = eid_sub.add_parser(
        "compute",
        help="compute the temporary key and EID for a beacon time",
        description='Print {"temporary_key": HEX, "eid": HEX} for an identity key, rotation '
        "exponent K and beacon time in seconds.",
    )
    compute.add_argument("--identity-key", required=True, metavar="HEX", help="16 bytes, hex")
    compute.add_argument("--exponent", required=True, type=int, metavar="K", help="0 to 15")
    compute.add_argument("--time", required=True, type=int, metavar="SECONDS", help="beacon time")
    compute.set_defaults(handler=_cmd_eid_compute)
    derive = eid_sub.add_parser(
        "derive-key",
        help="derive the identity key from the key exchange",
        description='Print {"identity_key": HEX}: X25519 shared secret of the resolver\'s '
        "private key and the beacon's public key, then HKDF-SHA256 with salt resolver public "
        "key || beacon public key, first 16 bytes.",
    )
    derive.add_argument("--resolver-private", required=True, metavar="HEX", help="32 bytes, hex")
    derive.add_argument("--beacon-public", required=True, metavar="HEX", help="32 bytes, hex")
    derive.set_defaults(handler=_cmd_eid_derive)

    irk = sub.add_parser(
        "irk",
        help="resolvable private addresses",
        description="Bluetooth Core resolvable private address checks.",
    )
    irk.set_defaults(handler=_help_of(irk))
    irk_sub = irk.add_subparsers(title="irk commands", metavar="COMMAND")
    resolve = irk_sub.add_parser(
        "resolve",
        help="check addresses against an IRK",
        description='Print one {"address": ..., "resolves": bool} per address.',
    )
    resolve.add_argument("--irk", required=True, metavar="HEX", help="16 bytes, hex")
    resolve.add_argument("addresses", nargs="+", metavar="ADDRESS", help="AA:BB:CC:DD:EE:FF")
    resolve.set_defaults(handler=_cmd_irk_resolve)

    store_cli.register(sub)
    hq_cli.register(sub)
    _register_token(sub)
    _register_report(sub)
    _register_doctor(sub)

    sim_cli.register(sub, _help_of)
    return parser


def _help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A handler for a command group given no command: its own help, exit status 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _cmd_config(args: argparse.Namespace) -> int:
    import msgspec

    config = load_config(args.config)
    shown = msgspec.to_builtins(config)
    if shown["broker"]["password"]:
        shown["broker"]["password"] = "<set>"  # noqa: S105 - a placeholder, not a secret
    print(json.dumps(shown, indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.http import create_app
    from gateway.http.serving import uvicorn_config
    from gateway.sdnotify import Notifier

    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)
    app = create_app(config)
    # Under systemd (Type=notify, deploy/moments.service): ready once the socket listens,
    # watchdog pings from the event loop while the gateway's tick runs (a stuck loop or a
    # tick that died stops them, and systemd restarts the gateway), stopping at exit.
    notifier = Notifier(os.environ)

    async def watchdog(interval: float) -> None:
        stalled = False
        while True:
            gateway = getattr(app.state, "gateway", None)
            if gateway is None or gateway.beating():
                notifier.watchdog()
                stalled = False
            elif not stalled:
                stalled = True
                log.error("the gateway's tick has stalled: watchdog pings stop")
            await asyncio.sleep(interval)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                notifier.ready()
                interval = notifier.watchdog_interval_s
                if interval is not None:
                    self._watchdog = asyncio.create_task(watchdog(interval), name="watchdog")

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            notifier.stopping()
            gateway = getattr(app.state, "gateway", None)
            if gateway is not None:
                # Live streams end at once instead of holding the shutdown open.
                asyncio.get_running_loop().call_soon_threadsafe(gateway.stopping.set)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Like uvicorn's, but a handled SIGTERM/SIGINT ends the process with status 0
            # (a clean stop) instead of being raised again after shutdown.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(uvicorn_config(app, config))
    server.run()
    return 0 if server.started else 3


def _cmd_decode(args: argparse.Namespace) -> int:
    from beacons import decode_hex

    inputs: Iterable[str]
    if args.payloads == ["-"]:
        # Bytes, not text: a line that is not UTF-8 is reported in place, not a crash.
        inputs = (
            line.decode("utf-8", errors="replace") for line in sys.stdin.buffer if line.strip()
        )
    elif not args.payloads:
        print("moments decode: give HEX payloads, or - to read them from stdin", file=sys.stderr)
        return 2
    else:
        inputs = args.payloads
    failed = False
    try:
        for text in inputs:
            result = decode_hex(text)
            failed = failed or result["type"] is None
            print(json.dumps(result), flush=True)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as a filter should.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1 if failed else 0
    return 1 if failed else 0


def _hex_arg(name: str, text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError as exc:
        raise _UsageError(f"{name} is not hex: {text!r}") from exc


class _UsageError(Exception):
    """A bad argument: printed, exit status 2."""


def _identity_command(run: Callable[[], int]) -> int:
    from beacons.errors import IdentityError

    try:
        return run()
    except (IdentityError, _UsageError) as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2


def _cmd_eid_compute(args: argparse.Namespace) -> int:
    from beacons.eid import compute_eid, temporary_key

    def run() -> int:
        key = _hex_arg("--identity-key", args.identity_key)
        result = {
            "temporary_key": temporary_key(key, args.time).hex(),
            "eid": compute_eid(key, args.exponent, args.time).hex(),
        }
        print(json.dumps(result))
        return 0

    return _identity_command(run)


def _cmd_eid_derive(args: argparse.Namespace) -> int:
    from beacons.eid import derive_identity_key

    def run() -> int:
        private = _hex_arg("--resolver-private", args.resolver_private)
        public = _hex_arg("--beacon-public", args.beacon_public)
        print(json.dumps({"identity_key": derive_identity_key(private, public).hex()}))
        return 0

    return _identity_command(run)


def _cmd_irk_resolve(args: argparse.Namespace) -> int:
    from beacons.errors import IdentityError
    from beacons.irk import IRK_LENGTH, resolves

    def run() -> int:
        irk = _hex_arg("--irk", args.irk)
        if len(irk) != IRK_LENGTH:
            raise _UsageError(f"--irk must be {IRK_LENGTH} bytes, got {len(irk)}")
        failed = False
        for address in args.addresses:
            try:
                line: dict[str, object] = {"address": address, "resolves": resolves(irk, address)}
            except IdentityError as exc:
                line = {"address": address, "resolves": False, "error": str(exc)}
                failed = True
            print(json.dumps(line))
        return 1 if failed else 0

    return _identity_command(run)


def _register_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    roles = "shopper, kiosk, staff or admin"
    token = sub.add_parser(
        "token",
        help="issue and revoke app and device tokens",
        description="Issue and revoke the tokens of the shopper API in the gateway's store "
        "(<data_dir>/store of the configuration). Works whether or not the gateway runs.",
    )
    token.set_defaults(handler=_help_of(token))
    token_sub = token.add_subparsers(title="token commands", metavar="COMMAND")
    issue = token_sub.add_parser(
        "issue",
        help="issue a token",
        description='Print {"token", "role", "subject", "expires_at", "jti"} for a new token '
        "of the subject's current generation, creating the store's token secret the first "
        "time.",
    )
    issue.add_argument("--role", required=True, metavar="ROLE", help=roles)
    issue.add_argument("--subject", required=True, metavar="ID", help="shopper, kiosk, staff id")
    issue.add_argument(
        "--ttl",
        default="30d",
        metavar="TTL",
        help="lifetime: seconds, or a number with s, m, h or d (default 30d)",
    )
    issue.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    issue.set_defaults(handler=_cmd_token_issue)
    revoke = token_sub.add_parser(
        "revoke",
        help="revoke one token",
        description="Revoke one token (its signature is checked; an expired token is "
        'accepted). Prints {"revoked": JTI, "role", "subject", "expires_at", "new": bool}.',
    )
    revoke.add_argument("token", metavar="TOKEN", help="the token, mt1.<claims>.<mac>")
    revoke.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    revoke.set_defaults(handler=_cmd_token_revoke)
    revoke_subject = token_sub.add_parser(
        "revoke-subject",
        help="revoke every token of a subject",
        description="Revoke every token issued so far to a subject (log out everywhere) by "
        'moving its token generation on. Prints {"role", "subject", "generation"}.',
    )
    revoke_subject.add_argument("--role", required=True, metavar="ROLE", help=roles)
    revoke_subject.add_argument("--subject", required=True, metavar="ID", help="the subject")
    revoke_subject.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    revoke_subject.set_defaults(handler=_cmd_token_revoke_subject)


def _register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="reports from the store",
        description="Reports from the gateway's store (<data_dir>/store of the "
        "configuration). Works whether or not the gateway runs.",
    )
    report.set_defaults(handler=_help_of(report))
    report_sub = report.add_subparsers(title="report commands", metavar="COMMAND")
    lift_cmd = report_sub.add_parser(
        "lift",
        help="each offer's lift against its holdout",
        description="Print, per offer, impressions and redemptions of the treatment (shown) "
        "and the control (held out), conversion rates, the lift and the difference with "
        "their 95% intervals, and a warning where the samples are too small to say much; "
        "notes follow the table. With --json, one JSON object instead.",
    )
    lift_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lift_cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    lift_cmd.set_defaults(handler=_cmd_report_lift)

    explain = sub.add_parser(
        "explain",
        help="explain one decision",
        description="Print a decision kept in the store as text: when, whose, which channel "
        "and kiosk, the offer chosen and why, and each offer left out with the first rule "
        "that rejected it. Exits 1 when the store keeps no such decision.",
    )
    explain.add_argument("decision_id", metavar="DECISION_ID", help="the decision's id")
    explain.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    explain.set_defaults(handler=_cmd_explain)


def _register_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check that this box is set up to run the gateway",
        description="Check the configuration, BlueZ on the system D-Bus, the store broker "
        "(MQTT CONNECT with the configured credentials), the HQ link and its certificates, "
        "clock synchronisation, disk space and the LMDB store. Prints a table with a fix for "
        "each problem (or, with --json, one JSON object); exits 1 when a check fails.",
    )
    doctor.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of a table")
    doctor.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.doctor import diagnose, format_table, report_json

    checks = diagnose(args.config)
    report = report_json(checks)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_table(checks), end="", flush=True)
    return 0 if report["ok"] else 1


def _cmd_report_lift(args: argparse.Namespace) -> int:
    from gateway.report import format_report, lift_report, report_json

    with _token_store(args.config, create=False) as db:
        report = lift_report(db)
    if args.json:
        print(json.dumps(report_json(report)), flush=True)
    else:
        print(format_report(report), end="", flush=True)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from gateway.consents import decision
    from gateway.report import explain

    with _token_store(args.config, create=False) as db:
        record = decision(db, args.decision_id)
    if record is None:
        print(
            f"moments: no decision {args.decision_id!r} in the store (never made here, or "
            "dropped with the shopper's oldest decisions or their erasure)",
            file=sys.stderr,
        )
        return 1
    print(explain(record), end="", flush=True)
    return 0


_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_MAX_TTL_S = 5 * 366 * 86_400


def _ttl_arg(text: str) -> int:
    number, unit = text.strip(), ""
    if number[-1:] in _TTL_UNITS:
        number, unit = number[:-1], number[-1:]
    if not number.isascii() or not number.isdigit():
        raise _UsageError(f"--ttl must be seconds or a number with s, m, h or d: {text!r}")
    seconds = int(number) * _TTL_UNITS[unit]
    if not 1 <= seconds <= _MAX_TTL_S:
        raise _UsageError(f"--ttl must be between 1 s and {_MAX_TTL_S // 86_400} days: {text!r}")
    return seconds


def _role_and_subject(args: argparse.Namespace) -> tuple[Role, str]:
    from gateway.tokens import ROLES, SUBJECT_PATTERN

    if args.role not in ROLES:
        raise _UsageError(f"--role must be one of {', '.join(ROLES)}: {args.role!r}")
    if not re.match(SUBJECT_PATTERN, args.subject):
        raise _UsageError(
            "--subject must be 1 to 128 letters, digits or _.:@- starting with a letter or "
            f"digit: {args.subject!r}"
        )
    return cast("Role", args.role), args.subject


@contextlib.contextmanager
def _token_store(config_file: Path | None, *, create: bool) -> Iterator[Database]:
    """The gateway's store, open for one command. LMDB lets this process read and write
    while a running gateway has the store open; without ``create`` a missing store is an
    error (most likely the wrong configuration) rather than a new empty one."""
    from gateway.errors import StoreError
    from gateway.store import Database

    config = load_config(config_file)
    path = config.data_path / "store"
    if not create and not (path / "data.mdb").is_file():
        raise StoreError(f"no store at {path}")
    db = Database(path, map_size=config.store.map_size_mb << 20)
    db.open()
    try:
        yield db
    finally:
        db.close()


def _write(db: Database, op: WriteOp[_T]) -> _T:
    """Run one write operation through the store's writer, as the gateway does."""
    from gateway.store import Writer

    async def write() -> _T:
        writer = Writer(db)
        writer.start()
        try:
            return await writer.write(op)
        finally:
            await writer.aclose()

    return asyncio.run(write())


def _token_command(run: Callable[[], dict[str, object]]) -> int:
    """Print ``run()``'s result as one JSON line; a bad argument is a one-line usage error
    (2); a refused token or a store error reaches ``main`` (1)."""
    try:
        result = run()
    except _UsageError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


def _cmd_token_issue(args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock
    from gateway.tokens import Tokens, generation, secret_op

    def run() -> dict[str, object]:
        role, subject = _role_and_subject(args)
        ttl_s = _ttl_arg(args.ttl)
        with _token_store(args.config, create=True) as db:
            secret = _write(db, secret_op(db))
            current = generation(db, role, subject)
        token, claims = Tokens(secret).issue(
            role,
            subject,
            now=SystemClock().now(),
            ttl_s=ttl_s,
            generation=current,
        )
        return {
            "token": token,
            "role": claims.role,
            "subject": claims.subject,
            "expires_at": claims.expires_at,
            "jti": claims.jti,
        }

    return _token_command(run)


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from gateway.errors import StoreError
    from gateway.tokens import Tokens, read_secret, revoke_op

    def run() -> dict[str, object]:
        with _token_store(args.config, create=False) as db:
            secret = read_secret(db)
            if secret is None:
                raise StoreError(f"no token was ever issued from the store at {db.path}")
            claims = Tokens(secret).authenticate(args.token.strip())
            new = _write(db, revoke_op(db, claims))
        return {
            "revoked": claims.jti,
            "role": claims.role,
            "subject": claims.subject,
            "expires_at": claims.expires_at,
            "new": new,
        }

    return _token_command(run)


def _cmd_token_revoke_subject(args: argparse.Namespace) -> int:
    from gateway.tokens import revoke_subject_op

    def run() -> dict[str, object]:
        role, subject = _role_and_subject(args)
        with _token_store(args.config, create=False) as db:
            current = _write(db, revoke_subject_op(db, role, subject))
        return {"role": role, "subject": subject, "generation": current}

    return _token_command(run)


if __name__ == "__main__":
    sys.exit(main())
