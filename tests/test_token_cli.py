"""``moments token``: issue, revoke and revoke-subject against a real store in a temporary data
folder, through ``gateway.cli.main`` (and once as a separate process beside a store that is
held open, as it is while the gateway runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import AuthError
from gateway.store import Database
from gateway.store.backup import hold_lock
from gateway.tokens import Claims, Tokens, check_not_revoked, generation, read_secret

TIMEOUT_S = 30
DAY = 86_400


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MOMENTS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "moments.toml"
    path.write_text(f"data_dir = {json.dumps(str(tmp_path / 'var'))}\n")
    return path


@contextmanager
def store(tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path / "var" / "store", map_size=1 << 24)
    db.open()
    try:
        yield db
    finally:
        db.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """``moments ARGV``: exit status, the one JSON line it printed (or None), stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert out.count("\n") <= 1, out
    assert "Traceback" not in err
    return code, json.loads(out) if out else None, err


def issue(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> dict[str, Any]:
    code, shown, err = run(
        capsys,
        "token",
        "issue",
        "--role",
        "shopper",
        "--subject",
        "shopper-1",
        "-c",
        str(config),
        *extra,
    )
    assert code == 0, err
    assert err == ""
    assert sorted(shown) == ["expires_at", "jti", "role", "subject", "token"]
    return dict(shown)


def verified(tmp_path: Path, token: str) -> Claims:
    """The token's claims as the gateway would accept it: signed, in time, not revoked."""
    with store(tmp_path) as db:
        secret = read_secret(db)
        assert secret is not None
        claims = Tokens(secret).verify(token, now=time.time())
        check_not_revoked(db, claims)
        return claims


def revoked(tmp_path: Path, token: str) -> bool:
    with store(tmp_path) as db:
        secret = read_secret(db)
        assert secret is not None
        claims = Tokens(secret).authenticate(token)
        try:
            check_not_revoked(db, claims)
        except AuthError as exc:
            return exc.code == "token_revoked"
        return False


def one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("moments: "), err
    for needle in needles:
        assert needle in lines[0], err


def test_issue_verify_revoke_round_trip(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    shown = issue(capsys, config, "--ttl", "12h")

    claims = verified(tmp_path, shown["token"])
    assert (claims.role, claims.subject, claims.jti) == ("shopper", "shopper-1", shown["jti"])
    assert (shown["role"], shown["subject"]) == ("shopper", "shopper-1")
    assert shown["expires_at"] == claims.expires_at
    assert before + 12 * 3600 - 1 <= claims.expires_at <= time.time() + 12 * 3600
    assert claims.generation == 0

    code, done, err = run(capsys, "token", "revoke", shown["token"], "-c", str(config))
    assert code == 0, err
    assert done == {
        "revoked": shown["jti"],
        "role": "shopper",
        "subject": "shopper-1",
        "expires_at": shown["expires_at"],
        "new": True,
    }
    assert revoked(tmp_path, shown["token"])

    code, done, err = run(capsys, "token", "revoke", shown["token"], "-c", str(config))
    assert (code, done["new"]) == (0, False)


def test_the_secret_is_created_once(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = issue(capsys, config)
    with store(tmp_path) as db:
        secret = read_secret(db)
    second = issue(capsys, config)

    with store(tmp_path) as db:
        assert read_secret(db) == secret
    assert first["jti"] != second["jti"]
    verified(tmp_path, first["token"])
    verified(tmp_path, second["token"])


def test_the_data_folder_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path / "var"))

    code, shown, err = run(capsys, "token", "issue", "--role", "kiosk", "--subject", "kiosk-1")

    assert code == 0, err
    assert verified(tmp_path, shown["token"]).role == "kiosk"


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        ("3600", 3600),
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43_200),
        ("30d", 30 * DAY),
        (None, 30 * DAY),
    ],
)
def test_ttl_forms(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], ttl: str | None, seconds: int
) -> None:
    before = int(time.time())
    shown = issue(capsys, config, *(["--ttl", ttl] if ttl else []))

    assert before + seconds <= shown["expires_at"] <= int(time.time()) + seconds


