from __future__ import annotations

import json

import jsonschema
import pytest

from toolrelay.memory import MemoryStore
from toolrelay.tools.base import Tool, ToolContext, ToolResult, tool_schema
from toolrelay.tools.memory_tools import (
    RECALL_CLOSE,
    RECALL_OPEN,
    RECALL_PREAMBLE,
    memory_tools,
    recall,
)


@pytest.fixture
def tools(store: MemoryStore) -> dict[str, Tool]:
    return {t.name: t for t in memory_tools(store)}


@pytest.fixture
def ctx(scopes) -> ToolContext:
    return ToolContext(scope=scopes["alice"], request_id="req_1", user="alice")


@pytest.fixture
def other_ctx(scopes) -> ToolContext:
    return ToolContext(scope=scopes["bob"], request_id="req_2", user="bob")


def _json(result: ToolResult) -> dict:
    assert isinstance(result, ToolResult)
    assert not result.is_error, result.content
    return json.loads(result.content)


def test_protocol_and_schemas(tools: dict[str, Tool]) -> None:
    assert set(tools) == {"memory_save", "memory_search", "memory_forget"}
    for tool in tools.values():
        assert isinstance(tool, Tool)
        assert tool.timeout > 0
        assert len(tool.description) > 80
        jsonschema.Draft202012Validator.check_schema(tool.parameters)
        entry = tool_schema(tool)
        assert entry["type"] == "function" and entry["function"]["name"] == tool.name
        assert tool.parameters["type"] == "object"
        assert tool.parameters["additionalProperties"] is False
        json.dumps(entry)  # JSON-able


@pytest.mark.parametrize(
    ("name", "args", "valid"),
    [
        ("memory_save", {"text": "x"}, True),
        ("memory_save", {"text": "x", "tags": ["a", "b"]}, True),
        ("memory_save", {}, False),
        ("memory_save", {"text": ""}, False),
        ("memory_save", {"text": "x", "tags": "a"}, False),
        ("memory_save", {"text": "x", "tags": [f"t{i}" for i in range(17)]}, False),
        ("memory_save", {"text": "x", "extra": 1}, False),
        ("memory_search", {"query": "coffee"}, True),
        ("memory_search", {"query": "coffee", "limit": 20}, True),
        ("memory_search", {"query": "coffee", "limit": 21}, False),
        ("memory_search", {"query": "coffee", "limit": 0}, False),
        ("memory_search", {"query": "coffee", "limit": 2.5}, False),
        ("memory_search", {"limit": 3}, False),
        ("memory_forget", {"id": "mem_x"}, True),
        ("memory_forget", {"query": "coffee", "limit": 3}, True),
        ("memory_forget", {"id": ""}, False),
        ("memory_forget", {"query": "x", "limit": 50}, False),
    ],
)
def test_schemas_accept_and_reject(tools: dict[str, Tool], name: str, args: dict, valid: bool) -> None:
    errors = list(jsonschema.Draft202012Validator(tools[name].parameters).iter_errors(args))
    assert (not errors) == valid, errors


async def test_save_then_search(tools, ctx) -> None:
    saved = _json(await tools["memory_save"].run({"text": "Prefers oat milk in coffee", "tags": ["Food"]}, ctx))
    assert saved["status"] == "saved"
    mem = saved["memory"]
    assert mem["id"].startswith("mem_") and mem["text"] == "Prefers oat milk in coffee" and mem["tags"] == ["food"]
    assert mem["created"].endswith("Z") and len(mem["created"]) == 20
    found = _json(await tools["memory_search"].run({"query": "coffee milk"}, ctx))
    assert [r["id"] for r in found["results"]] == [mem["id"]]
    assert found["results"][0]["rank"] == 1
    assert set(found["results"][0]) == {"id", "text", "tags", "created", "rank"}


