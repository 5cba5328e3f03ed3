"""The local store: LMDB, one writer thread, versioned records."""

from gateway.store.codec import Record, decode, encode
from gateway.store.database import DATABASES, Database, table_and_key
from gateway.store.records import (
    ConsentRecord,
    EidKeyRecord,
    IdentityRecord,
    IrkRecord,
    OfferRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
)
from gateway.store.writer import Writer

__all__ = [
    "DATABASES",
    "ConsentRecord",
    "Database",
    "EidKeyRecord",
    "IdentityRecord",
    "IrkRecord",
    "OfferRecord",
    "ProfileRecord",
    "Purpose",
    "PurposeState",
    "Record",
    "Writer",
    "decode",
    "encode",
    "table_and_key",
]
