"""Operator controls (issue 16) over real HTTP with the OpenAI SDK: the output-token ceiling
(applied upstream and estimated by the limits), the global request rate, key updates and
rotation over the admin API and the CLI, and the bounds of the non-chat endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.relays import COST_CAP_USD, auth_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.cli import main as cli_main

CEILING = 300
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def ceiling_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("controls")
    tree = auth_tree(
        fake_upstream,
        root / "data",
        limits={"max_request_cost_usd": COST_CAP_USD, "max_output_tokens": CEILING},
        agent={"builtin_tools": ["current_time"]},
        server={"max_body_bytes": 64 * 1024},
        extra_upstreams={
            "native": {"kind": "openai", "base_url": fake_upstream.base_url, "api_key": "sk-native", "models": ["native-model"], "responses_api": "native"}
        },
    )
    with start_relay(root, tree) as server:
        yield server


@pytest.fixture
def admin(ceiling_relay: RunningServer) -> Iterator[Admin]:
    with Admin(ceiling_relay) as helper:
        yield helper


@pytest.fixture
def sdk(ceiling_relay: RunningServer) -> Iterator[Callable[[str], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def make(key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=ceiling_relay.base_url, api_key=key, max_retries=0)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _limits(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens") if k in body}


# ------------------------------------------------------------------ the output ceiling


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_without_max_tokens_gets_the_ceiling(admin: Admin, sdk: Any, fake: FakeUpstream, stream: bool) -> None:
    _, key = admin.create_key("ceiling")
    fake.enqueue(Reply(content="short"))
    answer = sdk(key).chat.completions.create(model="fake-model", messages=USER, stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "short"
    else:
        assert answer.choices[0].message.content == "short"
    assert _limits(fake.last_body) == {"max_completion_tokens": CEILING}


@pytest.mark.parametrize(("asked", "sent"), [({"max_tokens": 5000}, {"max_tokens": CEILING}), ({"max_completion_tokens": 50}, {"max_completion_tokens": 50})])
def test_a_larger_request_is_clamped_a_smaller_one_kept(admin: Admin, sdk: Any, fake: FakeUpstream, asked: dict[str, int], sent: dict[str, int]) -> None:
    _, key = admin.create_key("clamp")
    fake.enqueue(Reply(content="ok"))
    sdk(key).chat.completions.create(model="fake-model", messages=USER, **asked)
    assert _limits(fake.last_body) == sent


def test_a_key_ceiling_lowers_the_server_one_and_never_raises_it(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    _, low = admin.create_key("low", max_output_tokens=40)
    _, high = admin.create_key("high", max_output_tokens=5000)
    fake.enqueue(Reply(content="a"), Reply(content="b"))
    sdk(low).chat.completions.create(model="fake-model", messages=USER, max_tokens=1000)
    assert _limits(fake.last_body) == {"max_tokens": 40}
    sdk(high).chat.completions.create(model="fake-model", messages=USER)
    assert _limits(fake.last_body) == {"max_completion_tokens": CEILING}


def test_legacy_completions_get_the_ceiling(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    _, key = admin.create_key("completions")
    client = sdk(key)
    client.completions.create(model="fake-model", prompt="Say hi")
    assert fake.requests_to("completions")[-1].body["max_tokens"] == CEILING
    client.completions.create(model="fake-model", prompt="Say hi", max_tokens=10_000)
    assert fake.requests_to("completions")[-1].body["max_tokens"] == CEILING


def test_responses_get_the_ceiling_translated_and_passed_through(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    _, key = admin.create_key("responses")
    client = sdk(key)
    fake.enqueue(Reply(content="translated"))
    answer = client.responses.create(model="fake-model", input="hi", max_output_tokens=4000, store=False)
    assert answer.output_text == "translated"
    assert _limits(fake.chat_requests[-1].body) == {"max_tokens": CEILING}
    assert answer.max_output_tokens == CEILING  # the response states the limit the run had
    fake.enqueue(Reply(content="native"))
    answer = client.responses.create(model="native-model", input="hi", store=False)
    assert answer.output_text == "native"
    assert fake.requests_to("responses")[-1].body["max_output_tokens"] == CEILING


def test_every_agent_step_gets_the_ceiling(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    _, key = admin.create_key("agent", max_output_tokens=120)
    fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {}}]), Reply(content="It is now."))
    answer = sdk(key).chat.completions.create(model="agent/fake-model", messages=USER, max_tokens=900)
    assert answer.choices[0].message.content == "It is now."
    steps = fake.chat_requests[-2:]
    assert [_limits(r.body) for r in steps] == [{"max_tokens": 120}] * 2


def test_the_tpm_limit_counts_the_ceiling(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    # 300 tokens per minute: a prompt plus the server's ceiling (300) cannot fit, whatever the
    # default completion estimate (256) would say; with the key's own ceiling of 100 it fits.
    _, capped_by_server = admin.create_key("tpm-server", tpm=300)
    before = len(fake.chat_requests)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(capped_by_server).chat.completions.create(model="fake-model", messages=USER)
    assert refused.value.status_code == 429 and "Request too large" in refused.value.message
    assert len(fake.chat_requests) == before  # refused before the upstream
    _, capped_by_key = admin.create_key("tpm-key", tpm=300, max_output_tokens=100)
    fake.enqueue(Reply(content="fits"))
    response = sdk(capped_by_key).chat.completions.with_raw_response.create(model="fake-model", messages=USER)
    assert response.parse().choices[0].message.content == "fits"
    # The reservation made at admission held the ceiling: 300 - (prompt + 100) remained.
    assert int(response.headers["x-ratelimit-remaining-tokens"]) <= 200


# ------------------------------------------------------------------ key update


def test_update_changes_limits_budget_expiry_and_ceiling_over_http(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("update")
    client = sdk(key)
    changed = admin.http.post(
        f"/admin/keys/{key_id}",
        json={"rpm": 1, "tpm": 100_000, "max_parallel": 3, "budget_usd": 5.0, "budget_period": "daily", "expires": "2h", "max_output_tokens": 64},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["object"] == "api_key" and body["id"] == key_id and "value" not in body and "key" not in body
    assert (body["rpm"], body["tpm"], body["max_parallel"], body["budget_usd"], body["budget_period"], body["max_output_tokens"]) == (
        1,
        100_000,
        3,
        5.0,
        "daily",
        64,
    )
    assert abs(body["expires_at"] - (time.time() + 7200)) < 60
    fake.enqueue(Reply(content="one"))
    client.chat.completions.create(model="fake-model", messages=USER)
    assert _limits(fake.last_body) == {"max_completion_tokens": 64}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fake-model", messages=USER)
    # null clears: no rpm, no budget, no expiry, the server's ceiling again.
    cleared = admin.http.post(f"/admin/keys/{key_id}", json={"rpm": None, "budget_usd": None, "expires_at": None, "max_output_tokens": None}).json()
    assert (cleared["rpm"], cleared["budget_usd"], cleared["expires_at"], cleared["max_output_tokens"], cleared["tpm"]) == (None, None, None, None, 100_000)
    fake.enqueue(Reply(content="two"))
    client.chat.completions.create(model="fake-model", messages=USER)
    assert _limits(fake.last_body) == {"max_completion_tokens": CEILING}
    shown = admin.http.get(f"/admin/keys/{key_id}").json()
    assert shown == {**cleared, "spent_usd": shown["spent_usd"]}


@pytest.mark.parametrize(
    ("change", "param"),
    [({"rpm": -1}, "rpm"), ({"budget_period": "hourly"}, "budget_period"), ({"expires_at": 1.0}, "expires"), ({"max_output_tokens": "x"}, "max_output_tokens")],
)
def test_update_refuses_bad_values_by_name(admin: Admin, change: dict[str, Any], param: str) -> None:
    key_id, _ = admin.create_key("bad update")
    refused = admin.http.post(f"/admin/keys/{key_id}", json=change)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param


def test_expiring_a_key_by_update_refuses_it(admin: Admin, sdk: Any) -> None:
    key_id, key = admin.create_key("expire")
    assert admin.http.post(f"/admin/keys/{key_id}", json={"expires": "1s"}).status_code == 200
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(key).models.list()
    assert "expired" in refused.value.message


def test_cli_update_is_seen_by_the_running_server(ceiling_relay: RunningServer, admin: Admin, sdk: Any, fake: FakeUpstream, capsys: Any) -> None:
    key_id, key = admin.create_key("cli update", rpm=1)
    data = str(ceiling_relay.settings.server.data_dir)
    code = cli_main(
        ["keys", "update", key_id, "--data-dir", data, "--rpm", "none", "--tpm", "5000", "--max-output-tokens", "25", "--expires-in", "30d", "--json"]
    )
    assert code == 0, capsys.readouterr().err
    shown = admin.http.get(f"/admin/keys/{key_id}").json()
    assert (shown["rpm"], shown["tpm"], shown["max_output_tokens"]) == (None, 5000, 25)
    assert abs(shown["expires_at"] - (time.time() + 30 * 86400)) < 60
    client = sdk(key)
    for _ in range(2):  # the rpm of 1 is gone
        fake.enqueue(Reply(content="ok"))
        client.chat.completions.create(model="fake-model", messages=USER, max_tokens=1000)
    assert _limits(fake.last_body) == {"max_tokens": 25}
    assert cli_main(["keys", "update", key_id, "--data-dir", data, "--expires", "never", "--budget-usd", "2", "--budget-period", "weekly"]) == 0
    shown = admin.http.get(f"/admin/keys/{key_id}").json()
    assert (shown["expires_at"], shown["budget_usd"], shown["budget_period"]) == (None, 2.0, "weekly")
    assert cli_main(["keys", "update", key_id, "--data-dir", data]) == 2  # nothing to change
    assert cli_main(["keys", "update", key_id, "--data-dir", data, "--rpm", "many"]) == 2


# ------------------------------------------------------------------ rotation


def test_rotation_over_http_keeps_the_key_and_honours_the_grace(admin: Admin, sdk: Any, fake: FakeUpstream) -> None:
    key_id, old = admin.create_key("rotate", rpm=50)
    fake.enqueue(Reply(content="before"))
    sdk(old).chat.completions.create(model="fake-model", messages=USER)
    rotated = admin.http.post(f"/admin/keys/{key_id}/rotate", json={"grace_seconds": 1.5})
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    new = body["key"]
    assert body["id"] == key_id and body["value"] == new and new != old and new.startswith(f"tr-{key_id}-")
    assert body["rpm"] == 50 and body["redacted_value"].endswith(new[-4:])
    assert body["previous_key_valid_until"] is not None
    assert "key" not in admin.http.get(f"/admin/keys/{key_id}").json()  # shown once
    for secret in (new, old):  # both work during the grace period, as the same key
        fake.enqueue(Reply(content="during"))
        response = sdk(secret).chat.completions.with_raw_response.create(model="fake-model", messages=USER)
        assert response.headers["x-ratelimit-limit-requests"] == "50"
    time.sleep(1.6)
    with pytest.raises(openai.AuthenticationError):
        sdk(old).chat.completions.create(model="fake-model", messages=USER)
    fake.enqueue(Reply(content="after"))
    sdk(new).chat.completions.create(model="fake-model", messages=USER)
    rows = admin.usage_rows(key_id, count=4)
    assert [r["status"] for r in rows] == [200] * 4 and {r["key_id"] for r in rows} == {key_id}  # one history across both secrets
    assert admin.http.get(f"/admin/keys/{key_id}").json()["previous_key_valid_until"] is None


def test_rotation_without_grace_refuses_the_old_secret_at_once(admin: Admin, sdk: Any) -> None:
    key_id, old = admin.create_key("rotate now")
    new = admin.http.post(f"/admin/keys/{key_id}/rotate").json()["key"]
    with pytest.raises(openai.AuthenticationError):
        sdk(old).models.list()
    assert sdk(new).models.list().data


def test_rotation_refusals(admin: Admin) -> None:
    key_id, _ = admin.create_key("rotate refusals")
    bad = admin.http.post(f"/admin/keys/{key_id}/rotate", json={"grace_seconds": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_seconds"
    admin.revoke(key_id)
    revoked = admin.http.post(f"/admin/keys/{key_id}/rotate")
    assert revoked.status_code == 400 and revoked.json()["error"]["code"] == "key_revoked"
    assert admin.http.post("/admin/keys/0123456789ab/rotate").status_code == 404
    wrong = httpx.post(f"{admin.relay.root_url}/admin/keys/{key_id}/rotate", headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401


def test_cli_rotation_with_grace(ceiling_relay: RunningServer, admin: Admin, sdk: Any, capsys: Any) -> None:
    import json

    key_id, old = admin.create_key("cli rotate")
    data = str(ceiling_relay.settings.server.data_dir)
    capsys.readouterr()
    assert cli_main(["keys", "rotate", f"tr-{key_id}", "--grace", "1h", "--data-dir", data, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    new = printed["key"]
    assert printed["id"] == key_id and new != old
    assert abs(printed["previous_key_valid_until"] - (time.time() + 3600)) < 60
    assert sdk(new).models.list().data and sdk(old).models.list().data
    # A second rotation without grace drops both earlier secrets.
    assert cli_main(["keys", "rotate", key_id, "--data-dir", data]) == 0
    out = capsys.readouterr().out
    newest = next(line.strip() for line in out.splitlines() if line.strip().startswith(f"tr-{key_id}-"))
    assert "refused from now on" in out
    for stale in (old, new):
        with pytest.raises(openai.AuthenticationError):
            sdk(stale).models.list()
    assert sdk(newest).models.list().data
    assert cli_main(["keys", "rotate", key_id, "--grace", "soon", "--data-dir", data]) == 2


# ------------------------------------------------------------------ the non-chat endpoints


def test_memories_and_admin_bodies_are_bounded(admin: Admin, ceiling_relay: RunningServer) -> None:
    _, key = admin.create_key("bodies")
    big = "x" * (80 * 1024)
    with httpx.Client(base_url=ceiling_relay.root_url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        assert http.post("/v1/memories", json={"text": big}).status_code == 413
    assert admin.http.post("/admin/keys", json={"name": big}).status_code == 413


def test_memories_share_the_keys_parallel_slots(admin: Admin, ceiling_relay: RunningServer, fake: FakeUpstream) -> None:
    _, key = admin.create_key("parallel", max_parallel=1)
    fake.enqueue(Reply(content="slow", delay=1.5))
    with httpx.Client(base_url=ceiling_relay.root_url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        slow = threading.Thread(target=http.post, args=("/v1/chat/completions",), kwargs={"json": {"model": "fake-model", "messages": USER}})
        slow.start()
        fake.wait_for_requests(1)  # the chat request holds the key's one slot while the upstream thinks
        refused = http.get("/v1/memories")
        slow.join()
        assert refused.status_code == 429 and "parallel" in refused.json()["error"]["message"], refused.text
        assert http.get("/v1/memories").status_code == 200


def test_wrong_keys_at_the_mcp_endpoint_count_as_guesses(relays: Any) -> None:
    relay = relays("mcp-guesses", auth={"admin_key": ADMIN_KEY, "max_failed_auth": 3, "failed_auth_window_seconds": 30})
    message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=relay.root_url, timeout=30) as http:
        for i in range(3):
            wrong = http.post("/mcp", json=message, headers={**headers, "authorization": f"Bearer guess-{i:026d}"})
            assert wrong.status_code == 401, wrong.text
        # The address is now throttled everywhere, the right admin key included.
        blocked = http.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "too_many_failed_attempts"


# ------------------------------------------------------------------ the global request rate


@pytest.fixture
def relays(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``relays(name, redis=None, auth=None, **limits)``: a relay with auth on and these ``[limits]``, stopped at the end."""
    started: list[RunningServer] = []

    def make(name: str, redis: dict[str, Any] | None = None, auth: dict[str, Any] | None = None, **limits: Any) -> RunningServer:
        sections: dict[str, Any] = {"limits": {"max_request_cost_usd": COST_CAP_USD, **limits}}
        if redis is not None:
            sections["redis"] = redis
        if auth is not None:
            sections["auth"] = auth
        server = start_relay(tmp_path, auth_tree(fake_upstream, tmp_path / name, **sections), name=name)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_the_global_rate_counts_every_key_but_spares_the_admin_api(relays: Any, fake: FakeUpstream) -> None:
    relay = relays("global", global_rpm=4)
    with Admin(relay) as admin:
        _, first = admin.create_key("one")
        _, second = admin.create_key("two")
        a = openai.OpenAI(base_url=relay.base_url, api_key=first, max_retries=0)
        b = openai.OpenAI(base_url=relay.base_url, api_key=second, max_retries=0)
        for client in (a, b, a):
            fake.enqueue(Reply(content="ok"))
            client.chat.completions.create(model="fake-model", messages=USER)
        memories = httpx.get(relay.url("/v1/memories"), headers={"authorization": f"Bearer {second}"}, timeout=10)
        assert memories.status_code == 200  # the fourth request of the minute, not a chat one
        before = len(fake.chat_requests)
        with pytest.raises(openai.RateLimitError) as refused:
            b.chat.completions.create(model="fake-model", messages=USER)
        error = refused.value
        assert error.code == "rate_limit_exceeded" and "all keys together" in error.message and "Limit 4" in error.message
        assert int(error.response.headers["retry-after"]) >= 1
        assert len(fake.chat_requests) == before
        again = httpx.get(relay.url("/v1/memories"), headers={"authorization": f"Bearer {first}"}, timeout=10)
        assert again.status_code == 429 and again.json()["error"]["type"] == "rate_limit_error"
        # The operator can still act during a flood.
        assert admin.http.get("/admin/keys").status_code == 200
        a.close()
        b.close()


def test_the_global_rate_is_shared_through_redis(relays: Any, fake: FakeUpstream, redis_url: str) -> None:
    redis = {"url": redis_url, "prefix": f"global-{time.monotonic_ns()}"}
    hosts = [relays("left", redis=redis, global_rpm=3), relays("right", redis=redis, global_rpm=3)]
    clients = []
    for relay in hosts:
        with Admin(relay) as admin:
            clients.append(openai.OpenAI(base_url=relay.base_url, api_key=admin.create_key("shared")[1], max_retries=0))
    left, right = clients
    for client in (left, right, left):
        fake.enqueue(Reply(content="ok"))
        client.chat.completions.create(model="fake-model", messages=USER)
    with pytest.raises(openai.RateLimitError) as refused:
        right.chat.completions.create(model="fake-model", messages=USER)
    assert "Used 3" in refused.value.message
    for client in clients:
        client.close()
