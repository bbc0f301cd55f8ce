"""Issue #5 end to end: web_search (SearXNG backend) + fetch_page + url_citation annotations.

The search engine and the pages are local servers on 127.0.0.1; the relay is
configured from TOML exactly as an operator would (``backend = "searxng"``,
``fetch_page.allow_networks = ["127.0.0.1/32"]``). The fake model finds the URL
in the search tool message, fetches it, and copies the fact out of the page
text it receives: the fact exists nowhere else.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from e2e_helpers import SearxSite, agent_steps, annotations_of, call, find_line, last_tool_text, scripted, step_records, tool_messages
from web_test_servers import Reply as PageReply

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.tools.fetch_page import default_resolve

MODEL = "agent/fake-model"
TITLE = "Widget Handbook"


def page_html(title: str, fact: str) -> str:
    filler = " ".join(["The widget is a small device used in many examples."] * 6)
    return (
        f"<!doctype html><html><head><title>{title}</title><script>var secret='not text';</script></head>"
        f"<body><nav>Home | About</nav><main><h1>{title}</h1><p>{filler}</p>"
        f"<p>The widget launch code is {fact}.</p></main><footer>footer</footer></body></html>"
    )


@pytest.fixture
def widget(web_site: SearxSite) -> Iterator[dict[str, Any]]:
    """A page holding a fresh fact, listed first by the search engine (a second hit follows)."""
    fact = "WLC-" + secrets.token_hex(5).upper()
    path = f"/docs/widget-{secrets.token_hex(3)}"
    url = web_site.page(path, page_html(TITLE, fact))
    other = web_site.page(path + "-faq", page_html("Widget FAQ", "not-this-one"))
    web_site.results = [
        {"url": url, "title": TITLE, "content": "Everything about the widget (launch codes inside)."},
        {"url": other, "title": "Widget FAQ", "content": "Frequently asked questions."},
    ]
    yield {"fact": fact, "url": url, "path": path, "other": other}


def first_result_url(results: list[dict[str, Any]]) -> str:
    return find_line(last_tool_text(results), r"^\[1\] .*\n(https?://\S+)$")


def research_script(answer: str = "According to {url}, the widget launch code is {fact}."):
    """search -> fetch the first hit -> answer citing it with the fact read from the page."""

    def answer_turn(results: list[dict[str, Any]]) -> Reply:
        page = last_tool_text(results)
        fact = find_line(page, r"launch code is ([A-Z0-9-]+)\.")
        url = find_line(page, r"^URL: (\S+)$")
        return Reply(content=answer.format(url=url, fact=fact))

    return scripted(
        lambda _: call("web_search", query="widget launch code"),
        lambda results: call("fetch_page", url=first_result_url(results)),
        answer_turn,
    )


def assert_citation(content: str, annotations: list[dict[str, Any]], url: str, title: str, span: str) -> None:
    citations = [a for a in annotations if a["type"] == "url_citation" and a["url_citation"]["url"] == url]
    assert len(citations) == 1, annotations
    cite = citations[0]["url_citation"]
    assert cite["title"] == title
    assert content[cite["start_index"] : cite["end_index"]] == span, (content, cite)


def test_search_fetch_and_cite(fake: FakeUpstream, oai: openai.OpenAI, web_site: SearxSite, widget: dict[str, Any]) -> None:
    fake.responder = research_script()

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the widget launch code? Cite your source."}])

    message = completion.choices[0].message
    fact, url = widget["fact"], widget["url"]
    assert completion.choices[0].finish_reason == "stop"
    assert message.content == f"According to {url}, the widget launch code is {fact}."
    assert_citation(message.content, annotations_of(message), url, TITLE, url)
    # Only the cited page is annotated, not the other search hit.
    assert [a["url_citation"]["url"] for a in annotations_of(message)] == [url]

    # The engine was asked in SearXNG's JSON format; the page was fetched once, the other hit never.
    assert web_site.queries and web_site.queries[-1]["q"] == ["widget launch code"]
    assert web_site.queries[-1]["format"] == ["json"]
    assert web_site.count(widget["path"]) == 1
    assert web_site.count(widget["path"] + "-faq") == 0

    # What the model read: the search hits, then the page's readable text (no script, no nav).
    requests = fake.chat_requests
    assert len(requests) == 3
    search_text, page_text = (m["content"] for m in tool_messages(requests[2].body))
    assert url in search_text and widget["other"] in search_text
    assert fact in page_text and f"Title: {TITLE}" in page_text
    assert "not text" not in page_text and "Home | About" not in page_text
    assert fact not in str(requests[0].body) + str(requests[1].body)

    search_result = step_records(message, "tool_result", "web_search")[0]
    assert search_result["status"] == "ok"
    assert search_result["sources"] == [{"url": url, "title": TITLE}, {"url": widget["other"], "title": "Widget FAQ"}]
    assert search_result["data"]["backend"] == "searxng"
    fetch_call = step_records(message, "tool_call", "fetch_page")[0]
    assert fetch_call["arguments"] == {"url": url}
    fetch_result = step_records(message, "tool_result", "fetch_page")[0]
    assert fetch_result["status"] == "ok"
    assert fetch_result["sources"] == [{"url": url, "title": TITLE}]
    assert fetch_result["data"]["status"] == 200 and fetch_result["data"]["title"] == TITLE
    assert [s["step"] for s in agent_steps(message) if s["type"] == "tool_result"] == [1, 2]


def test_markdown_link_citation_spans_the_whole_link(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    fake.responder = research_script("The launch code is {fact} (see [the handbook]({url})).")

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Widget launch code?"}])

    message = completion.choices[0].message
    url = widget["url"]
    assert widget["fact"] in message.content
    assert_citation(message.content, annotations_of(message), url, TITLE, f"[the handbook]({url})")


def test_citation_indexes_count_characters_after_non_ascii_text(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    # start_index/end_index are character offsets into the content string
    # (what any client slices with); text before the URL is not ASCII.
    fake.responder = research_script("Laut 📘 „Handbuch“ ({url}) lautet der Code {fact}.")

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Code?"}])

    message = completion.choices[0].message
    assert_citation(message.content, annotations_of(message), widget["url"], TITLE, widget["url"])


def test_streaming_final_message_has_annotations_and_steps(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    fake.responder = research_script()

    with oai.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "What is the widget launch code?"}]) as stream:
        content_pieces = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()

    message = final.choices[0].message
    url, fact = widget["url"], widget["fact"]
    assert message.content == f"According to {url}, the widget launch code is {fact}."
    assert "".join(content_pieces) == message.content
    assert len(content_pieces) > 1  # streamed as the model produced it
    assert_citation(message.content, annotations_of(message), url, TITLE, url)
    steps = agent_steps(message)
    assert [s["index"] for s in steps] == list(range(len(steps)))
    assert [(s["type"], s["tool"]) for s in steps] == [
        ("tool_call", "web_search"),
        ("tool_result", "web_search"),
        ("tool_call", "fetch_page"),
        ("tool_result", "fetch_page"),
    ]
    assert steps[1]["sources"][0] == {"url": url, "title": TITLE}
    assert steps[3]["sources"] == [{"url": url, "title": TITLE}]


def test_uncited_sources_get_no_annotation(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    fake.responder = research_script("The widget launch code is {fact}.")

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Code?"}])

    message = completion.choices[0].message
    assert widget["fact"] in message.content
    assert annotations_of(message) == []
    # The sources are still listed in the step records.
    assert step_records(message, "tool_result", "fetch_page")[0]["sources"] == [{"url": widget["url"], "title": TITLE}]


# ---------------------------------------------------------------------- SSRF through the agent


class TableResolver:
    """Names in ``table`` resolve to its addresses; anything else goes to real resolution."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.table:
            return list(self.table[host])
        return await default_resolve(host, port)


