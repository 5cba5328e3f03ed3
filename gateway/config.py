"""One typed configuration, read once at start-up, failing fast.

Sources, later ones winning:

1. built-in defaults (the ``Config`` structs below);
2. a TOML file, when one is given (``moments run --config FILE`` or ``MOMENTS_CONFIG``);
3. environment variables: ``MOMENTS_<KEY>`` for a top-level key (``MOMENTS_DATA_DIR``) and
   ``MOMENTS_<SECTION>__<KEY>`` for a key in a table (``MOMENTS_BROKER__PORT=1884``). A value
   is text, converted to the key's type (``1884`` to a number for a port, ``true`` to a boolean,
   but ``2024`` stays text for a password).

Any problem raises :class:`~gateway.errors.ConfigError` naming the source, the key, the value
and what was expected. ``deploy/moments.example.toml`` documents every key line by line.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

from gateway.errors import ConfigError

__all__ = [
    "BeaconConfig",
    "BrokerConfig",
    "Config",
    "HqConfig",
    "HttpConfig",
    "IngestConfig",
    "KioskConfig",
    "LogConfig",
    "Point",
    "PresenceConfig",
    "RadioConfig",
    "StaffConfig",
    "StoreConfig",
    "TrustedKeyConfig",
    "ZoneConfig",
    "load_config",
]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Rssi = Annotated[int, msgspec.Meta(ge=-127, le=20)]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# A floor position in metres, ``[x, y]`` (the staff dashboard's map). The bounds also refuse
# TOML's ``nan`` and ``inf``: no comparison holds for them.
Metres = Annotated[float, msgspec.Meta(ge=-100_000, le=100_000)]
Point = tuple[Metres, Metres]

_ENV_PREFIX = "MOMENTS_"


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class HttpConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or
    # networks): the client's address (registration limits) and whether it came over HTTPS
    # (cookies marked Secure) come from them. Any other peer's headers are ignored.
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    # /readyz answers ready with no sensing source up (broker down, radio off or failed),
    # saying so under "degraded": for a store that chose to serve kiosks and the app without
    # presence for a while (maintenance of the broker or the scanners).
    ready_without_sensing: bool = False


class ApiConfig(_Section, frozen=True):
    """The shopper app, device and admin API (``/v1``)."""

    shopper_token_days: Annotated[float, msgspec.Meta(gt=0, le=365)] = 30.0
    device_token_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 365.0
    rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 5.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 30
    register_per_min: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    notice_version: str = "2026-11"
    max_sightings: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    phone_queue: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    visit_gap_min: Annotated[float, msgspec.Meta(gt=0, le=1440)] = 30.0
    utc_offset_h: Annotated[float, msgspec.Meta(ge=-14, le=14)] = 0.0
    kiosk_pages_need_token: bool = True


class EngineConfig(_Section, frozen=True):
    """The decision engine."""

    social_proof_floor: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 5
    attribution_days: Annotated[float, msgspec.Meta(gt=0, le=90)] = 3.0


class BrokerConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str = ""
    username: str = ""
    password: str = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    connect_timeout_s: Positive = 5.0
    backoff_min_s: Positive = 0.5
    backoff_max_s: Positive = 30.0
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 3600
    topic_prefix: Annotated[str, msgspec.Meta(pattern=r"^[^#+]+[^/#+]$")] = "moments/v1"


class TrustedKeyConfig(_Section, frozen=True):
    id: Ident
    public_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class HqConfig(_Section, frozen=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8883
    tls: bool = True
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = ""
    client_id: str = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 60
    connect_timeout_s: Positive = 10.0
    backoff_min_s: Positive = 1.0
    backoff_max_s: Positive = 120.0
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 7 * 86_400
    trusted_keys: list[TrustedKeyConfig] = msgspec.field(default_factory=list)
    outbox_budget_mb: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 256
    perishable_expiry_s: Annotated[int, msgspec.Meta(ge=1)] = 3600
    delete_on: Literal["receipt", "puback"] = "receipt"
    receipt_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 60.0
    tombstone_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


class StoreConfig(_Section, frozen=True):
    map_size_mb: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 1024
    commit_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class IngestConfig(_Section, frozen=True):
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=256, le=1 << 20)] = 65_536
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024


class PresenceConfig(_Section, frozen=True):
    enter_rssi_dbm: Rssi = -80
    exit_rssi_dbm: Rssi = -90
    leave_after_s: Positive = 8.0
    switch_margin_db: Annotated[float, msgspec.Meta(ge=0, le=40)] = 1.0
    switch_evidence_db_s: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 16.0
    window_s: Positive = 5.0
    time_constant_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 1.5
    enter_confirm_readings: Annotated[int, msgspec.Meta(ge=1, le=32)] = 3
    enter_confirm_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    leave_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    dwell_steps_s: list[Annotated[float, msgspec.Meta(gt=0)]] = msgspec.field(
        default_factory=lambda: [10.0, 30.0, 60.0]
    )
    tx_at_1m_dbm: Rssi = -59
    path_loss_exponent: Annotated[float, msgspec.Meta(gt=1, le=6)] = 2.2
    near_m: Positive = 1.5
    near_exit_m: Positive = 2.5
    scanner_offsets_db: dict[str, Annotated[float, msgspec.Meta(ge=-30, le=30)]] = msgspec.field(
        default_factory=dict
    )


class RadioConfig(_Section, frozen=True):
    enabled: bool = True
    zone: str = ""
    adapter: Annotated[str, msgspec.Meta(pattern=r"^hci\d{1,2}$")] = "hci0"
    watchdog_s: Positive = 30.0
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024


class ZoneConfig(_Section, frozen=True):
    id: Ident
    name: str = ""
    nodes: list[Ident] = msgspec.field(default_factory=list)
    # A shopper with staff_assist in the zone this long since entering raises a staff alert;
    # 0: no dwell alerts in this zone.
    help_after_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    # Optional geometry for the staff dashboard's map; a store without it gets a list.
    # ``polygon``: the zone's outline, at least 3 points. ``node_at``: where this zone's
    # scanner nodes hang, by node id (kept with the zone that lists the nodes).
    polygon: list[Point] = msgspec.field(default_factory=list)
    node_at: dict[str, Point] = msgspec.field(default_factory=dict)


class StaffConfig(_Section, frozen=True):
    """Staff alerts (``gateway.helpdesk``)."""

    escalate_after_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0
    away_after_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0


class KioskConfig(_Section, frozen=True):
    id: Ident
    zone: Ident
    name: str = ""
    scanner: str = ""
    at: Point | None = None  # on the staff dashboard's map


class BeaconConfig(_Section, frozen=True):
    id: Ident
    zone: Ident
    identity: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(ibeacon:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            r":\d{1,5}:\d{1,5}|eddystone_uid:[0-9a-f]{20}:[0-9a-f]{12})$"
        ),
    ]
    address: Annotated[str, msgspec.Meta(pattern=r"^(([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})?$")] = ""
    silent_after_s: Positive = 60.0
    low_battery_mv: Annotated[int, msgspec.Meta(ge=0, le=5000)] = 2600
    at: Point | None = None  # on the staff dashboard's map


class Config(_Section, frozen=True):
    store_id: Ident = "store-1"
    data_dir: str = "./var"
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    hq: HqConfig = msgspec.field(default_factory=HqConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    presence: PresenceConfig = msgspec.field(default_factory=PresenceConfig)
    radio: RadioConfig = msgspec.field(default_factory=RadioConfig)
    staff: StaffConfig = msgspec.field(default_factory=StaffConfig)
    zones: list[ZoneConfig] = msgspec.field(default_factory=list)
    kiosks: list[KioskConfig] = msgspec.field(default_factory=list)
    beacons: list[BeaconConfig] = msgspec.field(default_factory=list)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"moments-gw-{self.store_id}"

    def help_after_s(self) -> dict[str, float]:
        """The zones with dwell alerts, and after how long."""
        return {zone.id: zone.help_after_s for zone in self.zones if zone.help_after_s > 0}

    def zone_of_node(self) -> dict[str, str]:
        return {node: zone.id for zone in self.zones for node in zone.nodes}


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the file (if any), apply environment overrides, validate, and return the config."""
    env = os.environ if environ is None else environ
    if path is None and env.get("MOMENTS_CONFIG"):
        path = env["MOMENTS_CONFIG"]
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = _read_toml(Path(path))
    overrides = _env_overrides(env)
    for (section, key), value in overrides.items():
        if section is None:
            raw[key] = value
        else:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError("environment", section, table, "a table")
            table[key] = value
    if overrides:
        source = f"{source} + environment" if path is not None else "environment"
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _translate(source, raw, exc) from exc
    _check_cross_references(source, config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "(file)", str(path), "an existing TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(file)", str(exc), "valid TOML") from exc
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror, "a readable file") from exc


