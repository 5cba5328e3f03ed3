"""The shipped store broker configuration (``deploy/mosquitto``), run by a real Mosquitto.

Each broker here starts from the shipped files, rewritten only where a test must differ from a
store box: listener ports (free ports on 127.0.0.1), file paths (into a temporary folder), TLS
files (generated here), the ``include_dir`` (a folder holding the TLS listener's file, the
bridge's, both or none), the store id, and the user Mosquitto runs as (itself, since it drops
to ``mosquitto`` from root).
The device ACL blocks come from the ``acl_block`` snippet of the folder's README, run by ``sh``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.broker import free_port, mosquitto_binary, wait_for_port

pytestmark = pytest.mark.mqtt

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
STORE = "store-t"
PREFIX = f"moments/v1/{STORE}"
PASSWORD = "right-password"
DEVICES = ("shelf-3", "staff-ann", "node-7")
SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 16
NOT_AUTHORIZED = 135
BAD_CREDENTIALS = 134
QUIET_S = 0.5


# --- Preparing the files -----------------------------------------------------------------


def rewrite(text: str, changes: dict[str, str]) -> str:
    """``text`` with each line ``old`` replaced by ``new``; an ``old`` that is not exactly one
    line of the shipped file fails the test, so a change to the file cannot go unnoticed."""
    lines = text.splitlines()
    for old, new in changes.items():
        assert lines.count(old) == 1, f"expected exactly one line {old!r} in the shipped file"
        lines[lines.index(old)] = new
    return "\n".join(lines) + "\n"


def acl_block(device: str) -> str:
    """The ACL block the README's ``acl_block`` snippet prints for ``device``."""
    readme = (DEPLOY / "README.md").read_text()
    snippets = [s for s in re.findall(r"```sh\n(.*?)```", readme, re.S) if "acl_block() {" in s]
    assert len(snippets) == 1, "README.md: expected one sh block defining acl_block"
    script = f'{snippets[0]}\nacl_block "$1" "$2"\n'
    done = subprocess.run(
        ["sh", "-c", script, "sh", device, STORE],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
    )
    return done.stdout


