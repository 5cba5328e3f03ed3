"""``decode_vs_beacontools``: our frame decoder against beacontools' ``parse_packet``.

What is measured: frames decoded per second by :func:`beacons.decode_advertisement` over a
fixed, seeded mix of a few thousand distinct advertisement payloads (iBeacon, Eddystone-UID,
-URL, -TLM and -EID in equal shares, shuffled), against ``beacontools.parse_packet`` over the
very same ``bytes`` objects in the same process.

Input form. beacontools' own scanner (``BeaconScanner.process_packet``) cuts the HCI LE
advertising report down to its advertising data (``pkt[14:-1]``, or ``pkt[29:]`` for extended
reports) and hands that to ``parse_packet``: the AD structures as sent over the air, flags
structure included, which is exactly what ``decode_advertisement`` takes. So both decoders get
identical input; neither has the flags stripped for it. (The scanner's keyword pre-filter that
runs before ``parse_packet`` is not part of the decoder and is not measured.)

What the mix leaves out, and why, so that both decoders must agree on every field:

* AltBeacon: beacontools has no AltBeacon decoder.
* Encrypted TLM: beacontools reads salt and MIC little-endian where we read them big-endian.
* TLM temperatures below 0 °C and the "unsupported" 0x8000: beacontools reads the 8.8 value
  unsigned and has no "unsupported" case. The mix keeps shop-floor temperatures (12-35 °C).
* Reserved URL bytes: we reject them, beacontools passes them through.

Field correspondences checked: beacontools' ``seconds_since_boot`` is the raw 0.1 s counter
(our ``uptime_s`` is that counter / 10), its ``voltage`` is our ``battery_mv``, its EID is bytes
(ours hex). Every payload is decoded by both before any timing, and both must give the fields
the payload was built with; one disagreement stops the benchmark.

Timing: the process is pinned to the first core it may run on (restored afterwards); each
decoder is warmed up and calibrated so that one run (several passes over the mix) lasts about
``run_s``; then runs alternate ours, theirs, ours, theirs, ... with the garbage collector paused
inside each run (collected before it), and the best run of each is reported.
"""

from __future__ import annotations

import math
import random
import statistics
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from beacontools import (  # type: ignore[import-untyped]
    EddystoneEIDFrame,
    EddystoneTLMFrame,
    EddystoneUIDFrame,
    EddystoneURLFrame,
    IBeaconAdvertisement,
    parse_packet,
)

from beacons import DecodeError, FrameDict, decode_advertisement
from bench.cpu import gc_paused_seconds, pinned
from bench.errors import BenchError
from bench.results import Result
from firmware_sim.adverts import eddystone_uid, ibeacon

__all__ = ["NAME", "Settings", "build_mix", "check_mix", "run"]

NAME = "decode_vs_beacontools"
BASELINE = "beacontools"
UNIT = "frames/s"

SEED = 0x5EED_BEAC
MIX_SIZE = 3000
RUNS, QUICK_RUNS = 7, 3
RUN_S, QUICK_RUN_S = 0.3, 0.1

Out = Callable[[str], None]
Decoder = Callable[[bytes], object]
Sample = tuple[bytes, FrameDict]


@dataclass(frozen=True, slots=True)
class Settings:
    runs: int = RUNS
    run_s: float = RUN_S

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        return cls(QUICK_RUNS, QUICK_RUN_S) if quick else cls(RUNS, RUN_S)


# --- the mix: payloads as beacons put them on the air ------------------------------------------

_FLAGS = bytes((0x02, 0x01, 0x06))  # LE General Discoverable, BR/EDR not supported
_EDDYSTONE_LIST = bytes((0x03, 0x03, 0xAA, 0xFE))  # complete list of 16-bit UUIDs: 0xFEAA
_TLM = struct.Struct(">BBHHII")  # frame type, version, battery, temperature, count, uptime
_URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
_URL_SUFFIXES = (".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/")
_URL_ENDINGS = (".com", ".org", ".edu", ".net", ".info", ".biz", ".gov")
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_URL_MAX_ENCODED = 17


def _eddystone(frame: bytes) -> bytes:
    """Flags, the 0xFEAA service list and the service data structure, in that order."""
    return _FLAGS + _EDDYSTONE_LIST + bytes((len(frame) + 3, 0x16, 0xAA, 0xFE)) + frame


