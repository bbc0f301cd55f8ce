"""Configuration: a TOML file plus ``TOOLRELAY_*`` environment variables.

Precedence, lowest first: built-in defaults, the TOML file
(``--config`` or ``$TOOLRELAY_CONFIG``), then environment variables. Any
setting can be reached from the environment as
``TOOLRELAY_<SECTION>__<KEY>`` (double underscore between levels), e.g.
``TOOLRELAY_UPSTREAMS__OPENAI__API_KEY`` or ``TOOLRELAY_AGENT__MAX_STEPS=12``;
values are read as TOML values when they parse (numbers, booleans, arrays) and
as strings otherwise. A handful of short names exist for the common cases
(see ``_SHORTCUTS``).

With no configuration at all the server serves the embedded local model as
``local`` on 127.0.0.1 with authentication off.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, cast

import msgspec

from toolrelay.app.jsonbody import JSONValue

# The declarations live in app/settings.py (msgspec and the standard library
# only); these names are re-exported because most code reads settings from here.
from toolrelay.app.settings import (
    DEFAULT_LOCAL_SYSTEM_PROMPT,
    AgentSettings,
    ModelSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
)

__all__ = [
    "DEFAULT_LOCAL_SYSTEM_PROMPT",
    "AgentSettings",
    "ConfigError",
    "ModelSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "load_settings",
    "resolve_api_key",
    "with_defaults",
]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


# Short environment names for the settings people change most.
_SHORTCUTS = {
    "TOOLRELAY_HOST": ("server", "host"),
    "TOOLRELAY_PORT": ("server", "port"),
    "TOOLRELAY_DATA": ("server", "data_dir"),
    "TOOLRELAY_DEFAULT_MODEL": ("default_model",),
    "TOOLRELAY_ADMIN_KEY": ("auth", "admin_key"),
}


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    child: JSONValue
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, path in _SHORTCUTS.items():
        if name in environ:
            _set_path(tree, path, _parse_env_value(environ[name]))
    for name, raw in environ.items():
        if not name.startswith("TOOLRELAY_") or "__" not in name:
            continue
        parts = name[len("TOOLRELAY_") :].split("__")
        if not all(parts):
            continue
        # Section and key names are lower case; upstream and model names keep
        # the case given in the variable, lowered (TOML keys are usually lower).
        _set_path(tree, tuple(p.lower() for p in parts), _parse_env_value(raw))
    return tree


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], cast("dict[str, Any]", value))
        else:
            out[key] = value
    return out


def load_settings(config_path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    path = config_path or environ.get("TOOLRELAY_CONFIG")
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                tree = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    tree = _merge(tree, _env_overrides(environ))
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from None
    return with_defaults(settings)


_AT_PATH = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)


def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.sandbox.memory_mb`" as "sandbox.memory_mb: Expected `int` >= 1"."""
    text = str(exc)
    found = _AT_PATH.match(text)
    if found is None:
        return text
    # Table keys show as "[...]" (msgspec does not say which): "upstreams[...].timeout".
    path = found["path"].lstrip(".")
    return f"{path}: {found['what']}" if path else found["what"]


def with_defaults(settings: Settings) -> Settings:
    """Fill in the zero-config embedded model when no upstream is configured."""
    upstreams = dict(settings.upstreams)
    if not upstreams:
        upstreams["local"] = UpstreamSettings(kind="local", models=["local"])
    for name, upstream in upstreams.items():
        if upstream.kind == "openai" and not upstream.base_url:
            raise ConfigError(f"upstreams.{name}.base_url is required for kind 'openai'")
        if upstream.kind == "local" and not upstream.models:
            upstreams[name] = msgspec.structs.replace(upstream, models=[name])
    default_model = settings.default_model
    if default_model is None:
        for upstream in upstreams.values():
            if upstream.models:
                default_model = upstream.models[0]
                break
    return msgspec.structs.replace(settings, upstreams=upstreams, default_model=default_model)


def resolve_api_key(upstream: UpstreamSettings, environ: dict[str, str] | None = None) -> str | None:
    if upstream.api_key:
        return upstream.api_key
    if upstream.api_key_env:
        return (environ or os.environ).get(upstream.api_key_env) or None
    return None
