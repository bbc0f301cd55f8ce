"""A new key's settings, as the CLI and the admin API accept them, checked in one place."""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

import msgspec

from toolrelay.app.auth.durations import parse_when
from toolrelay.app.auth.keystore import KEEP, ApiKey, Keys
from toolrelay.app.auth.settings import BUDGET_PERIODS


class KeySpecError(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class KeySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    # Model ids or "*" patterns ("agent/*"); empty = every model.
    models: list[str] = []
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str = "monthly"
    # Either an absolute Unix time, or "30d"/"12h"/ISO date in ``expires``.
    expires_at: float | None = None
    expires: str | None = None
    # Names of [mcp.servers.<name>] whose tools the key may use; None: all, []: none.
    mcp_servers: list[str] | None = None
    # Completion tokens one request may ask for; None: the server's ceiling ([limits] max_output_tokens).
    max_output_tokens: int | None = None


class KeyUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A change to an existing key; a field left out stays as it is, ``null`` clears a limit."""

    models: list[str] | msgspec.UnsetType = msgspec.UNSET
    # null: every MCP server again; []: none.
    mcp_servers: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    rpm: int | msgspec.UnsetType | None = msgspec.UNSET
    tpm: int | msgspec.UnsetType | None = msgspec.UNSET
    max_parallel: int | msgspec.UnsetType | None = msgspec.UNSET
    budget_usd: float | msgspec.UnsetType | None = msgspec.UNSET
    budget_period: str | msgspec.UnsetType = msgspec.UNSET
    # null (either of them): no expiry.
    expires_at: float | msgspec.UnsetType | None = msgspec.UNSET
    expires: str | msgspec.UnsetType | None = msgspec.UNSET
    max_output_tokens: int | msgspec.UnsetType | None = msgspec.UNSET


class Rotation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /admin/keys/{id}/rotate``: how long the replaced secret keeps working."""

    grace_seconds: float = 0.0


# A grace period longer than this is a second key, not a rotation.
MAX_GRACE_SECONDS = 30 * 86_400


_S = TypeVar("_S", KeySpec, KeyUpdate, Rotation)
_PATH = re.compile(r"at `\$\.([A-Za-z_]+)|required field `([A-Za-z_]+)`")


def spec_from_json(raw: bytes) -> KeySpec:
    return _decode(raw, KeySpec)


def update_from_json(raw: bytes) -> KeyUpdate:
    return _decode(raw, KeyUpdate)


def rotation_from_json(raw: bytes) -> Rotation:
    return _decode(raw, Rotation)


def check_grace(seconds: float) -> float:
    if not 0 <= seconds <= MAX_GRACE_SECONDS:  # also refuses NaN
        raise KeySpecError(f"'grace_seconds' must be between 0 and {MAX_GRACE_SECONDS} (30 days).", "grace_seconds")
    return seconds


def _decode(raw: bytes, kind: type[_S]) -> _S:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        raise KeySpecError(f"Invalid key settings: {exc}", (match.group(1) or match.group(2)) if match else None) from None
    except msgspec.DecodeError:
        raise KeySpecError("We could not parse the JSON body of your request.") from None


def check(spec: KeySpec, now: float) -> float | None:
    """Validate ``spec``; returns the expiry time (or None)."""
    if not spec.name.strip() or len(spec.name) > 200:
        raise KeySpecError("'name' must be 1 to 200 characters.", "name")
    for field in ("rpm", "tpm", "max_parallel", "max_output_tokens"):
        _check_limit(field, getattr(spec, field))
    _check_budget(spec.budget_usd)
    _check_period(spec.budget_period)
    _check_models(spec.models)
    _check_mcp_servers(spec.mcp_servers)
    return _expiry(spec.expires_at, spec.expires, now)


def _check_limit(field: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise KeySpecError(f"'{field}' must be a positive integer (0 or absent: no limit).", field)


def _check_budget(value: float | None) -> None:
    if value is not None and not value >= 0:  # also refuses NaN
        raise KeySpecError("'budget_usd' must not be negative.", "budget_usd")


def _check_period(period: str) -> None:
    if period not in BUDGET_PERIODS:
        raise KeySpecError(f"'budget_period' must be one of {', '.join(BUDGET_PERIODS)}.", "budget_period")


def _expiry(expires_at: float | None, expires: str | None, now: float) -> float | None:
    if expires:
        try:
            expires_at = parse_when(expires, now=now, future=True)
        except ValueError as exc:
            raise KeySpecError(str(exc), "expires") from None
    if expires_at is not None and not expires_at > now:
        raise KeySpecError("The expiry is in the past.", "expires")
    return expires_at


def _check_models(models: list[str]) -> None:
    if any(not isinstance(m, str) or not m.strip() or len(m) > 256 for m in models):
        raise KeySpecError("'models' must be a list of model ids or '*' patterns.", "models")


def _check_mcp_servers(servers: list[str] | None) -> None:
    # Names are not checked against [mcp.servers]: a key may name a server the
    # configuration adds later; an unknown name simply matches nothing.
    if servers is not None and any(not isinstance(s, str) or not s.strip() or len(s) > 200 for s in servers):
        raise KeySpecError("'mcp_servers' must be null (every MCP server) or a list of MCP server names.", "mcp_servers")


def update(store: Keys, key_id: str, change: KeyUpdate, now: float | None = None) -> ApiKey | None:
    """Apply ``change`` to the key ``key_id``; None if there is no such key."""
    models = None if isinstance(change.models, msgspec.UnsetType) else change.models
    if models is not None:
        _check_models(models)
    servers = KEEP if isinstance(change.mcp_servers, msgspec.UnsetType) else change.mcp_servers
    if servers is not KEEP:
        _check_mcp_servers(servers)
    return store.update(key_id, models=models, mcp_servers=servers, settings=changed_settings(change, time.time() if now is None else now))


def changed_settings(change: KeyUpdate, now: float) -> dict[str, Any]:
    """The limits, budget, expiry and ceiling ``change`` sets, checked, as column -> value (None clears; 0 too for limits)."""
    settings: dict[str, Any] = {}
    for field in ("rpm", "tpm", "max_parallel", "max_output_tokens"):
        value = getattr(change, field)
        if not isinstance(value, msgspec.UnsetType):
            _check_limit(field, value)
            settings[field] = value or None
    if not isinstance(change.budget_usd, msgspec.UnsetType):
        _check_budget(change.budget_usd)
        settings["budget_usd"] = change.budget_usd
    if not isinstance(change.budget_period, msgspec.UnsetType):
        _check_period(change.budget_period)
        settings["budget_period"] = change.budget_period
    expires_at = None if isinstance(change.expires_at, msgspec.UnsetType) else change.expires_at
    expires = None if isinstance(change.expires, msgspec.UnsetType) else change.expires
    if not (isinstance(change.expires_at, msgspec.UnsetType) and isinstance(change.expires, msgspec.UnsetType)):
        settings["expires_at"] = _expiry(expires_at, expires, now)
    return settings


def rotate(store: Keys, key_id: str, grace_seconds: float, now: float | None = None) -> tuple[ApiKey, str] | None:
    """A new secret for ``key_id`` (the old one valid ``grace_seconds`` more); None if the key is revoked or gone."""
    return store.rotate(key_id, grace_seconds=check_grace(grace_seconds), now=now)


def create(store: Keys, spec: KeySpec, now: float) -> tuple[ApiKey, str]:
    expires_at = check(spec, now)
    return store.create(
        name=spec.name.strip(),
        models=spec.models,
        rpm=spec.rpm or None,
        tpm=spec.tpm or None,
        max_parallel=spec.max_parallel or None,
        budget_usd=spec.budget_usd,
        budget_period=spec.budget_period,
        expires_at=expires_at,
        mcp_servers=spec.mcp_servers,
        max_output_tokens=spec.max_output_tokens or None,
        now=now,
    )


def normalize_id(text: str) -> str | None:
    """A key id from ``abc123...``, ``tr-abc123...`` or a whole key; None if it is none of those."""
    text = text.strip()
    if text.startswith("tr-"):
        text = text[3:]
    candidate = text[:12]
    if len(candidate) == 12 and all(c in "0123456789abcdef" for c in candidate) and (len(text) == 12 or text[12] == "-"):
        return candidate
    return None


def public_list(keys: list[ApiKey], spent: dict[str, float | None] | None = None) -> dict[str, Any]:
    data = [k.public(spent_usd=(spent or {}).get(k.id)) for k in keys]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None, "has_more": False}