def _ibeacon(rng: random.Random, fleet: Sequence[uuid.UUID]) -> Sample:
    proximity = str(rng.choice(fleet))
    major, minor, tx_power = rng.randrange(1 << 16), rng.randrange(1 << 16), rng.randint(-75, -50)
    expected: FrameDict = {
        "type": "ibeacon",
        "uuid": proximity,
        "major": major,
        "minor": minor,
        "tx_power": tx_power,
    }
    return ibeacon(proximity, major, minor, tx_power), expected


def _uid(rng: random.Random, namespaces: Sequence[bytes]) -> Sample:
    namespace, instance = rng.choice(namespaces), rng.randbytes(6)
    tx_power = rng.randint(-30, -10)
    expected: FrameDict = {
        "type": "eddystone_uid",
        "namespace": namespace.hex(),
        "instance": instance.hex(),
        "tx_power": tx_power,
    }
    return eddystone_uid(namespace, instance, tx_power), expected


def _url(rng: random.Random) -> Sample:
    scheme = rng.randrange(len(_URL_SCHEMES))
    host = "".join(
        rng.choices(_HOST_CHARS[:26], k=1) + rng.choices(_HOST_CHARS, k=rng.randint(2, 8))
    )
    encoded, text = bytearray(host.encode("ascii")), _URL_SCHEMES[scheme] + host
    if rng.random() < 0.6:  # ".com/" and friends, then maybe a short path
        code = rng.randrange(len(_URL_SUFFIXES))
        encoded.append(code)
        text += _URL_SUFFIXES[code]
        room = _URL_MAX_ENCODED - len(encoded)
        if room > 0 and rng.random() < 0.7:
            path = "".join(rng.choices(_PATH_CHARS, k=rng.randint(1, room)))
            encoded += path.encode("ascii")
            text += path
    else:
        code = rng.randrange(len(_URL_ENDINGS))
        encoded.append(len(_URL_SUFFIXES) + code)
        text += _URL_ENDINGS[code]
    tx_power = rng.randint(-30, -10)
    frame = bytes((0x10, tx_power & 0xFF, scheme)) + encoded
    return _eddystone(frame), {"type": "eddystone_url", "url": text, "tx_power": tx_power}


def _tlm(rng: random.Random) -> Sample:
    battery, raw_temp = rng.randint(2400, 3300), rng.randint(12 * 256, 35 * 256)
    adv_count, uptime = rng.randrange(1 << 32), rng.randrange(1 << 32)
    frame = _TLM.pack(0x20, 0x00, battery, raw_temp, adv_count, uptime)
    expected: FrameDict = {
        "type": "eddystone_tlm",
        "battery_mv": battery,
        "temperature_c": raw_temp / 256.0,
        "adv_count": adv_count,
        "uptime_s": uptime / 10.0,
    }
    return _eddystone(frame), expected


def _eid(rng: random.Random) -> Sample:
    eid, tx_power = rng.randbytes(8), rng.randint(-30, -10)
    frame = bytes((0x30, tx_power & 0xFF)) + eid
    return _eddystone(frame), {"type": "eddystone_eid", "eid": eid.hex(), "tx_power": tx_power}


def build_mix(size: int = MIX_SIZE, seed: int = SEED) -> list[Sample]:
    """``size`` distinct payloads with the fields each was built with, equal shares, shuffled."""
    rng = random.Random(seed)
    fleet = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(8)]
    namespaces = [rng.randbytes(10) for _ in range(4)]
    makers: list[Callable[[], Sample]] = [
        lambda: _ibeacon(rng, fleet),
        lambda: _uid(rng, namespaces),
        lambda: _url(rng),
        lambda: _tlm(rng),
        lambda: _eid(rng),
    ]
    samples: dict[bytes, FrameDict] = {}
    for index, make in enumerate(makers):
        share = size * (index + 1) // len(makers) - size * index // len(makers)
        target = len(samples) + share
        while len(samples) < target:
            payload, expected = make()
            samples.setdefault(payload, expected)
    mix = list(samples.items())
    rng.shuffle(mix)
    return mix


# --- both decoders must agree, field by field ----------------------------------------------------


