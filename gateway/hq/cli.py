"""``moments hq``: the reference HQ's command line (keys, publish, serve).

``register(subparsers)`` adds the ``hq`` command group to ``moments``; ``python -m gateway.hq``
runs the same commands on their own. Exit codes as ``moments``: 0 success, 1 the command could
not finish (the broker unreachable or not acknowledging, HQ's data failing), 2 bad usage, bad
input files or a key folder that does not allow the change.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.errors import ConfigError, MomentsError
from gateway.hq.defaults import DEFAULT_BATCH, DEFAULT_KEEP, DEFAULT_PREFIX, DEFAULT_TIMEOUT_S
from gateway.hq.errors import InputError, KeysError

__all__ = ["main", "register"]

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hq`` and its commands; each sets ``handler`` (``fn(args) -> exit status``)."""
    hq = subparsers.add_parser(
        "hq",
        help="the reference HQ: signing keys, publishing, serving stores",
        description="The other end of the HQ ⇄ store sync contract (docs/PROTOCOL.md): signed, "
        "sequenced streams to stores; events and resync requests from them.",
    )
    hq.set_defaults(handler=_help_of(hq))
    commands = hq.add_subparsers(title="hq commands", metavar="COMMAND")
    _register_keys(commands)
    _register_publish(commands)
    _register_serve(commands)


def _register_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="HQ's Ed25519 signing keys",
        description="Make, rotate and revoke HQ's signing keys (a folder of key files).",
    )
    keys.set_defaults(handler=_help_of(keys))
    sub = keys.add_subparsers(title="keys commands", metavar="COMMAND")

    new = sub.add_parser(
        "new",
        help="make the first signing key of a key folder",
        description="Make an Ed25519 key (private key mode 0600, public key as hex) in a new "
        'key folder and make it current; print {"key_id", "public_key"}.',
    )
    new.add_argument("--dir", required=True, type=Path, help="the key folder")
    new.add_argument("--id", metavar="KEY_ID", help="the key id (default hq-DATE-RANDOM)")
    new.set_defaults(handler=_command("keys_new"))

    show = sub.add_parser("list", help="list the keys", description="Print the key folder.")
    show.add_argument("--dir", required=True, type=Path, help="the key folder")
    show.set_defaults(handler=_command("keys_list"))

    rotate = sub.add_parser(
        "rotate",
        help="make a new key, announce it signed by the current one, make it current",
        description="Make a new key and publish a keys-stream message adding it (signed by "
        "the current key) to the stores; once the broker acknowledged every message the new "
        "key becomes current. After a failure, running rotate again resumes the same new key.",
    )
    rotate.add_argument("--dir", required=True, type=Path, help="the key folder")
    rotate.add_argument("--id", metavar="KEY_ID", help="the new key's id")
    _publishing_options(rotate)
    rotate.set_defaults(handler=_command("keys_rotate"))

    revoke = sub.add_parser(
        "revoke",
        help="announce a key revoked, then destroy it",
        description="Publish a keys-stream message marking the key revoked (signed by the "
        "current key); once acknowledged, mark it revoked and delete its private key.",
    )
    revoke.add_argument("--dir", required=True, type=Path, help="the key folder")
    revoke.add_argument("--id", required=True, metavar="KEY_ID", help="the key to revoke")
    _publishing_options(revoke)
    revoke.set_defaults(handler=_command("keys_revoke"))


def _register_publish(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish records to stores",
        description="Read records (JSON lists of records in the store's shapes with their "
        '"type" tag; YAML if PyYAML is installed), give each store its next sequences, seal '
        "with the current key, log, publish at QoS 1 and wait for the broker's PUBACKs. "
        "Prints progress to stderr every 1,000 messages and one JSON summary line.",
    )
    publish.add_argument("--keys", required=True, type=Path, help="the key folder")
    publish.add_argument(
        "--stream", required=True, help="the stream: offers, templates, profiles, consents, ..."
    )
    mode = publish.add_mutually_exclusive_group()
    mode.add_argument(
        "--delete", action="store_true", help='the files name records to delete ({"id": ...})'
    )
    mode.add_argument(
        "--snapshot",
        action="store_true",
        help="send a snapshot (begin, items, end) replacing the stream: of the files' records, "
        "or of HQ's current state when no file is given",
    )
    publish.add_argument(
        "--batch", type=_positive, default=DEFAULT_BATCH, help="records per message"
    )
    _publishing_options(publish)
    publish.add_argument("files", nargs="*", type=Path, metavar="FILE", help="record files")
    publish.set_defaults(handler=_command("publish"))


def _register_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="receive store events, answer resync requests",
        description="Consume store events and resync requests through MQTT 5 shared "
        "subscriptions (run several for load sharing); count each event once by its "
        "idempotency key; answer resyncs with logged messages or a snapshot. Stops cleanly on "
        "SIGTERM or Ctrl-C.",
    )
    serve.add_argument("--data", required=True, type=Path, help="HQ's data folder (LMDB)")
    serve.add_argument("--keys", required=True, type=Path, help="the key folder")
    serve.add_argument("--broker", required=True, type=_broker, metavar="HOST:PORT")
    serve.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix")
    serve.add_argument("--received", type=Path, metavar="FILE", help="append new events here")
    serve.add_argument(
        "--client-id",
        default="",
        help="a fixed MQTT client id: the broker then keeps this instance's session across "
        "crashes (default: a random id and no kept session)",
    )
    serve.add_argument("--session-expiry", type=int, default=3600, help="seconds, with --client-id")
    serve.add_argument(
        "--keep", type=_positive, default=DEFAULT_KEEP, help="messages kept per stream"
    )
    serve.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, help="records per message")
    serve.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="longest wait for the broker, s"
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--log-format", default="json", choices=("json", "text"))
    serve.set_defaults(handler=_command("serve"))


def _publishing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="HQ's data folder (LMDB)")
    parser.add_argument("--broker", required=True, type=_broker, metavar="HOST:PORT")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--store", action="append", metavar="STORE", help="a store (repeatable)")
    target.add_argument("--all-stores", action="store_true", help="every store HQ has published to")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix")
    parser.add_argument(
        "--keep", type=_positive, default=DEFAULT_KEEP, help="messages kept per stream"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="longest wait for an acknowledgement, s",
    )


# ----- argument helpers -----


def _command(name: str) -> Handler:
    """The handler ``gateway.hq.commands.<name>``, loaded when it runs. Bad input files and
    key-folder refusals are usage errors: message, exit status 2."""

    def run(args: argparse.Namespace) -> int:
        from gateway.hq import commands  # noqa: PLC0415 - HQ's machinery, only when used

        handler: Handler = getattr(commands, name)
        try:
            return handler(args)
        except (InputError, KeysError) as exc:
            print(f"moments hq: {exc}", file=sys.stderr)
            return 2

    return run


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _broker(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` for IPv6, port 1883 when left out)."""
    host, sep, port = text.rpartition(":")
    if not sep or (":" in host and not host.startswith("[")):
        host, port = text, "1883"  # no port, or a bare IPv6 address
    host = host.removeprefix("[").removesuffix("]")
    bad_v6 = ":" in host and not _is_ipv6(host)
    if not host or bad_v6 or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.hq COMMAND ...``: the ``hq`` commands without the rest of moments."""
    parser = argparse.ArgumentParser(prog="moments")
    register(parser.add_subparsers(metavar="COMMAND"))
    args = parser.parse_args(["hq", *(sys.argv[1:] if argv is None else argv)])
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
