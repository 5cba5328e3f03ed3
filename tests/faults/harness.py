"""Real processes for the fault tests, and a look at what they left on disk.

* :class:`DurableBroker`: a Mosquitto that keeps sessions and queued messages in a folder across
  a restart, as HQ's broker does; ``kill()`` is a SIGKILL, ``stop()`` a clean SIGTERM.
* :class:`GatewayProcess`: ``python -m gateway.cli run -c CONFIG`` with the example store's
  zones and kiosks and ``[hq]`` pointed at the HQ broker; probed through ``/healthz`` only.
* :class:`HqServe`: ``python -m gateway.hq serve`` with a fixed client id, so its session and
  the events queued for it survive a restart of it (after a restart of Mosquitto 2.0.11 the
  queued events survive too, but not its ``$share`` subscription: it subscribes again when it
  connects).
* :class:`HqDesk`: HQ's ledger and signing key in the test's own process, for publishing
  quickly and for issuing messages that are "lost in transit" (logged, never sent).
* :func:`read_store`: the gateway's LMDB opened read-only once the gateway has stopped, every
  database walked page by page (a damaged page raises), the records decoded.

Every wait has a timeout; every process is stopped by its owner in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import struct
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import lmdb

from gateway.hq.keys import KeyDir
from gateway.hq.ledger import Issued, Ledger
from gateway.hq.publish import PublishRequest, PublishSummary, publish_to_broker
from gateway.hq.records import Op
from gateway.store import Database, ProfileRecord, Writer, codec
from gateway.store.database import DATABASES
from gateway.store.records import SyncState
from gateway.sync.outbox import enqueue_op
from tests.support.broker import Broker, mosquitto_binary, wait_for_port

__all__ = [
    "STORE",
    "DurableBroker",
    "GatewayProcess",
    "HqDesk",
    "HqServe",
    "StoreView",
    "enqueue_events",
    "new_hq_key",
    "read_received",
    "read_store",
    "seed_store",
    "wait_until",
    "write_gateway_config",
]

REPO: Final = Path(__file__).resolve().parents[2]
EXAMPLE: Final = REPO / "deploy" / "moments.example.toml"
STORE: Final = "store-1"
RECEIPT_TIMEOUT_S: Final = 3.0  # the gateway sends again after this long without a receipt
_U64: Final = struct.Struct(">Q")

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None or False; fail after
    ``timeout`` seconds naming ``what`` (and ``detail()``, e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s{extra}")
        time.sleep(interval)


def _end(process: subprocess.Popen[bytes], *, grace: float) -> int:
    """Terminate (a paused process is continued first), then kill: the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)


def _sigkill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def _signal(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    assert process is not None and process.poll() is None, "not running"
    process.send_signal(sig)


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path.name}: nothing logged)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# ----- brokers -----


