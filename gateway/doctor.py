"""``moments doctor``: is this box set up to run the gateway? Each check says ok, warn or
fail, what it found and, when it is not ok, how to fix it.

The checks, in the order they run::

    config   the configuration loads (names the file)
    bluez    BlueZ answers on the system D-Bus and the configured adapter is there
    broker   the store broker accepts a TCP connection and an MQTT CONNECT
    hq       (HQ link enabled) TCP and TLS handshake with HQ; certificate expiry
    clock    the system clock is NTP-synchronised (as far as timedatectl can tell)
    disk     free space in the data folder
    store    the LMDB store opens read-only, has room in its map, and its meta reads

Every check is a function of its inputs (host, port, paths, an injected command runner or
disk-usage function) that returns a :class:`Check` and never raises for what it diagnoses:
a diagnosis is a result, not an exception. Waits are bounded (3 s by default).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import lmdb
import paho.mqtt.client as paho
from cryptography import x509
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import Config, HqConfig, load_config
from gateway.errors import ConfigError, StoreError
from gateway.store.codec import CURRENT_VERSION
from gateway.store.database import open_readonly, parse_schema_version

__all__ = [
    "Check",
    "Status",
    "check_bluez",
    "check_broker",
    "check_certificate",
    "check_clock",
    "check_config",
    "check_disk",
    "check_hq_link",
    "check_store",
    "diagnose",
    "format_table",
    "report_json",
]

Status = Literal["ok", "warn", "fail"]

TIMEOUT_S: Final = 3.0
CERT_WARN_DAYS: Final = 30
MiB: Final = 1 << 20
GiB: Final = 1 << 30
DISK_FAIL_BYTES: Final = 100 * MiB
DISK_WARN_BYTES: Final = GiB
DISK_WARN_SHARE: Final = 0.10
MAP_WARN_SHARE: Final = 0.80
MAP_FAIL_SHARE: Final = 0.95

_BLUEZ_FIX: Final = (
    "install and start BlueZ: `apt install bluez`, `systemctl enable --now bluetooth`; "
    "or set radio.enabled = false to use scanner nodes only"
)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


# ----- config -----


def check_config(path: Path | None) -> tuple[Check, Config | None]:
    """Load the configuration as ``moments run`` would; the check names the file."""
    named = path if path is not None else os.environ.get("MOMENTS_CONFIG")
    try:
        config = load_config(path)
    except ConfigError as exc:
        return Check(
            "config",
            "fail",
            str(exc),
            "correct the key named above; `moments config -c FILE` prints the result",
        ), None
    where = f"loaded {named}" if named else "no file: built-in defaults"
    return Check("config", "ok", f"{where} (store {config.store_id})"), config


# ----- BlueZ -----


async def check_bluez(adapter: str, *, timeout_s: float = TIMEOUT_S) -> Check:
    """Ask ``org.bluez`` on the system bus (``DBUS_SYSTEM_BUS_ADDRESS`` when set) for its
    objects and look for ``adapter`` among the ``Adapter1`` objects."""
    try:
        bus = MessageBus(bus_type=BusType.SYSTEM)
    except Exception as exc:  # noqa: BLE001 - a malformed DBUS_SYSTEM_BUS_ADDRESS, say
        return Check(
            "bluez",
            "warn",
            f"the system D-Bus address is not usable: {exc}",
            "unset DBUS_SYSTEM_BUS_ADDRESS, or point it at the system bus",
        )
    try:
        async with asyncio.timeout(timeout_s):
            await bus.connect()
            reply = await bus.call(
                Message(
                    destination="org.bluez",
                    path="/",
                    interface="org.freedesktop.DBus.ObjectManager",
                    member="GetManagedObjects",
                )
            )
    except TimeoutError:
        return Check(
            "bluez", "warn", f"the system D-Bus did not answer in {timeout_s:g} s", _BLUEZ_FIX
        )
    except (OSError, DBusFastError) as exc:
        return Check(
            "bluez",
            "warn",
            f"no system D-Bus: {exc or type(exc).__name__}",
            "install and start D-Bus and BlueZ: `apt install dbus bluez`, "
            "`systemctl enable --now bluetooth`; or set radio.enabled = false",
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type is MessageType.ERROR:
        why = "no answer" if reply is None else f"{reply.error_name}: {_first(reply.body)}"
        return Check("bluez", "warn", f"BlueZ is not on the system D-Bus ({why})", _BLUEZ_FIX)
    adapters: dict[str, bool] = {}
    for path, interfaces in reply.body[0].items():
        props = interfaces.get("org.bluez.Adapter1")
        if props is not None:
            powered = props.get("Powered")
            adapters[str(path).rsplit("/", 1)[-1]] = bool(powered.value if powered else False)
    if adapter not in adapters:
        found = ", ".join(sorted(adapters)) or "none"
        return Check(
            "bluez",
            "warn",
            f"BlueZ answers but has no adapter {adapter} (adapters: {found})",
            "plug in or enable the Bluetooth adapter (`rfkill unblock bluetooth`, "
            "`hciconfig -a`), or set radio.adapter to one of those listed",
        )
    if not adapters[adapter]:
        return Check(
            "bluez",
            "warn",
            f"adapter {adapter} is powered off",
            f"`bluetoothctl power on` (or `rfkill unblock bluetooth`) for {adapter}",
        )
    return Check("bluez", "ok", f"BlueZ answers; adapter {adapter} is powered")


def _first(body: Sequence[Any]) -> str:
    return str(body[0]) if body else ""


# ----- the store broker -----


def _resolve(host: str, port: int, timeout_s: float) -> str:
    """``host``'s first address, the name lookup bounded by ``timeout_s`` (a resolver that
    hangs would otherwise stall the check far beyond its limit); OSError when it fails."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="doctor-resolve")
    try:
        found = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = found.result(timeout=timeout_s)
        except FutureTimeout:
            raise OSError(f"looking up {host} took longer than {timeout_s:g} s") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a stuck lookup is left behind
    return str(infos[0][4][0])


