"""Agent mode and the Responses API on a Gemini upstream: native function calling underneath."""

from __future__ import annotations

from typing import Any

import openai

from fakes.gemini import FakeGemini, GeminiCall, GeminiReply

from .conftest import MODEL


def _answered(body: dict[str, Any]) -> bool:
    return any("functionResponse" in part for content in body.get("contents", []) for part in content.get("parts", []))


def _script_time_call(gemini: FakeGemini) -> None:
    """First turn: call current_time (with a thought signature); once it is answered: the final text."""
    gemini.responder = lambda body: (
        GeminiReply(text="It is noon.") if _answered(body) else GeminiReply(calls=[GeminiCall("current_time", {}, signature="dGltZS1zaWc=")])
    )


def test_agent_runs_a_builtin_tool_through_gemini_function_calling(client: openai.OpenAI, gemini: FakeGemini) -> None:
    _script_time_call(gemini)
    answer = client.chat.completions.create(model=f"agent/{MODEL}", messages=[{"role": "user", "content": "What time is it?"}])
    assert answer.choices[0].message.content == "It is noon."
    first, second = (r.body for r in gemini.requests)
    names = [d["name"] for tool in first["tools"] for d in tool["functionDeclarations"]]
    assert "current_time" in names
    # The replayed call carries its signature back; the tool's result answers it by name.
    model_turn, tool_turn = second["contents"][-2:]
    assert model_turn == {"role": "model", "parts": [{"functionCall": {"name": "current_time", "args": {}}, "thoughtSignature": "dGltZS1zaWc="}]}
    (response,) = tool_turn["parts"]
    assert response["functionResponse"]["name"] == "current_time"


def test_agent_streams_over_gemini(client: openai.OpenAI, gemini: FakeGemini) -> None:
    _script_time_call(gemini)
    chunks = list(client.chat.completions.create(model=f"agent/{MODEL}", messages=[{"role": "user", "content": "time?"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It is noon."
    assert all(r.method == "streamGenerateContent" for r in gemini.requests)


def test_responses_api_on_a_gemini_model(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.enqueue(GeminiReply(text="Hello from Gemini via Responses"))
    response = client.responses.create(model=MODEL, input="Say hello", instructions="Be nice.")
    assert response.output_text == "Hello from Gemini via Responses"
    assert response.status == "completed"
    body = gemini.last_body
    assert body["systemInstruction"] == {"parts": [{"text": "Be nice."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]


def test_responses_api_agent_on_gemini(client: openai.OpenAI, gemini: FakeGemini) -> None:
    _script_time_call(gemini)
    response = client.responses.create(model=f"agent/{MODEL}", input="What time is it?")
    assert response.output_text == "It is noon."
    assert len(gemini.requests) == 2
