"""The one settings loader: every section typed at load time, environment overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fakes.server import write_toml
from toolrelay.app import settings as sections
from toolrelay.app.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, tree: dict[str, Any] | None = None, **environ: str) -> Settings:
    path = write_toml(tmp_path / "c.toml", tree) if tree is not None else None
    return load_settings(path, environ=environ)


@pytest.mark.parametrize(
    ("variable", "value", "path", "expected"),
    [
        ("TOOLRELAY_SERVER__MAX_TOOLS", "3", ("server", "max_tools"), 3),
        ("TOOLRELAY_AGENT__MAX_STEPS", "12", ("agent", "max_steps"), 12),
        ("TOOLRELAY_SANDBOX__BACKEND", "off", ("sandbox", "backend"), "off"),
        ("TOOLRELAY_SANDBOX__WALL_SECONDS", "5", ("sandbox", "wall_seconds"), 5.0),
        ("TOOLRELAY_WEB_SEARCH__REGION", "de-de", ("web_search", "region"), "de-de"),
        ("TOOLRELAY_FETCH_PAGE__ALLOWED_PORTS", "[443]", ("fetch_page", "allowed_ports"), (443,)),
        ("TOOLRELAY_MEMORY__ENABLED", "false", ("memory", "enabled"), False),
        ("TOOLRELAY_AUTH__LEDGER", "false", ("auth", "ledger"), False),
        ("TOOLRELAY_LIMITS__IP_RPM", "60", ("limits", "ip_rpm"), 60),
        ("TOOLRELAY_PRICING__BUILTIN", "false", ("pricing", "builtin"), False),
        ("TOOLRELAY_REDIS__URL", "redis://127.0.0.1:6379/0", ("redis", "url"), "redis://127.0.0.1:6379/0"),
        ("TOOLRELAY_REDIS__SOCKET_TIMEOUT", "0.5", ("redis", "socket_timeout"), 0.5),
        ("TOOLRELAY_DATABASE__URL", "postgresql://u:p@db:5432/tr", ("database", "url"), "postgresql://u:p@db:5432/tr"),
        ("TOOLRELAY_PORT", "9000", ("server", "port"), 9000),
        ("TOOLRELAY_ADMIN_KEY", "an-admin-key-of-24-chars", ("auth", "admin_key"), "an-admin-key-of-24-chars"),
    ],
)
def test_every_section_is_typed_and_reachable_from_the_environment(tmp_path: Path, variable: str, value: str, path: tuple[str, str], expected: Any) -> None:
    settings = load(tmp_path, **{variable: value})
    section = getattr(settings, path[0])
    assert isinstance(section, sections.Section)
    assert getattr(section, path[1]) == expected


def test_the_environment_beats_the_file(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {"sandbox": {"memory_mb": 256}, "auth": {"admin_key": "from-the-file-0123456789"}},
        TOOLRELAY_SANDBOX__MEMORY_MB="128",
        TOOLRELAY_ADMIN_KEY="from-the-environment-0123",
    )
    assert settings.sandbox.memory_mb == 128
    assert settings.auth.admin_key == "from-the-environment-0123"


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"sandbox": {"memory_mb": 0}}, "sandbox.memory_mb: Expected `int` >= 1"),
        ({"sandbox": {"wall_secs": 5}}, "sandbox: Object contains unknown field `wall_secs`"),
        ({"sandbox": {"backend": "unsafe"}}, "sandbox.backend: Invalid enum value 'unsafe'"),
        ({"sandbox": {"sandbox_uid_base": 65533, "max_concurrent": 2}}, "65534 (nobody)"),
        ({"server": {"port": 70000}}, "server.port: Expected `int` <= 65535"),
        ({"agent": {"tool_timeout_seconds": 0}}, "agent.tool_timeout_seconds: Expected `float` > 0.0"),
        ({"upstreams": {"u": {"base_url": "http://x", "timeout": -1}}}, "upstreams[...].timeout: Expected `float` > 0.0"),
        ({"web_search": {"region": "english"}}, "web_search.region: Expected `str` matching regex"),
        ({"web_search": {"backend": "searxng"}}, "needs searxng_url"),
        ({"fetch_page": {"allowed_ports": [0]}}, "0 is not a port"),
        ({"fetch_page": {"allow_networks": ["nope"]}}, "fetch_page"),
        ({"memory": {"max_bytes_per_key": -1}}, "memory.max_bytes_per_key: Expected `int` >= 0"),
        ({"memory": {"language": "klingon"}}, "memory.language: Invalid enum value 'klingon'"),
        ({"auth": {"admin_key": "short"}}, "auth.admin_key must be at least 16 characters"),
        ({"auth": {"max_failed_auth": -1}}, "auth.max_failed_auth: Expected `int` >= 0"),
        ({"limits": {"max_request_cost_usd": -1}}, "limits.max_request_cost_usd: Expected `float` >= 0.0"),
        ({"pricing": {"models": {"m": {"input": -1}}}}, "pricing.models[...].input: Expected `float` >= 0.0"),
        ({"redis": {"url": "http://127.0.0.1"}}, "redis.url must start with redis://"),
    ],
)
def test_bad_values_are_refused_at_load_naming_the_setting(tmp_path: Path, tree: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^invalid configuration: ") as caught:
        load(tmp_path, tree)
    assert message in str(caught.value)


def test_admin_key_blanks_mean_no_key_and_are_trimmed(tmp_path: Path) -> None:
    assert load(tmp_path, TOOLRELAY_ADMIN_KEY="   ").auth.admin_key is None
    assert load(tmp_path, TOOLRELAY_ADMIN_KEY=" padded-admin-key-0123 ").auth.admin_key == "padded-admin-key-0123"


def test_sections_built_in_code_are_checked_like_loaded_ones() -> None:
    with pytest.raises(ValueError, match="memory_mb"):
        sections.SandboxSettings(memory_mb=0)
    with pytest.raises(ValueError, match="max_results"):
        sections.WebSearchSettings(max_results=11)
    assert sections.FetchPageSettings(allowed_ports=(443,)).allowed_ports == (443,)


def _documented_keys() -> dict[str, set[str]]:
    """Keys named in docs/configuration.md, per section heading."""
    text = (REPO / "docs" / "configuration.md").read_text()
    keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        heading = re.match(r"^## `\[([a-z_]+)", line)
        if heading:
            section = heading[1]
        elif line.startswith("| `") and section:
            # "`limits.ip_rpm`, `ip_tpm`": a bare name belongs to the section named before it in the cell.
            owner = section
            for name in re.findall(r"`([a-z_.]+)[^`]*`", line.split("|")[1]):
                dotted = name.strip(".").split(".")
                if len(dotted) > 1:
                    owner = dotted[0]
                keys.setdefault(owner, set()).add(dotted[1] if len(dotted) > 1 else dotted[0])
    return keys


DOCUMENTED_ELSEWHERE = {
    # Typed like the rest, explained beside the tables rather than in one.
    ("models", "tool_calling"),
    ("models", "tool_hints"),
    ("models", "context_window"),
    # Listed together with their section's plain keys.
    ("sandbox", "prlimit"),
    ("sandbox", "setpriv"),
}


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("server", sections.ServerSettings),
        ("upstreams", sections.UpstreamSettings),
        ("agent", sections.AgentSettings),
        ("sandbox", sections.SandboxSettings),
        ("web_search", sections.WebSearchSettings),
        ("fetch_page", sections.FetchPageSettings),
        ("memory", sections.MemorySettings),
        ("auth", sections.AuthSettings),
        ("limits", sections.LimitSettings),
        ("pricing", sections.PricingSettings),
        ("redis", sections.RedisSettings),
        ("database", sections.DatabaseSettings),
        ("routing", sections.RoutingSettings),
        ("models", sections.ModelSettings),
        ("mcp_server", sections.McpEndpointSettings),
        ("cache", sections.CacheSettings),
    ],
)
def test_configuration_doc_lists_exactly_the_settings(section: str, cls: type[msgspec.Struct]) -> None:
    documented = _documented_keys().get(section, set())
    fields = set(cls.__struct_fields__)
    missing = sorted(name for name in fields - documented if (section, name) not in DOCUMENTED_ELSEWHERE)
    assert missing == [], f"[{section}] settings missing from docs/configuration.md: {missing}"
    assert sorted(documented - fields) == [], f"docs/configuration.md documents [{section}] keys that do not exist"


def test_no_settings_leftovers() -> None:
    assert not hasattr(Settings, "data_path")
    import toolrelay.app.auth.settings as auth_settings

    assert not hasattr(auth_settings, "BudgetPeriod") and not hasattr(auth_settings, "ADMIN_KEY_ENV")
