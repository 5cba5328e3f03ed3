"""The Pi installer (``deploy/install.sh``): its dry run, its options and its syntax.

A dry run must change nothing and need no root. ``MOMENTS_INSTALL_ROOT`` points every path the
script would touch into an empty temporary folder, which must still be empty afterwards, and
``MOMENTS_INSTALL_SYSTEMD`` says whether to act as on a booted system (``running``, the default
here) or in a chroot or image build (``offline``). When
the tests run as root, the dry run is also run as ``nobody`` (with ``setpriv``) to show it needs
no privilege. What only a real run does (writing the installed configuration) is checked by
running that one shell function of the script on its own, in a temporary folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPT = DEPLOY / "install.sh"
NOBODY = 65534


def install(
    *args: str,
    root: Path | None = None,
    as_nobody: bool = False,
    systemd: str | None = "running",
) -> subprocess.CompletedProcess[str]:
    """Runs install.sh; with ``root``, under that MOMENTS_INSTALL_ROOT and, unless ``systemd``
    is None (then the script looks at ``root``/run/systemd), MOMENTS_INSTALL_SYSTEMD."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MOMENTS_INSTALL_ROOT", "MOMENTS_INSTALL_SYSTEMD")
    }
    if root is not None:
        env["MOMENTS_INSTALL_ROOT"] = str(root)
        if systemd is not None:
            env["MOMENTS_INSTALL_SYSTEMD"] = systemd
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
    assert any(line.startswith(f"install -m 0640 -o root -g moments {config}") for line in done)
    unit = f"{DEPLOY}/moments.service {root}/etc/systemd/system/moments.service"
    assert f"install -m 0644 -o root -g root {unit}" in done
    assert done[-2:] == ["systemctl daemon-reload", "systemctl enable --now moments.service"]
    if (DEPLOY / "mosquitto").is_dir():
        assert any(line.endswith(f"{root}/etc/mosquitto/mosquitto.conf") for line in done)
        assert any(f"{root}/etc/mosquitto/moments.acl" in line for line in done)
        assert any(f"{root}/etc/mosquitto/conf.d/bridge-hq.conf" in line for line in done)
    assert list(root.iterdir()) == []


def assert_upgrade_sequence(done: list[str], root: Path, *, stopped: bool = True) -> None:
    """The gateway stopped (when its unit is there), the package installed, the store
    migrated, the gateway started."""
    pip = next(i for i, line in enumerate(done) if " install --quiet " in line)
    migrate = done.index(
        f"runuser -u moments -- env MOMENTS_DATA_DIR={root}/var/lib/moments "
        f"{root}/opt/moments/.venv/bin/moments store migrate -c {root}/etc/moments/moments.toml"
    )
    start = done.index("systemctl enable --now moments.service")
    assert pip < migrate < start
    if stopped:
        assert done.count("systemctl stop moments.service") == 1
        assert done.index("systemctl stop moments.service") < pip
    else:
        assert "systemctl stop moments.service" not in done


def installed_unit(root: Path) -> Path:
    """The gateway's unit file, as an earlier install left it."""
    unit = root / "etc" / "systemd" / "system" / "moments.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text((DEPLOY / "moments.service").read_text())
    return unit