def _env_overrides(env: Mapping[str, str]) -> dict[tuple[str | None, str], Any]:
    fields = set(Config.__struct_fields__)
    out: dict[tuple[str | None, str], Any] = {}
    for name, text in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "MOMENTS_CONFIG":
            continue
        rest = name[len(_ENV_PREFIX) :].lower()
        section, sep, key = rest.partition("__")
        if sep and section in fields:
            out[(section, key)] = text
        elif not sep and rest in fields:
            out[(None, rest)] = text
    return out


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _translate(source: str, raw: Mapping[str, Any], exc: msgspec.ValidationError) -> ConfigError:
    """Turn msgspec's message into one that names the key, the value and the expectation."""
    message = str(exc)
    match = _PATH.search(message)
    path = match.group("path") if match else ""
    expected = message[: match.start()] if match else message
    key = path.lstrip(".") or "(top level)"
    if expected.startswith("Object contains unknown field"):
        unknown = expected.split("`")[1]
        key = f"{key}.{unknown}" if path else unknown
        return ConfigError(source, key, _lookup(raw, path + "." + unknown), "a known key")
    return ConfigError(source, key, _lookup(raw, path), _expectation(expected, path))


def _expectation(message: str, path: str) -> str:
    """Rephrase msgspec's ``Expected `int` <= 65535, got `str``` as an expectation."""
    if message.startswith("Invalid enum value"):
        options = _literal_options(path)
        return f"one of {options}" if options else "one of the allowed values"
    text = message.removeprefix("Expected ").split(", got ")[0]
    text = text.replace("`int`", "an integer").replace("`float`", "a number")
    text = text.replace("`str`", "text").replace("`bool`", "true or false")
    text = text.replace("`array`", "an array").replace("`object`", "a table")
    return text.replace("`", "")