@pytest.fixture
def resolver(e2e_relay: RunningServer) -> Iterator[TableResolver]:
    """Stage DNS answers for the relay's fetch_page (a name that resolves into the LAN)."""
    tool = e2e_relay.services.agent.registry.get("fetch_page")
    assert tool is not None
    table = TableResolver({"intranet.e2e.test": ["10.20.30.40"], "wiki.e2e.test": ["127.0.0.1"]})
    original = tool._resolve
    tool._resolve = table
    yield table
    tool._resolve = original


SSRF_TARGETS = [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://intranet.e2e.test/admin", "private address"),
    ("http://10.0.0.1/", "private address"),
    ("http://localhost:{port}/", "loopback name"),
    ("http://127.0.0.2:{port}/", "loopback"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "metadata"),
    ("http://2852039166/latest/meta-data/", "metadata"),  # 169.254.169.254 as one decimal number
    ("http://0xA9FEA9FE/latest/meta-data/", "metadata"),  # ... and in hex
    ("http://168.63.129.16/metadata/instance", "cloud metadata"),  # Azure: a public address
    ("http://0/", "address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
]


@pytest.mark.parametrize(("target", "reason"), SSRF_TARGETS, ids=[t for t, _ in SSRF_TARGETS])
def test_fetch_page_refuses_private_targets_and_the_run_continues(
    fake: FakeUpstream, oai: openai.OpenAI, web_site: SearxSite, resolver: TableResolver, target: str, reason: str
) -> None:
    url = target.format(port=web_site.server.port)
    hits_before = len(web_site.server.hits)
    fake.responder = scripted(
        lambda _: call("fetch_page", url=url),
        lambda results: Reply(content="I could not read it: " + last_tool_text(results)),
    )

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Read {url}"}])

    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    (result,) = step_records(message, "tool_result", "fetch_page")
    assert result["status"] == "error", result
    assert result["data"]["refused"] is True, result
    assert "refused to fetch" in result["summary"] and reason in result["summary"], result
    assert "sources" not in result
    assert message.content.startswith("I could not read it: error: refused to fetch")
    assert annotations_of(message) == []
    assert len(web_site.server.hits) == hits_before  # nothing reached the local server


def test_allowed_name_is_fetched_but_a_redirect_into_metadata_is_refused(
    fake: FakeUpstream, oai: openai.OpenAI, web_site: SearxSite, resolver: TableResolver, widget: dict[str, Any]
) -> None:
    port = web_site.server.port
    web_site.server.route("/hop", PageReply(302, b"", headers={"Location": "http://169.254.169.254/latest/meta-data/iam"}))
    allowed = f"http://wiki.e2e.test:{port}{widget['path']}"
    fake.responder = scripted(
        lambda _: call("fetch_page", url=allowed),
        lambda _: call("fetch_page", url=f"http://127.0.0.1:{port}/hop"),
        lambda results: Reply(content="Done: " + re.sub(r"\s+", " ", " | ".join(m["content"][:80] for m in results))),
    )

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Read the wiki."}])

    message = completion.choices[0].message
    first, second = step_records(message, "tool_result", "fetch_page")
    # A name resolving into allow_networks is fetched (through the vetted address, Host kept).
    assert first["status"] == "ok", first
    assert widget["fact"] in tool_messages(fake.last_body)[0]["content"]
    assert web_site.server.hits[-2].headers["host"] == f"wiki.e2e.test:{port}"
    # The redirect hop is vetted like the first one.
    assert second["status"] == "error" and second["data"]["refused"] is True, second
    assert "redirect to http://169.254.169.254" in second["summary"] and "metadata" in second["summary"]
    assert "wiki.e2e.test" in resolver.calls
    assert message.content.startswith("Done: ")


def test_several_citations_prefixes_and_trailing_slashes(fake: FakeUpstream, oai: openai.OpenAI, web_site: SearxSite) -> None:
    base = web_site.url
    docs = web_site.page("/docs/", page_html("Docs Index", "DOCS-1"))
    deep = web_site.page("/docs/widget/", page_html("Deep Widget", "DEEP-2"))
    web_site.results = [
        {"url": docs, "title": "Docs Index", "content": "index"},
        {"url": deep, "title": "Deep Widget", "content": "deep"},
    ]
    bare_deep = deep.rstrip("/")
    answer = f"Start at {docs}, then read [the widget page]({deep}). Again: {bare_deep}. Not a citation: {docs}other and {base}/docs/widget/x."
    fake.responder = scripted(lambda _: call("web_search", query="widget docs"), lambda _: Reply(content=answer))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Where are the docs?"}])

    message = completion.choices[0].message
    assert message.content == answer
    found = [
        (a["url_citation"]["url"], a["url_citation"]["title"], message.content[a["url_citation"]["start_index"] : a["url_citation"]["end_index"]])
        for a in annotations_of(message)
    ]
    assert found == [
        (docs, "Docs Index", docs),
        (deep, "Deep Widget", f"[the widget page]({deep})"),
        (deep, "Deep Widget", bare_deep),
    ]
    starts = [a["url_citation"]["start_index"] for a in annotations_of(message)]
    assert starts == sorted(starts)


LOCATION_TOOL = {
    "type": "function",
    "function": {"name": "get_user_city", "description": "The user's city.", "parameters": {"type": "object", "properties": {}}},
}


def pause_and_resume(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> Any:
    """web_search (built-in), then a client function (the run pauses), then an answer citing the search hit."""
    url = widget["url"]

    def answer(results: list[dict[str, Any]]) -> Reply:
        cited = first_result_url([m for m in results if "Results for" in tool_text_of(m)])
        return Reply(content=f"In {tool_text_of(results[-1])}, see {cited} for the launch code.")

    fake.responder = scripted(
        lambda _: call("web_search", query="widget launch code"),
        lambda _: call("get_user_city"),
        answer,
    )
    messages: list[Any] = [{"role": "user", "content": "Where can I find the widget launch code for my city?"}]
    first = oai.chat.completions.create(model=MODEL, messages=messages, tools=[LOCATION_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.tool_calls is not None
    (client_call,) = first.choices[0].message.tool_calls
    assert client_call.function.name == "get_user_city"
    messages.append(first.choices[0].message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}))
    messages.append({"role": "tool", "tool_call_id": client_call.id, "content": "Lisbon"})

    final = oai.chat.completions.create(model=MODEL, messages=messages, tools=[LOCATION_TOOL])

    # The built-in steps before the pause were restored for the model.
    resumed = tool_messages(fake.last_body)
    assert len(resumed) == 2 and url in tool_text_of(resumed[0]) and tool_text_of(resumed[1]) == "Lisbon"
    assert final.choices[0].message.content == f"In Lisbon, see {url} for the launch code."
    return final


def tool_text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def test_continuation_restores_builtin_steps_after_a_client_tool(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    pause_and_resume(fake, oai, widget)


def test_citations_survive_a_client_tool_pause(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    final = pause_and_resume(fake, oai, widget)
    message = final.choices[0].message
    assert_citation(message.content, annotations_of(message), widget["url"], TITLE, widget["url"])


def chatty_research_script():
    """Like research_script, but the model talks beside its tool calls ("Let me look that up.")."""
    plain = research_script()

    def respond(body: dict[str, Any]) -> Reply:
        reply = plain(body)
        if reply.tool_calls:
            reply.content = "Let me look that up." if not tool_messages(body) else "Reading the first hit."
        return reply

    return respond


def test_words_beside_tool_calls_are_not_the_answer_when_not_streaming(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    fake.responder = chatty_research_script()

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Launch code?"}])

    message = completion.choices[0].message
    url = widget["url"]
    assert message.content == f"According to {url}, the widget launch code is {widget['fact']}."
    assert "Let me look that up." in message.model_extra["reasoning_content"]
    assert_citation(message.content, annotations_of(message), url, TITLE, url)


def test_streamed_citation_offsets_account_for_earlier_streamed_words(fake: FakeUpstream, oai: openai.OpenAI, widget: dict[str, Any]) -> None:
    fake.responder = chatty_research_script()

    with oai.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Launch code?"}]) as stream:
        final = stream.get_final_completion()

    message = final.choices[0].message
    url = widget["url"]
    assert message.content.endswith(f"According to {url}, the widget launch code is {widget['fact']}.")
    assert message.content.startswith("Let me look that up.")
    assert_citation(message.content, annotations_of(message), url, TITLE, url)


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (PageReply(500, b"boom"), "SearXNG failed (HTTP 500)"),
        (PageReply(403, b"forbidden"), "is 'json' listed in search.formats"),
        (PageReply(429, b"slow down"), "rate limiting"),
        (PageReply(200, b"<html>not json</html>", content_type="text/html"), "did not return JSON"),
        (
            PageReply(200, b'{"results": [], "unresponsive_engines": [["google", "CAPTCHA"]]}', content_type="application/json"),
            "engines failed: google CAPTCHA",
        ),
    ],
    ids=["500", "403", "429", "html", "engines-down"],
)
def test_search_engine_failures_reach_the_model_and_the_run_continues(
    fake: FakeUpstream, oai: openai.OpenAI, web_site: SearxSite, failure: PageReply, said: str
) -> None:
    web_site.fail = failure
    fake.responder = scripted(
        lambda _: call("web_search", query="anything at all"), lambda results: Reply(content="Search is down: " + last_tool_text(results))
    )

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Search."}])

    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    (result,) = step_records(message, "tool_result", "web_search")
    assert result["status"] == "error" and result["data"]["backend"] == "searxng", result
    assert said in message.content, message.content
    assert "sources" not in result and annotations_of(message) == []