def test_revoke_subject_revokes_every_earlier_token(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = [issue(capsys, config)["token"] for _ in range(2)]
    code, other, _ = run(
        capsys, "token", "issue", "--role", "shopper", "--subject", "shopper-2", "-c", str(config)
    )
    assert code == 0

    code, done, err = run(
        capsys,
        "token",
        "revoke-subject",
        "--role",
        "shopper",
        "--subject",
        "shopper-1",
        "-c",
        str(config),
    )

    assert code == 0, err
    assert done == {"role": "shopper", "subject": "shopper-1", "generation": 1}
    assert all(revoked(tmp_path, token) for token in old)
    assert not revoked(tmp_path, other["token"])
    fresh = issue(capsys, config)
    assert verified(tmp_path, fresh["token"]).generation == 1
    with store(tmp_path) as db:
        assert generation(db, "shopper", "shopper-1") == 1


def test_an_expired_token_can_be_revoked(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue(capsys, config)  # creates the secret
    with store(tmp_path) as db:
        secret = read_secret(db)
    assert secret is not None
    token, claims = Tokens(secret).issue("staff", "staff-9", now=1_000_000_000, ttl_s=60)

    code, done, err = run(capsys, "token", "revoke", token, "-c", str(config))

    assert code == 0, err
    assert done["revoked"] == claims.jti
    assert revoked(tmp_path, token)


def test_a_forged_or_malformed_token_is_refused(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue(capsys, config)
    forged, _ = Tokens(b"k" * 32).issue("admin", "root", now=time.time(), ttl_s=60)

    code, done, err = run(capsys, "token", "revoke", forged, "-c", str(config))
    assert (code, done) == (1, None)
    one_line_error(err, "signature")
    assert forged not in err

    code, done, err = run(capsys, "token", "revoke", "mt1.nope", "-c", str(config))
    assert (code, done) == (1, None)
    one_line_error(err, "mt1.<claims>.<mac>")


def test_revoking_without_a_store_is_an_error_and_creates_nothing(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "token", "revoke", "mt1.a.b", "-c", str(config))
    assert code == 1
    one_line_error(err, "no store at")

    code, _, err = run(
        capsys, "token", "revoke-subject", "--role", "shopper", "--subject", "s1", "-c", str(config)
    )
    assert code == 1
    one_line_error(err, "no store at")
    assert not (tmp_path / "var").exists()


def test_revoking_in_a_store_that_never_issued_is_an_error(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store(tmp_path):
        pass  # an empty store, as a gateway leaves it before issuing any token

    code, _, err = run(capsys, "token", "revoke", "mt1.a.b", "-c", str(config))

    assert code == 1
    one_line_error(err, "no token was ever issued")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["issue", "--role", "root", "--subject", "x"], ["--role", "shopper, kiosk"]),
        (["issue", "--role", "shopper", "--subject", "no spaces"], ["--subject"]),
        (["issue", "--role", "shopper", "--subject=-x"], ["--subject"]),
        (["issue", "--role", "shopper", "--subject", "x", "--ttl", "soon"], ["--ttl"]),
        (["issue", "--role", "shopper", "--subject", "x", "--ttl", "0"], ["--ttl"]),
        (["issue", "--role", "shopper", "--subject", "x", "--ttl", "9999d"], ["--ttl"]),
        (["issue", "--role", "shopper", "--subject", "x", "--ttl", "1w"], ["--ttl"]),
        (["revoke-subject", "--role", "boss", "--subject", "x"], ["--role"]),
    ],
    ids=[
        "role",
        "subject-space",
        "subject-dash",
        "ttl-word",
        "ttl-zero",
        "ttl-long",
        "ttl-unit",
        "revoke-subject-role",
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needles: list[str],
) -> None:
    code, shown, err = run(capsys, "token", *args, "-c", str(config))

    assert (code, shown) == (2, None)
    one_line_error(err, *needles)
    assert not (tmp_path / "var").exists()  # refused before the store was touched


def test_the_group_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token"]) == 2
    err = capsys.readouterr().err
    assert "issue" in err
    assert "revoke-subject" in err


def test_works_beside_a_running_gateway(tmp_path: Path, config: Path) -> None:
    """A separate process, as ``moments token`` runs, while this process holds the store
    the way a running gateway does: its lock and the open environment."""
    path = tmp_path / "var" / "store"
    path.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}

    def moments(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "token", *args, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=tmp_path,
            env=env,
            check=False,
        )

    with hold_lock(path):
        db = Database(path, map_size=1 << 24)
        db.open()
        try:
            issued = moments("issue", "--role", "shopper", "--subject", "shopper-1")
            assert issued.returncode == 0, issued.stderr
            token = json.loads(issued.stdout)["token"]
            secret = read_secret(db)
            assert secret is not None
            claims = Tokens(secret).verify(token, now=time.time())
            check_not_revoked(db, claims)

            done = moments("revoke", token)
            assert done.returncode == 0, done.stderr
            with pytest.raises(AuthError) as caught:
                check_not_revoked(db, claims)
            assert caught.value.code == "token_revoked"
        finally:
            db.close()