class DurableBroker(Broker):
    """HQ's broker: persistence on in its folder, no limit on queued messages (HQ's consumer
    may be away for a while), running as the test's user so it can write its folder."""

    def start(self) -> None:
        conf = self.folder / "mosquitto.conf"
        user = pwd.getpwuid(os.getuid()).pw_name
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {user}\n"
            f"persistence true\npersistence_location {self.folder}/\n"
            "max_queued_messages 0\nlog_type error\nlog_type warning\n"
        )
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log
            )
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL: whatever was not saved yet is gone."""
        if self.process is not None:
            _sigkill(self.process)
            self.process = None

    def restart(self) -> None:
        """Start again on the same port and folder (what it saved is loaded)."""
        self.start()


# ----- the gateway -----


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _toml(document: Mapping[str, Any]) -> str:
    """TOML for a configuration: plain keys, tables of plain keys, arrays of tables."""
    top = [f"{k} = {_toml_value(v)}" for k, v in document.items() if not _is_table(v)]
    out = ["\n".join(top)]
    for key, value in document.items():
        if isinstance(value, dict):
            out.append(
                f"[{key}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in value.items())
            )
        elif _is_table(value):
            for item in value:
                out.append(
                    f"[[{key}]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in item.items())
                )
    return "\n\n".join(out) + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def write_gateway_config(
    path: Path,
    *,
    store_port: int,
    hq_port: int,
    http_port: int,
    trusted_key: Mapping[str, str],
) -> Path:
    """The example store (zones, kiosks, beacons) with HQ sync on, over plain MQTT, with short
    backoffs so that restarts reconnect at once."""
    with EXAMPLE.open("rb") as fh:
        example = tomllib.load(fh)
    document: dict[str, Any] = {
        "store_id": STORE,
        "http": {"host": "127.0.0.1", "port": http_port},
        "broker": {
            "host": "127.0.0.1",
            "port": store_port,
            "backoff_min_s": 0.1,
            "backoff_max_s": 0.5,
        },
        "hq": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": hq_port,
            "tls": False,
            "connect_timeout_s": 2.0,
            "backoff_min_s": 0.1,
            "backoff_max_s": 0.5,
            "receipt_timeout_s": RECEIPT_TIMEOUT_S,
            "trusted_keys": [dict(trusted_key)],
        },
        # The fault tests read /kiosk/<id>/offer without a token: sync is what they test.
        "api": {"kiosk_pages_need_token": False},
        "log": {"level": "info", "format": "json"},
        "zones": example["zones"],
        "kiosks": example["kiosks"],
        "beacons": example["beacons"],
    }
    path.write_text(_toml(document))
    return path


@dataclass
class GatewayProcess:
    """``moments run`` as a child process; restarted, killed and probed by the tests."""

    config: Path
    data_dir: Path
    http_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store"

    def start(self) -> None:
        assert self.process is None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
        env.update(self.env)
        env["MOMENTS_DATA_DIR"] = str(self.data_dir)
        # No system bus here: the radio is reported unavailable, quietly and repeatably.
        env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={self.data_dir.parent / 'no-system-bus'}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)],
                env=env,
                stdout=log,
                stderr=log,
                cwd=self.data_dir.parent,
            )

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs."""
        assert self.process is not None, "not running"
        _sigkill(self.process)
        self.process = None
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 15 s): the exit status."""
        if self.process is None:
            return 0
        try:
            return _end(self.process, grace=15)
        finally:
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: frozen with whatever it had in flight."""
        _signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        _signal(self.process, signal.SIGCONT)

    def health(self) -> dict[str, Any] | None:
        """``/healthz``, or None while nothing answers."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}\n{self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=2
            ) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_health(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            health = self.health()
            return health if health is not None and predicate(health) else None

        return wait_until(probe, timeout=timeout, what=what, detail=self.tail)

    def wait_hq_up(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_health(
            lambda h: h["components"]["hq"]["state"] == "up",
            timeout=timeout,
            what="the gateway's HQ link up",
        )

    def offer_status(self, kiosk: str = "kiosk-1") -> int:
        url = f"http://127.0.0.1:{self.http_port}/kiosk/{kiosk}/offer"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def metric(self, name: str, labels: Mapping[str, str]) -> float:
        """One sample of ``/metrics`` (0 when absent)."""
        return sum(v for found, v in self._samples(name) if found == dict(labels))

    def has_metric(self, name: str, labels: Mapping[str, str]) -> bool:
        """Whether ``/metrics`` has that sample at all."""
        return any(found == dict(labels) for found, _v in self._samples(name))

    def metric_total(self, name: str) -> float:
        """The sum of every sample of ``name`` (0 when absent)."""
        return sum(v for _labels, v in self._samples(name))

    def _samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: list[tuple[dict[str, str], float]] = []
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            inside, _, value = line[len(name) + 1 :].rpartition("} ")
            pairs = (pair.split("=", 1) for pair in inside.split(","))
            out.append(({k: v.strip('"') for k, v in pairs}, float(value)))
        return out

    def log_lines(self) -> list[dict[str, Any]]:
        return _json_lines(self.log_path)

    def tail(self) -> str:
        return f"--- gateway log (tail) ---\n{_tail(self.log_path)}"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a SIGKILL
    return out


# ----- HQ -----


def _hq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.hq", *args]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}


def new_hq_key(folder: Path, key_id: str = "hq-faults") -> dict[str, str]:
    """``moments hq keys new``: ``{"id", "public_key"}`` for the gateway's trusted_keys."""
    done = subprocess.run(
        _hq_command("keys", "new", "--dir", str(folder), "--id", key_id),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return {"id": made["key_id"], "public_key": made["public_key"]}


@dataclass
class HqServe:
    """``moments hq serve`` as a child process with a kept session (``--client-id``)."""

    data: Path
    keys: Path
    broker_port: int
    received: Path
    log_path: Path
    keep: int | None = None
    client_id: str = "hq-faults"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        args = [
            "serve",
            "--data",
            str(self.data),
            "--keys",
            str(self.keys),
            "--broker",
            f"127.0.0.1:{self.broker_port}",
            "--received",
            str(self.received),
            "--client-id",
            self.client_id,
            "--timeout",
            "5",
            "--log-format",
            "json",
        ]
        if self.keep is not None:
            args += ["--keep", str(self.keep)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                _hq_command(*args), env=_clean_env(), stdout=log, stderr=log
            )

    def stop(self) -> int:
        if self.process is None:
            return 0
        try:
            return _end(self.process, grace=15)
        finally:
            self.process = None

    def pause(self) -> None:
        _signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        _signal(self.process, signal.SIGCONT)

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.process is not None, "not running"
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process = None

    def log_lines(self) -> list[dict[str, Any]]:
        return _json_lines(self.log_path)

    def served(self) -> int:
        """How many times it has (re)started serving a broker session."""
        return sum(1 for line in self.log_lines() if line.get("msg") == "serving")

    def wait_serving(self, more_than: int = 0, timeout: float = 20.0) -> int:
        def probe() -> int | None:
            assert self.process is not None and self.process.poll() is None, self.tail()
            n = self.served()
            return n if n > more_than else None

        return wait_until(probe, timeout=timeout, what="HQ serve subscribed", detail=self.tail)

    def resync_answers(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("msg") == "resync answered"]

    def tail(self) -> str:
        return f"--- hq serve log (tail) ---\n{_tail(self.log_path)}"


def read_received(path: Path) -> list[tuple[str, int]]:
    """``(store, seq)`` of each line of HQ's ``--received`` file, in file order."""
    if not path.exists():
        return []
    out: list[tuple[str, int]] = []
    for line in path.read_bytes().splitlines():
        event = json.loads(line)
        out.append((event["store"], event["seq"]))
    return out


@dataclass
class HqDesk:
    """HQ's ledger and current signing key, in this process (the serve process may have the
    same ledger open: LMDB allows several processes)."""

    data: Path
    keys: Path
    broker_port: int
    keep: int = 10_000
    ledger: Ledger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.data, keep=self.keep)

    def open(self) -> None:
        self.ledger.open()

    def close(self) -> None:
        self.ledger.close()

    def publish(
        self,
        stream: str,
        records: Sequence[dict[str, Any]],
        *,
        snapshot: bool = False,
        op: Op = "put",
    ) -> PublishSummary:
        """Issue, log and publish to the store; the broker has acknowledged every message."""
        request = PublishRequest(
            stores=(STORE,), stream=stream, records=tuple(records), snapshot=snapshot, op=op
        )
        summary = asyncio.run(
            publish_to_broker(
                request,
                ledger=self.ledger,
                signer=KeyDir(self.keys).signer(),
                broker=("127.0.0.1", self.broker_port),
                ack_wait_s=10.0,
            )
        )
        assert summary.ok, summary.as_json()
        return summary

    def issue_unsent(self, stream: str, records: Sequence[dict[str, Any]]) -> Issued:
        """Deltas logged at HQ whose messages never reach the store (lost in transit)."""
        signer = KeyDir(self.keys).signer()
        return self.ledger.issue_delta(STORE, stream, "put", records, signer, batch=50)


