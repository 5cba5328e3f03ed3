"""What HQ would hold, written into a gateway's store, and the app users' tokens from its secret.

The simulator and the load generator stand in for HQ and for the shoppers' apps: they write
profiles, consents and identities into the gateway's store (LMDB allows a second process beside
a running gateway) and issue each app user a shopper token from the store's secret, exactly as
``moments token issue`` does (the secret is created if the gateway has not made it yet).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from gateway.config import Config
from gateway.store import Database, Record, Writer
from gateway.tokens import Tokens, generation, secret_op

__all__ = ["seed_records"]

log = logging.getLogger(__name__)


async def seed_records(
    config: Config, records: list[Record], *, token_for: Sequence[str] = (), ttl_s: float = 0.0
) -> dict[str, str]:
    """Write ``records``; return a shopper token (valid ``ttl_s``) for each id in ``token_for``."""
    now = time.time()
    db = Database(config.data_path / "store", map_size=config.store.map_size_mb << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    try:
        if records:
            await writer.write(db.put_op(records))
        secret = await writer.write(secret_op(db)) if token_for else b""
        generations = [generation(db, "shopper", shopper) for shopper in token_for]
    finally:
        await writer.aclose()
        db.close()
    log.info("seeded %d records into %s", len(records), db.path)
    if not token_for:
        return {}
    issuer = Tokens(secret)
    return {
        shopper: issuer.issue("shopper", shopper, now=now, ttl_s=ttl_s, generation=g)[0]
        for shopper, g in zip(token_for, generations, strict=True)
    }
