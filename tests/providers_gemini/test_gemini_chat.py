"""Chat Completions on a ``kind = "gemini"`` upstream, over real HTTP with the OpenAI SDK as the client."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from fakes.gemini import FakeGemini, GeminiCall, GeminiReply, google_error

from .conftest import MODEL

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_plain_chat_goes_to_generate_content(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(text="Bonjour tout le monde"))
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
    )
    assert answer.choices[0].message.content == "Bonjour tout le monde"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == MODEL
    request = gemini.last
    assert (request.model, request.method) == (MODEL, "generateContent")
    assert request.body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    }
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 4)


def test_streamed_chat_uses_sse(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(text="one two three"))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    request = gemini.last
    assert request.method == "streamGenerateContent" and request.query == {"alt": "sse"}


def test_consecutive_roles_merge_and_images_translate(client: openai.OpenAI, gemini: FakeGemini) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": "Rule one."},
            {"role": "user", "content": "first"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
                ],
            },
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "sure?"},
        ],
    )
    body = gemini.last_body
    assert body["systemInstruction"] == {"parts": [{"text": "Rule one."}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "first"},
                {"text": "what is this"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"fileUri": "https://example.com/cat.webp", "mimeType": "image/webp"}},
            ],
        },
        {"role": "model", "parts": [{"text": "a cat"}]},
        {"role": "user", "parts": [{"text": "sure?"}]},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tools_and_tool_choice(client: openai.OpenAI, gemini: FakeGemini, tool_choice: Any, config: dict[str, Any]) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], tool_choice=tool_choice)  # type: ignore[arg-type]
    body = gemini.last_body
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                }
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize("stream", [False, True])
def test_function_calling_round_trip(client: openai.OpenAI, gemini: FakeGemini, stream: bool) -> None:
    """Parallel calls get distinct ids carrying their signatures; the answers go back as functionResponse by name."""
    gemini.enqueue(GeminiReply(calls=[GeminiCall("get_weather", {"city": "Paris"}, signature="c2lnLTE="), GeminiCall("get_time", {"tz": "CET"})]))
    messages: list[Any] = [{"role": "user", "content": "weather and time in Paris"}]
    if stream:
        pieces = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True))
        calls: dict[int, dict[str, str]] = {}
        for chunk in pieces:
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = [c.choices[0].finish_reason for c in pieces if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
        got = [calls[i] for i in sorted(calls)]
    else:
        answer = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        assert answer.choices[0].finish_reason == "tool_calls"
        got = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in answer.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert [(c["name"], json.loads(c["arguments"])) for c in got] == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert got[0]["id"] != got[1]["id"] and all(c["id"].startswith("call_") for c in got)
    assert got[0]["id"].endswith("__thought__c2lnLTE=") and "__thought__" not in got[1]["id"]

    gemini.enqueue(GeminiReply(text="Sunny, 10:00"))
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in got],
        },
        {"role": "tool", "tool_call_id": got[1]["id"], "content": "10:00"},
        {"role": "tool", "tool_call_id": got[0]["id"], "content": '{"sky": "sunny"}'},
    ]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "Sunny, 10:00"
    assert gemini.last_body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "10:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}},
            ],
        },
    ]


def test_tool_message_for_unknown_call_is_a_400(client: openai.OpenAI, gemini: FakeGemini) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_nope", "content": "1"}])
    assert caught.value.body["param"] == "messages[1].tool_call_id"  # type: ignore[index]
    assert gemini.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_thoughts_become_reasoning_content_and_usage_maps(client: openai.OpenAI, gemini: FakeGemini, stream: bool) -> None:
    usage = {"promptTokenCount": 11, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "cachedContentTokenCount": 4, "totalTokenCount": 23}
    gemini.enqueue(GeminiReply(thoughts="Let me think", text="42", usage=usage))
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "answer?"}], "reasoning_effort": "low"}
    if stream:
        chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        got = chunks[-1].usage
    else:
        answer = client.chat.completions.create(**kwargs)
        reasoning = getattr(answer.choices[0].message, "reasoning_content", None)
        content = answer.choices[0].message.content
        got = answer.usage
    assert (reasoning, content) == ("Let me think", "42")
    assert gemini.last_body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}
    assert got is not None
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (11, 12, 23)
    assert got.completion_tokens_details is not None and got.completion_tokens_details.reasoning_tokens == 7
    assert got.prompt_tokens_details is not None and got.prompt_tokens_details.cached_tokens == 4


@pytest.mark.parametrize(
    ("gemini_reason", "openai_reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(client: openai.OpenAI, gemini: FakeGemini, gemini_reason: str, openai_reason: str) -> None:
    gemini.enqueue(GeminiReply(text="cut", finish_reason=gemini_reason))
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].finish_reason == openai_reason


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_prompt_is_a_content_filter_400(client: openai.OpenAI, gemini: FakeGemini, stream: bool) -> None:
    gemini.enqueue(GeminiReply(prompt_feedback={"blockReason": "SAFETY"}))
    with pytest.raises(openai.BadRequestError) as caught:
        if stream:
            list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))
        else:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "content_filter"
    assert "SAFETY" in caught.value.message


def test_n_candidates(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(candidates=[[{"text": "red"}], [{"text": "blue"}]]))
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a colour"}], n=2)
    assert [c.message.content for c in answer.choices] == ["red", "blue"]
    assert gemini.last_body["generationConfig"] == {"candidateCount": 2}

    gemini.enqueue(GeminiReply(candidates=[[{"text": "big red"}], [{"text": "deep blue"}]]))
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a colour"}], n=2, stream=True))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: "big red", 1: "deep blue"}


def test_json_schema_response_format(client: openai.OpenAI, gemini: FakeGemini) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    gemini.enqueue(GeminiReply(text='{"n": 3}'))
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "three"}],
        response_format={"type": "json_schema", "json_schema": {"name": "num", "schema": schema, "strict": True}},
    )
    assert json.loads(answer.choices[0].message.content or "") == {"n": 3}
    assert gemini.last_body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"})
    assert gemini.last_body["generationConfig"] == {"responseMimeType": "application/json"}


# --------------------------------------------------------------------------- errors


def test_rate_limit_carries_the_retry_delay(client: openai.OpenAI, gemini: FakeGemini) -> None:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
    ]
    gemini.enqueue(GeminiReply(status=429, error=google_error(429, "You exceeded your current quota.", details=details)))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["retry-after"] == "37"
    assert caught.value.response.headers["retry-after-ms"] == "37000"
    assert caught.value.message.endswith("You exceeded your current quota.")


@pytest.mark.parametrize(
    ("status", "name", "exception", "client_status"),
    [
        (400, "INVALID_ARGUMENT", openai.BadRequestError, 400),
        (404, "NOT_FOUND", openai.NotFoundError, 404),
        (500, "INTERNAL", openai.InternalServerError, 500),
        (503, "UNAVAILABLE", openai.InternalServerError, 503),
        (504, "DEADLINE_EXCEEDED", openai.InternalServerError, 504),
        (403, "PERMISSION_DENIED", openai.InternalServerError, 502),  # the operator's credential, not the client's
    ],
)
def test_error_statuses(client: openai.OpenAI, gemini: FakeGemini, status: int, name: str, exception: type[Exception], client_status: int) -> None:
    gemini.enqueue(GeminiReply(status=status, error=google_error(status, f"went wrong: {name}", status=name)))
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == client_status  # type: ignore[attr-defined]


def test_too_long_prompt_is_context_length_exceeded(client: openai.OpenAI, gemini: FakeGemini) -> None:
    message = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    gemini.enqueue(GeminiReply(status=400, error=google_error(400, message)))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "context_length_exceeded"


def test_invalid_key_is_the_operators_problem(gemini_relay: Any, gemini: FakeGemini) -> None:
    gemini.api_key = "another"
    try:
        from fakes.clients import sdk

        with sdk(gemini_relay) as client, pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_error"
    finally:
        gemini.api_key = "gm-upstream-secret"
        gemini.requests.clear()


def test_mid_stream_error_ends_the_stream_with_an_error_event(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(text="one two three four", error_after=2, stream_error=google_error(503, "The model is overloaded.")))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received == "one two "
    assert "overloaded" in caught.value.message


def test_stream_cut_without_finish_is_an_error(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(text="one two three", break_after=2))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True):
            pass


# --------------------------------------------------------------------------- other endpoints


def test_embeddings_through_batch_embed_contents(client: openai.OpenAI, gemini: FakeGemini) -> None:
    result = client.embeddings.create(model="text-embedding-004", input=["alpha", "beta gamma"], dimensions=3)
    assert [d.index for d in result.data] == [0, 1]
    assert [len(d.embedding) for d in result.data] == [3, 3]
    assert result.model == "text-embedding-004"
    assert result.usage.prompt_tokens > 0  # estimated: Gemini reports none
    request = gemini.last
    assert (request.model, request.method) == ("text-embedding-004", "batchEmbedContents")
    assert request.body == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 3},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "beta gamma"}]}, "outputDimensionality": 3},
        ]
    }
    # The SDK asks for base64 by default when no format is given; the floats must survive the trip.
    assert result.data[0].embedding == pytest.approx([0.255, 0.265, 0.275], abs=1e-6)


def test_legacy_completions_are_refused_clearly(client: openai.OpenAI, gemini: FakeGemini) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hello")
    assert caught.value.code == "unsupported_endpoint"
    assert gemini.requests == []
