"""The Pi installer (``deploy/install.sh``): its dry run, its options and its syntax.

A dry run must change nothing and need no root. ``MOMENTS_INSTALL_ROOT`` points every path the
script would touch into an empty temporary folder, which must still be empty afterwards. When
the tests run as root, the dry run is also run as ``nobody`` (with ``setpriv``) to show it needs
no privilege.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPT = DEPLOY / "install.sh"
NOBODY = 65534


def install(
    *args: str, root: Path | None = None, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MOMENTS_INSTALL_ROOT"}
    if root is not None:
        env["MOMENTS_INSTALL_ROOT"] = str(root)
    prefix: list[str] = []
    if as_nobody:
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*prefix, "bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def readable_by_all(path: Path) -> bool:
    """Whether every folder down to ``path`` lets anyone in (so ``nobody`` can run it)."""
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def actions(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    assert lines, "a dry run prints its actions"
    assert all(line.startswith("[dry-run] ") for line in lines), stdout
    return [line.removeprefix("[dry-run] ") for line in lines]


def test_syntax() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        [shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", "--hq-bridge", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    text = "\n".join(done)
    # The user, in the bluetooth group when it is new (or added to it).
    assert "useradd --system" in text or "user moments exists" in result.stderr
    assert "usermod --append --groups bluetooth moments" in text or "in group bluetooth" in (
        result.stderr
    )
    # The folders, with their modes and owners.
    assert f"install -d -m 0755 -o root -g root {root}/opt/moments" in done
    assert f"install -d -m 0750 -o root -g moments {root}/etc/moments" in done
    assert f"install -d -m 0750 -o root -g moments {root}/etc/moments/tls" in done
    assert f"install -d -m 0750 -o moments -g moments {root}/var/lib/moments" in done
    # The venv and the package, the configuration, the unit, and the service.
    assert f"python3 -m venv {root}/opt/moments/.venv" in done
    assert any(line.startswith(f"{root}/opt/moments/.venv/bin/pip install") for line in done)
    config = f"{DEPLOY}/moments.example.toml {root}/etc/moments/moments.toml"
    assert f"install -m 0640 -o root -g moments {config}" in done
    unit = f"{DEPLOY}/moments.service {root}/etc/systemd/system/moments.service"
    assert f"install -m 0644 -o root -g root {unit}" in done
    assert done[-2:] == ["systemctl daemon-reload", "systemctl enable --now moments.service"]
    if (DEPLOY / "mosquitto").is_dir():
        assert any(line.endswith(f"{root}/etc/mosquitto/mosquitto.conf") for line in done)
        assert any(f"{root}/etc/mosquitto/moments.acl" in line for line in done)
        assert any(f"{root}/etc/mosquitto/conf.d/bridge-hq.conf" in line for line in done)
    assert list(root.iterdir()) == []


def test_dry_run_of_an_upgrade_stops_installs_migrates_and_starts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", "--upgrade", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    stop = done.index("systemctl stop moments.service")
    pip = next(i for i, line in enumerate(done) if " install --quiet " in line)
    migrate = done.index(
        f"runuser -u moments -- env MOMENTS_DATA_DIR={root}/var/lib/moments "
        f"{root}/opt/moments/.venv/bin/moments store migrate -c {root}/etc/moments/moments.toml"
    )
    start = done.index("systemctl enable --now moments.service")
    assert stop < pip < migrate < start
    assert "systemctl restart moments.service" not in done
    assert list(root.iterdir()) == []
    # Without --upgrade: no stop and no migration.
    plain = actions(install("--dry-run", root=root).stdout)
    assert "systemctl stop moments.service" not in plain
    assert not any("store migrate" in line for line in plain)


def test_dry_run_keeps_an_existing_configuration(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "moments").mkdir(parents=True)
    (root / "etc" / "moments" / "moments.toml").write_text('store_id = "store-9"\n')
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert not any("moments.toml" in line for line in actions(result.stdout))
    assert "keeping the existing" in result.stderr
    if (DEPLOY / "mosquitto").is_dir():
        assert "STORE_ID replaced by store-9" in result.stdout


def test_dry_run_installs_given_certificates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    key = tmp_path / "store.key"
    key.write_text("not really a key\n")
    result = install("--dry-run", "--key", str(key), root=root)
    assert result.returncode == 0, result.stderr
    assert f"install -m 0640 -o root -g moments {key} {root}/etc/moments/tls/store.key" in actions(
        result.stdout
    )
    missing = install("--dry-run", "--cert", str(tmp_path / "absent.crt"), root=root)
    assert missing.returncode != 0
    assert "no such file" in missing.stderr
    assert list(root.iterdir()) == []


def test_dry_run_needs_no_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        result = install("--dry-run", root=tmp_path)
    elif shutil.which("setpriv") is None or not readable_by_all(SCRIPT):
        pytest.skip("running as root, and cannot run the script as nobody here")
    else:
        tmp_path.chmod(0o777)
        result = install("--dry-run", root=tmp_path, as_nobody=True)
    assert result.returncode == 0, result.stderr
    assert "systemctl enable --now moments.service" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_real_run_needs_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        result = install()
    elif shutil.which("setpriv") is None or not readable_by_all(SCRIPT):
        pytest.skip("running as root, and cannot run the script as nobody here")
    else:
        result = install(as_nobody=True)
    assert result.returncode != 0
    assert "run as root" in result.stderr
    assert result.stdout == ""


def test_install_root_is_for_dry_runs_only(tmp_path: Path) -> None:
    result = install(root=tmp_path)
    assert result.returncode != 0
    assert "only for --dry-run" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["--frobnicate"], ["--dry-run", "extra"], ["--config"], ["--dry-run", "--wheel"]]
)
def test_bad_arguments_print_the_usage(args: list[str]) -> None:
    result = install(*args)
    assert result.returncode == 2
    assert "usage: install.sh" in result.stderr
    assert result.stdout == ""


def test_help() -> None:
    result = install("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: install.sh")
