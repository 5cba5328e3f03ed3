"""The ``moments hq`` commands themselves, each ``fn(args) -> exit status``; loaded by
``gateway.hq.cli`` only when one runs, so ``moments`` starts without HQ's machinery."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from gateway.hq.defaults import DEFAULT_BATCH
from gateway.hq.errors import InputError
from gateway.hq.keys import KeyDir, Signer
from gateway.hq.ledger import Ledger
from gateway.hq.publish import PublishRequest, PublishSummary, publish_to_broker, stores_to_publish
from gateway.hq.records import Op, load_records
from gateway.hq.serve import ServeOptions, Server
from gateway.logs import configure_logging

__all__ = ["keys_list", "keys_new", "keys_revoke", "keys_rotate", "publish", "serve"]


def keys_new(args: argparse.Namespace) -> int:
    info = KeyDir(args.dir).create(args.id)
    print(json.dumps({"key_id": info.key_id, "public_key": info.public_key.hex()}))
    return 0


def keys_list(args: argparse.Namespace) -> int:
    keys = KeyDir(args.dir)
    shown = [
        {
            "key_id": k.key_id,
            "public_key": k.public_key.hex(),
            "status": k.status,
            "created_at": k.created_at,
        }
        for k in keys.entries()
    ]
    print(json.dumps({"current": keys.current().key_id, "keys": shown}))
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    keys = KeyDir(args.dir)
    current = keys.current()
    signer = keys.signer()
    new = keys.prepare_rotation(args.id)
    summary = _publish_records(args, signer, "keys", (current.record(), new.record()))
    if summary.ok:
        keys.promote(new.key_id)
    out = {
        "key_id": new.key_id,
        "public_key": new.public_key.hex(),
        "previous": current.key_id,
        "current": new.key_id if summary.ok else current.key_id,
        "publish": summary.as_json(),
    }
    print(json.dumps(out))
    return 0 if summary.ok else 1


def keys_revoke(args: argparse.Namespace) -> int:
    keys = KeyDir(args.dir)
    info = keys.check_revocable(args.id)
    signer = keys.signer()
    record = {**info.record(), "status": "revoked"}
    summary = _publish_records(args, signer, "keys", (record,))
    if summary.ok:
        info = keys.revoke(args.id)
    print(json.dumps({"key_id": info.key_id, "status": info.status, "publish": summary.as_json()}))
    return 0 if summary.ok else 1


def publish(args: argparse.Namespace) -> int:
    op: Op = "delete" if args.delete else "put"
    if not args.files and not args.snapshot:
        raise InputError("give the record FILEs to publish (or --snapshot for HQ's state)")
    records: tuple[dict[str, Any], ...] | None = None
    if args.files:
        records = tuple(r for f in args.files for r in load_records(f, args.stream, op))
    signer = KeyDir(args.keys).signer()
    summary = _publish_records(args, signer, args.stream, records, op=op, batch=args.batch)
    print(json.dumps(summary.as_json()))
    return 0 if summary.ok else 1


def _publish_records(
    args: argparse.Namespace,
    signer: Signer,
    stream: str,
    records: tuple[dict[str, Any], ...] | None,
    *,
    op: Op = "put",
    batch: int = DEFAULT_BATCH,
) -> PublishSummary:
    with Ledger(args.data, keep=args.keep) as ledger:
        stores = stores_to_publish(ledger, args.store or (), args.all_stores)
        request = PublishRequest(
            stores=stores,
            stream=stream,
            records=records,
            op=op,
            snapshot=bool(getattr(args, "snapshot", False)),
            batch=batch,
        )
        return asyncio.run(
            publish_to_broker(
                request,
                ledger=ledger,
                signer=signer,
                broker=args.broker,
                prefix=args.prefix,
                ack_wait_s=args.timeout,
                progress=_progress,
            )
        )


def _progress(acked: int) -> None:
    print(f"moments hq: {acked} messages acknowledged", file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    keys = KeyDir(args.keys)
    keys.signer()  # fail now, not at the first resync, when there is no usable key
    host, port = args.broker
    options = ServeOptions(
        host=host,
        port=port,
        prefix=args.prefix,
        client_id=args.client_id,
        session_expiry=args.session_expiry,
        received=args.received,
        batch=args.batch,
        timeout=args.timeout,
    )
    with Ledger(args.data, keep=args.keep) as ledger:
        asyncio.run(_serve_until_signalled(Server(options, ledger=ledger, keys=keys)))
    return 0


async def _serve_until_signalled(server: Server) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
