"""LangChain's ``langchain-openai`` against toolrelay over real HTTP, unchanged.

``ChatOpenAI(use_responses_api=True)`` speaks ``/v1/responses``; the default
``ChatOpenAI`` speaks ``/v1/chat/completions``; ``OpenAIEmbeddings`` sends
token arrays (``check_embedding_ctx_length=True`` by default: it tokenizes
with tiktoken and sends the ids) with ``encoding_format: "base64"`` to
``/v1/embeddings``. Each test checks the endpoint the client reached, what
the fake upstream was sent and what the client got back.
"""

from __future__ import annotations

import openai
import pytest
import tiktoken
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import ServedRequests

RESPONSES = ("POST", "/v1/responses", 200)


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def responses_llm(relay: RunningServer) -> ChatOpenAI:
    return ChatOpenAI(model="fake-model", base_url=relay.base_url, api_key="sk-test", use_responses_api=True, max_retries=0)


def test_responses_invoke(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    answer = responses_llm(relay).invoke([("system", "Be brief."), ("human", "Say hi")])
    assert answer.text == "Hi there."
    assert answer.response_metadata["status"] == "completed" and str(answer.id).startswith("resp_")
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"]) == (7, 3)
    assert served.exactly(1) == [RESPONSES]
    [request] = fake.chat_requests
    assert request.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert not request.is_stream


def test_responses_stream(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(content="one two three"))
    chunks = list(responses_llm(relay).stream("Count to three"))
    texts = [chunk.text for chunk in chunks if chunk.text]
    assert texts == ["one ", "two ", "three"]  # the upstream's pieces, as they came
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert isinstance(whole, AIMessageChunk) and whole.text == "one two three"
    assert served.exactly(1) == [RESPONSES]
    [request] = fake.chat_requests
    assert request.is_stream and request.body["messages"] == [{"role": "user", "content": "Count to three"}]


def test_responses_bind_tools_round_trip(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}]), Reply(content="Sunny in Paris."))
    llm = responses_llm(relay).bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("Weather in Paris?")]
    call = llm.invoke(messages)
    assert isinstance(call, AIMessage)
    assert [(c["name"], c["args"], c["id"]) for c in call.tool_calls] == [("get_weather", {"city": "Paris"}, "call_w1")]
    messages += [call, ToolMessage(get_weather.invoke(call.tool_calls[0]["args"]), tool_call_id="call_w1")]
    final = llm.invoke(messages)
    assert final.text == "Sunny in Paris."
    assert served.exactly(2) == [RESPONSES, RESPONSES]
    first, second = (r.body for r in fake.chat_requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert second["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny in Paris"},
    ]


def test_default_chat_openai_speaks_chat_completions(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    """For contrast: without ``use_responses_api`` the same class calls ``/v1/chat/completions``."""
    llm = ChatOpenAI(model="fake-model", base_url=relay.base_url, api_key="sk-test", max_retries=0)
    fake.enqueue(Reply(content="Chat hi."), Reply(content="one two"))
    assert llm.invoke("Say hi").text == "Chat hi."
    assert "".join(chunk.text for chunk in llm.stream("Count")) == "one two"
    assert served.exactly(2) == [("POST", "/v1/chat/completions", 200)] * 2
    assert [r.body["messages"] for r in fake.chat_requests] == [[{"role": "user", "content": "Say hi"}], [{"role": "user", "content": "Count"}]]


@pytest.fixture
def offline_tiktoken(relay: RunningServer) -> None:
    """``OpenAIEmbeddings`` tokenizes with tiktoken; the running relay has put its bundled vocabularies in tiktoken's cache."""
    tiktoken.get_encoding("cl100k_base")


def test_embeddings_send_token_arrays_by_default(relay: RunningServer, fake: FakeUpstream, served: ServedRequests, offline_tiktoken: None) -> None:
    embeddings = OpenAIEmbeddings(model="fake-model", base_url=relay.base_url, api_key="sk-test", max_retries=0)
    assert embeddings.check_embedding_ctx_length  # the default this test is about
    documents = ["hello world", "a second document"]
    vectors = embeddings.embed_documents(documents)
    query = embeddings.embed_query("what is it?")
    assert served.exactly(2) == [("POST", "/v1/embeddings", 200)] * 2
    encoding = tiktoken.get_encoding("cl100k_base")  # what it picks for a model tiktoken does not know
    batch, single = (r.body for r in fake.requests_to("embeddings"))
    assert batch == {"model": "fake-model", "input": [encoding.encode(d) for d in documents], "encoding_format": "base64"}
    assert single["input"] == [encoding.encode("what is it?")]
    # What the client decoded from base64 is what the relay answers in floats for the same input.
    with openai.OpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0) as client:
        for sent, got in ((batch, vectors), (single, [query])):
            floats = client.embeddings.create(model="fake-model", input=sent["input"], encoding_format="float").data
            assert len(got) == len(floats)
            for vector, entry in zip(got, floats, strict=True):
                assert len(vector) == 8 and vector == pytest.approx(entry.embedding, rel=1e-6)
