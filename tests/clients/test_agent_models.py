"""Agent models (``agent:<model>``) from pydantic-ai, LangChain and LlamaIndex, over both APIs.

Each client runs one agent turn in which the relay's loop calls its built-in
``current_time`` and then answers; the client sees only the answer (on the
Responses API, with the built-in step as an ``mcp_call`` item before it,
which the clients skip). Checked: the endpoint the client reached, the two
upstream calls of the loop (the second carrying the tool result) and the
answer. LlamaIndex's default ``OpenAILike`` calls ``/v1/completions``, which
has no agent mode: it gets the documented 404 and needs
``is_chat_model=True``. The Agents SDK's agent-mode tests live with the
Responses agent-mode tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import ServedRequests

MODEL = "agent:fake-model"
ANSWER = "It is late."


@pytest.fixture(scope="module")
def agent_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("client-agents")
    with start_relay(root, agent_tree(fake_upstream, root / "data")) as server:
        yield server


def _pydantic_ai(model_class: type[OpenAIChatModel] | type[OpenAIResponsesModel]) -> Callable[[RunningServer], str]:
    def run(relay: RunningServer) -> str:
        model = model_class(MODEL, provider=OpenAIProvider(base_url=relay.base_url, api_key="sk-test"))
        return asyncio.run(Agent(model).run("What time is it?")).output

    return run


def _langchain(*, responses: bool, stream: bool = False) -> Callable[[RunningServer], str]:
    def run(relay: RunningServer) -> str:
        llm = ChatOpenAI(model=MODEL, base_url=relay.base_url, api_key="sk-test", use_responses_api=responses, max_retries=0)
        if stream:
            return "".join(chunk.text for chunk in llm.stream("What time is it?"))
        return llm.invoke("What time is it?").text

    return run


def _llamaindex_chat_model(relay: RunningServer) -> str:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model=MODEL, api_base=relay.base_url, api_key="sk-test", is_chat_model=True, max_retries=0)
    return str(llm.chat([ChatMessage(role="user", content="What time is it?")]).message.content)


CLIENTS: dict[str, tuple[Callable[[RunningServer], str], str]] = {
    "pydantic-ai openai:": (_pydantic_ai(OpenAIResponsesModel), "/v1/responses"),
    "pydantic-ai openai-chat:": (_pydantic_ai(OpenAIChatModel), "/v1/chat/completions"),
    "langchain responses": (_langchain(responses=True), "/v1/responses"),
    "langchain responses stream": (_langchain(responses=True, stream=True), "/v1/responses"),
    "langchain chat": (_langchain(responses=False), "/v1/chat/completions"),
    "llamaindex is_chat_model": (_llamaindex_chat_model, "/v1/chat/completions"),
}


@pytest.mark.parametrize("name", list(CLIENTS))
def test_agent_model_runs_a_builtin_step(name: str, agent_relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    if name.startswith("llamaindex"):
        pytest.importorskip("llama_index.llms.openai_like", reason="installed by .ci/run")
    run, path = CLIENTS[name]
    fake.enqueue(Reply(tool_calls=[{"id": "call_t1", "name": "current_time", "arguments": {}}]), Reply(content=ANSWER))
    assert run(agent_relay) == ANSWER
    assert served.exactly(1) == [("POST", path, 200)]
    first, second = (r.body for r in fake.chat_requests)
    assert first["model"] == second["model"] == "fake-model"  # the loop calls the base model
    assert "current_time" in [t["function"]["name"] for t in first["tools"]]
    [result] = [m for m in second["messages"] if m["role"] == "tool"]
    assert result["tool_call_id"] == "call_t1" and '"timezone"' in result["content"]  # the relay ran the tool


def test_llamaindex_default_gets_a_clear_404(agent_relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    openai_like = pytest.importorskip("llama_index.llms.openai_like", reason="installed by .ci/run")
    llm = openai_like.OpenAILike(model=MODEL, api_base=agent_relay.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not supported in the /v1/completions endpoint"):
        llm.complete("What time is it?")
    assert served.exactly(1) == [("POST", "/v1/completions", 404)]
    assert fake.requests == []
