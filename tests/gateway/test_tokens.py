"""Tokens: the wire format and every way a token is refused (pure), then the secret,
revocation by id and by generation, and the sweep in a real LMDB through a real Writer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import AuthError
from gateway.store import Database, Writer
from gateway.tokens import (
    MAX_CLOCK_SKEW_S,
    MAX_TOKEN_CHARS,
    ROLES,
    Claims,
    Role,
    Tokens,
    check_not_revoked,
    generation,
    read_secret,
    require_role,
    revoke_op,
    revoke_subject_op,
    secret_op,
    sweep_op,
)
from tests.support.store import opened

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
NOW = 1_750_000_000.0
HOUR = 3600.0
TOKENS = Tokens(SECRET)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(claims_json: bytes, secret: bytes = SECRET) -> str:
    """A token built by hand from the format's definition, independent of the module."""
    part = b64(claims_json)
    mac = hmac.new(secret, f"mt1.{part}".encode(), hashlib.sha256).digest()
    return f"mt1.{part}.{b64(mac)}"


def claims_dict(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "r": "shopper",
        "s": "shopper-1",
        "iat": int(NOW),
        "exp": int(NOW + HOUR),
        "j": "0123456789abcdef0123456789abcdef",
        "g": 0,
    }
    base.update(over)
    return base


def refused(token: str, *, now: float = NOW, tokens: Tokens = TOKENS) -> str:
    with pytest.raises(AuthError) as caught:
        tokens.verify(token, now=now)
    assert caught.value.status == 401
    assert len(token) < 8 or token not in str(caught.value)  # a credential: never echoed
    return caught.value.code


# ----- the format -------------------------------------------------------------------------


def test_round_trip() -> None:
    token, claims = TOKENS.issue("shopper", "shopper-1", now=NOW + 0.7, ttl_s=HOUR, generation=3)

    assert claims == Claims(
        role="shopper",
        subject="shopper-1",
        issued_at=int(NOW),
        expires_at=int(NOW + HOUR),
        jti=claims.jti,
        generation=3,
    )
    assert len(claims.jti) == 32
    assert int(claims.jti, 16) >= 0
    assert TOKENS.verify(token, now=NOW + 1) == claims


def test_the_wire_format_is_the_documented_one() -> None:
    token, claims = TOKENS.issue("kiosk", "kiosk-coffee", now=NOW, ttl_s=60)
    prefix, part, _mac = token.split(".")

    assert prefix == "mt1"
    assert json.loads(unb64(part)) == {
        "r": "kiosk",
        "s": "kiosk-coffee",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "j": claims.jti,
        "g": 0,
    }
    assert token == signed(unb64(part))
    assert "=" not in token


def test_a_hand_built_token_verifies() -> None:
    claims = TOKENS.verify(signed(json.dumps(claims_dict(r="admin", s="ops@hq")).encode()), now=NOW)

    assert (claims.role, claims.subject) == ("admin", "ops@hq")


def test_jtis_are_random() -> None:
    jtis = {TOKENS.issue("shopper", "s1", now=NOW, ttl_s=HOUR)[1].jti for _ in range(50)}

    assert len(jtis) == 50


@given(
    role=st.sampled_from(ROLES),
    subject=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z"),
    now=st.integers(0, 2**40).map(float),
    ttl=st.integers(1, 10 * 365 * 86_400),
    gen=st.integers(0, 2**62),
)
def test_every_issued_token_verifies_to_its_claims(
    role: Role, subject: str, now: float, ttl: int, gen: int
) -> None:
    token, claims = TOKENS.issue(role, subject, now=now, ttl_s=ttl, generation=gen)

    assert len(token) <= MAX_TOKEN_CHARS
    assert TOKENS.verify(token, now=now) == claims
    assert (claims.role, claims.subject, claims.generation) == (role, subject, gen)
    assert claims.expires_at - claims.issued_at == ttl


