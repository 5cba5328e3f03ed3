"""``moments doctor``'s checks against real parts: a real Mosquitto (and one that wants a
password), a port with nothing listening, a TLS server with self-signed certificates, the
emulated BlueZ on a private D-Bus, a real LMDB store and temporary folders. Only the clock
(systemd) and the disk's size, which this machine cannot be made to show, are injected."""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim.bluez import FakeBlueZ, PrivateBus
from gateway.config import HqConfig
from gateway.doctor import (
    Check,
    GiB,
    MiB,
    check_bluez,
    check_broker,
    check_certificate,
    check_clock,
    check_config,
    check_disk,
    check_hq_link,
    check_store,
    format_table,
    report_json,
)
from tests.support.broker import Broker, free_port, mosquitto_binary, wait_for_port
from tests.support.store import opened, run
from tests.test_cli import clean_env, moments

NOW = time.time()
DAY = 86_400.0


# ----- certificates -----


def self_signed(folder: Path, name: str, *, not_after: float, not_before: float) -> Path:
    """A self-signed certificate for 127.0.0.1 (and its key, ``name.key``); returns the
    certificate's path."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(not_before, tz=dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(not_after, tz=dt.UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_certificate_expiry(tmp_path: Path) -> None:
    good = self_signed(tmp_path, "good", not_before=NOW - DAY, not_after=NOW + 365 * DAY)
    soon = self_signed(tmp_path, "soon", not_before=NOW - DAY, not_after=NOW + 10 * DAY)
    expired = self_signed(tmp_path, "old", not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    future = self_signed(tmp_path, "future", not_before=NOW + DAY, not_after=NOW + 90 * DAY)

    assert check_certificate("cert_file", str(good), now=NOW).status == "ok"
    warned = check_certificate("cert_file", str(soon), now=NOW)
    assert warned.status == "warn"
    assert "expires in 10 days" in warned.detail and "renew" in warned.fix
    failed = check_certificate("ca_file", str(expired), now=NOW)
    assert failed.status == "fail" and "expired" in failed.detail
    assert failed.name == "hq ca_file" and "hq.ca_file" in failed.fix
    assert check_certificate("cert_file", str(future), now=NOW).status == "fail"
    missing = check_certificate("cert_file", str(tmp_path / "nope.crt"), now=NOW)
    assert missing.status == "fail" and "cannot read" in missing.detail
    (tmp_path / "junk.crt").write_text("not a certificate")
    assert check_certificate("cert_file", str(tmp_path / "junk.crt"), now=NOW).status == "fail"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS listener on a free port, serving a self-signed certificate for 127.0.0.1;
    yields the port and the certificate (the CA a client must trust)."""
    cert = self_signed(tmp_path, "hq", not_before=NOW - DAY, not_after=NOW + 365 * DAY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, tmp_path / "hq.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, name="tls-server", daemon=True)
    thread.start()
    yield port, cert
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_hq_tls_handshake_with_the_right_ca(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    hq = HqConfig(enabled=True, host="127.0.0.1", port=port, tls=True, ca_file=str(ca))
    check = check_hq_link(hq)
    assert check.status == "ok", check
    assert "TLS handshake done" in check.detail


def test_hq_tls_refuses_an_untrusted_server(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ca = tls_server
    other = self_signed(tmp_path, "other", not_before=NOW - DAY, not_after=NOW + 365 * DAY)
    hq = HqConfig(enabled=True, host="127.0.0.1", port=port, tls=True, ca_file=str(other))
    check = check_hq_link(hq)
    assert check.status == "fail"
    assert "not trusted" in check.detail and "hq.ca_file" in check.fix


def test_hq_unreachable_and_bad_files(tmp_path: Path) -> None:
    dead = HqConfig(enabled=True, host="127.0.0.1", port=free_port(), tls=False)
    check = check_hq_link(dead, timeout_s=1.0)
    assert check.status == "fail" and "cannot reach" in check.detail
    missing = HqConfig(enabled=True, port=free_port(), ca_file=str(tmp_path / "none.pem"))
    check = check_hq_link(missing)
    assert check.status == "fail" and "TLS files" in check.detail


# ----- the store broker -----


@pytest.mark.mqtt
def test_broker_accepts(broker: Broker) -> None:
    check = check_broker(broker.host, broker.port)
    assert check == Check("broker", "ok", f"{broker.host}:{broker.port} accepted an MQTT 5 session")


def test_broker_nothing_listening() -> None:
    port = free_port()
    check = check_broker("127.0.0.1", port, timeout_s=1.0)
    assert check.status == "fail"
    assert f"cannot reach 127.0.0.1:{port}" in check.detail
    assert "systemctl start mosquitto" in check.fix


@pytest.mark.mqtt
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_broker_refuses_credentials(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "store", "right"],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        # As root, Mosquitto would read the password file as its own unprivileged user.
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        "persistence false\nlog_type error\n"
    )
    process = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        right = check_broker("127.0.0.1", port, username="store", password="right")
        assert right.status == "ok" and "as store" in right.detail
        wrong = check_broker("127.0.0.1", port, username="store", password="wrong")
        assert wrong.status == "fail"
        assert "refused" in wrong.detail and "broker.password" in wrong.fix
    finally:
        process.terminate()
        process.wait(timeout=5)


# ----- BlueZ on the system D-Bus -----

needs_dbus = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None, reason="dbus-daemon not installed"
)


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with PrivateBus() as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@needs_dbus
async def test_bluez_with_its_adapter(system_bus: str) -> None:
    async with FakeBlueZ(system_bus):
        check = await check_bluez("hci0")
        assert check.status == "ok", check
        assert "hci0" in check.detail
        other = await check_bluez("hci1")
        assert other.status == "warn"
        assert "no adapter hci1" in other.detail and "hci0" in other.detail


@needs_dbus
async def test_bus_without_bluez(system_bus: str) -> None:
    check = await check_bluez("hci0")
    assert check.status == "warn"
    assert "not on the system D-Bus" in check.detail
    assert "systemctl enable --now bluetooth" in check.fix


async def test_no_system_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    check = await check_bluez("hci0", timeout_s=1.0)
    assert check.status == "warn"
    assert "no system D-Bus" in check.detail and "apt install" in check.fix


# ----- clock, disk, store, config -----


def answering(code: int, out: str, err: str = "") -> object:
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        assert list(argv) == ["timedatectl", "show", "-p", "NTPSynchronized", "--value"]
        return subprocess.CompletedProcess(list(argv), code, out, err)

    return run


def test_clock() -> None:
    def found(_name: str) -> str:
        return "/usr/bin/timedatectl"

    assert check_clock(answering(0, "yes\n"), which=found).status == "ok"  # type: ignore[arg-type]
    no = check_clock(answering(0, "no\n"), which=found)  # type: ignore[arg-type]
    assert no.status == "warn" and "not NTP-synchronised" in no.detail
    container = check_clock(
        answering(1, "", "System has not been booted with systemd"),  # type: ignore[arg-type]
        which=found,
    )
    assert container.status == "warn" and "cannot tell" in container.detail
    absent = check_clock(which=lambda _name: None)
    assert absent.status == "warn" and "no timedatectl" in absent.detail


def test_disk(tmp_path: Path) -> None:
    folder = tmp_path / "var" / "not-yet"

    def usage(total: int, free: int) -> object:
        def read(path: Path) -> tuple[int, int, int]:
            assert path == tmp_path  # the nearest folder that exists
            return total, total - free, free

        return read

    assert check_disk(folder, usage=usage(100 * GiB, 50 * GiB)).status == "ok"  # type: ignore[arg-type]
    assert check_disk(folder, usage=usage(100 * GiB, 5 * GiB)).status == "warn"  # type: ignore[arg-type]
    assert check_disk(folder, usage=usage(4 * GiB, 900 * MiB)).status == "warn"  # type: ignore[arg-type]
    low = check_disk(folder, usage=usage(100 * GiB, 50 * MiB))  # type: ignore[arg-type]
    assert low.status == "fail" and "free" in low.fix
    assert check_disk(tmp_path).status in {"ok", "warn", "fail"}  # the real disk


def test_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    missing = check_store(path, map_size=1 << 24)
    assert missing.status == "ok" and "created on first run" in missing.detail
    with opened(path):
        pass
    check = check_store(path, map_size=1 << 30)
    assert check.status == "ok", check
    assert "schema 1" in check.detail and "readers" in check.detail
    # Nearly full: about 220 of the 256 pages of a 1 MiB map.
    with opened(path) as db:
        run(
            db,
            lambda txn: [
                txn.put(b"k%03d" % i, b"x" * 4000, db=db.handle("meta")) for i in range(210)
            ],
        )
    full = check_store(path, map_size=1 << 20)
    assert full.status in {"warn", "fail"}, full
    assert "map_size_mb" in full.fix
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"\0" * 8192)
    assert check_store(tmp_path / "junk", map_size=1 << 20).status == "fail"