def _theirs_as_dict(packet: object) -> FrameDict | None:
    """beacontools' packet object in our ``to_dict()`` shape; ``None`` for anything else."""
    if isinstance(packet, IBeaconAdvertisement):
        return {
            "type": "ibeacon",
            "uuid": packet.uuid,
            "major": packet.major,
            "minor": packet.minor,
            "tx_power": packet.tx_power,
        }
    if isinstance(packet, EddystoneUIDFrame):
        return {
            "type": "eddystone_uid",
            "namespace": packet.namespace,
            "instance": packet.instance,
            "tx_power": packet.tx_power,
        }
    if isinstance(packet, EddystoneURLFrame):
        return {"type": "eddystone_url", "url": packet.url, "tx_power": packet.tx_power}
    if isinstance(packet, EddystoneTLMFrame):
        return {
            "type": "eddystone_tlm",
            "battery_mv": packet.voltage,
            "temperature_c": packet.temperature,
            "adv_count": packet.advertising_count,
            "uptime_s": packet.seconds_since_boot / 10.0,
        }
    if isinstance(packet, EddystoneEIDFrame):
        return {"type": "eddystone_eid", "eid": packet.eid.hex(), "tx_power": packet.tx_power}
    return None


def _ours_as_dict(payload: bytes) -> FrameDict | str | None:
    try:
        frame = decode_advertisement(payload)
    except DecodeError as exc:
        return f"DecodeError: {exc}"
    return None if frame is None else frame.to_dict()


def check_mix(mix: Sequence[Sample]) -> None:
    """Raise ``BenchError`` unless both decoders give every payload's fields."""
    problems: list[str] = []
    for payload, expected in mix:
        ours, theirs = _ours_as_dict(payload), _theirs_as_dict(parse_packet(payload))
        if ours != expected or theirs != expected:
            problems.append(
                f"{payload.hex()}: expected {expected}, ours {ours}, beacontools {theirs}"
            )
    if problems:
        shown = "\n  ".join(problems[:5])
        raise BenchError(
            f"{NAME}: {len(problems)} of {len(mix)} payloads are not decoded to the fields they "
            f"were built with by both decoders; first ones:\n  {shown}"
        )


# --- timing ------------------------------------------------------------------------------------


def _timed(decode: Decoder, payloads: Sequence[bytes], passes: int) -> float:
    """Seconds for ``passes`` passes over ``payloads``, the garbage collector paused."""

    def work() -> None:
        for _ in range(passes):
            for payload in payloads:
                decode(payload)

    return gc_paused_seconds(work)


def _calibrate(decode: Decoder, payloads: Sequence[bytes], run_s: float) -> int:
    """Warm up, then the number of passes that makes one run last about ``run_s``."""
    _timed(decode, payloads, 1)
    one_pass = _timed(decode, payloads, 1)
    return max(1, math.ceil(run_s / one_pass))


def run(settings: Settings, out: Out) -> list[Result]:
    mix = build_mix()
    check_mix(mix)
    payloads = [payload for payload, _ in mix]
    out(
        f"{NAME}: {len(payloads)} distinct payloads (seed {SEED:#x}), every one decoded to the "
        f"same fields by both"
    )
    ours: list[float] = []
    theirs: list[float] = []
    with pinned() as core:
        ours_passes = _calibrate(decode_advertisement, payloads, settings.run_s)
        theirs_passes = _calibrate(parse_packet, payloads, settings.run_s)
        out(
            f"  pinned to core {core}; a run is {ours_passes} passes (ours), "
            f"{theirs_passes} (beacontools)"
        )
        frames_ours, frames_theirs = ours_passes * len(payloads), theirs_passes * len(payloads)
        for i in range(1, settings.runs + 1):
            ours.append(frames_ours / _timed(decode_advertisement, payloads, ours_passes))
            theirs.append(frames_theirs / _timed(parse_packet, payloads, theirs_passes))
            out(
                f"  run {i}: ours {ours[-1]:>11.1f} {UNIT}   beacontools {theirs[-1]:>9.1f} "
                f"{UNIT}   ratio {ours[-1] / theirs[-1]:.2f}"
            )
    out(
        f"  best: ours {max(ours):.1f}, beacontools {max(theirs):.1f}; median: ours "
        f"{statistics.median(ours):.1f}, beacontools {statistics.median(theirs):.1f} "
        f"(ratio {statistics.median(ours) / statistics.median(theirs):.2f})"
    )
    return [Result(NAME, max(ours), UNIT, BASELINE, max(theirs), higher_is_better=True)]