async def test_save_is_idempotent_for_identical_text(tools, ctx, store: MemoryStore) -> None:
    first = _json(await tools["memory_save"].run({"text": "Has a cat called Miso"}, ctx))
    again = await tools["memory_save"].run({"text": "  has a CAT   called miso "}, ctx)
    body = _json(again)
    assert body["status"] == "already_saved" and body["memory"]["id"] == first["memory"]["id"]
    assert again.data == {"id": first["memory"]["id"], "duplicate": True}
    assert await store.count(ctx.scope) == 1
    # a different fact with the same words is saved
    assert _json(await tools["memory_save"].run({"text": "Has a cat called Miso and a dog"}, ctx))["status"] == "saved"


async def test_tools_stay_in_their_scope(tools, ctx, other_ctx, store: MemoryStore) -> None:
    bob = _json(await tools["memory_save"].run({"text": "Bob's locker code is 4411"}, other_ctx))["memory"]
    await tools["memory_save"].run({"text": "Alice's locker is number 12"}, ctx)
    found = _json(await tools["memory_search"].run({"query": "locker code 4411"}, ctx))
    assert [r["text"] for r in found["results"]] == ["Alice's locker is number 12"]
    # deleting bob's memory by id from alice's context fails and changes nothing
    res = await tools["memory_forget"].run({"id": bob["id"]}, ctx)
    assert res.is_error and "no memory with id" in res.content
    res = _json(await tools["memory_forget"].run({"query": "locker code 4411", "limit": 20}, ctx))
    assert res["deleted"] == []
    assert (await store.get(other_ctx.scope, bob["id"])).text == "Bob's locker code is 4411"
    # the same memory text saved in another scope is not a duplicate
    again = _json(await tools["memory_save"].run({"text": "Bob's locker code is 4411"}, ctx))
    assert again["status"] == "saved" and again["memory"]["id"] != bob["id"]


async def test_search_limit_and_tags(tools, ctx) -> None:
    for i in range(8):
        await tools["memory_save"].run({"text": f"Project falcon milestone {i}", "tags": ["work"] if i % 2 else ["home"]}, ctx)
    res = _json(await tools["memory_search"].run({"query": "falcon", "limit": 3}, ctx))
    assert len(res["results"]) == 3
    res = _json(await tools["memory_search"].run({"query": "falcon", "limit": 20, "tags": ["work"]}, ctx))
    assert len(res["results"]) == 4 and all(r["tags"] == ["work"] for r in res["results"])


async def test_search_nothing_found(tools, ctx) -> None:
    res = await tools["memory_search"].run({"query": "unicorns"}, ctx)
    body = _json(res)
    assert body["results"] == [] and "no matching memories" in body["note"]
    assert res.data == {"count": 0, "ids": []}


@pytest.mark.parametrize(
    "query",
    ['"', "NEAR(", "scope_key:1", "*", "AND OR NOT", "😀", "x" * 5000, "')--", "{text}: a"],
)
async def test_search_odd_queries(tools, ctx, query: str) -> None:
    await tools["memory_save"].run({"text": "A normal memory"}, ctx)
    res = await tools["memory_search"].run({"query": query}, ctx)
    assert not res.is_error
    assert isinstance(json.loads(res.content)["results"], list)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("memory_save", {}, "text is required"),
        ("memory_save", {"text": "   "}, "text is required"),
        ("memory_save", {"text": 42}, "text is required"),
        ("memory_save", {"text": "x", "tags": [1]}, "tags must be an array of strings"),
        ("memory_save", {"text": "x", "tags": {"a": 1}}, "tags must be an array of strings"),
        ("memory_save", {"text": "x" * 9000}, "the limit is 8192"),
        ("memory_save", {"text": "x", "tags": [f"t{i}" for i in range(17)]}, "at most 16 tags"),
        ("memory_search", {}, "query is required"),
        ("memory_search", {"query": 5}, "query is required"),
        ("memory_search", {"query": "x", "limit": 0}, "limit must be an integer from 1 to 20"),
        ("memory_search", {"query": "x", "limit": 21}, "limit must be"),
        ("memory_search", {"query": "x", "limit": "5"}, "limit must be"),
        ("memory_search", {"query": "x", "limit": True}, "limit must be"),
        ("memory_search", {"query": "x", "limit": 2.5}, "limit must be"),
        ("memory_forget", {}, "give the `id`"),
        ("memory_forget", {"id": ""}, "id must be a non-empty string"),
        ("memory_forget", {"id": 7}, "id must be a non-empty string"),
        ("memory_forget", {"query": "  "}, "query must be a non-empty string"),
        ("memory_forget", {"query": "x", "limit": 100}, "limit must be"),
        ("memory_forget", {"id": "mem_doesnotexist"}, "no memory with id"),
    ],
)
async def test_invalid_arguments_are_tool_errors(tools, ctx, name: str, args: dict, message: str) -> None:
    res = await tools[name].run(args, ctx)
    assert res.is_error
    assert res.content.startswith("error: ")
    assert message in res.content