def test_dry_run_of_an_upgrade_stops_installs_migrates_and_starts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # No unit yet: no service to stop, but the package, the migration and the start.
    result = install("--dry-run", "--upgrade", root=root)
    assert result.returncode == 0, result.stderr
    assert_upgrade_sequence(actions(result.stdout), root, stopped=False)
    assert "no gateway service to stop" in result.stderr
    assert list(root.iterdir()) == []
    # Without --upgrade: no stop and no migration.
    plain = actions(install("--dry-run", root=root).stdout)
    assert "systemctl stop moments.service" not in plain
    assert not any("store migrate" in line for line in plain)
    # With the unit: stopped first.
    installed_unit(root)
    result = install("--dry-run", "--upgrade", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert_upgrade_sequence(done, root)
    assert "systemctl restart moments.service" not in done


def test_dry_run_of_a_first_install_sets_data_dir_backups_and_journald(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    # The configuration names the unit's store, so commands run by hand with -c find it.
    config = f"{DEPLOY}/moments.example.toml {root}/etc/moments/moments.toml"
    (line,) = [line for line in done if f"-g moments {config}" in line]
    assert line.startswith("install -m 0640 -o root -g moments ")
    assert 'data_dir = "/var/lib/moments"' in line
    assert '[broker] username "gateway" and a new password' in line
    # A folder the service user can write its backups into; the command on sudo's PATH.
    assert f"install -d -m 0750 -o moments -g moments {root}/var/backups/moments" in done
    assert f"ln -s /opt/moments/.venv/bin/moments {root}/usr/local/bin/moments" in done
    # journald's limits for the SD card, then journald restarted, before the service starts.
    dropin = f"{root}/etc/systemd/journald.conf.d/moments.conf"
    install_dropin = done.index(
        f"install -m 0644 -o root -g root {DEPLOY}/journald/moments.conf {dropin}"
    )
    assert done[install_dropin - 1] == (
        f"install -d -m 0755 -o root -g root {root}/etc/systemd/journald.conf.d"
    )
    assert done[install_dropin + 1] == "systemctl restart systemd-journald.service"
    assert install_dropin < done.index("systemctl enable --now moments.service")
    if (DEPLOY / "mosquitto").is_dir():
        # The gateway's broker login goes into Mosquitto's password file, never in the output.
        passwd = [line for line in done if line.endswith(f"{root}/etc/mosquitto/moments.passwd")]
        assert len(passwd) == 1
        assert "mosquitto_passwd -U" in passwd[0]
    # A first install is no upgrade.
    assert "systemctl stop moments.service" not in done
    assert not any("store migrate" in line for line in done)
    assert "already installed" not in result.stderr
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(
    "installed", ["etc/systemd/system/moments.service", "opt/moments/.venv/bin/moments"]
)
def test_dry_run_over_an_installed_gateway_upgrades_it(tmp_path: Path, installed: str) -> None:
    """A re-run without --upgrade must not put new code under a running gateway unmigrated."""
    root = tmp_path / "root"
    marker = root / installed
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    before = sorted(root.rglob("*"))
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert "already installed: upgrading it" in result.stderr
    done = actions(result.stdout)
    # Only a unit can be stopped; without one a gateway could only run by hand, which the
    # store's lock would show (test_an_upgrade_refuses_a_store_in_use_...).
    assert_upgrade_sequence(done, root, stopped=installed.endswith(".service"))
    # The gateway was stopped, so enable --now starts it: no restart on top.
    assert "systemctl restart moments.service" not in done
    assert sorted(root.rglob("*")) == before


def test_dry_run_keeps_an_existing_journald_drop_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    dropin = root / "etc" / "systemd" / "journald.conf.d" / "moments.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Journal]\nSystemMaxUse=50M\n")
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert not any("journald" in line for line in done)
    assert f"keeping the existing {dropin}" in result.stderr
    assert dropin.read_text() == "[Journal]\nSystemMaxUse=50M\n"


def test_dry_run_warns_about_an_existing_configuration_without_the_store_path(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    config = root / "etc" / "moments" / "moments.toml"
    config.parent.mkdir(parents=True)
    config.write_text('store_id = "store-9"\ndata_dir = "./var"\n')
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert 'does not say data_dir = "/var/lib/moments"' in result.stderr
    assert "has no [broker] username" in result.stderr
    config.write_text(
        'store_id = "store-9"\ndata_dir = "/var/lib/moments"\n\n'
        '[broker]\nusername = "gateway"\npassword = "x"\n'
    )
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert "does not say data_dir" not in result.stderr
    assert "has no [broker] username" not in result.stderr
    assert config.read_text().startswith('store_id = "store-9"')
    if (DEPLOY / "mosquitto").is_dir():
        # Its login goes into Mosquitto's password file when that has no line for it ...
        passwd = root / "etc" / "mosquitto" / "moments.passwd"
        assert any("mosquitto_passwd -U" in line for line in actions(result.stdout))
        # ... and is left alone when it has one.
        passwd.parent.mkdir(parents=True)
        passwd.write_text("node-1:$7$hash\ngateway:$7$hash\n")
        result = install("--dry-run", root=root)
        assert result.returncode == 0, result.stderr
        assert not any("moments.passwd" in line for line in actions(result.stdout))
        assert passwd.read_text() == "node-1:$7$hash\ngateway:$7$hash\n"


def shell_function(name: str) -> str:
    """The text of one function of install.sh, from ``name() {`` to its closing ``}``."""
    match = re.search(rf"^{name}\(\) {{.*?^}}$", SCRIPT.read_text(), re.MULTILINE | re.DOTALL)
    assert match is not None, name
    return match.group(0)


def render_config(source: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    """Runs install.sh's render_config on its own (a real install needs root)."""
    dest.write_text("")
    script = "\n".join(
        [
            'STORE_DATA_DIR="/var/lib/moments"',
            'BROKER_USER="gateway"',
            shell_function("render_config"),
            'render_config "$1" "$2"',
        ]
    )
    return subprocess.run(
        ["bash", "-c", script, "render", str(source), str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_installed_configuration_names_the_store_and_the_broker_login(tmp_path: Path) -> None:
    installed = tmp_path / "moments.toml"
    result = render_config(DEPLOY / "moments.example.toml", installed)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "login\n"
    config = load_config(installed, {})
    assert config.data_dir == "/var/lib/moments"
    assert config.broker.username == "gateway"
    assert len(config.broker.password) >= 24
    # The password is written to the file only, never printed.
    assert config.broker.password not in result.stdout + result.stderr
    # Everything else, comments included, is the example's.
    example = (DEPLOY / "moments.example.toml").read_text().splitlines()
    changed = [
        (a, b) for a, b in zip(example, installed.read_text().splitlines(), strict=True) if a != b
    ]
    assert [a.split("=")[0].strip() for a, _ in changed] == ["data_dir", "username", "password"]
    # Another run makes another password.
    again = tmp_path / "again.toml"
    assert render_config(DEPLOY / "moments.example.toml", again).returncode == 0
    assert load_config(again, {}).broker.password != config.broker.password


def test_the_installed_configuration_keeps_a_given_broker_login(tmp_path: Path) -> None:
    source = tmp_path / "given.toml"
    source.write_text('store_id = "s-2"\n\n[broker]\nusername = "gw-2"\npassword = "given"\n')
    installed = tmp_path / "moments.toml"
    result = render_config(source, installed)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kept\n"
    parsed = tomllib.loads(installed.read_text())
    assert parsed["data_dir"] == "/var/lib/moments"
    assert parsed["broker"] == {"username": "gw-2", "password": "given"}
    # A file without [broker] or data_dir gets both; one it cannot edit is refused.
    source.write_text('store_id = "s-3"\n\n[[zones]]\nid = "a"\nnodes = ["n"]\n')
    assert render_config(source, installed).returncode == 0
    config = load_config(installed, {})
    assert (config.data_dir, config.broker.username) == ("/var/lib/moments", "gateway")
    source.write_text('broker = { host = "10.0.0.2" }\n')
    refused = render_config(source, installed)
    assert refused.returncode != 0
    assert "cannot set data_dir and the broker login" in refused.stderr


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


def pem_files(folder: Path, *names: str) -> dict[str, Path]:
    """Stand-ins for certificates and keys (a dry run only names them)."""
    folder.mkdir(exist_ok=True)
    made = {}
    for name in names:
        made[name] = folder / name
        made[name].write_text(f"not really {name}\n")
    return made


def installed_broker(root: Path) -> None:
    """A box whose broker configuration and gateway login are in place already."""
    etc = root / "etc"
    (etc / "moments").mkdir(parents=True)
    (etc / "moments" / "moments.toml").write_text(
        'store_id = "store-9"\ndata_dir = "/var/lib/moments"\n\n'
        '[broker]\nusername = "gateway"\npassword = "x"\n'
    )
    (etc / "mosquitto" / "conf.d").mkdir(parents=True)
    (etc / "mosquitto" / "mosquitto.conf").write_text(
        (DEPLOY / "mosquitto" / "moments.conf").read_text()
    )
    (etc / "mosquitto" / "moments.acl").write_text("user gateway\n")
    (etc / "mosquitto" / "moments.passwd").write_text("gateway:$7$hash\n")
    (etc / "systemd" / "journald.conf.d").mkdir(parents=True)
    (etc / "systemd" / "journald.conf.d" / "moments.conf").write_text("[Journal]\n")


def test_dry_run_without_systemd_only_enables_the_gateway(tmp_path: Path) -> None:
    """In a chroot or an image build nothing can be stopped, reloaded, started or restarted:
    the unit is enabled (which works offline) and the run ends well."""
    root = tmp_path / "root"
    root.mkdir()
    tls = pem_files(tmp_path / "tls", "broker.crt", "broker.key")
    args = ["--dry-run", "--broker-cert", str(tls["broker.crt"]), "--broker-key"]
    args.append(str(tls["broker.key"]))
    result = install(*args, root=root, systemd="offline")
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert [line for line in done if line.startswith("systemctl")] == [
        "systemctl enable moments.service"
    ]
    assert done[-1] == "systemctl enable moments.service"
    assert "systemd is not running" in result.stderr
    # Mosquitto's and journald's new files are read at the next boot.
    assert any(line.endswith(f"{root}/etc/mosquitto/conf.d/00-moments-tls.conf") for line in done)
    assert "at the next boot" in result.stderr
    # An upgrade there: nothing to stop, but the store is still migrated.
    marker = root / "etc" / "systemd" / "system" / "moments.service"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    result = install("--dry-run", root=root, systemd="offline")
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert [line for line in done if line.startswith("systemctl")] == [
        "systemctl enable moments.service"
    ]
    assert any("store migrate" in line for line in done)
    assert "no gateway service to stop" in result.stderr


def test_whether_systemd_runs_is_read_from_the_target(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    offline = install("--dry-run", root=root, systemd=None)
    assert offline.returncode == 0, offline.stderr
    assert "systemctl daemon-reload" not in actions(offline.stdout)
    assert actions(offline.stdout)[-1] == "systemctl enable moments.service"
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    running = install("--dry-run", root=root, systemd=None)
    assert running.returncode == 0, running.stderr
    assert actions(running.stdout)[-2:] == [
        "systemctl daemon-reload",
        "systemctl enable --now moments.service",
    ]
    assert "systemd is not running" not in running.stderr


def test_the_systemd_override_is_for_dry_runs_only(tmp_path: Path) -> None:
    wrong = install("--dry-run", root=tmp_path, systemd="maybe")
    assert wrong.returncode != 0
    assert "must be running or offline" in wrong.stderr
    env = {k: v for k, v in os.environ.items() if k != "MOMENTS_INSTALL_ROOT"}
    env["MOMENTS_INSTALL_SYSTEMD"] = "offline"
    real = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60, env=env
    )
    assert real.returncode != 0
    assert "only for --dry-run" in real.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_gives_mosquitto_its_own_copies_of_its_tls_files(tmp_path: Path) -> None:
    """/etc/moments stays closed to everyone but root and moments: Mosquitto reads copies in
    /etc/mosquitto/certs, its keys readable by the mosquitto group only."""
    root = tmp_path / "root"
    root.mkdir()
    tls = pem_files(
        tmp_path / "given", "ca.crt", "store.crt", "store.key", "broker.crt", "broker.key", "hq.crt"
    )
    result = install(
        "--dry-run",
        "--hq-bridge",
        *("--ca", str(tls["ca.crt"]), "--cert", str(tls["store.crt"])),
        *("--key", str(tls["store.key"]), "--broker-cert", str(tls["broker.crt"])),
        *("--broker-key", str(tls["broker.key"]), "--hq-ca", str(tls["hq.crt"])),
        root=root,
    )
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    etc, certs = f"{root}/etc/moments", f"{root}/etc/mosquitto/certs"
    assert f"install -d -m 0750 -o root -g moments {etc}" in done
    assert f"install -d -m 0750 -o root -g moments {etc}/tls" in done
    assert f"install -d -m 0755 -o root -g root {certs}" in done
    expected = [
        f"install -m 0644 -o root -g root {tls['ca.crt']} {etc}/tls/ca.crt",
        f"install -m 0644 -o root -g root {tls['store.crt']} {etc}/tls/store.crt",
        f"install -m 0640 -o root -g moments {tls['store.key']} {etc}/tls/store.key",
        f"install -m 0644 -o root -g root {tls['hq.crt']} {etc}/tls/hq-ca.crt",
        f"install -m 0644 -o root -g root {tls['ca.crt']} {certs}/ca.crt",
        f"install -m 0644 -o root -g root {tls['broker.crt']} {certs}/broker.crt",
        f"install -m 0640 -o root -g mosquitto {tls['broker.key']} {certs}/broker.key",
        f"install -m 0644 -o root -g root {tls['hq.crt']} {certs}/hq-ca.crt",
        f"install -m 0644 -o root -g root {tls['store.crt']} {certs}/store.crt",
        f"install -m 0640 -o root -g mosquitto {tls['store.key']} {certs}/store.key",
    ]
    for line in expected:
        assert line in done, line
    # Nothing of Mosquitto's goes into the gateway's folder, and nothing opens it.
    assert not any(f"{etc}/tls/broker" in line for line in done)
    assert not any(etc in line and ("-g mosquitto" in line or "chmod" in line) for line in done)
    # The bridge's copies only come with a bridge.
    plain = install("--dry-run", "--cert", str(tls["store.crt"]), root=root)
    assert not any(f"{certs}/store.crt" in line for line in actions(plain.stdout))
    assert list(root.iterdir()) == []


def test_dry_run_copies_the_gateways_installed_files_for_a_new_bridge(tmp_path: Path) -> None:
    root = tmp_path / "root"
    gateway_tls = root / "etc" / "moments" / "tls"
    gateway_tls.mkdir(parents=True)
    for name in ("store.crt", "store.key", "hq-ca.crt", "broker.crt"):
        (gateway_tls / name).write_text(f"not really {name}\n")
    result = install("--dry-run", "--hq-bridge", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    certs = f"{root}/etc/mosquitto/certs"
    assert f"install -m 0640 -o root -g mosquitto {gateway_tls}/store.key {certs}/store.key" in done
    assert f"install -m 0644 -o root -g root {gateway_tls}/hq-ca.crt {certs}/hq-ca.crt" in done
    # An older install's broker certificate is copied too; without its key, no TLS listener.
    assert f"install -m 0644 -o root -g root {gateway_tls}/broker.crt {certs}/broker.crt" in done
    assert not any("moments-tls.conf" in line for line in done)
    assert "no TLS listener for the LAN yet" in result.stderr


def test_dry_run_adds_the_tls_listener_only_with_its_files(tmp_path: Path) -> None:
    """Without the broker's certificate and key the broker still starts: the 8883 listener,
    in a file of its own, is installed only once both are there."""
    root = tmp_path / "root"
    root.mkdir()
    listener = (
        f"{DEPLOY}/mosquitto/tls-listener.conf {root}/etc/mosquitto/conf.d/00-moments-tls.conf"
    )
    first = install("--dry-run", root=root)
    assert first.returncode == 0, first.stderr
    assert not any("moments-tls.conf" in line for line in actions(first.stdout))
    assert "no TLS listener for the LAN yet" in first.stderr
    tls = pem_files(tmp_path / "tls", "broker.crt", "broker.key")
    given = install(
        "--dry-run",
        *("--broker-cert", str(tls["broker.crt"]), "--broker-key", str(tls["broker.key"])),
        root=root,
    )
    assert given.returncode == 0, given.stderr
    done = actions(given.stdout)
    assert f"install -m 0644 -o root -g root {listener}" in done
    assert done.index(f"install -m 0644 -o root -g root {listener}") < done.index(
        "systemctl restart mosquitto.service"
    )
    assert list(root.iterdir()) == []
    # Already in /etc/mosquitto/certs: the listener comes too.
    certs = root / "etc" / "mosquitto" / "certs"
    certs.mkdir(parents=True)
    for name in ("broker.crt", "broker.key"):
        (certs / name).write_text("x\n")
    there = install("--dry-run", root=root)
    assert f"install -m 0644 -o root -g root {listener}" in actions(there.stdout)


def test_dry_run_adds_no_second_tls_listener_to_an_older_configuration(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed_broker(root)
    conf = root / "etc" / "mosquitto" / "mosquitto.conf"
    conf.write_text(
        "# Moments store broker\nlistener 1883 127.0.0.1\nlistener 8883\n"
        "certfile /etc/moments/tls/broker.crt\nkeyfile /etc/moments/tls/broker.key\n"
    )
    tls = pem_files(tmp_path / "tls", "broker.crt", "broker.key")
    result = install(
        "--dry-run",
        *("--broker-cert", str(tls["broker.crt"]), "--broker-key", str(tls["broker.key"])),
        root=root,
    )
    assert result.returncode == 0, result.stderr
    assert not any("moments-tls.conf" in line for line in actions(result.stdout))
    assert "port 8883 is opened already" in result.stderr
    assert f"{conf}: pointed at Mosquitto's copies" in result.stderr


# An older install's mosquitto.conf (8594606): its 8883 listener read the gateway's folder.
OLDER_MOSQUITTO_CONF = """\
# Moments store broker: Mosquitto 2.x (Debian / Raspberry Pi OS package), see mosquitto.conf(5).
per_listener_settings false
listener 1883 127.0.0.1
# The TLS files are in
# /etc/moments/tls, readable by the `mosquitto` user (the key: by it alone).
listener 8883
certfile /etc/moments/tls/broker.crt
keyfile /etc/moments/tls/broker.key
cafile /etc/moments/tls/ca.crt
tls_version tlsv1.2
include_dir /etc/mosquitto/conf.d
"""
OLDER_BRIDGE_CONF = """\
# Moments store broker: bridge to HQ for fleet monitoring (optional), see mosquitto.conf(5),
connection hq
address hq.example.net:8883
bridge_cafile /etc/moments/tls/hq-ca.crt
bridge_certfile /etc/moments/tls/store.crt
bridge_keyfile /etc/moments/tls/store.key
"""


def older_install(root: Path) -> dict[str, Path]:
    """A box set up by an older install: the gateway's folder opened for Mosquitto by hand,
    Mosquitto's Moments files reading its TLS files there."""
    installed_broker(root)
    installed_unit(root)
    tls = root / "etc" / "moments" / "tls"
    tls.mkdir()
    for name in ("ca.crt", "broker.crt", "broker.key", "hq-ca.crt", "store.crt", "store.key"):
        (tls / name).write_text(f"not really {name}\n")
    mosquitto = root / "etc" / "mosquitto"
    (mosquitto / "mosquitto.conf").write_text(OLDER_MOSQUITTO_CONF)
    (mosquitto / "conf.d" / "bridge-hq.conf").write_text(OLDER_BRIDGE_CONF)
    return {"conf": mosquitto / "mosquitto.conf", "bridge": mosquitto / "conf.d" / "bridge-hq.conf"}


def run_action(line: str, path: Path) -> None:
    """Runs a dry run's action line (shell-quoted, as printed) on ``path`` instead of its last
    argument: what the real run would do to that file."""
    args = shlex.split(line)
    subprocess.run([*args[:-1], str(path)], check=True, timeout=30)


def test_an_older_moments_broker_configuration_is_pointed_at_mosquittos_copies(
    tmp_path: Path,
) -> None:
    """Mosquitto cannot read /etc/moments/tls: restarted on the older files, it would not start.
    The Moments files are rewritten (a dated copy of each kept), then Mosquitto restarted."""
    root = tmp_path / "root"
    files = older_install(root)
    before = {path: path.read_text() for path in root.rglob("*") if path.is_file()}
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    certs = f"{root}/etc/mosquitto/certs"
    for path in files.values():
        (copy,) = [line for line in done if line.startswith(f"cp -p {path} ")]
        assert re.fullmatch(rf"cp -p {path} {path}\.before-moments-\d{{8}}T\d{{6}}Z", copy)
        (rewrite,) = [
            line for line in done if line.startswith("sed -i") and line.endswith(str(path))
        ]
        assert done.index(copy) < done.index(rewrite)
        # What the rewrite does: every setting naming /etc/moments/tls/X names the copy X in
        # /etc/mosquitto/certs; the rest, comments included, is as it was.
        trial = tmp_path / path.name
        trial.write_text(path.read_text())
        run_action(rewrite, trial)
        for old, new in zip(
            path.read_text().splitlines(), trial.read_text().splitlines(), strict=True
        ):
            if old.startswith("#") or "/etc/moments/" not in old:
                assert new == old
            else:
                assert new == old.replace("/etc/moments/tls/", "/etc/mosquitto/certs/")
        assert "file /etc/moments" not in trial.read_text()
        assert f"{path}: pointed at Mosquitto's copies" in result.stderr
    # Those copies, from the gateway's files (step 6), before the restart.
    restart = done.index("systemctl restart mosquitto.service")
    for name in ("ca.crt", "broker.crt", "broker.key", "hq-ca.crt", "store.crt", "store.key"):
        (line,) = [line for line in done if line.endswith(f" {certs}/{name}")]
        assert done.index(line) < restart
    assert "NOT restarted" not in result.stderr
    # No operator's file reads /etc/moments any more: its folders are closed again.
    assert f"install -d -m 0750 -o root -g moments {root}/etc/moments" in done
    assert f"install -d -m 0750 -o root -g moments {root}/etc/moments/tls" in done
    assert {path: path.read_text() for path in root.rglob("*") if path.is_file()} == before


def test_an_operators_file_reading_the_gateways_folder_holds_mosquittos_restart(
    tmp_path: Path,
) -> None:
    """A file that is not Moments' is its owner's to change: Mosquitto is not restarted into a
    configuration it cannot start with, the script says which lines to change, and the modes
    an operator gave /etc/moments to make that file work are kept."""
    root = tmp_path / "root"
    older_install(root)
    own = root / "etc" / "mosquitto" / "conf.d" / "lan.conf"
    own.write_text("listener 8884\ncertfile /etc/moments/tls/broker.crt\n")
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert "systemctl restart mosquitto.service" not in done
    assert "WARNING: Mosquitto is NOT restarted" in result.stderr
    assert f"{own} (not a Moments file, so left as it is)" in result.stderr
    assert "2:certfile /etc/moments/tls/broker.crt" in result.stderr
    assert "systemctl restart mosquitto" in result.stderr
    assert not any(str(own) in line for line in done)
    # The Moments files are still pointed at Mosquitto's copies.
    assert any(line.startswith("sed -i") for line in done)
    # /etc/moments and /etc/moments/tls keep the mode and owner they have.
    assert not any(
        line.endswith((f"{root}/etc/moments", f"{root}/etc/moments/tls")) for line in done
    )
    assert f"keeping the mode and owner of {root}/etc/moments: " in result.stderr
    # Without systemd (an image build): the same warning, for the next boot.
    offline = install("--dry-run", root=root, systemd="offline")
    assert offline.returncode == 0, offline.stderr
    assert "WARNING: Mosquitto is NOT restarted" in offline.stderr
    assert "before the next boot" in offline.stderr


def test_a_rewritten_file_without_mosquittos_copy_holds_the_restart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = older_install(root)
    (root / "etc" / "moments" / "tls" / "ca.crt").unlink()
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart mosquitto.service" not in actions(result.stdout)
    assert "WARNING: Mosquitto is NOT restarted" in result.stderr
    assert f"{files['conf']} needs {root}/etc/mosquitto/certs/ca.crt" in result.stderr
    # Given with --ca, the restart comes.
    given = pem_files(tmp_path / "given", "ca.crt")
    again = install("--dry-run", "--ca", str(given["ca.crt"]), root=root)
    assert again.returncode == 0, again.stderr
    assert "systemctl restart mosquitto.service" in actions(again.stdout)
    assert "NOT restarted" not in again.stderr


def test_the_tls_listener_is_read_before_the_bridge() -> None:
    """Mosquitto reads conf.d alphabetically; mosquitto.conf(5) wants listeners before any
    bridge's connection block."""
    text = SCRIPT.read_text()
    names = {
        var: re.search(rf'^readonly {var}="\$MOSQUITTO_ETC/conf\.d/([^"]+)"$', text, re.M)
        for var in ("MOSQUITTO_TLS_CONF", "BRIDGE_CONF")
    }
    tls, bridge = (match.group(1) for match in names.values() if match is not None)
    assert (tls, bridge) == ("00-moments-tls.conf", "bridge-hq.conf")
    assert sorted([bridge, tls]) == [tls, bridge]


def test_the_tls_listener_of_an_older_install_is_renamed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed_broker(root)
    conf_d = root / "etc" / "mosquitto" / "conf.d"
    old, new = conf_d / "moments-tls.conf", conf_d / "00-moments-tls.conf"
    old.write_text((DEPLOY / "mosquitto" / "tls-listener.conf").read_text())
    certs = root / "etc" / "mosquitto" / "certs"
    certs.mkdir()
    for name in ("broker.crt", "broker.key"):
        (certs / name).write_text("x\n")
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    move = done.index(f"mv {old} {new}")
    assert move < done.index("systemctl restart mosquitto.service")
    assert not any("tls-listener.conf" in line for line in done)
    assert "port 8883 is opened already" not in result.stderr
    # Once renamed, nothing to do: no second listener, no restart.
    old.rename(new)
    again = install("--dry-run", root=root)
    assert again.returncode == 0, again.stderr
    assert not any("moments-tls.conf" in line for line in actions(again.stdout))
    assert "Mosquitto's files are unchanged" in again.stderr
    # Both there: the same file twice is removed under its older name; two different ones
    # (two 8883 listeners) are the operator's to sort out, and Mosquitto is not restarted.
    old.write_text(new.read_text())
    both = actions(install("--dry-run", root=root).stdout)
    assert f"rm -f {old}" in both
    assert "systemctl restart mosquitto.service" in both
    old.write_text("listener 8883\n")
    differ = install("--dry-run", root=root)
    assert differ.returncode == 0, differ.stderr
    assert not any(str(old) in line for line in actions(differ.stdout))
    assert "systemctl restart mosquitto.service" not in actions(differ.stdout)
    assert "WARNING: Mosquitto is NOT restarted" in differ.stderr
    assert f"{old} (the TLS listener's older name)" in differ.stderr


def test_dry_run_restarts_mosquitto_when_any_of_its_files_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed_broker(root)
    unchanged = install("--dry-run", root=root)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "systemctl restart mosquitto.service" not in actions(unchanged.stdout)
    assert "Mosquitto's files are unchanged" in unchanged.stderr
    # A new certificate alone (the configuration and logins as they were): a restart.
    given = pem_files(tmp_path / "tls", "ca.crt")
    result = install("--dry-run", "--ca", str(given["ca.crt"]), root=root)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart mosquitto.service" in actions(result.stdout)
    # The same certificate again: nothing changed, no restart.
    certs = root / "etc" / "mosquitto" / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text(given["ca.crt"].read_text())
    again = install("--dry-run", "--ca", str(given["ca.crt"]), root=root)
    assert again.returncode == 0, again.stderr
    assert "systemctl restart mosquitto.service" not in actions(again.stdout)


def test_an_upgrade_refuses_a_store_in_use_before_installing_anything(tmp_path: Path) -> None:
    """A gateway started outside the unit holds the store's lock after the unit's stop: the
    script must stop before pip swaps the code, not fail at the migration afterwards."""
    root = tmp_path / "root"
    unit = root / "etc" / "systemd" / "system" / "moments.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("")
    lock = root / "var" / "lib" / "moments" / "store" / "moments.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("4242\n")
    with lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = install("--dry-run", root=root)
    assert refused.returncode == 1
    assert "is in use" in refused.stderr
    assert "(4242)" in refused.stderr
    assert "Nothing was installed" in refused.stderr
    # The exit trap says the gateway would be left stopped, and how to start it again.
    assert "a real run failing here would leave the gateway STOPPED" in refused.stderr
    assert "start the previous version again with: systemctl start moments" in refused.stderr
    done = actions(refused.stdout)
    assert done[-1] == "systemctl stop moments.service"
    assert not any(" install --quiet " in line for line in done)
    # Once the lock is free the upgrade goes on.
    free = install("--dry-run", root=root)
    assert free.returncode == 0, free.stderr
    assert_upgrade_sequence(actions(free.stdout), root)
    assert "STOPPED" not in free.stderr


def stop_gateway(
    tmp_path: Path, body: str, *args: str, dry_run: bool = False
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Runs install.sh's stop_gateway, its exit trap and then ``body`` on their own, as in a
    real run (``dry_run`` False) on a booted system with the unit installed, against a stand-in
    ``systemctl`` that says the unit is activating (in a restart loop: `is-active` fails).
    Returns the result and the calls that ``systemctl`` got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "systemctl"
    fake.write_text(
        '#!/bin/sh\necho "$*" >> "$SYSTEMCTL_LOG"\n'
        'case "$1" in is-active) echo activating; exit 3 ;; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    log = tmp_path / "systemctl.log"
    log.write_text("")
    unit = installed_unit(tmp_path / "root")
    script = "\n".join(
        [
            "set -euo pipefail",
            'PREFIX="[dry-run] "',
            f"DRY_RUN={int(dry_run)}",
            "SYSTEMD_RUNNING=1",
            f"UNIT_PATH={shlex.quote(str(unit))}",
            'GATEWAY_DOWN=""',
            "say() { printf '==> %s\\n' \"$*\" >&2; }",
            *(shell_function(name) for name in ("run", "gateway_left_stopped")),
            *(shell_function(name) for name in ("gateway_down_trap", "stop_gateway")),
            body,
        ]
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SYSTEMCTL_LOG": str(log)}
    result = subprocess.run(
        ["bash", "-c", script, "stop_gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    return result, log.read_text().splitlines()


def test_an_upgrade_stops_a_gateway_in_a_restart_loop(tmp_path: Path) -> None:
    """`systemctl is-active` fails for a unit systemd keeps restarting: it is stopped all the
    same, or systemd would start it again in the middle of pip and the migration."""
    result, calls = stop_gateway(tmp_path, 'stop_gateway\necho "$GATEWAY_DOWN"')
    assert result.returncode == 0, result.stderr
    assert calls == ["is-active moments.service", "stop moments.service"]
    assert "the gateway is activating: stopping it" in result.stderr
    assert result.stdout == "stopped\n"
    # A dry run asks nothing and shows the stop.
    dry, calls = stop_gateway(tmp_path, "stop_gateway", dry_run=True)
    assert dry.returncode == 0, dry.stderr
    assert calls == []
    assert dry.stdout == "[dry-run] systemctl stop moments.service\n"


def test_dry_run_over_an_installed_gateway_stops_it_whatever_its_state(tmp_path: Path) -> None:
    """Nothing says the gateway runs (a dry run asks no one): it is stopped before pip."""
    root = tmp_path / "root"
    installed_unit(root)
    result = install("--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    done = actions(result.stdout)
    assert_upgrade_sequence(done, root)
    assert "not running" not in result.stderr


@pytest.mark.parametrize(
    ("stage", "says"),
    [
        ("stopped", "start the previous version again with: systemctl start moments"),
        ("pip", "the old code may be partly replaced"),
        ("migrate", "the store is not migrated"),
        ("installed", "start it with: systemctl start moments"),
    ],
)
def test_a_failing_upgrade_says_the_gateway_is_left_stopped(
    tmp_path: Path, stage: str, says: str
) -> None:
    """After the stop, any failing step under set -e (pip without network, a bad wheel) says
    that the gateway is down and how to get it back; nothing is said on success or once the
    gateway is started again."""
    failing = 'stop_gateway\nGATEWAY_DOWN="$1"\nfalse\necho not reached'
    result, calls = stop_gateway(tmp_path, failing, stage)
    assert result.returncode == 1
    assert calls[-1] == "stop moments.service"
    assert "not reached" not in result.stdout
    assert "the gateway is left STOPPED: the upgrade failed (exit status 1" in result.stderr
    assert says in result.stderr
    if stage == "pip":
        assert "run install.sh again" in result.stderr
    # A successful run says nothing; neither does a failure once the script has disarmed it,
    # with its own lines (after `systemctl enable --now moments.service`).
    fine, _ = stop_gateway(tmp_path, 'stop_gateway\nGATEWAY_DOWN="$1"', stage)
    assert fine.returncode == 0, fine.stderr
    assert "STOPPED" not in fine.stderr
    text = SCRIPT.read_text()
    started = text.index("run systemctl enable --now moments.service\n")
    disarm = text[started:].splitlines()[1:4]
    assert disarm[1:] == ['GATEWAY_DOWN=""', "trap - EXIT"], disarm
    after, _ = stop_gateway(
        tmp_path, f'stop_gateway\nGATEWAY_DOWN="$1"\n{disarm[1]}\n{disarm[2]}\nfalse', stage
    )
    assert after.returncode == 1
    assert "STOPPED" not in after.stderr


def install_new(source: Path, dest: Path, store_id: str) -> subprocess.CompletedProcess[str]:
    """Runs install.sh's install_new on its own, as whoever runs the test."""
    user, group = (
        subprocess.run(["id", flag], capture_output=True, text=True, check=True).stdout.strip()
        for flag in ("-un", "-gn")
    )
    script = "\n".join(
        [
            "set -euo pipefail",
            'PREFIX="[dry-run] "',
            "DRY_RUN=0",
            "say() { printf '==> %s\\n' \"$*\" >&2; }",
            shell_function("install_new"),
            'install_new "$1" "$2" 0644 "$3" "$4" "$5"',
        ]
    )
    return subprocess.run(
        ["bash", "-c", script, "install_new", str(source), str(dest), user, group, store_id],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["moments.acl", "bridge-hq.conf"])
def test_the_store_id_replaces_store_id_outside_explanatory_comments(
    tmp_path: Path, name: str
) -> None:
    source = DEPLOY / "mosquitto" / name
    dest = tmp_path / name
    result = install_new(source, dest, "store-12")
    assert result.returncode == 0, result.stderr
    pairs = list(zip(source.read_text().splitlines(), dest.read_text().splitlines(), strict=True))
    for shipped, installed in pairs:
        if re.match(r"\s*#(\s|$)", shipped):
            assert installed == shipped
        else:
            assert installed == shipped.replace("STORE_ID", "store-12")
            assert "STORE_ID" not in installed
    assert any("store-12" in installed for _, installed in pairs)
    # An existing file is kept.
    dest.write_text("mine\n")
    assert install_new(source, dest, "store-13").returncode == 1
    assert dest.read_text() == "mine\n"


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
