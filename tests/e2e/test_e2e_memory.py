"""Long-term memory end to end: memory tools through the agent, /v1/memories, scopes and auth.

Conversations are separate requests with no shared history: whatever the
second one knows came from the memory store. Tests on the shared relay use a
fresh ``user`` each (their own scope), so they never see each other's data.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from e2e_helpers import (
    call,
    last_tool_text,
    scripted,
    step_records,
    system_texts,
    tool_messages,
)

from fakes.admin import Admin
from fakes.clients import rest, sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

MODEL = "agent/fake-model"
FACT = "The user's favourite colour is teal"


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def save_script(text: str = FACT):
    return scripted(lambda _: call("memory_save", text=text, tags=["preferences"]), lambda results: Reply(content="Noted. " + last_tool_text(results)))


def recall_script(query: str = "favourite colour"):
    """Search memory, then answer with the best hit's text (or say nothing was found)."""

    def answer(results: list[dict[str, Any]]) -> Reply:
        found = json.loads(last_tool_text(results))["results"]
        return Reply(content=f"From memory: {found[0]['text']}" if found else "I have no memory of that.")

    return scripted(lambda _: call("memory_search", query=query), answer)


def converse(client: openai.OpenAI, text: str, user: str | None = None, **extra: Any) -> Any:
    kwargs: dict[str, Any] = {"user": user} if user is not None else {}
    if extra:
        kwargs["extra_body"] = extra
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def remember(fake: FakeUpstream, client: openai.OpenAI, user: str | None, text: str = FACT) -> str:
    """Conversation 1: the model saves ``text``; returns the memory id."""
    fake.responder = save_script(text)
    completion = converse(client, f"Remember this: {text}.", user)
    (result,) = step_records(completion.choices[0].message, "tool_result", "memory_save")
    assert result["status"] == "ok", result
    assert json.loads(tool_messages(fake.last_body)[0]["content"])["status"] == "saved"
    return result["data"]["id"]


def ask(fake: FakeUpstream, client: openai.OpenAI, user: str | None, **extra: Any) -> Any:
    """Conversation 2: a new request with no history; the model searches memory."""
    fake.reset()
    fake.responder = recall_script()
    completion = converse(client, "What is my favourite colour?", user, **extra)
    assert len(fake.chat_requests) == 2
    assert all(m["role"] != "assistant" for m in fake.chat_requests[0].body["messages"])  # no history
    return completion


# ---------------------------------------------------------------------- agent, auth off


