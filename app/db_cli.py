"""``toolrelay db upgrade`` and ``toolrelay db status``: the shared database's schemas, for operators
(``toolrelay db copy``, from SQLite files, is :mod:`app.db_copy`).

Every server migrates at start-up anyway (each store, under its schema's
advisory lock, so hosts starting together apply each step once); ``upgrade``
is for operators who migrate in a deploy step of their own, ``status`` shows
each schema's version against the one this toolrelay was built for.

The schemas are listed once, in :data:`SCHEMAS` (name -> the steps of this
code), each store module keeping its own steps next to its queries.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import orjson

from toolrelay.app.config import ConfigError, Settings, load_settings

__all__ = ["SCHEMAS", "register"]


def _steps(module: str, attribute: str) -> Callable[[Settings], Sequence[Any]]:
    def load(settings: Settings) -> Sequence[Any]:
        found: Any = getattr(importlib.import_module(module), attribute)
        # memory: its steps create the text-search configuration of [memory] language
        return cast("Sequence[Any]", found(settings.memory.language) if callable(found) else found)

    return load


# Schema name -> its migration steps (in the module of the store that uses it).
SCHEMAS: dict[str, Callable[[Settings], Sequence[Any]]] = {
    "keys": _steps("toolrelay.app.auth.pg_keystore", "MIGRATIONS"),
    "ledger": _steps("toolrelay.app.auth.pg_ledger", "MIGRATIONS"),
    "memory": _steps("toolrelay.memory.pg_schema", "migrations"),
    "continuations": _steps("toolrelay.agent.continuations_pg", "MIGRATIONS"),
    "responses": _steps("toolrelay.app.responses.store_pg", "MIGRATIONS"),
}


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the shared PostgreSQL database ([database] url): apply migrations, show schema versions")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply every pending migration and exit (servers also do it at start-up)")
    status = db_sub.add_parser("status", help="each schema's version in the database against this toolrelay's")
    for parser, func in ((upgrade, cmd_db_upgrade), (status, cmd_db_status)):
        parser.add_argument("--config", help="TOML config file (default: $TOOLRELAY_CONFIG)")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(func=func)
    from toolrelay.app.db_copy import add_copy_command

    add_copy_command(db_sub)


def _open(args: argparse.Namespace) -> tuple[Settings, Any]:
    settings = load_settings(args.config)
    if settings.database.url is None:
        raise ConfigError("no shared database is configured ([database] url or TOOLRELAY_DATABASE__URL); SQLite files migrate when the server opens them")
    from toolrelay.app.database import open_database

    return settings, open_database(settings.database, name="toolrelay-db")


def _versions(settings: Settings, pool: Any) -> list[dict[str, Any]]:
    from toolrelay.app.postgres import schema_versions

    with pool.connection() as conn:
        found = schema_versions(conn)
    out = []
    for name, steps in SCHEMAS.items():
        code = len(steps(settings))
        have = found.get(name, 0)
        state = "current" if have == code else ("pending" if have < code else "newer than this toolrelay")
        out.append({"schema": name, "database": have, "code": code, "state": state})
    return out


def _print(rows: list[dict[str, Any]], url: str, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(orjson.dumps({"url": url, "schemas": rows}).decode() + "\n")
        return
    out.write(f"database: {url}\n")
    out.write(f"{'schema':<15} {'database':>8} {'code':>5}  state\n")
    for row in rows:
        out.write(f"{row['schema']:<15} {row['database']:>8} {row['code']:>5}  {row['state']}\n")


def cmd_db_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Exit 0 when every schema is current, 1 when any is pending or newer, 2 on an error."""
    try:
        settings, pool = _open(args)
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    try:
        from toolrelay.app.postgres import redact_url

        rows = _versions(settings, pool)
        _print(rows, redact_url(settings.database.url or ""), args.json, out or sys.stdout)
        return 0 if all(r["state"] == "current" for r in rows) else 1
    finally:
        pool.close()


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        settings, pool = _open(args)
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    try:
        from toolrelay.app.postgres import migrate, redact_url

        for name, steps in SCHEMAS.items():
            with pool.connection() as conn:
                try:
                    migrate(conn, steps(settings), name=name)
                except RuntimeError as exc:  # a database newer than this code
                    print(f"toolrelay: {exc}", file=sys.stderr)
                    return 2
        _print(_versions(settings, pool), redact_url(settings.database.url or ""), args.json, out or sys.stdout)
        return 0
    finally:
        pool.close()
