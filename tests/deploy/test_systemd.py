"""The shipped systemd unit (``deploy/moments.service``): ``systemd-analyze verify`` accepts it,
and it carries the sandbox and supervision the store box relies on.

``systemd-analyze verify`` needs no running systemd. It loads the unit, reports unknown keys and
unparsable values (with exit status 0 unless ``--recursive-errors`` is given, hence the check of
its output too), and fails when ``ExecStart=``'s program does not exist. It does not look the
``User=`` up; the copy verified here still runs as the current user and the current venv's
``moments``, so that the check never depends on what this machine has installed.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "moments.service"


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order of appearance, by key."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(found: dict[str, list[str]], key: str) -> str:
    values = found.get(key)
    assert values is not None, f"{key}= is missing"
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test installs the systemd package)")
    moments = Path(sys.executable).parent / "moments"
    assert moments.is_file(), f"no moments entry point next to {sys.executable}"
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = UNIT.read_text()
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={moments}", text, flags=re.M)
    assert n == 1
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    text = re.sub(r"^Group=.*$", f"Group={group}", text, flags=re.M)
    copy = tmp_path / UNIT.name
    copy.write_text(text)

    command = [analyze, "verify", "--man=no"]
    helptext = subprocess.run(
        [analyze, "--help"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    if "--recursive-errors" in helptext:  # systemd 250 and newer
        command.append("--recursive-errors=no")  # this unit, not the host's other units
    result = subprocess.run(
        [*command, str(copy)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    about_unit = [line for line in output.splitlines() if UNIT.name in line]
    assert about_unit == [], output


def test_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above would see a mistake: an unknown key is reported against the unit."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test installs the systemd package)")
    bad = tmp_path / "moments-bad.service"
    bad.write_text(f"[Service]\nExecStart={sys.executable}\nProtectSystem=strictest\n")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.name in result.stdout + result.stderr


def test_unit_supervision() -> None:
    found = directives(UNIT.read_text())
    assert one(found, "Type") == "notify"
    assert one(found, "NotifyAccess") == "main"
    assert one(found, "WatchdogSec")
    assert one(found, "Restart") == "on-failure"
    assert one(found, "RestartSec")
    assert one(found, "StartLimitIntervalSec")
    assert one(found, "StartLimitBurst")
    assert one(found, "TimeoutStopSec")
    assert one(found, "ExecStart") == (
        "/opt/moments/.venv/bin/moments run -c /etc/moments/moments.toml"
    )
    assert "MOMENTS_DATA_DIR=/var/lib/moments" in found["Environment"]
    assert one(found, "StandardOutput") == "journal"
    assert one(found, "SyslogIdentifier") == "moments"


def test_unit_sandbox() -> None:
    found = directives(UNIT.read_text())
    assert one(found, "User") == "moments"
    assert one(found, "Group") == "moments"
    assert "DynamicUser" not in found
    assert one(found, "ProtectSystem") == "strict"
    # The data folder is the only writable path: the state directory, nothing else.
    assert one(found, "StateDirectory") == "moments"
    assert one(found, "StateDirectoryMode") == "0750"
    assert found.get("ReadWritePaths", ["/var/lib/moments"]) == ["/var/lib/moments"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert one(found, key) == "yes", key
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs"):
        assert one(found, key) == "yes", key
    families = set(one(found, "RestrictAddressFamilies").split())
    # AF_UNIX: BlueZ over the system D-Bus and systemd's notify socket.
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Nothing may cut the gateway off the system bus.
    for key in ("PrivateNetwork", "PrivateUsers", "InaccessiblePaths", "IPAddressDeny"):
        assert key not in found, key
    for key in ("MemoryHigh", "MemoryMax", "TasksMax", "LimitNOFILE", "CPUWeight"):
        assert one(found, key), key


def test_every_directive_is_explained() -> None:
    """Each group of directives has a comment right above it saying why."""
    previous = ""
    for number, line in enumerate(UNIT.read_text().splitlines(), start=1):
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith("#"):
            assert previous.startswith("#") or "=" in previous, f"line {number}: {stripped}"
        previous = stripped