def test_memory_carries_across_conversations(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    user = new_user()
    memory_id = remember(fake, oai, user)

    completion = ask(fake, oai, user)

    message = completion.choices[0].message
    assert message.content == f"From memory: {FACT}"
    assert "teal" in message.content
    (result,) = step_records(message, "tool_result", "memory_search")
    assert result["status"] == "ok"
    assert result["data"]["ids"] == [memory_id]
    # The REST view of the same scope (the request's user) shows what the agent saved.
    listed = ahttp.get("/v1/memories", params={"user": user}).json()
    assert [(m["id"], m["text"], m["tags"]) for m in listed["data"]] == [(memory_id, FACT, ["preferences"])]


def test_saving_the_same_fact_twice_keeps_one(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    user = new_user()
    memory_id = remember(fake, oai, user)
    fake.reset()
    fake.responder = save_script(FACT.upper() + "  ")
    completion = converse(oai, "Remember it again.", user)
    (result,) = step_records(completion.choices[0].message, "tool_result", "memory_save")
    assert result["data"] == {"id": memory_id, "duplicate": True}
    assert len(ahttp.get("/v1/memories", params={"user": user}).json()["data"]) == 1


@pytest.mark.parametrize("other", ["someone-else", "", None, "%75ser", "x/u:y"], ids=["other-user", "empty-user", "no-user", "percent", "crafted"])
def test_another_user_does_not_find_it(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client, other: str | None) -> None:
    user = new_user()
    remember(fake, oai, user)
    if other == "%75ser":
        other = "%75" + user[1:]  # the percent-encoding of the user's name, as a name
    elif other == "x/u:y":
        other = f"x/u:{user}"
    elif other:
        other = f"{other}-{user}"

    completion = ask(fake, oai, other)

    message = completion.choices[0].message
    assert "teal" not in message.content
    assert message.content == "I have no memory of that."
    (result,) = step_records(message, "tool_result", "memory_search")
    assert result["status"] == "ok" and result["data"]["count"] == 0
    params = {"user": other} if other else {}
    assert all("teal" not in m["text"] for m in ahttp.get("/v1/memories/export", params=params).json()["data"])


def test_memory_forget_through_the_agent(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    user = new_user()
    memory_id = remember(fake, oai, user)
    fake.reset()
    fake.responder = scripted(lambda _: call("memory_forget", id=memory_id), lambda results: Reply(content="Forgot " + last_tool_text(results)))

    completion = converse(oai, "Forget my favourite colour.", user)

    (result,) = step_records(completion.choices[0].message, "tool_result", "memory_forget")
    assert result["status"] == "ok" and result["data"] == {"deleted": [memory_id]}
    assert ahttp.get(f"/v1/memories/{memory_id}", params={"user": user}).status_code == 404
    assert ask(fake, oai, user).choices[0].message.content == "I have no memory of that."


@pytest.mark.parametrize("query", ['"favourite', "colour OR", "NEAR(teal", "teal*) AND (", "text:teal", "^teal -colour", "*", "'; DROP TABLE memories; --"])
def test_fts_syntax_in_the_agent_search_is_harmless(fake: FakeUpstream, oai: openai.OpenAI, query: str) -> None:
    user = new_user()
    remember(fake, oai, user)
    fake.reset()
    fake.responder = recall_script(query)

    completion = converse(oai, "Search my memories.", user)

    (result,) = step_records(completion.choices[0].message, "tool_result", "memory_search")
    assert result["status"] == "ok", result
    # The store survived: a plain search still finds the fact.
    assert ask(fake, oai, user).choices[0].message.content == f"From memory: {FACT}"


def test_auto_recall_puts_the_memory_in_the_first_model_call(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    user = new_user()
    memory_id = remember(fake, oai, user)
    fake.reset()
    fake.default_reply = Reply(content="Your favourite colour is teal, I remember.")

    completion = converse(oai, "What is my favourite colour?", user, agent_options={"auto_recall": True})

    assert completion.choices[0].message.content == "Your favourite colour is teal, I remember."
    (first,) = fake.chat_requests
    recalled = [t for t in system_texts(first.body) if FACT in t]
    assert len(recalled) == 1, system_texts(first.body)
    assert memory_id in recalled[0] and "Long-term memory" in recalled[0]


def test_no_recall_without_the_option_or_for_another_user(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    user = new_user()
    remember(fake, oai, user)
    fake.reset()
    converse(oai, "What is my favourite colour?", user)
    converse(oai, "What is my favourite colour?", new_user("stranger"), agent_options={"auto_recall": True})
    for request in fake.chat_requests:
        assert all(FACT not in t for t in system_texts(request.body))


def test_agent_options_validation(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        converse(oai, "hi", agent_options={"auto_recall": "yes"})
    assert "agent_options" in str(err.value.body)


# ---------------------------------------------------------------------- /v1/memories, auth off


@pytest.fixture
def scope_user(ahttp: httpx.Client) -> Iterator[str]:
    user = new_user("rest")
    yield user
    ahttp.delete("/v1/memories", params={"user": user})


def create(client: httpx.Client, text: str, user: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text}
    if tags is not None:
        body["tags"] = tags
    response = client.post("/v1/memories", params={"user": user} if user else None, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_create_get_and_shape(ahttp: httpx.Client, scope_user: str) -> None:
    made = create(ahttp, "Works on the billing service", scope_user, tags=["work"])
    assert made["object"] == "memory" and made["id"].startswith("mem_")
    assert made["text"] == "Works on the billing service" and made["tags"] == ["work"]
    assert isinstance(made["created_at"], int)

    got = ahttp.get(f"/v1/memories/{made['id']}", params={"user": scope_user})
    assert got.status_code == 200
    assert got.json() == made
    # The same id from another scope (no user) is not found.
    missing = ahttp.get(f"/v1/memories/{made['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "memory_not_found"


def test_list_pagination(ahttp: httpx.Client, scope_user: str) -> None:
    ids = [create(ahttp, f"Fact number {i} about pagination", scope_user)["id"] for i in range(5)]

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"user": scope_user, "limit": 2, "order": "asc"}
        if after:
            params["after"] = after
        page = ahttp.get("/v1/memories", params=params).json()
        pages += 1
        assert page["object"] == "list"
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        assert len(page["data"]) == 2
        after = page["last_id"]
    assert pages == 3
    assert seen == ids  # creation order, each once

    newest_first = ahttp.get("/v1/memories", params={"user": scope_user}).json()
    assert [m["id"] for m in newest_first["data"]] == ids[::-1]
    assert newest_first["has_more"] is False
    empty = ahttp.get("/v1/memories", params={"user": scope_user + "-nobody"}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_export_search_and_delete(ahttp: httpx.Client, scope_user: str) -> None:
    teal = create(ahttp, FACT, scope_user)
    coffee = create(ahttp, "Drinks coffee without sugar", scope_user)

    export = ahttp.get("/v1/memories/export", params={"user": scope_user})
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"] and "memories.json" in export.headers["content-disposition"]
    assert [m["id"] for m in export.json()["data"]] == [teal["id"], coffee["id"]]

    found = ahttp.get("/v1/memories/search", params={"user": scope_user, "q": "favourite colour"}).json()
    assert found["object"] == "list"
    assert [m["id"] for m in found["data"]][:1] == [teal["id"]]
    assert [m["rank"] for m in found["data"]] == list(range(1, len(found["data"]) + 1))
    assert "score" not in found["data"][0]

    deleted = ahttp.delete(f"/v1/memories/{teal['id']}", params={"user": scope_user})
    assert deleted.status_code == 200
    assert deleted.json() == {"id": teal["id"], "object": "memory.deleted", "deleted": True}
    assert ahttp.get(f"/v1/memories/{teal['id']}", params={"user": scope_user}).status_code == 404
    again = ahttp.delete(f"/v1/memories/{teal['id']}", params={"user": scope_user})
    assert again.status_code == 404 and again.json()["error"]["code"] == "memory_not_found"

    create(ahttp, "A third fact", scope_user)
    cleared = ahttp.delete("/v1/memories", params={"user": scope_user})
    assert cleared.status_code == 200
    assert cleared.json() == {"object": "memory.deleted", "deleted": True, "count": 2}
    assert ahttp.get("/v1/memories", params={"user": scope_user}).json()["data"] == []


@pytest.mark.parametrize("q", ['"teal', "teal OR", "NEAR(", "colour AND (", "text:teal", "^", "*", "a\"b'c", "-teal", "teal NOT", "\x00teal", "🟦 teal"])
def test_fts_syntax_in_search_parameter_does_not_error(ahttp: httpx.Client, scope_user: str, q: str) -> None:
    create(ahttp, FACT, scope_user)
    response = ahttp.get("/v1/memories/search", params={"user": scope_user, "q": q})
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "list"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "param"),
    [
        ("GET", "/v1/memories", {"params": {"limit": 0}}, "limit"),
        ("GET", "/v1/memories", {"params": {"limit": "ten"}}, "limit"),
        ("GET", "/v1/memories", {"params": {"order": "sideways"}}, "order"),
        ("POST", "/v1/memories", {"json": {"tags": ["x"]}}, "text"),
        ("POST", "/v1/memories", {"json": {"text": "ok", "tags": "x"}}, "tags"),
        ("POST", "/v1/memories", {"content": b"{not json", "headers": {"content-type": "application/json"}}, None),
        ("GET", "/v1/memories/search", {"params": {"q": "x", "limit": 1000}}, "limit"),
    ],
)
def test_invalid_requests_are_openai_400s(ahttp: httpx.Client, method: str, path: str, kwargs: dict[str, Any], param: str | None) -> None:
    response = ahttp.request(method, path, **kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


# ---------------------------------------------------------------------- auth on: keys and users


@pytest.fixture
def keys(admin: Admin, auth_e2e_relay: RunningServer) -> Iterator[dict[str, Any]]:
    a_id, a_key = admin.create_key("key-a")
    b_id, b_key = admin.create_key("key-b")
    clients = {
        "a": sdk(auth_e2e_relay, a_key),
        "b": sdk(auth_e2e_relay, b_key),
        "ra": rest(auth_e2e_relay, a_key),
        "rb": rest(auth_e2e_relay, b_key),
    }
    yield {"a_id": a_id, "b_id": b_id, **clients}
    for client in clients.values():
        client.close()


def test_key_memories_are_invisible_to_another_key(fake: FakeUpstream, keys: dict[str, Any]) -> None:
    memory_id = remember(fake, keys["a"], None)

    # Key B, same (absent) user, new conversation: nothing.
    assert ask(fake, keys["b"], None).choices[0].message.content == "I have no memory of that."
    # Key A finds it.
    assert ask(fake, keys["a"], None).choices[0].message.content == f"From memory: {FACT}"

    ra, rb = keys["ra"], keys["rb"]
    assert [m["id"] for m in ra.get("/v1/memories").json()["data"]] == [memory_id]
    assert rb.get("/v1/memories").json()["data"] == []
    assert rb.get("/v1/memories/export").json()["data"] == []
    assert rb.get("/v1/memories/search", params={"q": "favourite colour teal"}).json()["data"] == []
    assert rb.get(f"/v1/memories/{memory_id}").status_code == 404
    # Key B cannot delete key A's memory by id, nor by deleting "all" of its own.
    stolen = rb.delete(f"/v1/memories/{memory_id}")
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "memory_not_found"
    assert rb.delete("/v1/memories").json()["count"] == 0
    assert ra.get(f"/v1/memories/{memory_id}").json()["text"] == FACT
    # Key B cannot reach key A's scope by naming key A's id as a user either.
    assert rb.get("/v1/memories", params={"user": keys["a_id"]}).json()["data"] == []


def test_two_users_of_one_key_are_isolated(fake: FakeUpstream, keys: dict[str, Any]) -> None:
    alice_memory = remember(fake, keys["a"], "alice")

    assert ask(fake, keys["a"], "bob").choices[0].message.content == "I have no memory of that."
    assert ask(fake, keys["a"], None).choices[0].message.content == "I have no memory of that."
    assert ask(fake, keys["a"], "alice").choices[0].message.content == f"From memory: {FACT}"
    # Key B's alice is another person.
    assert ask(fake, keys["b"], "alice").choices[0].message.content == "I have no memory of that."

    ra, rb = keys["ra"], keys["rb"]
    assert [m["id"] for m in ra.get("/v1/memories", params={"user": "alice"}).json()["data"]] == [alice_memory]
    assert ra.get("/v1/memories", params={"user": "bob"}).json()["data"] == []
    assert ra.get("/v1/memories").json()["data"] == []
    assert rb.get("/v1/memories", params={"user": "alice"}).json()["data"] == []
    assert ra.delete(f"/v1/memories/{alice_memory}", params={"user": "bob"}).status_code == 404
    assert rb.delete(f"/v1/memories/{alice_memory}", params={"user": "alice"}).status_code == 404
    assert ra.delete(f"/v1/memories/{alice_memory}", params={"user": "alice"}).status_code == 200
    assert ra.get(f"/v1/memories/{alice_memory}", params={"user": "alice"}).status_code == 404


def test_memories_endpoints_require_a_key(auth_e2e_relay: RunningServer, keys: dict[str, Any]) -> None:
    create(keys["ra"], "Key A's private note")
    with httpx.Client(base_url=auth_e2e_relay.root_url, timeout=10.0) as anonymous:
        for method, path in [
            ("GET", "/v1/memories"),
            ("GET", "/v1/memories/export"),
            ("GET", "/v1/memories/search?q=note"),
            ("DELETE", "/v1/memories"),
            ("POST", "/v1/memories"),
        ]:
            response = anonymous.request(method, path, json={"text": "x"} if method == "POST" else None)
            assert response.status_code == 401, (method, path, response.text)
            response = anonymous.request(method, path, headers={"authorization": "Bearer sk-not-a-real-key"}, json={"text": "x"} if method == "POST" else None)
            assert response.status_code == 401, (method, path, response.text)
    assert len(keys["ra"].get("/v1/memories").json()["data"]) == 1


def test_list_pagination_newest_first_and_tag_filter(ahttp: httpx.Client, scope_user: str) -> None:
    ids = [create(ahttp, f"Tagged fact {i}", scope_user, tags=["even" if i % 2 == 0 else "odd"])["id"] for i in range(5)]

    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"user": scope_user, "limit": 2, "order": "desc"}
        if after:
            params["after"] = after
        page = ahttp.get("/v1/memories", params=params).json()
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]

    even = ahttp.get("/v1/memories", params={"user": scope_user, "tag": "even", "order": "asc"}).json()
    assert [m["id"] for m in even["data"]] == ids[0::2]
    both = ahttp.get("/v1/memories", params=[("user", scope_user), ("tag", "even"), ("tag", "odd")]).json()
    assert len(both["data"]) == 5


def test_a_very_long_user_is_one_consistent_scope(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    long_user = "customer:" + "x" * 400 + secrets.token_hex(4)  # hashed into the scope
    memory_id = remember(fake, oai, long_user)

    assert ask(fake, oai, long_user).choices[0].message.content == f"From memory: {FACT}"
    assert ask(fake, oai, long_user[:-1]).choices[0].message.content == "I have no memory of that."
    listed = ahttp.get("/v1/memories", params={"user": long_user}).json()
    assert [m["id"] for m in listed["data"]] == [memory_id]
    assert ahttp.get("/v1/memories", params={"user": long_user[:-1]}).json()["data"] == []


def test_oversized_memory_is_refused(ahttp: httpx.Client, scope_user: str) -> None:
    response = ahttp.post("/v1/memories", params={"user": scope_user}, json={"text": "x" * 9000})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "text"
    assert ahttp.get("/v1/memories", params={"user": scope_user}).json()["data"] == []


def test_memory_disabled_removes_tools_and_endpoints(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(memory={"enabled": False}, sandbox={"backend": "off"})
    fake.default_reply = Reply(content="plain answer")
    with sdk(relay) as client, rest(relay) as http:
        completion = converse(client, "Remember that I like teal.")
        assert http.get("/v1/memories").status_code == 404
    assert completion.choices[0].message.content == "plain answer"
    offered = {t["function"]["name"] for t in fake.chat_requests[0].body.get("tools") or []}
    assert not offered & {"memory_save", "memory_search", "memory_forget"}
    assert {"web_search", "fetch_page"} <= offered


AUTO_RECALL_PARTS_BUG = (
    "BUG: agent/loop.py AgentRun.execute() picks the text for automatic recall with "
    "isinstance(m.get('content'), str), so a latest user message sent as an array of text parts "
    "(valid Chat Completions, what many UIs/SDKs send) is skipped: no recall at all, or recall for an OLDER "
    "string user message of the conversation"
)


def test_auto_recall_reads_a_user_message_sent_as_text_parts(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    user = new_user()
    remember(fake, oai, user)
    fake.reset()
    fake.default_reply = Reply(content="ok")

    oai.chat.completions.create(
        model=MODEL,
        user=user,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is my favourite colour?"}]}],
        extra_body={"agent_options": {"auto_recall": True}},
    )

    assert any(FACT in t for t in system_texts(fake.chat_requests[0].body)), system_texts(fake.chat_requests[0].body)


def test_auto_recall_uses_the_latest_user_message(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    user = new_user()
    create(ahttp, "Has a dog called Biscuit", user)
    create(ahttp, FACT, user)
    fake.default_reply = Reply(content="ok")

    oai.chat.completions.create(
        model=MODEL,
        user=user,
        messages=[
            {"role": "user", "content": "Tell me about my dog."},
            {"role": "assistant", "content": "Your dog is Biscuit."},
            {"role": "user", "content": [{"type": "text", "text": "And what is my favourite colour?"}]},
        ],
        extra_body={"agent_options": {"auto_recall": True}},
    )

    recalled = "\n".join(system_texts(fake.chat_requests[0].body))
    assert FACT in recalled, recalled


def test_auto_recall_in_a_stream_without_builtin_tools(fake: FakeUpstream, oai: openai.OpenAI, ahttp: httpx.Client) -> None:
    user = new_user()
    create(ahttp, FACT, user)
    fake.default_reply = Reply(content="Teal, as you told me.")

    with oai.chat.completions.stream(
        model=MODEL,
        user=user,
        messages=[{"role": "user", "content": "What is my favourite colour?"}],
        extra_body={"agent_options": {"auto_recall": True, "builtin_tools": []}},
    ) as stream:
        final = stream.get_final_completion()

    assert final.choices[0].message.content == "Teal, as you told me."
    (request,) = fake.chat_requests
    assert not request.body.get("tools")
    assert any(FACT in t for t in system_texts(request.body))


def test_forget_by_query_stays_in_its_own_scope(fake: FakeUpstream, keys: dict[str, Any]) -> None:
    alice_memory = remember(fake, keys["a"], "alice")
    b_memory = remember(fake, keys["b"], "alice")
    fake.reset()
    fake.responder = scripted(lambda _: call("memory_forget", query="favourite colour teal", limit=20), lambda results: Reply(content=last_tool_text(results)))

    completion = converse(keys["a"], "Forget my colour.", "bob")

    (result,) = step_records(completion.choices[0].message, "tool_result", "memory_forget")
    assert result["data"] == {"deleted": []}
    assert keys["ra"].get(f"/v1/memories/{alice_memory}", params={"user": "alice"}).status_code == 200
    assert keys["rb"].get(f"/v1/memories/{b_memory}", params={"user": "alice"}).status_code == 200


def test_revoked_key_loses_access_to_its_memories(fake: FakeUpstream, admin: Admin, auth_e2e_relay: RunningServer) -> None:
    key_id, key = admin.create_key("short-lived")
    with rest(auth_e2e_relay, key) as http:
        made = create(http, "Note of a key about to be revoked")
        assert http.get(f"/v1/memories/{made['id']}").status_code == 200
        admin.revoke(key_id)
        assert http.get(f"/v1/memories/{made['id']}").status_code == 401
        assert http.get("/v1/memories").status_code == 401
        assert http.delete("/v1/memories").status_code == 401


@pytest.mark.parametrize("memory_id", ["mem_' OR 1=1 --", "..%2F..%2Fadmin", "%00", "x" * 5000, "mem_01" + "z" * 24, "MEM_01M89GB3BN5DERXFB5ZKFJNFJN"])
def test_odd_memory_ids_are_404(ahttp: httpx.Client, scope_user: str, memory_id: str) -> None:
    create(ahttp, "Something to find", scope_user)
    for method in ("GET", "DELETE"):
        response = ahttp.request(method, f"/v1/memories/{memory_id}", params={"user": scope_user})
        assert response.status_code == 404, (method, response.status_code, response.text[:300])
        # An encoded slash makes it another path altogether (the router's own 404).
        assert response.json()["error"]["code"] in (("memory_not_found", "unknown_url") if "%2F" in memory_id else ("memory_not_found",))
    assert len(ahttp.get("/v1/memories", params={"user": scope_user}).json()["data"]) == 1