@pytest.mark.parametrize(
    ("role", "subject", "ttl", "gen"),
    [
        ("root", "x", HOUR, 0),
        ("shopper", "", HOUR, 0),
        ("shopper", "-leading-dash", HOUR, 0),
        ("shopper", "new\nline", HOUR, 0),
        ("shopper", "trailing-newline\n", HOUR, 0),
        ("shopper", "a" * 129, HOUR, 0),
        ("shopper", "s1", 0.5, 0),
        ("shopper", "s1", float("inf"), 0),
        ("shopper", "s1", HOUR, -1),
    ],
)
def test_issue_refuses_what_the_format_cannot_carry(
    role: str, subject: str, ttl: float, gen: int
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the checked schema's
        TOKENS.issue(role, subject, now=NOW, ttl_s=ttl, generation=gen)  # type: ignore[arg-type]


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Tokens(b"x" * 31)


# ----- refusals -----------------------------------------------------------------------------


def flip(text: str, index: int) -> str:
    """``text`` with one base64url character at ``index`` changed."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_tampered_claims_are_a_bad_signature() -> None:
    token, _ = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    prefix, part, mac = token.split(".")
    body = json.loads(unb64(part))
    body["r"] = "admin"
    forged = f"{prefix}.{b64(json.dumps(body).encode())}.{mac}"

    assert refused(forged) == "token_bad_signature"
    assert refused(f"{prefix}.{flip(part, 5)}.{mac}") == "token_bad_signature"


def test_a_tampered_mac_is_a_bad_signature() -> None:
    token, _ = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert refused(flip(token, len(token) - 5)) == "token_bad_signature"


def test_another_spelling_of_the_same_mac_is_a_bad_signature() -> None:
    # The last of 43 characters carries 4 bits of the MAC and 2 unused bits: setting one of
    # those decodes to the same bytes, but the token is not the one that was issued.
    token, _ = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    other = token[:-1] + alphabet[last ^ 1]
    assert unb64(other.split(".")[2]) == unb64(token.split(".")[2])

    assert refused(other) == "token_bad_signature"


def test_a_token_of_another_secret_is_a_bad_signature() -> None:
    token, _ = Tokens(OTHER_SECRET).issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert refused(token) == "token_bad_signature"


def test_the_signature_is_checked_before_the_claims_are_parsed() -> None:
    # Garbage claims under a wrong MAC: refused for the MAC, the JSON never looked at.
    part = b64(b"\xff not json")
    assert refused(f"mt1.{part}.{b64(bytes(32))}") == "token_bad_signature"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: t[: len(t) - 1], id="truncated-mac"),
        pytest.param(lambda t: t[: t.rindex(".")], id="no-mac"),
        pytest.param(lambda t: t[:20], id="truncated-claims"),
        pytest.param(lambda t: t + ".", id="trailing-dot"),
        pytest.param(lambda t: t + ".AAAA", id="extra-part"),
        pytest.param(lambda t: t.replace(".", "..", 1), id="empty-part"),
        pytest.param(lambda t: "mt2" + t[3:], id="wrong-prefix"),
        pytest.param(lambda t: "MT1" + t[3:], id="prefix-case"),
        pytest.param(lambda t: t[4:], id="no-prefix"),
        pytest.param(lambda t: " " + t, id="leading-space"),
        pytest.param(lambda t: t[:-3] + "a+b", id="standard-base64-mac"),
        pytest.param(lambda t: t[:-2] + "==", id="padded-mac"),
        pytest.param(lambda t: t.replace(".", ".%", 1), id="non-base64-claims"),
        pytest.param(lambda t: t[:-1] + "é", id="non-ascii"),
        pytest.param(lambda t: t + "A" * MAX_TOKEN_CHARS, id="huge"),
    ],
)
def test_malformed_tokens(make: object) -> None:
    token, _ = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert refused(make(token)) == "token_malformed"  # type: ignore[operator]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps(claims_dict(x=1)).encode(), id="unknown-field"),
        pytest.param(
            json.dumps({k: v for k, v in claims_dict().items() if k != "g"}).encode(),
            id="missing-field",
        ),
        pytest.param(json.dumps(claims_dict(r="root")).encode(), id="unknown-role"),
        pytest.param(json.dumps(claims_dict(s="a b")).encode(), id="bad-subject"),
        pytest.param(json.dumps(claims_dict(s="ok\n")).encode(), id="subject-newline"),
        pytest.param(json.dumps(claims_dict(j="XYZ")).encode(), id="bad-jti"),
        pytest.param(json.dumps(claims_dict(g=-1)).encode(), id="negative-generation"),
        pytest.param(json.dumps(claims_dict(exp=NOW + HOUR)).encode(), id="float-exp"),
        pytest.param(json.dumps(claims_dict(exp=str(int(NOW)))).encode(), id="string-exp"),
        pytest.param(json.dumps(claims_dict(g=True)).encode(), id="bool-generation"),
        pytest.param(json.dumps(claims_dict(exp=2**64)).encode(), id="huge-exp"),
        pytest.param(json.dumps([1, 2]).encode(), id="not-an-object"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_signed_but_invalid_claims_are_malformed(body: bytes) -> None:
    assert refused(signed(body)) == "token_malformed"


def test_a_malformed_claims_base64_under_a_valid_mac_is_malformed() -> None:
    # Five characters cannot be base64 of anything; the MAC over them is right.
    part = "AAAAA"
    mac = hmac.new(SECRET, f"mt1.{part}".encode(), hashlib.sha256).digest()

    assert refused(f"mt1.{part}.{b64(mac)}") == "token_malformed"


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_stable_code(text: str) -> None:
    with pytest.raises(AuthError) as caught:
        TOKENS.verify(text, now=NOW)
    assert caught.value.code in {"token_malformed", "token_bad_signature"}


@given(index=st.integers(0, 10_000), char=st.sampled_from("Ab9-_.x"))
def test_no_one_character_change_of_a_token_verifies(index: int, char: str) -> None:
    token, _ = TOKENS.issue("staff", "staff-7", now=NOW, ttl_s=HOUR)
    index %= len(token)
    changed = token[:index] + char + token[index + 1 :]
    if changed == token:
        return
    with pytest.raises(AuthError) as caught:
        TOKENS.verify(changed, now=NOW)
    assert caught.value.code in {"token_malformed", "token_bad_signature"}


def test_expiry_boundary() -> None:
    token, claims = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert TOKENS.verify(token, now=claims.expires_at - 0.001) == claims
    assert refused(token, now=claims.expires_at) == "token_expired"
    assert refused(token, now=claims.expires_at + 1e6) == "token_expired"


def test_a_token_from_the_future_is_refused_beyond_the_allowed_skew() -> None:
    token, claims = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert TOKENS.verify(token, now=NOW - MAX_CLOCK_SKEW_S) == claims
    assert refused(token, now=NOW - MAX_CLOCK_SKEW_S - 0.001) == "token_expired"


def test_authenticate_ignores_the_times_but_not_the_signature() -> None:
    token, claims = TOKENS.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)

    assert TOKENS.authenticate(token) == claims  # whatever time it is
    with pytest.raises(AuthError) as caught:
        Tokens(OTHER_SECRET).authenticate(token)
    assert caught.value.code == "token_bad_signature"


def test_require_role() -> None:
    _, claims = TOKENS.issue("kiosk", "kiosk-1", now=NOW, ttl_s=HOUR)

    require_role(claims, "kiosk", "staff")
    with pytest.raises(AuthError) as caught:
        require_role(claims, "shopper")
    assert (caught.value.code, caught.value.status) == ("forbidden", 403)


# ----- the store --------------------------------------------------------------------------


def revoked_code(db: Database, claims: Claims) -> str | None:
    try:
        check_not_revoked(db, claims)
    except AuthError as exc:
        return f"{exc.code}/{exc.status}"
    return None


async def test_the_secret_is_created_once_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with opened(path) as db:
        assert read_secret(db) is None
        w = Writer(db)
        w.start()
        try:
            first = await w.write(secret_op(db))
            again = await w.write(secret_op(db))
        finally:
            await w.aclose()
        assert len(first) == 32
        assert again == first
        assert read_secret(db) == first
    with opened(path) as db:
        assert read_secret(db) == first
        w = Writer(db)
        w.start()
        try:
            assert await w.write(secret_op(db)) == first
        finally:
            await w.aclose()


async def test_two_stores_get_different_secrets(tmp_path: Path) -> None:
    secrets = []
    for name in ("a", "b"):
        with opened(tmp_path / name) as db:
            w = Writer(db)
            w.start()
            try:
                secrets.append(await w.write(secret_op(db)))
            finally:
                await w.aclose()
    assert secrets[0] != secrets[1]


async def test_revocation_by_jti(db: Database, writer: Writer) -> None:
    tokens = Tokens(await writer.write(secret_op(db)))
    _, kept = tokens.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    _, lost = tokens.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    assert revoked_code(db, lost) is None

    assert await writer.write(revoke_op(db, lost)) is True
    assert await writer.write(revoke_op(db, lost)) is False  # already listed

    assert revoked_code(db, lost) == "token_revoked/401"
    assert revoked_code(db, kept) is None
    with db.env.begin(db=db.handle("tokens")) as txn:
        stored = txn.get(b"jti:" + lost.jti.encode())
    assert stored == struct.pack(">Q", lost.expires_at)


async def test_revocation_by_generation(db: Database, writer: Writer) -> None:
    tokens = Tokens(await writer.write(secret_op(db)))
    assert generation(db, "shopper", "shopper-1") == 0
    _, old = tokens.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    _, neighbour = tokens.issue("shopper", "shopper-2", now=NOW, ttl_s=HOUR)
    _, same_id_other_role = tokens.issue("kiosk", "shopper-1", now=NOW, ttl_s=HOUR)

    assert await writer.write(revoke_subject_op(db, "shopper", "shopper-1")) == 1
    assert generation(db, "shopper", "shopper-1") == 1

    assert revoked_code(db, old) == "token_revoked/401"
    assert revoked_code(db, neighbour) is None
    assert revoked_code(db, same_id_other_role) is None
    _, fresh = tokens.issue(
        "shopper", "shopper-1", now=NOW, ttl_s=HOUR, generation=generation(db, "shopper", "s")
    )
    assert revoked_code(db, fresh) == "token_revoked/401"  # issued at a stale generation
    _, fresh = tokens.issue(
        "shopper",
        "shopper-1",
        now=NOW,
        ttl_s=HOUR,
        generation=generation(db, "shopper", "shopper-1"),
    )
    assert revoked_code(db, fresh) is None

    assert await writer.write(revoke_subject_op(db, "shopper", "shopper-1")) == 2
    assert revoked_code(db, fresh) == "token_revoked/401"


def test_revoke_subject_refuses_a_bad_role_or_subject(db: Database) -> None:
    with pytest.raises(ValueError, match="role"):
        revoke_subject_op(db, "root", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subject"):
        generation(db, "shopper", "x\n")


async def test_sweep_drops_only_expired_entries(db: Database, writer: Writer) -> None:
    tokens = Tokens(await writer.write(secret_op(db)))
    _, short = tokens.issue("shopper", "shopper-1", now=NOW, ttl_s=60)
    _, long = tokens.issue("shopper", "shopper-1", now=NOW, ttl_s=HOUR)
    for claims in (short, long):
        await writer.write(revoke_op(db, claims))
    await writer.write(revoke_subject_op(db, "shopper", "shopper-1"))

    assert await writer.write(sweep_op(db, NOW + 59)) == 0
    assert await writer.write(sweep_op(db, short.expires_at)) == 1
    assert await writer.write(sweep_op(db, short.expires_at)) == 0

    with db.env.begin(db=db.handle("tokens")) as txn:
        keys = [bytes(k) for k, _ in txn.cursor()]
    assert keys == [b"gen:shopper:shopper-1", b"jti:" + long.jti.encode()]

    assert await writer.write(sweep_op(db, NOW + 10 * HOUR)) == 1
    assert generation(db, "shopper", "shopper-1") == 1  # generations are never swept
