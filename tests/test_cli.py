"""The ``moments`` command line, run as users and scripts run it: a real subprocess of the
console entry point, checked against the contracts of DESIGN.md ("Contracts").

Every payload is built from a public layout and every key from a published vector:

* iBeacon: Apple's Proximity Beacon specification (manufacturer data of 0x004C, ``02 15``,
  UUID, major, minor, measured power); the UUID is Apple's AirLocate sample UUID.
* AltBeacon: the AltBeacon specification (``1B FF`` mfg id little-endian, ``BE AC``, 20-byte
  beacon id, reference RSSI, manufacturer reserved byte).
* Eddystone UID/URL/TLM/eTLM/EID: Google's Eddystone protocol specification (service data of
  UUID 0xFEAA, one frame type byte, then the frame's fields, big-endian).
* EID vectors: the ones pinned in ``tests/beacons/test_eid.py`` (RadiusNetworks/ephemeral_calc
  and sandeepmistry/node-eddystone-beacon-scanner), and the ephemeral_calc key-exchange vector.
* IRK vector: Bluetooth Core Specification, Vol 3, Part H, Appendix D.7 (``ah`` sample data).

Each subprocess gets a clean environment (the caller's, minus every ``MOMENTS_*`` variable) and
runs in a temporary folder, so nothing of the developer's shell or checkout leaks in.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware_sim import adverts
from gateway import __version__

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "deploy" / "moments.example.toml"
TIMEOUT_S = 30


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOMENTS_")}
    env.update(extra)
    return env


def moments(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway.cli ARGS`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit status 2, nothing on stdout, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], result.stderr


# --- payloads from the public layouts ---------------------------------------------------

FLAGS = bytes.fromhex("020106")
EDDYSTONE_LIST = bytes.fromhex("0303aafe")
AIRLOCATE_UUID = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0"


def ad(ad_type: int, body: bytes) -> bytes:
    return bytes((len(body) + 1, ad_type)) + body


def eddystone(frame: bytes) -> bytes:
    return FLAGS + EDDYSTONE_LIST + ad(0x16, b"\xaa\xfe" + frame)


IBEACON = adverts.ibeacon(AIRLOCATE_UUID, 1, 2, -59)
IBEACON_FIELDS = {
    "type": "ibeacon",
    "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
    "major": 1,
    "minor": 2,
    "tx_power": -59,
}

ALTBEACON_ID = uuid.UUID("2f234454-cf6d-4a0f-adf2-f4911ba9ffa6").bytes + bytes.fromhex("00010002")
ALTBEACON = FLAGS + ad(0xFF, b"\x18\x01" + b"\xbe\xac" + ALTBEACON_ID + b"\xc5\x00")
ALTBEACON_FIELDS = {
    "type": "altbeacon",
    "mfg_id": 0x0118,
    "beacon_id": "2f234454cf6d4a0fadf2f4911ba9ffa600010002",
    "ref_rssi": -59,
    "mfg_reserved": 0,
}

UID_NAMESPACE = bytes.fromhex("edd1ebeac04e5defa017")
UID_INSTANCE = bytes.fromhex("0badc0ffee01")
EDDYSTONE_UID = adverts.eddystone_uid(UID_NAMESPACE, UID_INSTANCE, -18)
EDDYSTONE_UID_FIELDS = {
    "type": "eddystone_uid",
    "namespace": "edd1ebeac04e5defa017",
    "instance": "0badc0ffee01",
    "tx_power": -18,
}

# Scheme 0x03 "https://", "example", 0x00 ".com/", "shop"; Tx power -20 dBm.
EDDYSTONE_URL = eddystone(b"\x10\xec\x03" + b"example" + b"\x00" + b"shop")
EDDYSTONE_URL_FIELDS = {"type": "eddystone_url", "url": "https://example.com/shop", "tx_power": -20}

EDDYSTONE_TLM = adverts.eddystone_tlm(3000, 21.5, 12345, 3600.0)
EDDYSTONE_TLM_FIELDS = {
    "type": "eddystone_tlm",
    "battery_mv": 3000,
    "temperature_c": 21.5,
    "adv_count": 12345,
    "uptime_s": 3600.0,
}
# Version 0x00, battery 0 (not measured), temperature 0x8000 (not supported), count 7,
# uptime 25 tenths of a second.
EDDYSTONE_TLM_NO_TEMPERATURE = eddystone(b"\x20\x00" + struct.pack(">HHII", 0, 0x8000, 7, 25))
EDDYSTONE_TLM_NO_TEMPERATURE_FIELDS = {
    "type": "eddystone_tlm",
    "battery_mv": 0,
    "temperature_c": None,
    "adv_count": 7,
    "uptime_s": 2.5,
}

ETLM_CIPHERTEXT = bytes.fromhex("00112233445566778899aabb")
EDDYSTONE_ETLM = eddystone(b"\x20\x01" + ETLM_CIPHERTEXT + struct.pack(">HH", 0x1234, 0xBEEF))
EDDYSTONE_ETLM_FIELDS = {
    "type": "eddystone_etlm",
    "etlm": "00112233445566778899aabb",
    "salt": 0x1234,
    "mic": 0xBEEF,
}

EDDYSTONE_EID = adverts.eddystone_eid(bytes.fromhex("7dd8169dae94258c"), -18)
EDDYSTONE_EID_FIELDS = {"type": "eddystone_eid", "eid": "7dd8169dae94258c", "tx_power": -18}

DECODED: list[tuple[bytes, dict[str, Any]]] = [
    (IBEACON, IBEACON_FIELDS),
    (ALTBEACON, ALTBEACON_FIELDS),
    (EDDYSTONE_UID, EDDYSTONE_UID_FIELDS),
    (EDDYSTONE_URL, EDDYSTONE_URL_FIELDS),
    (EDDYSTONE_TLM, EDDYSTONE_TLM_FIELDS),
    (EDDYSTONE_TLM_NO_TEMPERATURE, EDDYSTONE_TLM_NO_TEMPERATURE_FIELDS),
    (EDDYSTONE_ETLM, EDDYSTONE_ETLM_FIELDS),
    (EDDYSTONE_EID, EDDYSTONE_EID_FIELDS),
]

# Published vectors (see tests/beacons/test_eid.py for their sources).
RADIUS_IK = "0102030405060708090a111213141516"
SCANNER_IK = "00112233445566778899aabbccddeeff"
RESOLVER_PRIVATE = "61136adab1bf302f1c49e860196aeefd8fbaa41518b4c226372d6cc469c47278"
BEACON_PUBLIC = "c63e6f89aab47552c8d621a59c81d0af203f6570a4bd7a267a08a17561c8bc2b"
EXCHANGE_IDENTITY_KEY = "f40d6f18e5882260e847e99ca33ac44f"

SPEC_IRK = "ec0234a357c8ad05341010a60a397d9b"
SPEC_ADDRESS = "70:81:94:0D:FB:AA"
HEX = re.compile(r"[0-9a-f]+")


# --- version and help -------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = moments("--version", cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stdout == f"moments {__version__}\n"
    assert re.fullmatch(r"moments \S+\n", result.stdout)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["config"],
        ["decode"],
        ["sim"],
        ["sim", "run"],
        ["sim", "score"],
        ["sim", "config"],
        ["sim", "load"],
        ["sim", "scripted"],
        ["eid"],
        ["eid", "compute"],
        ["eid", "derive-key"],
        ["irk"],
        ["irk", "resolve"],
    ],
    ids=lambda command: " ".join(command) or "moments",
)
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = moments(*command, "--help", cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stdout.startswith(f"usage: moments {' '.join(command)}".rstrip()), result.stdout
    assert result.stderr == ""


# --- decode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    DECODED,
    ids=[f"{fields['type']}-{index}" for index, (_, fields) in enumerate(DECODED)],
)
def test_decode_one_payload_of_each_type(
    tmp_path: Path, payload: bytes, expected: dict[str, Any]
) -> None:
    result = moments("decode", payload.hex(), cwd=tmp_path)

    assert result.returncode == 0, result
    assert json_lines(result.stdout) == [expected]


def test_decode_prints_one_object_per_argument_in_order(tmp_path: Path) -> None:
    payloads = [payload.hex() for payload, _ in DECODED]
    payloads[0] = payloads[0].upper()  # hex in either case

    result = moments("decode", *payloads, cwd=tmp_path)

    assert result.returncode == 0, result
    assert json_lines(result.stdout) == [fields for _, fields in DECODED]


def test_decode_field_names_are_exactly_the_contract(tmp_path: Path) -> None:
    contract = {
        "ibeacon": ["type", "uuid", "major", "minor", "tx_power"],
        "altbeacon": ["type", "mfg_id", "beacon_id", "ref_rssi", "mfg_reserved"],
        "eddystone_uid": ["type", "namespace", "instance", "tx_power"],
        "eddystone_url": ["type", "url", "tx_power"],
        "eddystone_tlm": ["type", "battery_mv", "temperature_c", "adv_count", "uptime_s"],
        "eddystone_etlm": ["type", "etlm", "salt", "mic"],
        "eddystone_eid": ["type", "eid", "tx_power"],
    }

    result = moments("decode", *(payload.hex() for payload, _ in DECODED), cwd=tmp_path)

    lines = json_lines(result.stdout)
    assert {line["type"] for line in lines} == set(contract)
    for line in lines:
        assert sorted(line) == sorted(contract[line["type"]]), line


def test_decode_a_bad_argument_is_reported_in_place_and_fails(tmp_path: Path) -> None:
    result = moments("decode", IBEACON.hex(), "zz", FLAGS.hex(), "1aff4c00", cwd=tmp_path)

    assert result.returncode == 1, result
    lines = json_lines(result.stdout)
    assert len(lines) == 4
    assert lines[0] == IBEACON_FIELDS
    for line in lines[1:]:
        assert line["type"] is None, line
        assert sorted(line) == ["error", "type"], line
        assert isinstance(line["error"], str), line
        assert line["error"], line
    assert lines[2]["error"] == "no beacon frame found"
    assert "Traceback" not in result.stderr


def test_decode_reads_stdin_one_payload_per_line(tmp_path: Path) -> None:
    text = "\n".join(
        [
            IBEACON.hex(),
            "",
            "   ",
            EDDYSTONE_TLM_NO_TEMPERATURE.hex(),
            "\t" + EDDYSTONE_EID.hex() + "  ",
            "",
        ]
    )

    result = moments("decode", "-", cwd=tmp_path, stdin=text + "\n")

    assert result.returncode == 0, result
    assert json_lines(result.stdout) == [
        IBEACON_FIELDS,
        EDDYSTONE_TLM_NO_TEMPERATURE_FIELDS,
        EDDYSTONE_EID_FIELDS,
    ]
    assert '"temperature_c": null' in result.stdout.splitlines()[1]


def test_decode_stdin_reports_bad_lines_and_fails(tmp_path: Path) -> None:
    lines_in = [
        ALTBEACON.hex(),
        "not hex at all",
        "abc",  # odd length
        "03ff4c",  # length overruns the payload
        EDDYSTONE_URL.hex(),
    ]

    result = moments("decode", "-", cwd=tmp_path, stdin="\n".join(lines_in) + "\n")

    assert result.returncode == 1, result
    out = json_lines(result.stdout)
    assert len(out) == len(lines_in)
    assert out[0] == ALTBEACON_FIELDS
    assert out[4] == EDDYSTONE_URL_FIELDS
    for line in out[1:4]:
        assert line["type"] is None, line
        assert sorted(line) == ["error", "type"], line
        assert line["error"], line


def test_decode_stdin_with_only_good_lines_exits_0_and_empty_stdin_prints_nothing(
    tmp_path: Path,
) -> None:
    good = moments("decode", "-", cwd=tmp_path, stdin=EDDYSTONE_UID.hex() + "\n")
    empty = moments("decode", "-", cwd=tmp_path, stdin="\n\n")

    assert good.returncode == 0, good
    assert json_lines(good.stdout) == [EDDYSTONE_UID_FIELDS]
    assert empty.returncode == 0, empty
    assert empty.stdout == ""


def test_decode_without_arguments_is_a_usage_error(tmp_path: Path) -> None:
    result = moments("decode", cwd=tmp_path)

    assert_one_line_usage_error(result, "decode")


# --- eid --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity_key", "exponent", "time", "eid"),
    [
        (RADIUS_IK, 10, 0, "a9b76a71c5f89290"),
        (RADIUS_IK, 10, 2000, "4144413e45fefa58"),
        (RADIUS_IK.upper(), 10, 2047, "4144413e45fefa58"),
        (SCANNER_IK, 12, 1518080946, "7dd8169dae94258c"),
    ],
)
def test_eid_compute_matches_the_published_eids(
    tmp_path: Path, identity_key: str, exponent: int, time: int, eid: str
) -> None:
    result = moments(
        "eid",
        "compute",
        "--identity-key",
        identity_key,
        "--exponent",
        str(exponent),
        "--time",
        str(time),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result
    lines = json_lines(result.stdout)
    assert len(lines) == 1
    (line,) = lines
    assert list(line) == ["temporary_key", "eid"]
    assert line["eid"] == eid
    assert len(line["temporary_key"]) == 32
    assert HEX.fullmatch(line["temporary_key"]), line


def test_eid_compute_matches_the_published_temporary_key(tmp_path: Path) -> None:
    result = moments(
        "eid",
        "compute",
        "--identity-key",
        SCANNER_IK,
        "--exponent",
        "12",
        "--time",
        "1518080946",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result
    assert json.loads(result.stdout) == {
        "temporary_key": "b7c2d909d27d22df8343271162480210",
        "eid": "7dd8169dae94258c",
    }


def test_eid_temporary_key_lasts_its_65536_second_window(tmp_path: Path) -> None:
    def temporary_key(time: int) -> str:
        result = moments(
            "eid",
            "compute",
            "--identity-key",
            RADIUS_IK,
            "--exponent",
            "10",
            "--time",
            str(time),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result
        key: str = json.loads(result.stdout)["temporary_key"]
        return key

    assert temporary_key(0) == temporary_key(65_535) != temporary_key(65_536)


def test_eid_derive_key_matches_the_published_exchange(tmp_path: Path) -> None:
    result = moments(
        "eid",
        "derive-key",
        "--resolver-private",
        RESOLVER_PRIVATE,
        "--beacon-public",
        BEACON_PUBLIC,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {"identity_key": EXCHANGE_IDENTITY_KEY}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["compute", "--identity-key", "zz", "--exponent", "10", "--time", "0"],
            ["--identity-key", "hex"],
        ),
        (
            ["compute", "--identity-key", RADIUS_IK[:-2], "--exponent", "10", "--time", "0"],
            ["identity key", "16 bytes", "15"],
        ),
        (
            ["compute", "--identity-key", RADIUS_IK + "00", "--exponent", "10", "--time", "0"],
            ["identity key", "16 bytes", "17"],
        ),
        (
            ["compute", "--identity-key", RADIUS_IK, "--exponent", "16", "--time", "0"],
            ["exponent"],
        ),
        (
            ["compute", "--identity-key", RADIUS_IK, "--exponent", "10", "--time", "-1"],
            ["time"],
        ),
        (
            ["compute", "--identity-key", RADIUS_IK, "--exponent", "10", "--time", str(2**32)],
            ["time"],
        ),
        (
            ["derive-key", "--resolver-private", "xyz", "--beacon-public", BEACON_PUBLIC],
            ["--resolver-private", "hex"],
        ),
        (
            ["derive-key", "--resolver-private", RESOLVER_PRIVATE, "--beacon-public", "0g"],
            ["--beacon-public", "hex"],
        ),
        (
            ["derive-key", "--resolver-private", "00" * 31, "--beacon-public", BEACON_PUBLIC],
            ["resolver private key", "32 bytes", "31"],
        ),
        (
            ["derive-key", "--resolver-private", RESOLVER_PRIVATE, "--beacon-public", "00" * 33],
            ["beacon public key", "32 bytes", "33"],
        ),
        (
            # A low-order point: the shared secret would be zero, which the spec refuses.
            ["derive-key", "--resolver-private", RESOLVER_PRIVATE, "--beacon-public", "00" * 32],
            ["shared secret is zero"],
        ),
    ],
    ids=[
        "compute-not-hex",
        "compute-key-15-bytes",
        "compute-key-17-bytes",
        "compute-exponent-16",
        "compute-negative-time",
        "compute-time-past-32-bits",
        "derive-private-not-hex",
        "derive-public-not-hex",
        "derive-private-31-bytes",
        "derive-public-33-bytes",
        "derive-zero-secret",
    ],
)
def test_eid_bad_arguments_are_one_line_usage_errors(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    result = moments("eid", *args, cwd=tmp_path)

    assert_one_line_usage_error(result, *needles)


# --- irk --------------------------------------------------------------------------------


def test_irk_resolve_the_core_specification_sample(tmp_path: Path) -> None:
    flipped = "70:81:94:0D:FB:AB"
    static = "F0:81:94:0D:FB:AA"  # same hash, but the static random marker 0b11

    result = moments(
        "irk",
        "resolve",
        "--irk",
        SPEC_IRK,
        SPEC_ADDRESS,
        SPEC_ADDRESS.lower(),
        flipped,
        static,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result
    assert json_lines(result.stdout) == [
        {"address": SPEC_ADDRESS, "resolves": True},
        {"address": SPEC_ADDRESS.lower(), "resolves": True},
        {"address": flipped, "resolves": False},
        {"address": static, "resolves": False},
    ]


def test_irk_resolve_a_malformed_address_is_reported_and_fails(tmp_path: Path) -> None:
    result = moments(
        "irk",
        "resolve",
        "--irk",
        SPEC_IRK,
        "70-81-94-0D-FB-AA",
        SPEC_ADDRESS,
        "nope",
        cwd=tmp_path,
    )

    assert result.returncode == 1, result
    lines = json_lines(result.stdout)
    assert len(lines) == 3
    assert lines[1] == {"address": SPEC_ADDRESS, "resolves": True}
    for line, address in ((lines[0], "70-81-94-0D-FB-AA"), (lines[2], "nope")):
        assert line["address"] == address
        assert line["resolves"] is False
        assert isinstance(line["error"], str), line
        assert line["error"], line
        assert sorted(line) == ["address", "error", "resolves"], line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("irk", "needles"),
    [
        ("not-hex", ["--irk", "hex"]),
        (SPEC_IRK[:-2], ["--irk", "16 bytes", "15"]),
        (SPEC_IRK + "00", ["--irk", "16 bytes", "17"]),
    ],
    ids=["not-hex", "15-bytes", "17-bytes"],
)
def test_irk_resolve_a_bad_irk_is_a_one_line_usage_error(
    tmp_path: Path, irk: str, needles: list[str]
) -> None:
    result = moments("irk", "resolve", "--irk", irk, SPEC_ADDRESS, cwd=tmp_path)

    assert_one_line_usage_error(result, *needles)


# --- config -----------------------------------------------------------------------------


def config_json(tmp_path: Path, args: Sequence[str], **env: str) -> dict[str, Any]:
    result = moments("config", *args, cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 0, result
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def test_config_prints_the_example_as_json(tmp_path: Path) -> None:
    shown = config_json(tmp_path, ["-c", str(EXAMPLE_CONFIG)])

    assert shown["store_id"] == "store-1"
    assert shown["broker"]["port"] == 1883
    assert shown["broker"]["password"] == ""
    assert [zone["id"] for zone in shown["zones"]] == ["entrance", "coffee"]


def test_config_hides_a_set_broker_password(tmp_path: Path) -> None:
    secret = "correct horse battery staple"

    result = moments(
        "config",
        "-c",
        str(EXAMPLE_CONFIG),
        cwd=tmp_path,
        env=clean_env(MOMENTS_BROKER__PASSWORD=secret),
    )

    assert result.returncode == 0, result
    shown = json.loads(result.stdout)
    assert shown["broker"]["password"]  # shown as set ...
    assert shown["broker"]["password"] != secret  # ... but not what it is
    assert secret not in result.stdout
    assert secret not in result.stderr


def test_config_without_a_file_uses_the_defaults(tmp_path: Path) -> None:
    shown = config_json(tmp_path, [])

    assert shown["broker"]["host"] == "127.0.0.1"
    assert shown["broker"]["port"] == 1883
    assert shown["http"] == {
        "host": "127.0.0.1",
        "port": 8080,
        "trusted_proxies": ["127.0.0.1", "::1"],
        "ready_without_sensing": False,
    }


def test_config_a_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    result = moments("config", cwd=tmp_path, env=clean_env(MOMENTS_BROKER__PORT="70000"))

    assert_one_line_usage_error(result, "broker.port = '70000'", "expected")


def test_config_a_bad_environment_value_over_a_file_names_the_key(tmp_path: Path) -> None:
    result = moments(
        "config",
        "-c",
        str(EXAMPLE_CONFIG),
        cwd=tmp_path,
        env=clean_env(MOMENTS_BROKER__PORT="70000"),
    )

    assert_one_line_usage_error(result, "broker.port = '70000'", "expected")


# --- found by these tests and fixed: standard input that is not UTF-8, a reader that leaves


def test_decode_stdin_a_line_that_is_not_utf8_is_reported_in_place(tmp_path: Path) -> None:
    # PYTHONIOENCODING pins what a UTF-8 locale (en_US.UTF-8, the Raspberry Pi OS default)
    # gives: strict UTF-8 on stdin. Under the C locale Python escapes bad bytes instead.
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "decode", "-"],
        input=b"\xff\xfe\n" + IBEACON.hex().encode() + b"\n",
        capture_output=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        env=clean_env(PYTHONIOENCODING="utf-8:strict"),
        check=False,
    )

    assert "Traceback" not in result.stderr.decode(errors="replace"), result.stderr
    assert result.returncode == 1, result
    lines = json_lines(result.stdout.decode())
    assert len(lines) == 2, result.stdout
    assert lines[0]["type"] is None, lines[0]
    assert lines[0]["error"], lines[0]
    assert lines[1] == IBEACON_FIELDS


def test_decode_stops_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    # Far more output than a pipe buffer holds, so the command must still be writing when
    # the reader closes its end.
    source = tmp_path / "payloads.txt"
    source.write_text((IBEACON.hex() + "\n") * 20_000)
    errors = tmp_path / "stderr.txt"
    with source.open("rb") as stdin, errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "decode", "-"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=tmp_path,
            env=clean_env(),
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            process.stdout.close()
            process.wait(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=TIMEOUT_S)

    assert json.loads(first) == IBEACON_FIELDS
    text = errors.read_text(errors="replace")
    assert "Traceback" not in text, text
    assert "BrokenPipeError" not in text, text
