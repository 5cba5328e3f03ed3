"""The errors of the reference HQ, a branch of the gateway's one tree (``gateway.errors``).

    MomentsError
    ├── StoreError         HQ's LMDB could not be opened, read or written (translated here)
    ├── LinkError          the HQ broker could not be reached, refused us, or did not acknowledge
    └── HqError            an HQ command could not do what was asked
        ├── KeysError      the key folder is missing, malformed, or the change is not allowed
        └── InputError     a record file could not be read or failed validation (names file, path)

Third-party errors (``lmdb.Error``, paho return and reason codes, msgspec's ``ValidationError``,
``OSError`` on key and record files) are translated at the module that meets them.
"""

from __future__ import annotations

from gateway.errors import MomentsError

__all__ = ["HqError", "InputError", "KeysError"]


class HqError(MomentsError):
    """An HQ command could not do what was asked."""


class KeysError(HqError):
    """The signing-key folder is missing or malformed, or a key change is not allowed."""


class InputError(HqError):
    """A record file could not be read or failed validation; the message names file and path."""
