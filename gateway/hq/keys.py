"""HQ's Ed25519 signing keys, kept in one folder (``--keys DIR``).

Layout of the folder (created mode 0700)::

    keyring.json      {"v": 1, "current": KEY_ID, "keys": {KEY_ID: {"public_key": HEX,
                       "status": "active" | "pending" | "revoked", "created_at": SECONDS}}}
    KEY_ID.key        the private key, PKCS#8 PEM, mode 0600 (deleted when the key is revoked)
    KEY_ID.pub        the public key, 64 hex digits and a newline

``current`` is the key that signs. A key made by ``rotate`` is ``pending`` until the ``keys``
stream message announcing it (signed by the current key) has been acknowledged, then it becomes
current; re-running ``rotate`` after a failed announcement resumes the same pending key. A
revoked key never signs again: its private key file is removed. ``keyring.json`` is replaced
atomically (write, fsync, rename) under an advisory lock, so readers (``serve``) always see a
whole file and two commands never interleave their changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import Clock, SystemClock
from gateway.hq.errors import KeysError
from gateway.sync.envelope import Message, Receipt, seal, seal_receipt

__all__ = ["KeyDir", "KeyInfo", "KeyStatus", "Signer", "check_key_id"]

KeyStatus = Literal["active", "pending", "revoked"]

KEYRING_FILE: Final = "keyring.json"
_LOCK_FILE: Final = ".lock"
_KEY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    public_key: str
    status: KeyStatus
    created_at: float


class _Folder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int = 1
    current: str = ""
    keys: dict[str, _Entry] = msgspec.field(default_factory=dict)


class _Sealed(msgspec.Struct, frozen=True):
    key_id: str
    payload: str


_folder_decoder: Final = msgspec.json.Decoder(_Folder)
_sealed_decoder: Final = msgspec.json.Decoder(_Sealed)
_message_decoder: Final = msgspec.json.Decoder(Message)
_encoder: Final = msgspec.json.Encoder()


def check_key_id(key_id: str) -> str:
    """``key_id`` if it is a valid key id (the envelope's pattern; also safe as a file name)."""
    if not _KEY_ID.match(key_id):
        raise KeysError(
            f"key id {key_id!r} is not valid: 1 to 64 of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return key_id


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    public_key: bytes
    status: KeyStatus
    created_at: float

    def record(self) -> dict[str, str]:
        """The key as a record of the ``keys`` stream (PROTOCOL.md)."""
        status = "revoked" if self.status == "revoked" else "active"
        return {"key_id": self.key_id, "public_key": self.public_key.hex(), "status": status}


@dataclass(frozen=True, slots=True)
class Signer:
    """The current signing key: seals messages, and re-seals old ones signed by another key."""

    key_id: str
    private_key: Ed25519PrivateKey

    def seal(self, message: Message) -> bytes:
        return seal(message, self.key_id, self.private_key)

    def seal_receipt(self, receipt: Receipt) -> bytes:
        return seal_receipt(receipt, self.key_id, self.private_key)

    def record(self) -> dict[str, str]:
        """This key, active, as a record of the ``keys`` stream."""
        public = self.private_key.public_key().public_bytes_raw()
        return {"key_id": self.key_id, "public_key": public.hex(), "status": "active"}

    def reseal(self, wire: bytes) -> bytes:
        """``wire`` as is when this key signed it, else its payload sealed by this key (so a
        replay never carries the signature of a key revoked since)."""
        try:
            sealed = _sealed_decoder.decode(wire)
            if sealed.key_id == self.key_id:
                return wire
            message = _message_decoder.decode(base64.b64decode(sealed.payload, validate=True))
        except (msgspec.DecodeError, binascii.Error, ValueError) as exc:
            raise KeysError(f"a logged message does not decode: {exc}") from exc
        return self.seal(message)


class KeyDir:
    """The key folder. The constructor only stores; every method reads the folder afresh."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self._path = path
        self._clock = clock or SystemClock()

    @property
    def path(self) -> Path:
        return self._path

    # ----- reading -----

    def entries(self) -> list[KeyInfo]:
        folder = self._read()
        return [_info(key_id, entry) for key_id, entry in sorted(folder.keys.items())]

    def get(self, key_id: str) -> KeyInfo:
        entry = self._read().keys.get(key_id)
        if entry is None:
            raise KeysError(f"{self._path}: no key {key_id!r}")
        return _info(key_id, entry)

    def current(self) -> KeyInfo:
        folder = self._read()
        if not folder.current:
            raise KeysError(f"{self._path}: no current key (make one with 'moments hq keys new')")
        return _info(folder.current, folder.keys[folder.current])

    def pending(self) -> KeyInfo | None:
        for info in self.entries():
            if info.status == "pending":
                return info
        return None

    def signer(self) -> Signer:
        """The current key, ready to sign."""
        info = self.current()
        file = self._path / f"{info.key_id}.key"
        try:
            private = serialization.load_pem_private_key(file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeysError(f"{file}: cannot load the private key: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeysError(f"{file}: not an Ed25519 private key")
        if private.public_key().public_bytes_raw() != info.public_key:
            raise KeysError(f"{file}: does not match the public key in {KEYRING_FILE}")
        return Signer(info.key_id, private)

    # ----- changing -----

    def create(self, key_id: str | None = None) -> KeyInfo:
        """The first key of a new folder: active and current (``keys new``)."""
        with self._locked(create=True):
            folder = self._read(missing_ok=True)
            if folder.current:
                raise KeysError(
                    f"{self._path} already has a current key ({folder.current}): "
                    "use 'moments hq keys rotate'"
                )
            info = self._generate(folder, key_id, "active")
            self._write(_with(folder, info, current=info.key_id))
            return info

    def prepare_rotation(self, key_id: str | None = None) -> KeyInfo:
        """A pending key to rotate to: the one left by an unfinished rotation, or a new one."""
        with self._locked():
            folder = self._read()
            if not folder.current:
                raise KeysError(f"{self._path}: no current key to rotate from")
            for existing_id, entry in folder.keys.items():
                if entry.status == "pending" and key_id in (None, existing_id):
                    return _info(existing_id, entry)
            info = self._generate(folder, key_id, "pending")
            self._write(_with(folder, info))
            return info

    def promote(self, key_id: str) -> KeyInfo:
        """Make an announced pending key active and current."""
        with self._locked():
            folder = self._read()
            entry = folder.keys.get(key_id)
            if entry is None or entry.status == "revoked":
                raise KeysError(f"{self._path}: key {key_id!r} cannot become current")
            info = KeyInfo(key_id, bytes.fromhex(entry.public_key), "active", entry.created_at)
            self._write(_with(folder, info, current=key_id))
            return info

    def check_revocable(self, key_id: str) -> KeyInfo:
        folder = self._read()
        entry = folder.keys.get(key_id)
        if entry is None:
            raise KeysError(f"{self._path}: no key {key_id!r}")
        if key_id == folder.current:
            raise KeysError(f"key {key_id} is the current key: rotate to a new key first")
        return _info(key_id, entry)

    def revoke(self, key_id: str) -> KeyInfo:
        """Mark ``key_id`` revoked and destroy its private key (after the announcement)."""
        with self._locked():
            self.check_revocable(key_id)
            folder = self._read()
            entry = folder.keys[key_id]
            info = KeyInfo(key_id, bytes.fromhex(entry.public_key), "revoked", entry.created_at)
            self._write(_with(folder, info))
            with contextlib.suppress(FileNotFoundError):
                (self._path / f"{key_id}.key").unlink()
            return info

    # ----- files -----

    def _generate(self, folder: _Folder, key_id: str | None, status: KeyStatus) -> KeyInfo:
        key_id = check_key_id(key_id) if key_id is not None else self._new_id()
        if key_id in folder.keys:
            raise KeysError(f"{self._path}: key {key_id!r} exists already")
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(self._path / f"{key_id}.key", pem, 0o600)
        _write_new(self._path / f"{key_id}.pub", f"{public.hex()}\n".encode(), 0o644)
        return KeyInfo(key_id, public, status, self._clock.now())

    def _new_id(self) -> str:
        day = time.strftime("%Y%m%d", time.gmtime(self._clock.now()))
        return f"hq-{day}-{secrets.token_hex(3)}"

    def _read(self, *, missing_ok: bool = False) -> _Folder:
        file = self._path / KEYRING_FILE
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            if missing_ok:
                return _Folder()
            raise KeysError(
                f"{file}: no such file (make a key with 'moments hq keys new')"
            ) from None
        except OSError as exc:
            raise KeysError(f"{file}: {exc}") from exc
        try:
            folder = _folder_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise KeysError(f"{file}: {exc}") from exc
        if folder.v != 1 or (folder.current and folder.current not in folder.keys):
            raise KeysError(f"{file}: unsupported version or unknown current key")
        return folder

    def _write(self, folder: _Folder) -> None:
        file = self._path / KEYRING_FILE
        tmp = file.with_name(f".{KEYRING_FILE}.tmp")
        try:
            with tmp.open("wb") as out:
                out.write(msgspec.json.format(_encoder.encode(folder), indent=2) + b"\n")
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(file)
            _fsync_dir(self._path)
        except OSError as exc:
            raise KeysError(f"{file}: cannot write: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self, *, create: bool = False) -> Iterator[None]:
        try:
            if create:
                self._path.mkdir(mode=0o700, parents=True, exist_ok=True)
            elif not self._path.is_dir():
                raise KeysError(f"{self._path}: no such key folder")
            fd = os.open(self._path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeysError(f"{self._path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _info(key_id: str, entry: _Entry) -> KeyInfo:
    return KeyInfo(key_id, bytes.fromhex(entry.public_key), entry.status, entry.created_at)


def _with(folder: _Folder, info: KeyInfo, *, current: str | None = None) -> _Folder:
    entry = _Entry(info.public_key.hex(), info.status, info.created_at)
    return _Folder(
        v=folder.v,
        current=folder.current if current is None else current,
        keys={**folder.keys, info.key_id: entry},
    )


def _write_new(file: Path, data: bytes, mode: int) -> None:
    """Create ``file`` with ``mode`` from the start (never readable by others, not even briefly)."""
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeysError(f"{file} exists already") from None
    except OSError as exc:
        raise KeysError(f"{file}: {exc}") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