async def test_search_limit_as_integral_float_is_accepted(tools, ctx) -> None:
    await tools["memory_save"].run({"text": "Integral float limit"}, ctx)
    assert len(_json(await tools["memory_search"].run({"query": "integral", "limit": 2.0}, ctx))["results"]) == 1


@pytest.mark.parametrize("scope", ["", None])
async def test_no_scope_is_an_error(tools, scope) -> None:
    ctx = ToolContext(scope=scope)  # type: ignore[arg-type]
    for name, args in [
        ("memory_save", {"text": "x"}),
        ("memory_search", {"query": "x"}),
        ("memory_forget", {"id": "x"}),
    ]:
        res = await tools[name].run(args, ctx)
        assert res.is_error and "not available" in res.content


async def test_forget_by_id(tools, ctx, store: MemoryStore) -> None:
    mem = _json(await tools["memory_save"].run({"text": "Lives in Porto", "tags": ["home"]}, ctx))["memory"]
    res = await tools["memory_forget"].run({"id": mem["id"]}, ctx)
    body = _json(res)
    assert body == {"deleted": [mem]}
    assert res.data == {"deleted": [mem["id"]]}
    assert await store.get(ctx.scope, mem["id"]) is None
    res = await tools["memory_forget"].run({"id": mem["id"]}, ctx)
    assert res.is_error


async def test_forget_by_query_defaults_to_one(tools, ctx, store: MemoryStore) -> None:
    for t in ["Old phone number 555-0101", "Old phone number 555-0102", "New phone number 555-0199"]:
        await tools["memory_save"].run({"text": t}, ctx)
    body = _json(await tools["memory_forget"].run({"query": "old phone number"}, ctx))
    assert len(body["deleted"]) == 1 and body["deleted"][0]["text"].startswith("Old phone number")
    body = _json(await tools["memory_forget"].run({"query": "old phone number", "limit": 5}, ctx))
    assert len(body["deleted"]) == 1
    assert [m.text for m in await store.export(ctx.scope)] == ["New phone number 555-0199"]
    body = _json(await tools["memory_forget"].run({"query": "nonexistent words"}, ctx))
    assert body["deleted"] == [] and "nothing was deleted" in body["note"]


async def test_forget_by_id_takes_precedence_over_query(tools, ctx, store: MemoryStore) -> None:
    a = _json(await tools["memory_save"].run({"text": "Keeps bees"}, ctx))["memory"]
    b = _json(await tools["memory_save"].run({"text": "Keeps chickens"}, ctx))["memory"]
    body = _json(await tools["memory_forget"].run({"id": a["id"], "query": "chickens"}, ctx))
    assert [m["id"] for m in body["deleted"]] == [a["id"]]
    assert await store.get(ctx.scope, b["id"]) is not None


async def test_closed_store_is_a_tool_error(tools, ctx, store: MemoryStore) -> None:
    store.close()
    res = await tools["memory_search"].run({"query": "x"}, ctx)
    assert res.is_error and "not available" in res.content
    assert await recall(store, ctx.scope, "anything at all") is None


