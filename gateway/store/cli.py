"""``moments store``: back up, restore and migrate the gateway's local store.

``moments store backup --to DIR`` copies the store, even while the gateway runs, into the new
folder ``DIR``; ``moments store restore --from DIR [--force]`` puts such a copy in place of the
store, with the gateway stopped; ``moments store migrate [--dry-run]`` brings a store written
by an older gateway to this one's schema, a backup first, with the gateway stopped. All find
the store at ``<data_dir>/store`` of the configuration (``-c FILE``, ``MOMENTS_CONFIG``,
``MOMENTS_*``), print one JSON line of what they did, and on an error print one line to
standard error and exit 1 (2 for bad usage or configuration). See
:mod:`gateway.store.backup` and :mod:`gateway.store.migrate` for how.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.config import load_config
from gateway.errors import ConfigError, MomentsError
from gateway.store.backup import backup, restore
from gateway.store.migrate import migrate

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store backup``, ``store restore`` and ``store migrate`` to the command line."""
    store = subparsers.add_parser(
        "store",
        help="back up, restore and migrate the local store",
        description="Back up the gateway's LMDB store while it runs, or restore a backup "
        "with the gateway stopped.",
    )
    store.set_defaults(handler=_help_of(store))
    commands = store.add_subparsers(title="store commands", metavar="COMMAND")

    backup_cmd = commands.add_parser(
        "backup",
        help="copy the store into a new folder",
        description="Make a consistent, compacted copy of the store (the gateway may be "
        "running) in DIR, which must not exist or be empty, with a manifest.json holding the "
        'schema version, time, size and SHA-256. Prints {"action": "backup", ...}.',
    )
    backup_cmd.add_argument("--to", required=True, type=Path, metavar="DIR", dest="to")
    backup_cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    backup_cmd.set_defaults(handler=_cmd_backup)

    restore_cmd = commands.add_parser(
        "restore",
        help="put a backup in place of the store",
        description="Check a backup's manifest and checksum, then put it in place of the "
        "store; the gateway must be stopped. The current store is moved aside to "
        'store.before-restore-<time>, never deleted. Prints {"action": "restore", ...}.',
    )
    restore_cmd.add_argument(
        "--from", required=True, type=Path, metavar="DIR", dest="source", help="backup folder"
    )
    restore_cmd.add_argument(
        "--force", action="store_true", help="replace a store that holds data (kept aside)"
    )
    restore_cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    restore_cmd.set_defaults(handler=_cmd_restore)

    migrate_cmd = commands.add_parser(
        "migrate",
        help="bring the store to this gateway's schema, a backup first",
        description="With the gateway stopped: when the store's schema is older than this "
        "gateway's, back it up into <data_dir>/backups/pre-migrate-<from>-to-<to>-<time>, then "
        "apply each migration in its own transaction. Prints "
        '{"action": "migrate", "from", "to", "backup", "applied"}; exits 1 when a migration '
        "fails, the store left at the last completed schema and the backup named.",
    )
    migrate_cmd.add_argument(
        "--dry-run", action="store_true", help="say what would be done and change nothing"
    )
    migrate_cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    migrate_cmd.set_defaults(handler=_cmd_migrate)


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _store_path(config: Path | None) -> Path:
    return load_config(config).data_path / "store"


def _cmd_backup(args: argparse.Namespace) -> int:
    def run() -> dict[str, object]:
        info = backup(_store_path(args.config), args.to)
        return {"action": "backup", **info.to_json()}

    return _report(run)


def _cmd_restore(args: argparse.Namespace) -> int:
    def run() -> dict[str, object]:
        info = restore(args.source, _store_path(args.config), force=args.force)
        return {"action": "restore", **info.to_json()}

    return _report(run)


def _cmd_migrate(args: argparse.Namespace) -> int:
    def run() -> dict[str, object]:
        config = load_config(args.config)
        report = migrate(
            config.data_path / "store",
            map_size=config.store.map_size_mb << 20,
            dry_run=args.dry_run,
        )
        return report.to_json()

    return _report(run)


def _report(run: Callable[[], dict[str, object]]) -> int:
    try:
        done = run()
    except ConfigError as exc:
        _error(f"configuration error: {exc}")
        return 2
    except MomentsError as exc:
        _error(str(exc))
        return 1
    print(json.dumps(done), flush=True)
    return 0


def _error(message: str) -> None:
    print(f"moments store: {' '.join(message.split())}", file=sys.stderr)