def test_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOMENTS_CONFIG", raising=False)
    good = tmp_path / "good.toml"
    good.write_text('store_id = "store-9"\n')
    check, config = check_config(good)
    assert check.status == "ok" and str(good) in check.detail and config is not None
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nport = 70000\n")
    check, config = check_config(bad)
    assert config is None and check.status == "fail"
    assert str(bad) in check.detail and "broker.port" in check.detail


def test_table_and_json() -> None:
    checks = [
        Check("config", "ok", "loaded x"),
        Check("broker", "fail", "cannot reach", "start it"),
        Check("clock", "warn", "cannot tell", "run NTP"),
    ]
    table = format_table(checks)
    assert "fix: start it" in table and "fix: run NTP" in table
    assert table.splitlines()[-1] == "3 checks: 1 ok, 1 warn, 1 fail: FAILED"
    report = report_json(checks)
    assert report["ok"] is False and report["summary"] == {"ok": 1, "warn": 1, "fail": 1}


# ----- the command -----


def test_doctor_command_with_a_dead_broker(tmp_path: Path) -> None:
    config = tmp_path / "moments.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[broker]\nport = {free_port()}\n'
        "connect_timeout_s = 1.0\n[radio]\nenabled = false\n"
    )
    result = moments("doctor", "-c", str(config), "--json", cwd=tmp_path, env=clean_env())
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is False
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
    assert "broker" in failed and "cannot reach" in failed["broker"]["detail"]
    assert [c["name"] for c in report["checks"]] == [
        "config",
        "bluez",
        "broker",
        "hq",
        "clock",
        "disk",
        "store",
    ]
    table = moments("doctor", "-c", str(config), cwd=tmp_path, env=clean_env())
    assert table.returncode == 1 and "fix:" in table.stdout and "FAILED" in table.stdout


def test_store_older_than_the_gateway_fails_with_migrate_as_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with opened(path):
        pass

    def set_version(value: bytes) -> None:
        env = lmdb.open(str(path), max_dbs=64, subdir=True)
        try:
            meta = env.open_db(b"meta", create=False)
            with env.begin(write=True, db=meta) as txn:
                txn.put(b"schema_version", value)
        finally:
            env.close()

    set_version(b"0")
    check = check_store(path, map_size=1 << 24)
    assert check.status == "fail" and "moments store migrate" in check.fix
    set_version(b"garbage")
    assert check_store(path, map_size=1 << 24).status == "fail"  # no crash on a bad value


def test_a_name_lookup_that_hangs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hanging(*_args: object, **_kwargs: object) -> object:
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        check = check_broker("broker.example", 1883, timeout_s=0.3)
    finally:
        release.set()
    assert check.status == "fail" and "took longer than 0.3 s" in check.detail
