"""What the console needs from the server, over HTTP without a browser: the static pages and their
policy, and the admin API it reads (recent requests, latency percentiles, any key's memories)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai

from fakes.admin import Admin
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply


def test_the_pages_are_served_without_a_key_under_a_strict_policy(console_relay: RunningServer) -> None:
    with httpx.Client(base_url=console_relay.root_url) as http:
        page = http.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "set-cookie" not in page.headers
        # Nothing inline: every script is a file, no style attribute or element.
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text) == []
        assert " style=" not in page.text and "<style" not in page.text
        for src in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
            assert http.get(src).status_code == 200, src
        script = http.get("/ui/js/playground.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert ".innerHTML" not in script.text
        assert http.get("/ui/js/missing.js").status_code == 404
        assert http.get("/ui/..%2Fpyproject.toml").status_code == 404
        # The API keeps its own policy.
        assert http.get("/health").headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_recent_requests_are_filtered_and_newest_first(console_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, secret = admin.create_key("recent")
    fake.responder = lambda body: Reply(content="ok") if body.get("model") == "fake-model" else Reply(status=500)
    client = openai.OpenAI(base_url=console_relay.base_url, api_key=secret, max_retries=0)
    ids = []
    for _ in range(3):
        ids.append(client.chat.completions.with_raw_response.create(model="fake-model", messages=[{"role": "user", "content": "hi"}]).headers["x-request-id"])
    try:
        client.chat.completions.create(model="fake-tools", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as exc:
        failed_id = exc.response.headers["x-request-id"]
    else:
        raise AssertionError("the upstream's 500 should have failed the request")
    admin.usage_rows(key_id, count=4)

    def recent(**params: object) -> dict[str, Any]:
        response = admin.http.get("/admin/requests", params={"key_id": key_id, **params})
        assert response.status_code == 200, response.text
        return response.json()

    listing = recent()
    assert [r["request_id"] for r in listing["data"]] == [failed_id, *reversed(ids)]
    assert listing["data"][0]["status"] >= 500 and listing["data"][0]["key_name"] == "recent"
    assert [r["request_id"] for r in recent(outcome="error")["data"]] == [failed_id]
    assert [r["request_id"] for r in recent(model="fake-model", limit=2)["data"]] == [ids[2], ids[1]]
    assert recent(model="fake-model", limit=2)["has_more"] is True
    assert recent(mode="agent")["data"] == []
    assert admin.http.get("/admin/requests", params={"outcome": "maybe"}).status_code == 400
    assert admin.http.get("/admin/requests", params={"key_id": "not a key"}).status_code == 400
    assert httpx.get(console_relay.root_url + "/admin/requests", headers={"authorization": f"Bearer {secret}"}).status_code == 403

    latency = admin.http.get("/admin/usage/latency", params={"key_id": key_id, "group_by": "model"})
    assert latency.status_code == 200
    rows = {r["model"]: r for r in latency.json()["data"]}
    assert rows["fake-model"]["requests"] == 3
    assert 0 < rows["fake-model"]["p50_ms"] <= rows["fake-model"]["p99_ms"] <= rows["fake-model"]["max_ms"]
    assert admin.http.get("/admin/usage/latency", params={"group_by": "nope"}).status_code == 400


def test_the_admin_lists_searches_and_deletes_any_keys_memories(console_relay: RunningServer, admin: Admin) -> None:
    key_id, secret = admin.create_key("remembers")
    other_id, other_secret = admin.create_key("other")
    with httpx.Client(base_url=console_relay.root_url, headers={"authorization": f"Bearer {secret}"}) as user:
        saved = user.post("/v1/memories", json={"text": "Likes green tea"}).json()
        user.post("/v1/memories", json={"text": "Lives in Lyon"})
        listed = admin.http.get("/admin/memories", params={"key_id": key_id}).json()
        assert {m["text"] for m in listed["data"]} == {"Likes green tea", "Lives in Lyon"}
        assert admin.http.get("/admin/memories", params={"key_id": other_id}).json()["data"] == []
        found = admin.http.get("/admin/memories/search", params={"key_id": key_id, "q": "tea"}).json()["data"]
        assert [m["id"] for m in found] == [saved["id"]]
        # Another key's scope does not hold it; the owner's does.
        assert admin.http.delete(f"/admin/memories/{saved['id']}", params={"key_id": other_id}).status_code == 404
        assert admin.http.delete(f"/admin/memories/{saved['id']}", params={"key_id": key_id}).json()["deleted"] is True
        assert user.get(f"/v1/memories/{saved['id']}").status_code == 404
        # A key may not use the admin route, not even for its own memories.
        assert user.get("/admin/memories", params={"key_id": key_id}).status_code == 403
    assert admin.http.get("/admin/memories", params={"key_id": "x"}).status_code == 400
    assert admin.http.get("/admin/memories").status_code == 400
    assert other_secret


def test_the_metrics_totals_stand_in_for_the_ledger_when_it_is_off(ledgerless_relay: RunningServer, fake: FakeUpstream) -> None:
    fake.responder = lambda body: Reply(content="ok") if body.get("model") == "fake-model" else Reply(status=500)
    with Admin(ledgerless_relay) as admin:
        before = admin.http.get("/admin/usage/metrics").json()
        _, secret = admin.create_key("no-ledger")
        client = openai.OpenAI(base_url=ledgerless_relay.base_url, api_key=secret, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        try:
            client.chat.completions.create(model="fake-tools", messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError:
            pass
        else:
            raise AssertionError("the upstream's 500 should have failed the request")

        # The ledger's routes say it is off; the metrics route counts what the ledger would have.
        off = admin.http.get("/admin/requests")
        assert off.status_code == 404 and off.json()["error"]["code"] == "ledger_disabled"
        assert admin.http.get("/admin/usage").json()["error"]["code"] == "ledger_disabled"
        totals = admin.http.get("/admin/usage/metrics").json()
        assert totals["object"] == "usage.metrics" and totals["ledger"] is False and totals["workers"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", totals["since"])

        def count(body: dict[str, Any], model: str, status: int) -> int:
            return sum(r["requests"] for r in body["requests"] if r["model"] == model and r["mode"] == "proxy" and r["status"] == status)

        assert count(totals, "fake-model", 200) - count(before, "fake-model", 200) == 3
        assert count(totals, "fake-tools", 200) == 0 and count(totals, "fake-tools", 502) + count(totals, "fake-tools", 500) >= 1
        tokens = {r["model"]: r for r in totals["tokens"]}
        assert tokens["fake-model"]["prompt_tokens"] > 0 and tokens["fake-model"]["completion_tokens"] > 0
        proxy = next(r for r in totals["latency"] if r["mode"] == "proxy")
        assert proxy["requests"] >= 4
        assert 0 < proxy["p50_ms"] <= proxy["p90_ms"] <= proxy["p99_ms"] and proxy["mean_ms"] > 0
        # Admin only, like the rest of /admin.
        assert httpx.get(ledgerless_relay.root_url + "/admin/usage/metrics", headers={"authorization": f"Bearer {secret}"}).status_code == 403
        client.close()


def test_the_metrics_totals_are_there_with_the_ledger_on_too(console_relay: RunningServer, admin: Admin) -> None:
    totals = admin.http.get("/admin/usage/metrics")
    assert totals.status_code == 200
    assert totals.json()["ledger"] is True
