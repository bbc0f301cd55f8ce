"""Operator subcommands: ``toolrelay keys create|list|show|update|rotate|revoke`` and ``toolrelay usage``.

They work on the data directory's SQLite files directly, so they need no
running server; a running server sees their changes on its next request
(see :mod:`app.auth.keystore`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec
import orjson

from toolrelay.app.config import ConfigError, Settings, load_settings


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys (create, list, show, update, revoke)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    create = keys_sub.add_parser("create", help="create a key; it is printed once")
    _common(create)
    create.add_argument("--name", required=True, help="a label for the key (who or what uses it)")
    create.add_argument(
        "--models",
        action="append",
        default=[],
        help="model ids or '*' patterns it may use, comma-separated or repeated (e.g. 'gpt-4o-mini,agent/*'); default: all",
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute (prompt + max_tokens before the call, real usage after)")
    create.add_argument("--max-parallel", type=int, help="requests in flight at once (a stream holds its slot until it ends)")
    create.add_argument("--budget-usd", type=float, help="spend limit in USD per budget period")
    create.add_argument("--budget-period", default="monthly", choices=["daily", "weekly", "monthly", "total"], help="budget period (UTC; default monthly)")
    create.add_argument("--expires", help="expiry: a duration from now (30d, 12h) or a date/time (2026-01-31)")
    create.add_argument("--mcp-servers", help=_MCP_SERVERS_HELP + "; default: all")
    create.add_argument("--max-output-tokens", type=int, help="completion tokens one request may ask for (default: the server's [limits] max_output_tokens)")
    create.set_defaults(func=cmd_keys_create)

    update = keys_sub.add_parser(
        "update", help="change a key's models, MCP servers, limits, budget, expiry or output ceiling; a running server applies it on the next request"
    )
    _common(update)
    update.add_argument("key_id", help="key id (with or without the tr- prefix)")
    update.add_argument("--models", action="append", help="model ids or '*' patterns, comma-separated or repeated; '*': all")
    update.add_argument("--mcp-servers", help=_MCP_SERVERS_HELP)
    for flag, what in _UPDATE_LIMITS:
        update.add_argument(flag, metavar="N|none", help=f"{what}; 'none' clears it")
    update.add_argument("--budget-usd", metavar="USD|none", help="spend limit in USD per budget period; 'none' clears it")
    update.add_argument("--budget-period", choices=["daily", "weekly", "monthly", "total"], help="budget period (UTC)")
    update.add_argument("--expires", metavar="WHEN|never", help="a date/time (2026-01-31), a Unix time, or 'never'")
    update.add_argument("--expires-in", metavar="DURATION", help="expiry as a duration from now (30d, 12h)")
    update.set_defaults(func=cmd_keys_update)

    rotate = keys_sub.add_parser("rotate", help="give a key a new secret (same id, limits, budget and history); it is printed once")
    _common(rotate)
    rotate.add_argument("key_id", help="key id (with or without the tr- prefix)")
    rotate.add_argument("--grace", default="0", help="how long the old secret keeps working (1h, 30m, 7d; default 0: refused at once)")
    rotate.set_defaults(func=cmd_keys_rotate)

    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    _common(listing)
    listing.add_argument("--active", action="store_true", help="hide revoked and expired keys")
    listing.set_defaults(func=cmd_keys_list)

    show = keys_sub.add_parser("show", help="show one key and its spend this period")
    _common(show)
    show.add_argument("key_id", help="key id (with or without the tr- prefix)")
    show.set_defaults(func=cmd_keys_show)

    revoke = keys_sub.add_parser("revoke", help="revoke a key; a running server refuses it on the next request")
    _common(revoke)
    revoke.add_argument("key_id", help="key id (with or without the tr- prefix)")
    revoke.set_defaults(func=cmd_keys_revoke)

    usage = sub.add_parser("usage", help="usage and cost per key and model, from the ledger")
    _common(usage)
    usage.add_argument("--since", help="start: a date/time (2025-01-31) or a duration back from now (24h, 7d); default: everything")
    usage.add_argument("--until", help="end (exclusive), same forms as --since")
    usage.add_argument("--group-by", default="key,model", help="comma-separated: key, model, mode, upstream, status, day, hour, host (default key,model)")
    usage.add_argument("--key", dest="key_id", help="only this key")
    usage.set_defaults(func=cmd_usage)


_MCP_SERVERS_HELP = "names of [mcp.servers.<name>] whose tools it may use, comma-separated; '*': all, '': none"
_UPDATE_LIMITS = (
    ("--rpm", "requests per minute"),
    ("--tpm", "tokens per minute"),
    ("--max-parallel", "requests in flight at once"),
    ("--max-output-tokens", "completion tokens one request may ask for"),
)
_CLEAR = ("none", "null", "off")


def _limit(flag: str, text: str) -> int | None:
    if text.strip().lower() in _CLEAR:
        return None
    try:
        return int(text)
    except ValueError:
        raise _Fail(f"{flag} must be an integer or 'none'") from None


def _mcp_servers(text: str | None) -> list[str] | None:
    """``--mcp-servers`` as the key spec takes it: '*' is every server (None), '' none."""
    if text is None or text.strip() == "*":
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: $TOOLRELAY_CONFIG)")
    parser.add_argument("--data-dir", help="data directory (default from the config, ./data or $TOOLRELAY_DATA)")
    parser.add_argument("--json", action="store_true", help="print JSON")


class _Fail(Exception):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise _Fail(str(exc)) from None
    if args.data_dir:
        settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(settings.server, data_dir=args.data_dir))
    return settings


def _run(func: Any, args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return func(args, out or sys.stdout)
    except _Fail as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2


def _key_store(settings: Settings) -> Any:
    if settings.database.url is not None:
        return _shared(settings).keys
    from toolrelay.app.auth import keys_path
    from toolrelay.app.auth.keystore import KeyStore

    return KeyStore(keys_path(settings))


def _ledger(settings: Settings) -> Any:
    if settings.database.url is not None:
        return _SharedLedger(settings)
    from toolrelay.app.auth import usage_path
    from toolrelay.app.auth.ledger import Ledger

    return Ledger(usage_path(settings))


class _Shared:
    """The keys and the ledger in the shared database, for one command: no listener, no writer thread;
    closing the key store closes the pool."""

    def __init__(self, settings: Settings) -> None:
        from toolrelay.app.auth.pg_keystore import PgKeyStore
        from toolrelay.app.auth.pg_ledger import PgLedger
        from toolrelay.app.database import host_name, open_database

        db = settings.database
        try:
            pool = open_database(db, name="toolrelay-cli")
        except ConfigError as exc:
            raise _Fail(str(exc)) from None
        assert pool is not None  # noqa: S101 - a url is configured
        self.pool = pool
        self.keys = PgKeyStore(pool, db.url or "", cache_seconds=db.key_cache_seconds, timeout=db.connect_timeout_seconds, listen=False, on_close=pool.close)
        self.ledger = PgLedger(pool, host=host_name(db), timeout=db.connect_timeout_seconds)


def _shared(settings: Settings) -> _Shared:
    return _Shared(settings)


class _SharedLedger:
    """The ledger's reads, each on a pool of its own that closes after it (a command makes one or two)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        shared = _Shared(self._settings)
        try:
            return getattr(shared.ledger, method)(*args, **kwargs)
        finally:
            shared.pool.close()

    def summary(self, **kwargs: Any) -> Any:
        return self._read("summary", **kwargs)

    def rows(self, **kwargs: Any) -> Any:
        return self._read("rows", **kwargs)

    def spent_nano(self, key_id: str, since: float) -> int:
        return self._read("spent_nano", key_id, since)