# ----- the gateway's store, read while the gateway is stopped -----


@dataclass(frozen=True)
class StoreView:
    profiles: dict[str, ProfileRecord]
    offers: frozenset[str]
    sync: dict[str, SyncState]
    outbox: tuple[int, ...]
    outbox_seq: int
    staged: int


def read_store(store_path: Path) -> StoreView:
    """Open the gateway's LMDB read-only (the gateway must be stopped), walk every database
    and decode what the tests look at; LMDB raises on a damaged page or a torn meta page."""
    env = lmdb.open(
        str(store_path),
        readonly=True,
        max_dbs=len(DATABASES) + 4,
        subdir=True,
        create=False,
        readahead=False,
    )
    try:
        with env.begin(buffers=False) as txn:
            handles = {
                name: env.open_db(name.encode(), txn=txn, create=False) for name in DATABASES
            }
            rows = {name: list(txn.cursor(db=handle)) for name, handle in handles.items()}
    finally:
        env.close()
    profiles = {
        key.decode(): codec.decode_as(ProfileRecord, value) for key, value in rows["profiles"]
    }
    offers = frozenset(key.decode() for key, _ in rows["offers"])
    sync: dict[str, SyncState] = {}
    outbox_seq = 0
    for key, value in rows["sync"]:
        if key == b"outbox_seq":
            outbox_seq = _U64.unpack(value)[0]
        elif key != b"outbox_bytes":
            sync[key.decode()] = codec.decode_as(SyncState, value)
    return StoreView(
        profiles=profiles,
        offers=offers,
        sync=sync,
        outbox=tuple(_U64.unpack(key)[0] for key, _ in rows["outbox"]),
        outbox_seq=outbox_seq,
        staged=len(rows["staging"]),
    )


def enqueue_events(store_path: Path, count: int, *, at_ms: int) -> list[int]:
    """Put ``count`` visit events in the outbox of a stopped gateway's store, through the
    store's own writer: the sequences they got."""

    async def run() -> list[int]:
        db = Database(store_path, map_size=1 << 30)
        db.open()
        writer = Writer(db)
        writer.start()
        try:
            futures = [
                writer.submit(
                    enqueue_op(
                        db, STORE, "visit", {"zone": "coffee", "n": i}, at_ms + i, perishable=False
                    )
                )
                for i in range(count)
            ]
            return list(await asyncio.gather(*futures))
        finally:
            await writer.aclose()
            db.close()

    return asyncio.run(run())


def seed_store(store_path: Path, records: Sequence[codec.Record]) -> int:
    """Write records into a stopped gateway's store through the store's own writer."""

    async def run() -> int:
        db = Database(store_path, map_size=1 << 30)
        db.open()
        writer = Writer(db)
        writer.start()
        try:
            return await writer.write(db.put_op(list(records)))
        finally:
            await writer.aclose()
            db.close()

    return asyncio.run(run())