# ---------------------------------------------------------------------------
# recall


async def test_recall_block(store: MemoryStore, scopes) -> None:
    s = scopes["alice"]
    await store.save_many(s, [f"Unrelated filler fact number {i} about gardening" for i in range(20)])
    cat = await store.save(s, "Has a cat called Miso who hates the vet", tags=["pets"])
    await store.save(scopes["bob"], "Bob's cat is called Pixel")
    block = await recall(store, s, "Can you suggest a name for a toy for my cat?", limit=3)
    assert block is not None
    lines = block.splitlines()
    # Quoted data inside delimiters, after a preamble that says it is not instructions (issue 10 item 20).
    assert lines[0] == RECALL_PREAMBLE and "not instructions" in lines[0]
    assert lines[1] == RECALL_OPEN and lines[-1] == RECALL_CLOSE
    assert lines[2] == f'- [{cat.id}, {cat.created_iso[:10]}] "Has a cat called Miso who hates the vet" tags: "pets"'
    assert "Pixel" not in block
    assert len(lines) == 4


async def test_recall_none_when_nothing_relevant(store: MemoryStore, scopes) -> None:
    s = scopes["alice"]
    await store.save(s, "Has a cat called Miso")
    assert await recall(store, s, "What is the capital of Peru?") is None
    assert await recall(store, s, "") is None
    assert await recall(store, s, None) is None
    assert await recall(store, s, "😀😀") is None
    assert await recall(store, scopes["bob"], "cat Miso") is None


async def test_recall_relative_threshold_and_truncation(store: MemoryStore, scopes) -> None:
    s = scopes["alice"]
    await store.save_many(s, [f"Filler {i} about weather" for i in range(30)])
    long_text = "Quokka sanctuary trip planned with the Rottnest ferry. " * 12  # > 500 characters
    strong = await store.save(s, long_text)
    await store.save(s, "Bought a ferry ticket once")
    block = await recall(store, s, "quokka rottnest sanctuary ferry", limit=5, min_relative_score=0.9)
    assert block is not None
    lines = block.splitlines()[2:-1]  # the memories between the delimiters
    assert len(lines) == 1 and lines[0].startswith(f"- [{strong.id}, ")
    assert lines[0].endswith('…"') and len(lines[0]) < 600
    loose = await recall(store, s, "quokka rottnest sanctuary ferry", limit=5, min_relative_score=0.0)
    assert len(loose.splitlines()[2:-1]) == 2


# ---------------------------------------------------------------------------
# through the registry (JSON parsing, schema validation, timeout) as the agent calls them


async def test_through_tool_registry(store: MemoryStore, ctx, other_ctx) -> None:
    from toolrelay.tools.registry import ToolRegistry

    registry = ToolRegistry(memory_tools(store))
    assert registry.names() == ["memory_save", "memory_search", "memory_forget"]
    out = await registry.call("memory_save", '{"text": "Favourite editor is Helix", "tags": ["tools"]}', ctx)
    assert out.status == "ok", out.content
    mem_id = json.loads(out.content)["memory"]["id"]
    out = await registry.call("memory_search", '{"query": "helix editor", "limit": 3}', ctx)
    assert out.status == "ok" and [r["id"] for r in json.loads(out.content)["results"]] == [mem_id]
    out = await registry.call("memory_search", '{"query": "helix editor"}', other_ctx)
    assert out.status == "ok" and json.loads(out.content)["results"] == []
    out = await registry.call("memory_search", '{"query": "helix", "limit": 99}', ctx)
    assert out.status == "invalid_arguments"
    out = await registry.call("memory_forget", "{}", ctx)
    assert out.status == "error" and "give the `id`" in out.content
    out = await registry.call("memory_forget", f'{{"id": "{mem_id}"}}', other_ctx)
    assert out.status == "error"
    out = await registry.call("memory_forget", f'{{"id": "{mem_id}"}}', ctx)
    assert out.status == "ok" and out.data == {"deleted": [mem_id]}