def check_broker(
    host: str,
    port: int,
    *,
    username: str = "",
    password: str = "",
    client_id: str = "",
    timeout_s: float = TIMEOUT_S,
    name: str = "broker",
) -> Check:
    """TCP connect and MQTT 5 CONNECT with these credentials; a clean disconnect after."""
    where = f"{host}:{port}"
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"moments-doctor-{os.getpid()}",
        protocol=paho.MQTTv5,
        reconnect_on_failure=False,
    )
    client.connect_timeout = timeout_s
    if username:
        client.username_pw_set(username, password or None)
    answers: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    try:
        client.connect(_resolve(host, port, timeout_s), port, keepalive=max(5, int(timeout_s * 2)))
    except (OSError, ValueError) as exc:
        return Check(
            name,
            "fail",
            f"cannot reach {where}: {exc}",
            "start the broker (`systemctl start mosquitto`; `apt install mosquitto`) or "
            "correct broker.host and broker.port",
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not answers and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS:
                break
        if not answers:
            return Check(
                name,
                "fail",
                f"{where} accepted TCP but gave no MQTT answer within {timeout_s:g} s",
                "check that broker.port is the broker's MQTT listener (not TLS or websockets)",
            )
        reason = answers[0]
        if reason.is_failure:
            credentials = reason.value in {0x86, 0x87}  # bad user name or password; not authorized
            return Check(
                name,
                "fail",
                f"{where} refused the connection: {reason.getName()}",
                "correct broker.username and broker.password (or the broker's password file "
                "and ACL)"
                if credentials
                else "see the broker's log for why it refused",
            )
        who = f" as {username}" if username else ""
        return Check(name, "ok", f"{where} accepted an MQTT 5 session{who}")
    finally:
        client.disconnect()


# ----- HQ -----


def check_hq_link(hq: HqConfig, *, timeout_s: float = TIMEOUT_S) -> Check:
    """TCP connect to HQ and, with ``hq.tls``, a TLS handshake with the configured CA,
    certificate and key (the MQTT session itself needs HQ's credentials: not tried)."""
    where = f"{hq.host}:{hq.port}"
    context: ssl.SSLContext | None = None
    if hq.tls:
        try:
            context = ssl.create_default_context(cafile=hq.ca_file or None)
            if hq.cert_file:
                context.load_cert_chain(hq.cert_file, hq.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            return Check(
                "hq",
                "fail",
                f"cannot load the TLS files: {exc}",
                "check hq.ca_file, hq.cert_file and hq.key_file: readable PEM files, "
                "the key matching the certificate",
            )
    try:
        address = _resolve(hq.host, hq.port, timeout_s)
        with socket.create_connection((address, hq.port), timeout=timeout_s) as sock:
            if context is None:
                return Check(
                    "hq",
                    "warn",
                    f"{where} reachable over plain TCP (hq.tls = false)",
                    "turn hq.tls on outside a test setup: HQ traffic crosses the internet",
                )
            with context.wrap_socket(sock, server_hostname=hq.host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "hq",
            "fail",
            f"{where}: HQ's certificate is not trusted: {exc.verify_message}",
            "set hq.ca_file to the CA that signed HQ's certificate, and hq.host to a name "
            "the certificate carries",
        )
    except ssl.SSLError as exc:
        return Check(
            "hq",
            "fail",
            f"{where}: TLS handshake failed: {exc}",
            "check that hq.port is HQ's TLS listener and that HQ accepts this store's certificate",
        )
    except OSError as exc:
        return Check(
            "hq",
            "fail",
            f"cannot reach {where}: {exc}",
            "check the store's internet link, hq.host and hq.port (the gateway keeps serving "
            "offline meanwhile)",
        )
    return Check("hq", "ok", f"{where}: TLS handshake done ({version})")


def check_certificate(label: str, path: str, *, now: float) -> Check:
    """The PEM certificate(s) in ``path``: fail when one has expired or is not valid yet,
    warn when one expires within 30 days."""
    name = f"hq {label}"
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        return Check(name, "fail", f"cannot read {path}: {exc}", f"check hq.{label}")
    at = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    first = min(certs, key=lambda c: c.not_valid_after_utc)
    until = first.not_valid_after_utc
    subject = first.subject.rfc4514_string() or "(no subject)"
    renew = f"renew {path} (hq.{label}) and restart the gateway"
    if until <= at:
        return Check(name, "fail", f"{subject} in {path} expired on {until:%Y-%m-%d}", renew)
    early = max(certs, key=lambda c: c.not_valid_before_utc)
    if early.not_valid_before_utc > at:
        return Check(
            name,
            "fail",
            f"{path} is not valid before {early.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the system clock (see the clock check) or the certificate",
        )
    days = (until - at).total_seconds() / 86_400
    if days < CERT_WARN_DAYS:
        return Check(
            name,
            "warn",
            f"{subject} in {path} expires in {days:.0f} days ({until:%Y-%m-%d})",
            renew,
        )
    return Check(name, "ok", f"{path} valid until {until:%Y-%m-%d}")


# ----- clock -----

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def check_clock(run: Runner = _run, *, which: Callable[[str], str | None] = shutil.which) -> Check:
    """``timedatectl show -p NTPSynchronized --value``; without systemd it cannot tell."""
    cannot_tell = "cannot tell whether the clock is synchronised"
    fix = (
        "run an NTP client (`timedatectl set-ntp true`, or chrony): tokens, certificates "
        "and HQ's validity windows need a right clock"
    )
    if which("timedatectl") is None:
        return Check("clock", "warn", f"{cannot_tell}: no timedatectl (no systemd?)", fix)
    try:
        done = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("clock", "warn", f"{cannot_tell}: {exc}", fix)
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in {"yes", "no"}:
        why = (done.stderr.strip() or answer or f"exit status {done.returncode}").splitlines()[0]
        return Check("clock", "warn", f"{cannot_tell}: timedatectl: {why}", fix)
    if answer == "no":
        return Check("clock", "warn", "the clock is not NTP-synchronised", fix)
    return Check("clock", "ok", "NTP-synchronised")


# ----- disk -----

Usage = Callable[[Path], Any]  # shutil.disk_usage: total, used, free


def check_disk(folder: Path, *, usage: Usage = shutil.disk_usage) -> Check:
    """Free space where the data folder is (or would be created)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        total, _used, free = usage(existing)
    except OSError as exc:
        return Check(
            "disk", "fail", f"cannot read free space of {existing}: {exc}", "check data_dir"
        )
    share = free / total if total else 0.0
    detail = f"{_size(free)} free of {_size(total)} ({share:.0%}) at {existing}"
    fix = "free space there (old backups, logs: `journalctl --vacuum-size=100M`) or move data_dir"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", detail, fix)
    if free < DISK_WARN_BYTES or share < DISK_WARN_SHARE:
        return Check("disk", "warn", detail, fix)
    return Check("disk", "ok", detail)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ----- the LMDB store -----


def check_store(path: Path, *, map_size: int) -> Check:
    """Open the store read-only (when it exists): map use against ``map_size`` (the
    configured size), readers, and a read transaction over ``meta``."""
    if not (path / "data.mdb").is_file():
        return Check("store", "ok", f"no store at {path} yet: created on first run")
    try:
        env = open_readonly(path, registered=True)
    except lmdb.Error as exc:
        return Check(
            "store",
            "fail",
            f"cannot open {path}: {exc}",
            "run doctor as the gateway's user; restore from a backup if the files are damaged "
            "(`moments store restore`)",
        )
    try:
        info, stat = env.info(), env.stat()
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            version = txn.get(b"schema_version")
    except lmdb.Error as exc:
        return Check(
            "store",
            "fail",
            f"{path} is not readable as a Moments store: {exc}",
            "restore from a backup (`moments store restore`)",
        )
    finally:
        env.close()
    try:
        schema: int | None = parse_schema_version(version, path)
    except StoreError:
        schema = None
    if schema is None or schema > CURRENT_VERSION:
        return Check(
            "store",
            "fail",
            f"{path} has schema {version!r}; this gateway reads up to {CURRENT_VERSION}",
            "upgrade the gateway, or restore a backup this version wrote (`moments store restore`)",
        )
    if schema < CURRENT_VERSION:
        return Check(
            "store",
            "fail",
            f"{path} has schema {schema}, older than this gateway's {CURRENT_VERSION}: the "
            "gateway will not start on it",
            "stop the gateway and run `moments store migrate` (it takes a backup first)",
        )
    used = (info["last_pgno"] + 1) * stat["psize"]
    # The gateway opens the map at the configured size, or the file's when that is larger.
    size = max(map_size, (path / "data.mdb").stat().st_size)
    share = used / size
    detail = (
        f"{_size(used)} used of a {_size(size)} map ({share:.0%}), "
        f"{info['num_readers']} readers, schema {schema}"
    )
    grow = "raise store.map_size_mb (and check the disk has room) before the store fills"
    if share >= MAP_FAIL_SHARE:
        return Check("store", "fail", detail, grow)
    if share >= MAP_WARN_SHARE:
        return Check("store", "warn", detail, grow)
    return Check("store", "ok", detail)


# ----- all of them -----


def diagnose(config_path: Path | None, *, now: float | None = None) -> list[Check]:
    """Every check, for the configuration at ``config_path`` (or ``MOMENTS_CONFIG``, or the
    defaults). A configuration that does not load stops there."""
    first, config = check_config(config_path)
    if config is None:
        return [first]
    checks = [first]
    if config.radio.enabled:
        checks.append(asyncio.run(check_bluez(config.radio.adapter)))
    else:
        checks.append(Check("bluez", "ok", "radio disabled (radio.enabled = false)"))
    b = config.broker
    checks.append(
        check_broker(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            timeout_s=min(b.connect_timeout_s, TIMEOUT_S),
        )
    )
    if config.hq.enabled:
        hq = config.hq
        checks.append(check_hq_link(hq, timeout_s=min(hq.connect_timeout_s, TIMEOUT_S)))
        when = time.time() if now is None else now
        for label in ("ca_file", "cert_file"):
            path = getattr(hq, label)
            if path:
                checks.append(check_certificate(label, path, now=when))
    else:
        checks.append(Check("hq", "ok", "HQ link not enabled (hq.enabled = false)"))
    checks.append(check_clock())
    checks.append(check_disk(config.data_path))
    store = config.data_path.absolute() / "store"
    checks.append(check_store(store, map_size=config.store.map_size_mb << 20))
    return checks


def report_json(checks: Sequence[Check]) -> dict[str, Any]:
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    return {"ok": counts["fail"] == 0, "summary": counts, "checks": [asdict(c) for c in checks]}


def format_table(checks: Sequence[Check]) -> str:
    width = max(len("CHECK"), *(len(c.name) for c in checks))
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.status:<6}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"{'':<6}  {'':<{width}}  fix: {c.fix}")
    counts = report_json(checks)["summary"]
    verdict = "no failures" if counts["fail"] == 0 else "FAILED"
    lines.append(
        f"{len(checks)} checks: {counts['ok']} ok, {counts['warn']} warn, "
        f"{counts['fail']} fail: {verdict}"
    )
    return "\n".join(lines) + "\n"