def write_passwords(path: Path, users: tuple[str, ...]) -> None:
    for i, user in enumerate(users):
        command = ["mosquitto_passwd", "-b", str(path), user, PASSWORD]
        if i == 0:
            command.insert(1, "-c")
        subprocess.run(command, check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """A CA and a certificate it signs for 127.0.0.1 and localhost, usable by a listener and,
    as a client certificate, by a bridge."""
    folder.mkdir()
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("moments test CA", None, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", ca_cert.subject, key, ca_key, ca=False)
    tls = Tls(folder / "ca.crt", folder / "broker.crt", folder / "broker.key")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


# --- Running Mosquitto -------------------------------------------------------------------


@dataclass
class Mosquitto:
    conf: Path
    log: Path
    ports: tuple[int, ...]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=log
            )
        for port in self.ports:
            try:
                wait_for_port(port, timeout=5)
            except TimeoutError as exc:
                self.stop()
                raise AssertionError(f"mosquitto did not listen on {port}:\n{self.logs()}") from exc

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


@dataclass(frozen=True)
class Store:
    broker: Mosquitto
    port: int
    tls_port: int
    tls: Tls


def store_config(folder: Path, port: int, include: Path) -> Path:
    """The shipped moments.conf, moments.acl and a password file, prepared in ``folder``."""
    acl = (DEPLOY / "moments.acl").read_text().replace("STORE_ID", STORE)
    (folder / "moments.acl").write_text(acl + "".join(acl_block(d) for d in DEVICES))
    write_passwords(folder / "moments.passwd", ("gateway", "phone-relay", *DEVICES))
    (folder / "db").mkdir()
    conf = rewrite(
        (DEPLOY / "moments.conf").read_text(),
        {
            "password_file /etc/mosquitto/moments.passwd": f"password_file {folder}/moments.passwd",
            "acl_file /etc/mosquitto/moments.acl": f"acl_file {folder}/moments.acl",
            "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
            "persistence_location /var/lib/mosquitto/": f"persistence_location {folder}/db/",
            "include_dir /etc/mosquitto/conf.d": f"include_dir {include}",
        },
    )
    # Mosquitto started as root drops to the `mosquitto` user, which cannot read the test's
    # folder; this keeps it as whoever runs the test (and is ignored when that is not root).
    conf += f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    path = folder / "mosquitto.conf"
    path.write_text(conf)
    return path


def tls_listener(include: Path, tls: Tls, tls_port: int) -> None:
    """The shipped tls-listener.conf, as the install step puts it: conf.d/00-moments-tls.conf."""
    listener = rewrite(
        (DEPLOY / "tls-listener.conf").read_text(),
        {
            "listener 8883": f"listener {tls_port} 127.0.0.1",
            "certfile /etc/mosquitto/certs/broker.crt": f"certfile {tls.cert}",
            "keyfile /etc/mosquitto/certs/broker.key": f"keyfile {tls.key}",
        },
    )
    (include / "00-moments-tls.conf").write_text(listener)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The store broker as shipped, with the TLS listener and without the bridge, for the whole
    module."""
    folder = tmp_path_factory.mktemp("store")
    tls = make_tls(folder / "tls")
    include = folder / "conf.d"
    include.mkdir()
    port, tls_port = free_port(), free_port()
    tls_listener(include, tls, tls_port)
    conf = store_config(folder, port, include)
    broker = Mosquitto(conf, folder / "mosquitto.log", (port, tls_port))
    broker.start()
    try:
        yield Store(broker, port, tls_port, tls)
    finally:
        broker.stop()


# --- MQTT 5 clients ----------------------------------------------------------------------


@dataclass
class Client:
    """A paho MQTT 5 client on its own thread, recording the broker's answers."""

    username: str | None
    password: str = PASSWORD
    connack: queue.Queue[ReasonCode] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[ReasonCode]] = field(default_factory=queue.Queue)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    published: threading.Condition = field(default_factory=threading.Condition)
    messages: queue.Queue[paho.MQTTMessage] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.paho = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-{self.username}-{free_port()}",
            protocol=paho.MQTTv5,
        )
        if self.username is not None:
            self.paho.username_pw_set(self.username, self.password)
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_publish = self._on_publish
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)

    def _on_connect(
        self, _c: paho.Client, _u: object, _f: object, code: ReasonCode, _p: Properties | None
    ) -> None:
        if code.is_failure:
            # Refused: stop paho's thread now rather than have it wait to reconnect.
            self.paho.disconnect()
        self.connack.put(code)

    def _on_subscribe(
        self, _c: paho.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self.subacks.put(codes)

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, code: ReasonCode, _p: object
    ) -> None:
        with self.published:
            self.pubacks[mid] = code
            self.published.notify_all()

    def connect(self, port: int, tls: Tls | None = None) -> ReasonCode:
        if tls is not None:
            self.paho.tls_set(ca_certs=str(tls.ca))
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        return self.connack.get(timeout=5)

    def subscribe(self, topic: str) -> int:
        result, _mid = self.paho.subscribe(topic, qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        (code,) = self.subacks.get(timeout=5)
        return code.value

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        with self.published:
            assert self.published.wait_for(lambda: info.mid in self.pubacks, timeout=5)
            return self.pubacks[info.mid].value

    def next_message(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def assert_quiet(self) -> None:
        """Nothing forwarded live for ``QUIET_S``. Retained messages of earlier tests, delivered
        when this client subscribed, carry the retain flag; a live one never does."""
        deadline = time.monotonic() + QUIET_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                return
            assert message.retain, f"unexpected message on {message.topic}"

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


Login = Callable[[str], Client]


@pytest.fixture
def login(store: Store, clients: list[Client]) -> Login:
    """Connects as a user of the store (password ``PASSWORD``), over 127.0.0.1."""

    def connect(username: str) -> Client:
        client = Client(username)
        code = client.connect(store.port)
        assert code.value == 0, f"{username} refused: {code}"
        clients.append(client)
        return client

    return connect


# --- The store broker --------------------------------------------------------------------


def test_the_shipped_configuration_runs(store: Store) -> None:
    time.sleep(0.2)
    assert store.broker.alive(), store.broker.logs()
    assert "Error" not in store.broker.logs()


def test_mosquitto_reads_nothing_in_the_gateways_folder() -> None:
    """/etc/moments is root:moments 0750: the `mosquitto` user reads its own copies in
    /etc/mosquitto/certs. The 8883 listener is only in its own file (installed once its
    certificate and key are there), and moments.conf includes the folder that holds it."""
    for name in ("moments.conf", "tls-listener.conf", "bridge-hq.conf"):
        settings = [
            line
            for line in (DEPLOY / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        assert not any("/etc/moments" in line for line in settings), name
        files = [line.split()[1] for line in settings if line.split()[0].endswith("file")]
        tls_files = [f for f in files if f.endswith((".crt", ".key"))]
        assert all(f.startswith("/etc/mosquitto/certs/") for f in tls_files), name
    conf = (DEPLOY / "moments.conf").read_text().splitlines()
    assert not any(re.match(r"\s*listener\s+8883", line) for line in conf)
    assert not any(line.startswith(("certfile", "keyfile", "cafile")) for line in conf)
    assert conf.count("include_dir /etc/mosquitto/conf.d") == 1


def test_without_tls_files_the_shipped_configuration_starts_on_loopback(
    tmp_path: Path, clients: list[Client]
) -> None:
    """A first install without --broker-cert/--broker-key: moments.conf alone (an empty
    conf.d) must start, with its logins and ACL, else Mosquitto is down after the reboot."""
    include = tmp_path / "conf.d"
    include.mkdir()
    port = free_port()
    broker = Mosquitto(store_config(tmp_path, port, include), tmp_path / "mosquitto.log", (port,))
    broker.start()
    try:
        time.sleep(0.2)
        assert broker.alive(), broker.logs()
        assert "Error" not in broker.logs()
        assert broker.logs().count("listen socket on port") == 1, broker.logs()
        gateway, shelf = Client("gateway"), Client("shelf-3")
        clients.extend((gateway, shelf))
        assert gateway.connect(port).value == SUCCESS
        assert shelf.connect(port).value == SUCCESS
        assert gateway.subscribe(f"{PREFIX}/shelves/+/stock") == 1
        stock = b'{"v": 1, "shelf": "shelf-3", "items": []}'
        assert shelf.publish(f"{PREFIX}/shelves/shelf-3/stock", stock) == SUCCESS
        assert gateway.next_message().payload == stock
        assert shelf.publish(f"{PREFIX}/gateway/status", b"{}") == NOT_AUTHORIZED
        anonymous = Client(None)
        clients.append(anonymous)
        assert anonymous.connect(port).value == NOT_AUTHORIZED
    finally:
        for client in clients:
            client.close()
        broker.stop()


def test_a_shelf_over_tls_reaches_the_gateway(
    store: Store, login: Login, clients: list[Client]
) -> None:
    gateway = login("gateway")
    assert gateway.subscribe(f"{PREFIX}/shelves/+/stock") == 1
    shelf = Client("shelf-3")
    assert shelf.connect(store.tls_port, tls=store.tls).value == 0
    clients.append(shelf)

    stock = b'{"v": 1, "shelf": "shelf-3", "items": [{"sku": "sku-1", "qty": 0}]}'
    assert shelf.publish(f"{PREFIX}/shelves/shelf-3/stock", stock, retain=True) == 0

    message = gateway.next_message()
    assert (message.topic, message.payload) == (f"{PREFIX}/shelves/shelf-3/stock", stock)


def test_a_shelf_publishes_nothing_but_its_own_stock(login: Login) -> None:
    gateway = login("gateway")
    assert gateway.subscribe(f"{PREFIX}/#") == 1
    shelf = login("shelf-3")

    for topic in (
        f"{PREFIX}/staff/alerts",
        f"{PREFIX}/shelves/shelf-other/stock",
        f"{PREFIX}/nodes/shelf-3/adv",
        f"{PREFIX}/phone/messages",
        f"{PREFIX}/gateway/status",
    ):
        assert shelf.publish(topic, b'{"v": 1, "alerts": []}') == NOT_AUTHORIZED, topic
    gateway.assert_quiet()


def test_staff_read_the_gateways_alerts_and_a_shelf_does_not(login: Login) -> None:
    gateway = login("gateway")
    alerts = b'{"v": 1, "alerts": [{"alert_id": "3f9a1c07b2de", "name": "Alice"}]}'
    # Accepted; MQTT 5 says so with "no matching subscribers" when no one listens yet.
    code = gateway.publish(f"{PREFIX}/staff/alerts", alerts, retain=True)
    assert code in (SUCCESS, NO_MATCHING_SUBSCRIBERS)

    staff = login("staff-ann")
    assert staff.subscribe(f"{PREFIX}/staff/alerts") == 1
    message = staff.next_message()
    assert (message.payload, message.retain) == (alerts, True)

    shelf = login("shelf-3")
    assert shelf.subscribe(f"{PREFIX}/staff/alerts") in (1, NOT_AUTHORIZED)
    shelf.assert_quiet()


def test_staff_acknowledge_on_their_own_topic_only(login: Login) -> None:
    gateway = login("gateway")
    assert gateway.subscribe(f"{PREFIX}/staff/acks/+") == 1
    staff = login("staff-ann")

    assert staff.publish(f"{PREFIX}/staff/acks/staff-ann", b'{"v": 1}') == 0
    assert gateway.next_message().topic == f"{PREFIX}/staff/acks/staff-ann"
    assert staff.publish(f"{PREFIX}/staff/acks/staff-bob", b'{"v": 1}') == NOT_AUTHORIZED
    assert staff.publish(f"{PREFIX}/staff/alerts", b'{"v": 1, "alerts": []}') == NOT_AUTHORIZED
    gateway.assert_quiet()


def test_a_wrong_password_is_refused(store: Store, clients: list[Client]) -> None:
    client = Client("shelf-3", password="wrong")
    clients.append(client)
    # Mosquitto 2.0.11 answers 135 "Not authorized", not 134 "Bad user name or password".
    assert client.connect(store.port).value in (BAD_CREDENTIALS, NOT_AUTHORIZED)


def test_anonymous_is_refused(store: Store, clients: list[Client]) -> None:
    client = Client(None)
    clients.append(client)
    assert client.connect(store.port).value == NOT_AUTHORIZED


# --- The HQ bridge -----------------------------------------------------------------------


def with_bridge(folder: Path, tls: Tls, hq_port: int) -> Mosquitto:
    """The store broker as shipped with the TLS listener's 00-moments-tls.conf and
    bridge-hq.conf in its include folder (read in that order), the bridge pointed at
    127.0.0.1:``hq_port`` (the certificate names 127.0.0.1, so the hostname check stays on)."""
    include = folder / "conf.d"
    include.mkdir()
    bridge = rewrite(
        (DEPLOY / "bridge-hq.conf").read_text().replace("STORE_ID", STORE),
        {
            "address hq.example.net:8883": f"address 127.0.0.1:{hq_port}",
            "bridge_cafile /etc/mosquitto/certs/hq-ca.crt": f"bridge_cafile {tls.ca}",
            "bridge_certfile /etc/mosquitto/certs/store.crt": f"bridge_certfile {tls.cert}",
            "bridge_keyfile /etc/mosquitto/certs/store.key": f"bridge_keyfile {tls.key}",
        },
    )
    (include / "bridge-hq.conf").write_text(bridge)
    port, tls_port = free_port(), free_port()
    tls_listener(include, tls, tls_port)
    # Mosquitto reads include_dir alphabetically: the listener before the bridge's connection
    # block, as mosquitto.conf(5) wants.
    assert sorted(path.name for path in include.iterdir()) == [
        "00-moments-tls.conf",
        "bridge-hq.conf",
    ]
    conf = store_config(folder, port, include)
    return Mosquitto(conf, folder / "mosquitto.log", (port, tls_port))


def test_the_bridge_starts_and_keeps_retrying(tmp_path: Path) -> None:
    """With HQ unreachable (no one listens on its port) Mosquitto accepts the bridge, stays up
    and retries with backoff."""
    nobody = free_port()
    broker = with_bridge(tmp_path, make_tls(tmp_path / "tls"), nobody)
    broker.start()
    try:
        time.sleep(1.0)
        assert broker.alive(), broker.logs()
        assert f"Connecting bridge (step 1) hq (127.0.0.1:{nobody})" in broker.logs()
    finally:
        broker.stop()


def test_the_bridge_forwards_fleet_monitoring_and_no_shopper_data(
    tmp_path: Path, clients: list[Client]
) -> None:
    tls = make_tls(tmp_path / "tls")
    hq_folder = tmp_path / "hq"
    hq_folder.mkdir()
    hq_tls, hq_plain = free_port(), free_port()
    (hq_folder / "hq.conf").write_text(
        f"listener {hq_tls} 127.0.0.1\ncafile {tls.ca}\ncertfile {tls.cert}\n"
        f"keyfile {tls.key}\nrequire_certificate true\n"
        f"listener {hq_plain} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    hq = Mosquitto(hq_folder / "hq.conf", hq_folder / "mosquitto.log", (hq_tls, hq_plain))
    hq.start()
    store_folder = tmp_path / "store"
    store_folder.mkdir()
    broker = with_bridge(store_folder, tls, hq_tls)
    try:
        watcher = Client(None)
        clients.append(watcher)
        assert watcher.connect(hq_plain).value == SUCCESS
        assert watcher.subscribe("#") == 1
        broker.start()
        gateway, node = Client("gateway"), Client("node-7")
        clients.extend((gateway, node))
        assert gateway.connect(broker.ports[0]).value == SUCCESS
        assert node.connect(broker.ports[0]).value == SUCCESS

        status = b'{"v": 1, "state": "online", "version": "0.1.0"}'
        gateway.publish(f"{PREFIX}/gateway/status", status, retain=True)
        gateway.publish(f"{PREFIX}/staff/alerts", b'{"v": 1, "alerts": []}', retain=True)
        gateway.publish(f"{PREFIX}/phone/messages", b'{"v": 1, "shopper": "app-1"}')
        node.publish(f"{PREFIX}/nodes/node-7/telemetry", b'{"v": 1, "uptime_s": 5}')
        node.publish(f"{PREFIX}/nodes/node-7/adv", b'{"v": 1, "adv": []}')

        # Whatever reaches HQ within the wait: the two fleet topics (the status may come twice,
        # live and again as retained when the bridge subscribes), never the shopper data.
        seen: dict[str, bytes] = {}
        while True:
            try:
                message = watcher.messages.get(timeout=QUIET_S if len(seen) == 2 else 5.0)
            except queue.Empty:
                break
            if message.topic.startswith("moments/"):
                seen[message.topic] = bytes(message.payload)
        assert seen == {
            f"{PREFIX}/gateway/status": status,
            f"{PREFIX}/nodes/node-7/telemetry": b'{"v": 1, "uptime_s": 5}',
        }
    finally:
        for client in clients:
            client.close()
        broker.stop()
        hq.stop()
