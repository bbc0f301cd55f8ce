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
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

DEFAULT_LOCAL_SYSTEM_PROMPT = (
    "You are a helpful, concise assistant. Answer the user's question directly and correctly in English."
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    # Binding a public address with no API key would expose every upstream
    # key's spending power; refuse unless the operator says so.
    allow_unauthenticated_public: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    max_messages: int = 2048
    max_tools: int = 128
    # Client JSON Schemas (tool parameters, response_format): jsonschema's
    # meta-validation costs 0.35 s per 1,000 properties, so a request's
    # schemas are capped in total bytes and objects, and each in depth, before
    # anything else; then checked after admission in a few worker threads
    # under a time limit (app/schema_check.py).
    max_schema_bytes: int = 512 * 1024
    max_schema_objects: int = 10_000
    max_schema_depth: int = 64
    schema_check_seconds: float = 10.0
    schema_check_threads: int = 2
    # Token estimates (tiktoken) run in this many worker threads; text beyond
    # token_count_exact_chars per request is bounded by its UTF-8 length
    # instead of being encoded (a 10-million-character word took 6-13 s).
    token_count_threads: int = 2
    token_count_exact_chars: int = 1_000_000
    access_log: bool = True
    # Serve /metrics without the admin key even while authentication is on.
    metrics_public: bool = False
    log_level: str = "info"
    # Browser origins allowed to call the API (CORS), "*" for any; other
    # origins and cross-site requests are refused with 403 (app/http_guard.py).
    cors_origins: list[str] = []
    # Host names (besides loopback names, IP addresses and the bound host)
    # this server answers to. With authentication off other Host headers get
    # 403 (DNS rebinding); once set, the list is enforced with auth on too.
    # "name", ".suffix" / "*.suffix" for subdomains, "*" for any.
    allowed_hosts: list[str] = []
    # /ready reuses one upstream probe for this long (each probe is a call
    # with the operator's upstream key; concurrent hits share one probe).
    ready_cache_seconds: float = 10.0


class UpstreamSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["openai", "local"] = "openai"
    base_url: str = ""
    api_key: str | None = None
    api_key_env: str | None = None
    # Model ids this upstream serves, as clients name them.
    models: list[str] = []
    # Ask the upstream's GET /models at start-up and serve what it lists.
    discover_models: bool = False
    # Any "<prefix><name>" model id routes here as "<name>" (e.g. "openrouter/").
    model_prefix: str | None = None
    headers: dict[str, str] = {}
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_connections: int = 256
    # "native": the model calls tools itself; "constrained": the agent forces
    # a JSON shape; "auto": native unless the upstream is known not to.
    tool_calling: Literal["auto", "native", "constrained"] = "auto"
    # Keyword rules pick the first tool for models too small to choose (default: on for kind "local").
    tool_hints: bool | None = None
    context_window: int | None = None
    # kind = "local" only
    model_path: str | None = None
    n_ctx: int = 4096
    threads: int = 2
    parallel: int = 2
    system_prompt: str = DEFAULT_LOCAL_SYSTEM_PROMPT


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-model overrides, keyed by the served model id."""

    tool_calling: Literal["auto", "native", "constrained"] | None = None
    tool_hints: bool | None = None
    context_window: int | None = None


class AgentSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    max_steps: int = 8
    max_wall_seconds: float = 300.0
    max_total_tokens: int = 200_000
    tool_timeout_seconds: float = 60.0
    max_tool_output_chars: int = 16_000
    max_parallel_tools: int = 8
    keepalive_seconds: float = 10.0
    continuation_ttl_seconds: int = 3600
    builtin_tools: list[str] = msgspec.field(
        default_factory=lambda: ["current_time", "python", "web_search", "fetch_page", "memory_save", "memory_search", "memory_forget"]
    )
    disabled_tools: list[str] = []
    auto_recall: bool = False
    auto_recall_limit: int = 3
    # Prompt injection (agent/taint.py): once memories entered a run
    # (memory_search, memory_forget or auto_recall), fetch_page and web_search
    # are refused for the rest of it, so a page's instructions cannot send
    # them out in a URL or a search query.
    refuse_fetch_after_memory_read: bool = True
    # Once web content entered a run, memory_save and memory_forget are
    # refused, so a page can neither erase memories nor plant one that
    # auto_recall would later put in front of the model.
    refuse_memory_writes_after_web: bool = True
    system_prompt: str | None = None


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    aliases: dict[str, str] = {}
    models: dict[str, ModelSettings] = {}
    default_model: str | None = None
    agent: AgentSettings = AgentSettings()
    # Sections owned by other modules stay plain tables here and are
    # converted by those modules, so config does not import the world.
    sandbox: dict[str, Any] = {}
    web_search: dict[str, Any] = {}
    fetch_page: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    auth: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    pricing: dict[str, Any] = {}
    redis: dict[str, Any] = {}

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)


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
        parts = name[len("TOOLRELAY_"):].split("__")
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
            out[key] = _merge(out[key], value)
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
        raise ConfigError(f"invalid configuration: {exc}") from None
    return with_defaults(settings)


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


def section(settings: Settings, name: str, cls: type) -> Any:
    """Convert one of the module-owned sections into that module's settings type."""
    raw = getattr(settings, name)
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid [{name}] configuration: {exc}") from None
