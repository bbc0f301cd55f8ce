"""LlamaIndex's ``OpenAILike`` against toolrelay over real HTTP, unchanged.

With its default settings (``is_chat_model=False``) both ``complete()`` and
``chat()`` call the legacy ``/v1/completions``; ``chat()`` first flattens the
messages into one ``role: text`` prompt. With ``is_chat_model=True`` both call
``/v1/chat/completions``. Each test checks the endpoint the client reached,
what the fake upstream was sent and what the client got back.
"""

from __future__ import annotations

import pytest

# Installed by .ci/run with --no-deps (its openai<3 pin conflicts with openai-agents), not by the test extra.
pytest.importorskip("llama_index.llms.openai_like", reason="pip install --no-deps llama-index-llms-openai llama-index-llms-openai-like (.ci/run)")

from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import ServedRequests

COMPLETIONS = ("POST", "/v1/completions", 200)
CHAT = ("POST", "/v1/chat/completions", 200)
MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Say hi")]


def default_llm(relay: RunningServer, **settings: object) -> OpenAILike:
    return OpenAILike(model="fake-model", api_base=relay.base_url, api_key="sk-test", max_retries=0, **settings)


def test_default_complete_and_chat_use_legacy_completions(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    llm = default_llm(relay)
    assert not llm.is_chat_model  # the default this test is about
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}), Reply(content="Chat there."))
    completion = llm.complete("Say hi")
    assert completion.text == "Hi there."
    assert completion.additional_kwargs == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    answer = llm.chat(MESSAGES)
    assert answer.message.role == "assistant" and answer.message.content == "Chat there."
    assert served.exactly(2) == [COMPLETIONS, COMPLETIONS]
    assert fake.chat_requests == []
    first, second = (r.body for r in fake.requests_to("completions"))
    assert (first["model"], first["prompt"], first["stream"]) == ("fake-model", "Say hi", False)
    assert second["prompt"] == "system: Be brief.\nuser: Say hi\nassistant: "


def test_default_streaming_uses_legacy_completions(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    llm = default_llm(relay)
    fake.enqueue(Reply(content="one two three"), Reply(content="four five"))
    deltas = [chunk.delta for chunk in llm.stream_complete("Count")]
    assert [d for d in deltas if d] == ["one ", "two ", "three"]
    chat_chunks = list(llm.stream_chat(MESSAGES))
    assert chat_chunks[-1].message.content == "four five"
    assert served.exactly(2) == [COMPLETIONS, COMPLETIONS]
    first, second = (r.body for r in fake.requests_to("completions"))
    assert first["stream"] is True and first["prompt"] == "Count"
    assert second["stream"] is True and second["prompt"].startswith("system: Be brief.\n")


async def test_default_async_complete(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(content="Async hi."))
    assert (await default_llm(relay).acomplete("Say hi")).text == "Async hi."
    assert served.exactly(1) == [COMPLETIONS]


def test_chat_model_uses_chat_completions(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    llm = default_llm(relay, is_chat_model=True)
    fake.enqueue(Reply(content="Chat model."), Reply(content="Completed."), Reply(content="one two"))
    assert llm.chat(MESSAGES).message.content == "Chat model."
    assert llm.complete("Say hi").text == "Completed."
    assert "".join(chunk.delta or "" for chunk in llm.stream_chat(MESSAGES)) == "one two"
    assert served.exactly(3) == [CHAT] * 3
    assert fake.requests_to("completions") == []
    bodies = [r.body for r in fake.chat_requests]
    assert bodies[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert bodies[1]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert bodies[2]["stream"] is True
