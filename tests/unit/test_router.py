"""ModelRouter: which upstream serves a model id, and under what name.

Settings are loaded from TOML the way the server loads them; providers are
stand-ins that only have a name and a model list (the router never calls
anything else on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.server import load_toml_settings
from toolrelay.app.providers.router import AGENT_PREFIX, ModelRouter


class StubProvider:
    def __init__(
        self,
        name: str,
        kind: str = "openai",
        listed: list[str] | None = None,
        fails: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self._listed = listed or []
        self._fails = fails

    async def list_models(self) -> list[str]:
        if self._fails:
            raise ConnectionError("down")
        return list(self._listed)


TREE: dict[str, Any] = {
    "upstreams": {
        "main": {
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["gpt-4o-mini", "org/slash-model", "agent/never"],
            "context_window": 128000,
        },
        "router": {
            "base_url": "http://127.0.0.1:9/v1",
            "model_prefix": "openrouter/",
            "tool_calling": "constrained",
            "context_window": 8000,
        },
        "second": {
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["gpt-4o-mini", "small"],
            "tool_hints": True,
        },
    },
    "aliases": {
        "gpt-4": "gpt-4o-mini",
        "cheap": "openrouter/meta/llama",
        "dangling": "missing",
    },
    "models": {
        "small": {
            "tool_calling": "constrained",
            "context_window": 2048,
            "tool_hints": False,
        }
    },
}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> ModelRouter:
    settings = load_toml_settings(tmp_path_factory.mktemp("router") / "toolrelay.toml", TREE)
    return ModelRouter(settings, {name: StubProvider(name) for name in TREE["upstreams"]})


@pytest.mark.parametrize(
    (
        "model_id",
        "provider",
        "upstream_model",
        "tool_calling",
        "context_window",
        "tool_hints",
    ),
    [
        (
            "gpt-4o-mini",
            "main",
            "gpt-4o-mini",
            "auto",
            128000,
            False,
        ),  # the first upstream that lists an id serves it
        ("org/slash-model", "main", "org/slash-model", "auto", 128000, False),
        (
            "small",
            "second",
            "small",
            "constrained",
            2048,
            False,
        ),  # [models.<id>] overrides the upstream
        (
            "openrouter/meta/llama",
            "router",
            "meta/llama",
            "constrained",
            8000,
            False,
        ),  # the prefix is stripped
        (
            "gpt-4",
            "main",
            "gpt-4o-mini",
            "auto",
            128000,
            False,
        ),  # an alias keeps its own id
        (
            "cheap",
            "router",
            "meta/llama",
            "constrained",
            8000,
            False,
        ),  # an alias of a prefixed id
    ],
)
def test_resolve(
    router: ModelRouter,
    model_id: str,
    provider: str,
    upstream_model: str,
    tool_calling: str,
    context_window: int,
    tool_hints: bool,
) -> None:
    route = router.resolve(model_id)
    assert route is not None
    assert (
        route.model_id,
        route.provider.name,
        route.upstream_model,
        route.tool_calling,
        route.context_window,
        route.tool_hints,
    ) == (
        model_id,
        provider,
        upstream_model,
        tool_calling,
        context_window,
        tool_hints,
    )


@pytest.mark.parametrize(
    "model_id",
    [
        "unknown",
        "openrouter/",  # the prefix alone names no model
        "dangling",  # an alias whose target nothing serves
        "agent/never",  # agent/ ids are never upstream ids: the agent prefix is the chat handler's
        "GPT-4O-MINI",  # ids are case-sensitive, as OpenAI's are
    ],
)
def test_unknown_ids_resolve_to_none(router: ModelRouter, model_id: str) -> None:
    assert router.resolve(model_id) is None


def test_agent_ids_route_by_what_follows_the_prefix(router: ModelRouter) -> None:
    # The chat handler strips AGENT_PREFIX and resolves the rest; the router serves that rest.
    model = AGENT_PREFIX + "org/slash-model"
    route = router.resolve(model[len(AGENT_PREFIX) :])
    assert route is not None and route.upstream_model == "org/slash-model"


def test_served_models_lists_ids_and_live_aliases(router: ModelRouter) -> None:
    served = dict(router.served_models())
    assert served == {
        "gpt-4o-mini": "main",
        "org/slash-model": "main",
        "small": "second",
        "gpt-4": "main",
        "cheap": "router",
    }


async def test_discovery_adds_listed_models_and_skips_an_unreachable_upstream(
    tmp_path: Path,
) -> None:
    tree = {
        "upstreams": {
            "listed": {
                "base_url": "http://127.0.0.1:9/v1",
                "models": ["fixed"],
                "discover_models": True,
            },
            "down": {
                "base_url": "http://127.0.0.1:9/v1",
                "models": ["other"],
                "discover_models": True,
            },
        }
    }
    settings = load_toml_settings(tmp_path / "toolrelay.toml", tree)
    router = ModelRouter(
        settings,
        {
            "listed": StubProvider("listed", listed=["fixed", "found", "agent/x"]),
            "down": StubProvider("down", fails=True),
        },
    )
    assert router.resolve("found") is None
    await router.discover()
    found = router.resolve("found")
    assert found is not None and found.provider.name == "listed"
    assert router.resolve("agent/x") is None
    assert sorted(m for m, _ in router.served_models()) == ["fixed", "found", "other"]
