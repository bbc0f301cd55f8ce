"""Authentication: who may call, and how every wrong credential is refused (401, never 500, never echoed)."""

from __future__ import annotations

import base64
import socket
import time

import httpx
import openai
import orjson
import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.cli import main as cli_main

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}]}


def post(relay: RunningServer, headers: dict[str, str] | None = None, json: dict | None = None) -> httpx.Response:
    return httpx.post(relay.url("/v1/chat/completions"), json=json or CHAT, headers=headers or {}, timeout=30.0)


def raw_post(relay: RunningServer, headers: list[tuple[str, str]]) -> httpx.Response:
    """POST with header bytes exactly as given (httpx refuses odd values such as trailing blanks)."""
    body = orjson.dumps(CHAT)
    lines = [
        b"POST /v1/chat/completions HTTP/1.1",
        b"host: 127.0.0.1",
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    lines += [name.encode("latin-1") + b": " + value.encode("latin-1") for name, value in headers]
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = [tuple(h.split(": ", 1)) for h in header_lines]
    if ("transfer-encoding", "chunked") in [(k.lower(), v.lower()) for k, v in response_headers]:
        payload = _unchunk(payload)
    return httpx.Response(int(status_line.split()[1]), headers=response_headers, content=payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def assert_invalid_key(response: httpx.Response, *secrets: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "authentication_error"
    assert error["param"] is None
    for secret in secrets:
        assert secret not in response.text
        assert secret[-20:] not in response.text


def test_new_key_works_immediately_and_sdk_sees_openai_errors(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("sdk")
    assert key.startswith(f"tr-{key_id}-")
    with sdk(auth_relay, key) as client:
        reply = client.chat.completions.create(**CHAT)
        assert reply.choices[0].message.content == "Hello from the fake upstream."
    with sdk(auth_relay, key[:-1] + ("A" if key[-1] != "A" else "B")) as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.code == "invalid_api_key"
    assert key[20:] not in str(info.value)


def test_bypass_attempts_get_401_not_500(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("victim")
    other_id, other = admin.create_key("other")
    secret = key.split("-", 2)[2]
    other_secret = other.split("-", 2)[2]
    attempts = {
        "missing": [],
        "empty": [("authorization", "")],
        "scheme only": [("authorization", "Bearer")],
        "scheme and blanks": [("authorization", "Bearer    ")],
        "basic": [("authorization", f"Basic {key}")],
        "basic user:key": [("authorization", "Basic " + base64.b64encode(f"user:{key}".encode()).decode())],
        "no scheme": [("authorization", key)],
        "token scheme": [("authorization", f"Token {key}")],
        "scheme glued": [("authorization", f"Bearer{key}")],
        "another key's id with this secret": [("authorization", f"Bearer tr-{other_id}-{secret}")],
        "this id with another secret": [("authorization", f"Bearer tr-{key_id}-{other_secret}")],
        "prefix only": [("authorization", f"Bearer tr-{key_id}-")],
        "id only": [("authorization", f"Bearer tr-{key_id}")],
        "truncated": [("authorization", f"Bearer {key[:-1]}")],
        "extended": [("authorization", f"Bearer {key}x")],
        "doubled": [("authorization", f"Bearer {key}{key}")],
        "inner space": [("authorization", f"Bearer {key[:20]} {key[20:]}")],
        "upper-cased": [("authorization", f"Bearer {key.upper()}")],
        "64 KB": [("authorization", "Bearer tr-" + "a" * 65536)],
        "64 KB without scheme": [("authorization", "x" * 65536)],
        "admin key with a suffix": [("authorization", f"Bearer {ADMIN_KEY}x")],
        "x-api-key only": [("x-api-key", key)],
        "non-ascii": [("authorization", "Bearer tr-\u00e9\u00e9\u00e9")],
        "nul byte": [("authorization", f"Bearer {key[:30]}\x00{key[31:]}")],
        "wrong key first": [("authorization", f"Bearer {other[:-2]}zz"), ("authorization", f"Bearer {key}")],
    }
    for label, headers in attempts.items():
        response = raw_post(auth_relay, headers)
        if label == "nul byte" and response.status_code == 400:
            continue  # the HTTP parser (httptools) refuses it before the app sees it: fine
        assert response.status_code == 401, (label, response.status_code, response.text)
        assert_invalid_key(response, secret, other_secret)
        assert len(response.content) < 2000, label  # a 64 KB credential is not echoed back
    assert fake.chat_requests == []  # nothing reached the upstream


def test_lenient_but_exact_forms_are_accepted(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("forms")
    for value in (f"bearer {key}", f"BEARER {key}", f"Bearer   {key}   ", f"Bearer {key}\t"):
        response = raw_post(auth_relay, [("authorization", value)])
        assert response.status_code == 200, (value, response.text)


def test_models_endpoints_need_a_key(auth_relay: RunningServer, admin: Admin) -> None:
    response = httpx.get(auth_relay.url("/v1/models"))
    assert_invalid_key(response)
    _, key = admin.create_key("lister")
    response = httpx.get(auth_relay.url("/v1/models"), headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200
    ids = {m["id"] for m in response.json()["data"]}
    assert {"fake-model", "agent/fake-model"} <= ids


def test_revoked_key_is_refused_on_the_next_request(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("short-lived")
    headers = {"authorization": f"Bearer {key}"}
    assert post(auth_relay, headers).status_code == 200
    revoked = admin.revoke(key_id)
    assert revoked["status"] == "revoked" and revoked["revoked_at"]
    response = post(auth_relay, headers)
    assert_invalid_key(response, key.split("-", 2)[2])
    assert "revoked" in response.json()["error"]["message"]


def test_expired_key_is_refused(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    store = auth_relay.services.gate.keys
    _key, value = store.create(name="old", expires_at=time.time() - 1)
    response = post(auth_relay, {"authorization": f"Bearer {value}"})
    assert_invalid_key(response, value.split("-", 2)[2])
    assert "expired" in response.json()["error"]["message"]


def test_admin_key_manages_keys_and_may_call_the_api(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("managed", models=["fake-model"], rpm=100, tpm=10_000, max_parallel=4, budget_usd=5, budget_period="daily", expires="30d")
    listing = admin.http.get("/admin/keys").json()
    assert listing["object"] == "list" and listing["has_more"] is False
    entry = next(k for k in listing["data"] if k["id"] == key_id)
    assert "value" not in entry and key not in str(listing)
    assert entry["redacted_value"] == f"tr-{key_id}-...{key[-4:]}"
    assert entry["models"] == ["fake-model"] and entry["rpm"] == 100 and entry["tpm"] == 10_000 and entry["max_parallel"] == 4
    assert entry["budget_usd"] == 5 and entry["budget_period"] == "daily" and entry["status"] == "active"
    assert entry["expires_at"] > time.time() + 29 * 86400
    shown = admin.http.get(f"/admin/keys/tr-{key_id}").json()
    assert shown["id"] == key_id and shown["spent_usd"] == 0
    assert admin.http.post(f"/admin/keys/{key_id}/revoke").json()["status"] == "revoked"
    missing = admin.http.get("/admin/keys/0123456789ab")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    # The admin key is also an unlimited API key (logged as key "admin").
    assert post(auth_relay, {"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200


def test_admin_api_refuses_everyone_else(auth_relay: RunningServer, admin: Admin) -> None:
    _, key = admin.create_key("not-admin")
    url = auth_relay.url("/admin/keys")
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    response = httpx.post(url, json={"name": "x"}, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"
    assert httpx.get(auth_relay.url("/admin/usage"), headers={"authorization": f"Bearer {key}"}).status_code == 403


def test_admin_create_validation(admin: Admin) -> None:
    cases = [
        ({"models": ["x"]}, "name"),
        ({"name": "x", "rpm": "many"}, "rpm"),
        ({"name": "x", "rpm": -1}, "rpm"),
        ({"name": "x", "budget_period": "hourly"}, "budget_period"),
        ({"name": "x", "expires": "yesterday"}, "expires"),
        ({"name": "x", "expires_at": 1}, "expires"),
        ({"name": "x", "unknown": 1}, None),
    ]
    for body, param in cases:
        response = admin.http.post("/admin/keys", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        if param:
            assert error["param"] == param, (body, error)


def test_admin_api_disabled_without_admin_key(make_relay, fake: FakeUpstream) -> None:
    relay = make_relay(auth={})
    response = httpx.get(relay.url("/admin/keys"), headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "admin_api_disabled"


def test_auth_turns_on_when_the_first_key_is_created(make_relay, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]) -> None:
    relay = make_relay(auth={})
    assert post(relay).status_code == 200  # no keys, no admin key, loopback: open
    assert relay.services.gate.enabled is False
    data_dir = relay.settings.server.data_dir
    assert cli_main(["keys", "create", "--name", "first", "--data-dir", data_dir, "--json"]) == 0
    import json

    created = json.loads(capsys.readouterr().out)
    assert_invalid_key(post(relay))
    assert post(relay, {"authorization": f"Bearer {created['value']}"}).status_code == 200
    assert cli_main(["keys", "revoke", created["id"], "--data-dir", data_dir]) == 0
    # Revoking the last key must not open the server again.
    assert_invalid_key(post(relay))
    assert_invalid_key(post(relay, {"authorization": f"Bearer {created['value']}"}))


def test_keys_written_by_another_process_apply_at_once(make_relay, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """keys.db is looked at once per window on the request path; a key created inside the window is
    still accepted at once (a credential the mirror does not match makes it look again), a revoked
    one is refused once the window has passed."""
    from toolrelay.app.auth import keys_path
    from toolrelay.app.auth import keystore as keystore_module

    relay = make_relay()
    other = keystore_module.KeyStore(keys_path(relay.settings))  # another process's connection (the CLI's)
    try:
        _, first = other.create(name="first")
        assert post(relay, {"authorization": f"Bearer {first}"}).status_code == 200
        # A long window, so every write below lands inside it.
        monkeypatch.setattr(keystore_module, "KEY_REFRESH_SECONDS", 60.0)
        for _ in range(3):
            assert post(relay, {"authorization": f"Bearer {first}"}).status_code == 200
            _, secret = other.create(name="fresh")
            assert post(relay, {"authorization": f"Bearer {secret}"}).status_code == 200
        key, secret = other.create(name="revoked soon")
        assert post(relay, {"authorization": f"Bearer {secret}"}).status_code == 200
        other.revoke(key.id)
        assert post(relay, {"authorization": f"Bearer {secret}"}).status_code == 200  # inside the window
        monkeypatch.setattr(keystore_module, "KEY_REFRESH_SECONDS", 0.005)
        time.sleep(0.01)
        assert_invalid_key(post(relay, {"authorization": f"Bearer {secret}"}))
    finally:
        other.close()


def test_key_limited_to_models(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("narrow", models=["fake-model", "agent/*"])
    with sdk(auth_relay, key) as client:
        assert client.chat.completions.create(**CHAT).choices[0].message.content
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="fake-tools", messages=CHAT["messages"])
        assert info.value.code == "model_not_found"
        # The 404 names what this key may use (its own allow-list, agent forms included), never other models.
        message = info.value.message
        assert "Models available to you: " in message and "fake-model" in message and "agent/fake-model" in message
        listed = set(message.split("Models available to you: ", 1)[1].rstrip(".").split(", "))
        assert {"fake-model", "agent/fake-model", "agent/fake-tools"} <= listed  # "agent/*" allows every agent form
        assert "fake-tools" not in listed and "gpt-4" not in listed
        # An unknown id too, through the route's own check.
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="no-such-model", messages=CHAT["messages"])
        assert set(unknown.value.message.split("Models available to you: ", 1)[1].rstrip(".").split(", ")) == listed
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4", messages=CHAT["messages"])  # an alias is its own id
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="fake-tools", messages=CHAT["messages"], stream=True)
        # The agent is wired: agent/fake-model runs a loop that calls the fake upstream. (Not
        # agent/fake-tools: at $1 per token its first model call, with the agent's system prompt
        # and tool schemas, could cost more than the server's $1000 per-request cap.)
        fake.enqueue(Reply(content="agent answer"))
        answer = client.chat.completions.create(model="agent/fake-model", messages=CHAT["messages"])
        assert answer.choices[0].message.content == "agent answer"
        assert fake.last_body["model"] == "fake-model"


def test_agent_only_key(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("agent-only", models=["agent/fake-model"])
    with sdk(auth_relay, key) as client:
        fake.enqueue(Reply(content="via agent"))
        assert client.chat.completions.create(model="agent/fake-model", messages=CHAT["messages"]).choices[0].message.content == "via agent"
        for model in ("fake-model", "agent/fake-tools"):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=model, messages=CHAT["messages"])


def test_models_listing_shows_only_allowed_models(auth_relay: RunningServer, admin: Admin) -> None:
    _, key = admin.create_key("lister", models=["fake-model", "agent/*"])
    with sdk(auth_relay, key) as client:
        ids = sorted(m.id for m in client.models.list())
        assert "fake-model" in ids and "fake-tools" not in ids and "gpt-4" not in ids
        assert {"agent/fake-model", "agent/fake-tools", "agent/org/fake-slash"} <= set(ids)
        assert client.models.retrieve("agent/fake-tools").id == "agent/fake-tools"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("fake-tools")
