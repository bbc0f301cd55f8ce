"""Chat Completions over a native Anthropic upstream, with the official OpenAI SDK as the client."""

from __future__ import annotations

import base64

import openai

from fakes.anthropic import API_KEY, FakeAnthropic, MessagesReply

from .conftest import MODEL


def test_plain_answer_is_one_completion_and_the_request_is_a_messages_request(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "text", "text": "Bonjour, world."}], usage={"input_tokens": 11, "output_tokens": 3}))
    completion = cclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}])
    assert completion.choices[0].message.content == "Bonjour, world."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (11, 3, 14)
    call = claude.calls[-1]
    assert call.path == "/v1/messages"
    assert call.headers["x-api-key"] == API_KEY
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in call.headers
    # max_tokens is required by the Messages API: the upstream's default fills it in.
    assert call.body == {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4096}


def test_streamed_answer_arrives_in_pieces_with_usage(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "text", "text": "one two three four"}], usage={"input_tokens": 5, "output_tokens": 4}))
    chunks = list(
        cclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True, stream_options={"include_usage": True})
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["one ", "two ", "three ", "four"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 4)
    assert claude.last_body["stream"] is True


def test_max_tokens_from_the_client_wins_over_the_default(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    cclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_completion_tokens=77)
    assert claude.last_body["max_tokens"] == 77
    cclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=55)
    assert claude.last_body["max_tokens"] == 55


def test_system_and_developer_messages_become_the_top_level_system(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    cclient.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Again"},
        ],
    )
    body = claude.last_body
    assert body["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    cclient.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Only one."}, {"role": "user", "content": "Hi"}])
    assert claude.last_body["system"] == "Only one."


def test_images_become_base64_and_url_image_blocks(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    cclient.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                ],
            }
        ],
    )
    assert claude.last_body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]