def _literal_options(path: str) -> list[str]:
    hint: Any = Config
    for name, index in _STEP.findall(path):
        if index:
            args = get_args(hint)
            hint = args[0] if args else None
        else:
            hints = get_type_hints(hint, include_extras=True) if isinstance(hint, type) else {}
            hint = hints.get(name)
        while get_origin(hint) is Annotated:
            hint = get_args(hint)[0]
    return [str(option) for option in get_args(hint)] if get_origin(hint) is Literal else []


_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")


def _lookup(raw: Mapping[str, Any], path: str) -> object:
    node: object = raw
    for name, index in _STEP.findall(path):
        if name and isinstance(node, Mapping):
            node = node.get(name)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return node


def _check_cross_references(source: str, config: Config) -> None:
    if config.presence.exit_rssi_dbm >= config.presence.enter_rssi_dbm:
        raise ConfigError(
            source,
            "presence.exit_rssi_dbm",
            config.presence.exit_rssi_dbm,
            f"a value below presence.enter_rssi_dbm ({config.presence.enter_rssi_dbm})",
        )
    p = config.presence
    if p.near_exit_m < p.near_m:
        raise ConfigError(
            source, "presence.near_exit_m", p.near_exit_m, f"at least presence.near_m ({p.near_m})"
        )
    if any(b <= a for a, b in pairwise(p.dwell_steps_s)):
        raise ConfigError(
            source, "presence.dwell_steps_s", p.dwell_steps_s, "increasing numbers of seconds"
        )
    if config.hq.enabled and not config.hq.trusted_keys:
        raise ConfigError(
            source, "hq.trusted_keys", [], "at least one HQ signing key when hq.enabled"
        )
    if (
        config.hq.enabled
        and config.hq.tls
        and bool(config.hq.cert_file) != bool(config.hq.key_file)
    ):
        raise ConfigError(
            source,
            "hq.cert_file",
            config.hq.cert_file,
            "a client certificate and its key, or neither",
        )
    for i, proxy in enumerate(config.http.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=True)  # as the server reads it
        except ValueError:
            raise ConfigError(
                source,
                f"http.trusted_proxies[{i}]",
                proxy,
                "an IP address, or a network with its host bits zero (192.168.1.0/24)",
            ) from None
    if config.broker.backoff_max_s < config.broker.backoff_min_s:
        raise ConfigError(
            source,
            "broker.backoff_max_s",
            config.broker.backoff_max_s,
            f"at least broker.backoff_min_s ({config.broker.backoff_min_s})",
        )
    zones: set[str] = set()
    nodes: set[str] = set()
    for i, zone in enumerate(config.zones):
        if zone.id in zones:
            raise ConfigError(source, f"zones[{i}].id", zone.id, "a zone id not used before")
        zones.add(zone.id)
        for node in zone.nodes:
            if node in nodes:
                raise ConfigError(
                    source, f"zones[{i}].nodes", node, "a scanner node listed in one zone only"
                )
            nodes.add(node)
        _check_geometry(source, i, zone)
    if config.radio.zone and config.radio.zone not in zones:
        raise ConfigError(
            source, "radio.zone", config.radio.zone, f"one of the zones {sorted(zones)}"
        )
    kiosks: set[str] = set()
    for i, kiosk in enumerate(config.kiosks):
        if kiosk.id in kiosks:
            raise ConfigError(source, f"kiosks[{i}].id", kiosk.id, "a kiosk id not used before")
        kiosks.add(kiosk.id)
        if kiosk.scanner and kiosk.scanner not in nodes:
            raise ConfigError(
                source, f"kiosks[{i}].scanner", kiosk.scanner, "a scanner node listed in a zone"
            )
        if kiosk.zone not in zones:
            raise ConfigError(
                source, f"kiosks[{i}].zone", kiosk.zone, f"one of the zones {sorted(zones)}"
            )
    seen: dict[str, set[str]] = {"id": set(), "identity": set(), "address": set()}
    for i, beacon in enumerate(config.beacons):
        if beacon.zone not in zones:
            raise ConfigError(
                source, f"beacons[{i}].zone", beacon.zone, f"one of the zones {sorted(zones)}"
            )
        for field in ("id", "identity", "address"):
            value = getattr(beacon, field).lower()
            if value and value in seen[field]:
                raise ConfigError(
                    source, f"beacons[{i}].{field}", value, f"a beacon {field} not used before"
                )
            seen[field].add(value)


def _check_geometry(source: str, i: int, zone: ZoneConfig) -> None:
    """A zone's map outline and node positions: a real polygon, for its own nodes."""
    if zone.polygon and len(zone.polygon) < 3:
        raise ConfigError(
            source, f"zones[{i}].polygon", zone.polygon, "at least 3 [x, y] points, or none"
        )
    points = [*zone.polygon, *zone.node_at.values()]
    if not all(math.isfinite(v) for point in points for v in point):
        raise ConfigError(source, f"zones[{i}].polygon", zone.polygon, "finite numbers (metres)")
    for node in zone.node_at:
        if node not in zone.nodes:
            raise ConfigError(
                source, f"zones[{i}].node_at", node, f"one of this zone's nodes {zone.nodes}"
            )
