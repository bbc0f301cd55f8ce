"""The usage ledger: one row per request, matching what the upstream reported, readable by CLI and HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply, word_count
from toolrelay.app.auth.ledger import Ledger
from toolrelay.app.cli import main as cli_main

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is the answer to everything"}]
PROMPT_WORDS = word_count("Be brief.") + word_count("what is the answer to everything")


def test_proxy_json_row_matches_upstream_usage(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("ledger-json")
    fake.enqueue(Reply(content="forty two is the answer"))
    with sdk(auth_relay, key) as client:
        reply = client.chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
    completion = reply.parse()
    assert completion.usage.prompt_tokens == PROMPT_WORDS and completion.usage.completion_tokens == 5
    [row] = admin.usage_rows(key_id, count=1)
    assert row["request_id"] == reply.headers["x-request-id"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_WORDS, 5)
    assert row["key_id"] == key_id and row["model"] == "fake-model" and row["mode"] == "proxy" and row["upstream"] == "fake"
    assert row["status"] == 200 and row["error_code"] is None and row["estimated"] is False
    # fake-model: $1 per 1M input, $2 per 1M output.
    assert row["cost_usd"] == pytest.approx((PROMPT_WORDS * 1 + 5 * 2) / 1e6)
    assert row["latency_ms"] > 0 and abs(row["ts"] - time.time()) < 30


def test_proxy_stream_row_matches_upstream_usage(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("ledger-stream")
    fake.enqueue(Reply(content="one two three four five six seven"), Reply(content="a b c"))
    with sdk(auth_relay, key) as client:
        chunks = list(client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        # Without include_usage the client sees none, but the ledger still gets the upstream's.
        plain = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True))
        assert all(c.usage is None for c in plain)
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_WORDS, 7)
    rows = admin.usage_rows(key_id, count=2)
    assert [(r["model"], r["prompt_tokens"], r["completion_tokens"], r["status"], r["estimated"]) for r in rows] == [
        ("fake-model", PROMPT_WORDS, 7, 200, False),
        ("gpt-4", PROMPT_WORDS, 3, 200, False),
    ]


def test_agent_run_row_sums_every_upstream_call(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("ledger-agent")
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}]),
        Reply(tool_calls=[{"name": "current_time", "arguments": {"timezone": "Europe/Paris"}}]),
        Reply(content="It is late in Paris."),
    )
    with sdk(auth_relay, key) as client:
        reply = client.chat.completions.create(model="agent/fake-model", messages=MESSAGES)
    assert reply.choices[0].message.content == "It is late in Paris."
    calls = fake.chat_requests
    assert len(calls) == 3
    # What the fake reported for each call (its default usage: word counts of what it saw and said).
    prompt = sum(sum(word_count(m.get("content") if isinstance(m.get("content"), str) else "") for m in c.body["messages"]) for c in calls)
    completion = word_count("{}") + 1 + word_count('{"timezone": "Europe/Paris"}') + 1 + word_count("It is late in Paris.")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    [row] = admin.usage_rows(key_id, count=1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert row["model"] == "agent/fake-model" and row["mode"] == "agent" and row["status"] == 200
    assert row["cost_usd"] == pytest.approx((prompt + 2 * completion) / 1e6)


def test_agent_stream_row(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("ledger-agent-stream")
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}], usage={"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}),
        Reply(content="done now", usage={"prompt_tokens": 61, "completion_tokens": 2, "total_tokens": 63}),
    )
    with sdk(auth_relay, key) as client:
        chunks = list(client.chat.completions.create(model="agent/fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens == 101 and chunks[-1].usage.completion_tokens == 8
    [row] = admin.usage_rows(key_id, count=1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["mode"]) == (101, 8, "agent")


def test_refusals_and_errors_are_rows_too(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("ledger-errors", rpm=1)
    headers = {"authorization": f"Bearer {key}"}
    url = auth_relay.url("/v1/chat/completions")
    fake.enqueue(Reply(status=500))
    assert httpx.post(url, json={"model": "fake-model", "messages": MESSAGES}, headers=headers).status_code >= 500
    assert httpx.post(url, json={"model": "fake-model", "messages": MESSAGES}, headers=headers).status_code == 429
    assert httpx.post(url, json={"model": "nope", "messages": MESSAGES}, headers=headers).status_code == 404
    rows = admin.usage_rows(key_id, count=3)
    assert [r["status"] for r in rows][:2] in ([500, 429], [502, 429])
    assert rows[1]["error_code"] == "rate_limit_exceeded"
    assert rows[2]["status"] == 404 and rows[2]["error_code"] == "model_not_found"
    assert all(r["prompt_tokens"] == 0 and r["cost_usd"] == 0 for r in rows)
    # A wrong key leaves no row (nothing an attacker could multiply).
    before = len(admin.usage_rows(key_id))
    httpx.post(url, json={"model": "fake-model", "messages": MESSAGES}, headers={"authorization": "Bearer tr-000000000000-" + "x" * 43})
    assert len(admin.usage_rows(key_id)) == before


def test_usage_summary_over_http_and_cli(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]) -> None:
    key_id, key = admin.create_key("summary")
    with sdk(auth_relay, key) as client:
        for model in ("fake-model", "fake-model", "org/fake-slash"):
            client.chat.completions.create(model=model, messages=MESSAGES)
    admin.usage_rows(key_id, count=3)
    response = admin.http.get("/admin/usage", params={"key_id": key_id, "since": "1h"})
    body = response.json()
    assert body["object"] == "list" and body["group_by"] == ["key", "model"]
    by_model = {r["model"]: r for r in body["data"]}
    assert by_model["fake-model"]["requests"] == 2 and by_model["org/fake-slash"]["requests"] == 1
    assert by_model["fake-model"]["key"] == key_id and by_model["fake-model"]["key_name"] == "summary"
    assert by_model["fake-model"]["prompt_tokens"] == 2 * PROMPT_WORDS
    assert by_model["fake-model"]["cost_usd"] == pytest.approx(2 * (PROMPT_WORDS + 2 * 5) / 1e6)
    grouped = admin.http.get("/admin/usage", params={"key_id": key_id, "group_by": "mode"}).json()["data"]
    assert grouped == [{**grouped[0], "mode": "proxy", "requests": 3}]
    future = admin.http.get("/admin/usage", params={"key_id": key_id, "since": str(time.time() + 60)}).json()["data"]
    assert future == []
    past = admin.http.get("/admin/usage", params={"key_id": key_id, "until": "2000-01-01"}).json()["data"]
    assert past == []
    bad = admin.http.get("/admin/usage", params={"group_by": "secret_column"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    assert admin.http.get("/admin/usage", params={"since": "last tuesday"}).status_code == 400

    data_dir = auth_relay.settings.server.data_dir
    assert cli_main(["usage", "--data-dir", data_dir, "--key", key_id, "--since", "1h"]) == 0
    table = capsys.readouterr().out
    assert "fake-model" in table and "org/fake-slash" in table and key_id in table and "summary" in table
    line = next(row for row in table.splitlines() if "fake-model" in row)
    assert " 2 " in line and str(2 * PROMPT_WORDS) in line
    assert cli_main(["usage", "--data-dir", data_dir, "--key", key_id, "--group-by", "model", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["data"]
    assert sum(r["requests"] for r in rows) == 3


def test_ledger_is_flushed_on_shutdown(make_relay, fake: FakeUpstream, tmp_path) -> None:
    # A slow writer: without the flush in close(), these rows would still be queued.
    relay = make_relay(data_dir=tmp_path / "flush", auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 30})
    admin = Admin(relay)
    try:
        key_id, key = admin.create_key("flush")
        with sdk(relay, key) as client:
            for _ in range(5):
                client.chat.completions.create(model="fake-model", messages=MESSAGES)
    finally:
        admin.close()
    relay.stop()
    rows = Ledger(tmp_path / "flush" / "usage.db").rows(key_id=key_id)
    assert len(rows) == 5 and all(r["status"] == 200 and r["prompt_tokens"] == PROMPT_WORDS for r in rows)


def test_no_key_material_in_logs(make_relay, fake: FakeUpstream, logs, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    relay = make_relay(data_dir=tmp_path / "logs")
    admin = Admin(relay)
    try:
        key_id, key = admin.create_key("logged", rpm=2)
        assert cli_main(["keys", "create", "--name", "cli", "--data-dir", str(tmp_path / "logs"), "--json"]) == 0
        cli_key = json.loads(capsys.readouterr().out)["value"]
        url = relay.url("/v1/chat/completions")
        body = {"model": "fake-model", "messages": MESSAGES}
        for credential in (key, key, key, cli_key, key[:-3] + "abc", ADMIN_KEY, ADMIN_KEY + "x", "tr-" + key_id + "-" + "y" * 43):
            httpx.post(url, json=body, headers={"authorization": f"Bearer {credential}"})
        with sdk(relay, key) as client:
            try:
                list(client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
            except Exception:  # noqa: BLE001 - the rpm limit may refuse it; either way it is logged
                pass
        admin.http.get("/admin/keys")
        admin.http.get(f"/admin/keys/{key_id}")
        admin.revoke(key_id)
        httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"})
        logs.wait_for(lambda r: r.name == "toolrelay.access" and "key=" + key_id in r.rendered)
    finally:
        admin.close()
    relay.stop()
    texts = "\n".join(logs.texts())
    assert "toolrelay.access" in texts
    for secret in (key, key.split("-", 2)[2], key.split("-", 2)[2][:16], cli_key.split("-", 2)[2], ADMIN_KEY, "y" * 43):
        assert secret not in texts