def _spent(settings: Settings, key: Any) -> float | None:
    """Spend this period from this host's ledger (with Redis, the server's view may include other hosts)."""
    if key.budget_usd is None:
        return None
    from toolrelay.app.auth.periods import period_bounds

    start, _ = period_bounds(key.budget_period, time.time())
    return _ledger(settings).spent_nano(key.id, start) / 1e9


def cmd_keys_create(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_create, args, out)


def _keys_create(args: argparse.Namespace, out: TextIO) -> int:
    from toolrelay.app.auth import keyspec

    settings = _settings(args)
    models = [m.strip() for chunk in args.models for m in chunk.split(",") if m.strip()]
    spec = keyspec.KeySpec(
        name=args.name,
        models=models,
        rpm=args.rpm,
        tpm=args.tpm,
        max_parallel=args.max_parallel,
        budget_usd=args.budget_usd,
        budget_period=args.budget_period,
        expires=args.expires,
        mcp_servers=_mcp_servers(args.mcp_servers),
        max_output_tokens=args.max_output_tokens,
    )
    store = _key_store(settings)
    try:
        key, full = keyspec.create(store, spec, time.time())
    except keyspec.KeySpecError as exc:
        raise _Fail(str(exc)) from None
    finally:
        store.close()
    if args.json:
        out.write(orjson.dumps({**key.public(), "value": full}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out.write(f"Created key '{key.name}' (id {key.id}).\n\n    {full}\n\n")
    out.write("Copy it now: it is shown only this once (only its hash is stored).\n")
    out.write(_describe(key, None))
    return 0


def cmd_keys_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_list, args, out)


def _keys_list(args: argparse.Namespace, out: TextIO) -> int:
    from toolrelay.app.auth import keyspec

    settings = _settings(args)
    store = _key_store(settings)
    try:
        keys = store.all()
    finally:
        store.close()
    now = time.time()
    if args.active:
        keys = [k for k in keys if k.status(now) == "active"]
    spent = {k.id: _spent(settings, k) for k in keys}
    if args.json:
        out.write(orjson.dumps(keyspec.public_list(keys, spent), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    rows = [
        [
            k.id,
            k.name,
            k.status(now),
            ",".join(k.models) or "*",
            _servers_text(k),
            _limits_text(k),
            _budget_text(k, spent.get(k.id)),
            _date(k.expires_at),
        ]
        for k in keys
    ]
    out.write(
        _table(["ID", "NAME", "STATUS", "MODELS", "MCP SERVERS", "LIMITS", "BUDGET", "EXPIRES"], rows)
        if rows
        else "No keys. Create one with `toolrelay keys create --name NAME`.\n"
    )
    return 0


def cmd_keys_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_show, args, out)


def _find(store: Any, raw: str) -> Any:
    from toolrelay.app.auth import keyspec

    key_id = keyspec.normalize_id(raw)
    key = store.load(key_id) if key_id else None
    if key is None:
        raise _Fail(f"no key with id {key_id!r}" if key_id else "that is not a key id (12 hex characters, optionally after 'tr-')")
    return key


def _keys_show(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    store = _key_store(settings)
    try:
        key = _find(store, args.key_id)
    finally:
        store.close()
    spent = _spent(settings, key)
    if args.json:
        out.write(orjson.dumps(key.public(spent_usd=spent), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out.write(_describe(key, spent))
    return 0


def cmd_keys_update(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_update, args, out)


def _keys_update(args: argparse.Namespace, out: TextIO) -> int:
    from toolrelay.app.auth import keyspec

    change = _key_update(args)
    if change == keyspec.KeyUpdate():
        raise _Fail("nothing to change: give one or more of the options of `toolrelay keys update --help`")
    settings = _settings(args)
    store = _key_store(settings)
    try:
        key = _find(store, args.key_id)
        updated = keyspec.update(store, key.id, change)
    except keyspec.KeySpecError as exc:
        raise _Fail(str(exc)) from None
    finally:
        store.close()
    updated = updated or key
    if args.json:
        out.write(orjson.dumps(updated.public(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(f"Updated key {key.id} ('{key.name}').\n")
        out.write(_describe(updated, None))
    return 0


def _key_update(args: argparse.Namespace) -> Any:
    """The :class:`~toolrelay.app.auth.keyspec.KeyUpdate` the flags ask for (absent flags: unchanged)."""
    from toolrelay.app.auth import keyspec

    change = keyspec.KeyUpdate()
    if args.models is not None:
        models = [m.strip() for chunk in args.models for m in chunk.split(",") if m.strip()]
        change.models = [] if models == ["*"] else models
    if args.mcp_servers is not None:
        change.mcp_servers = _mcp_servers(args.mcp_servers)
    for flag, _ in _UPDATE_LIMITS:
        field = flag[2:].replace("-", "_")
        text = getattr(args, field)
        if text is not None:
            setattr(change, field, _limit(flag, text))
    if args.budget_usd is not None:
        if args.budget_usd.strip().lower() in _CLEAR:
            change.budget_usd = None
        else:
            try:
                change.budget_usd = float(args.budget_usd)
            except ValueError:
                raise _Fail("--budget-usd must be a number or 'none'") from None
    if args.budget_period is not None:
        change.budget_period = args.budget_period
    if args.expires is not None and args.expires_in is not None:
        raise _Fail("give --expires or --expires-in, not both")
    when = args.expires if args.expires is not None else args.expires_in
    if when is not None:
        if when.strip().lower() in (*_CLEAR, "never"):
            change.expires_at = None
        else:
            try:
                change.expires_at = float(when)
            except ValueError:
                change.expires = when
    return change


def cmd_keys_rotate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_rotate, args, out)


def _keys_rotate(args: argparse.Namespace, out: TextIO) -> int:
    from toolrelay.app.auth import keyspec
    from toolrelay.app.auth.durations import parse_duration

    try:
        grace = parse_duration(args.grace) if args.grace.strip() not in ("0", "") else 0.0
    except ValueError as exc:
        raise _Fail(f"--grace: {exc}") from None
    settings = _settings(args)
    store = _key_store(settings)
    try:
        key = _find(store, args.key_id)
        if key.revoked_at is not None:
            raise _Fail(f"key {key.id} is revoked; create a new key instead")
        rotated = keyspec.rotate(store, key.id, grace)
    except keyspec.KeySpecError as exc:
        raise _Fail(str(exc)) from None
    finally:
        store.close()
    if rotated is None:
        raise _Fail(f"key {key.id} is revoked; create a new key instead")
    new, full = rotated
    if args.json:
        out.write(orjson.dumps({**new.public(), "key": full, "value": full}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out.write(f"Rotated key '{new.name}' (id {new.id}). Its new secret:\n\n    {full}\n\n")
    out.write("Copy it now: it is shown only this once (only its hash is stored).\n")
    if grace:
        out.write(f"The old secret keeps working until {_date(new.previous_valid_until)}, then it is refused.\n")
    else:
        out.write("The old secret is refused from now on.\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_keys_revoke, args, out)


def _keys_revoke(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    store = _key_store(settings)
    try:
        key = _find(store, args.key_id)
        revoked = store.revoke(key.id)
    finally:
        store.close()
    if args.json:
        out.write(orjson.dumps(revoked.public(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(f"Revoked key {key.id} ('{key.name}').\n")
    return 0


def cmd_usage(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run(_usage, args, out)


def _usage(args: argparse.Namespace, out: TextIO) -> int:
    from toolrelay.app.auth import keyspec
    from toolrelay.app.auth.durations import iso, parse_when

    settings = _settings(args)
    now = time.time()
    try:
        since = parse_when(args.since, now=now, future=False) if args.since else None
        until = parse_when(args.until, now=now, future=False) if args.until else None
    except ValueError as exc:
        raise _Fail(str(exc)) from None
    key_id = None
    if args.key_id:
        key_id = keyspec.normalize_id(args.key_id) or (args.key_id if args.key_id == "admin" else None)
        if key_id is None:
            raise _Fail("--key is not a key id")
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    if settings.database.url is None and not Path(settings.server.data_dir).exists():
        raise _Fail(f"data directory {settings.server.data_dir} does not exist")
    try:
        rows = _ledger(settings).summary(since=since, until=until, group_by=group_by, key_id=key_id)
    except ValueError as exc:
        raise _Fail(str(exc)) from None
    store = _key_store(settings)
    try:
        names = {k.id: k.name for k in store.all()}
    finally:
        store.close()
    if "key" in group_by:
        for row in rows:
            row["key_name"] = names.get(row["key"]) if row["key"] else None
    if args.json:
        out.write(
            orjson.dumps({"object": "list", "data": rows, "since": iso(since), "until": iso(until), "group_by": group_by}, option=orjson.OPT_INDENT_2).decode()
            + "\n"
        )
        return 0
    span = f"{iso(since) or 'the beginning'} to {iso(until) or 'now'}"
    if not rows:
        out.write(f"No usage recorded from {span}.\n")
        return 0
    headers = [g.upper() for g in group_by]
    if "key" in group_by:
        headers.insert(group_by.index("key") + 1, "NAME")
    headers += ["REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "COST USD"]
    table: list[list[str]] = []
    for row in rows:
        cells = []
        for g in group_by:
            value = row[g]
            cells.append("-" if value is None else str(value))
            if g == "key":
                cells.append(row.get("key_name") or "-")
        cells += [str(row["requests"]), str(row["errors"]), str(row["prompt_tokens"]), str(row["completion_tokens"]), f"{row['cost_usd']:.6f}"]
        table.append(cells)
    total = [""] * (len(headers) - 5)
    if total:
        total[0] = "TOTAL"
    total += [
        str(sum(r["requests"] for r in rows)),
        str(sum(r["errors"] for r in rows)),
        str(sum(r["prompt_tokens"] for r in rows)),
        str(sum(r["completion_tokens"] for r in rows)),
        f"{sum(r['cost_usd'] for r in rows):.6f}",
    ]
    table.append(total)
    out.write(f"Usage from {span}:\n")
    out.write(_table(headers, table))
    return 0


# -------------------------------------------------------------- formatting


def _date(ts: float | None) -> str:
    from toolrelay.app.auth.durations import iso

    return iso(ts) or "-"


def _servers_text(key: Any) -> str:
    if key.mcp_servers is None:
        return "*"
    return ",".join(key.mcp_servers) or "(none)"


def _limits_text(key: Any) -> str:
    parts = []
    if key.rpm:
        parts.append(f"{key.rpm} rpm")
    if key.tpm:
        parts.append(f"{key.tpm} tpm")
    if key.max_parallel:
        parts.append(f"{key.max_parallel} parallel")
    return ", ".join(parts) or "-"


def _budget_text(key: Any, spent: float | None) -> str:
    if key.budget_usd is None:
        return "-"
    used = f"${spent:.2f} of " if spent is not None else ""
    return f"{used}${key.budget_usd:.2f} {key.budget_period}"


def _describe(key: Any, spent: float | None) -> str:
    from toolrelay.app.auth.keyformat import redacted

    lines = [
        f"id          {key.id}",
        f"name        {key.name}",
        f"key         {redacted(key.id, key.tail)}",
        f"status      {key.status(time.time())}",
        f"models      {', '.join(key.models) or '* (all)'}",
        f"mcp servers {'* (all)' if key.mcp_servers is None else ', '.join(key.mcp_servers) or '(none)'}",
        f"limits      {_limits_text(key)}",
        f"max output  {key.max_output_tokens or '- (the server ceiling)'}",
        f"budget      {_budget_text(key, spent)}",
        f"created     {_date(key.created_at)}",
        f"expires     {_date(key.expires_at)}",
    ]
    if key.revoked_at is not None:
        lines.append(f"revoked     {_date(key.revoked_at)}")
    return "\n".join(lines) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    numeric = {i for i, h in enumerate(headers) if h in ("REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "COST USD")}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)]) + "\n"
