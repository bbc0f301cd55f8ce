"""The access log of a real ``toolrelay serve`` process: every request's line reaches the log file,
SIGTERM included, in the plain or the JSON format, and never a key or message text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream, Reply
from operations.serve_process import ServeProcess

CANARY_CONTENT = "CANARY-PROMPT-5c1e"
CANARY_ANSWER = "CANARY-ANSWER-77ab"
UPSTREAM_SECRET = "sk-upstream-secret"
ACCESS_FIELDS = {"method", "path", "status", "latency_ms", "model", "mode", "prompt_tokens", "completion_tokens", "key", "error", "cache_hit", "request_id"}


def _traffic(relay: ServeProcess, fake: FakeUpstream, *, api_key: str = "sk-none", n: int = 30) -> list[str]:
    """``n`` requests of several kinds (answered, streamed, unknown model, unknown path); their request ids."""
    fake.enqueue(*(Reply(content=f"{CANARY_ANSWER} {i}") for i in range(n)))
    ids: list[str] = []
    client = openai.OpenAI(base_url=relay.base_url, api_key=api_key, max_retries=0)
    with httpx.Client(base_url=relay.root_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        for i in range(n):
            kind = i % 4
            if kind == 0:
                raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=[{"role": "user", "content": CANARY_CONTENT}])
                ids.append(raw.headers["x-request-id"])
            elif kind == 1:
                with client.chat.completions.with_streaming_response.create(
                    model="fake-model", messages=[{"role": "user", "content": CANARY_CONTENT}], stream=True
                ) as stream:
                    list(stream.iter_lines())
                    ids.append(stream.headers["x-request-id"])
            elif kind == 2:
                response = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": [{"role": "user", "content": CANARY_CONTENT}]})
                assert response.status_code == 404
                ids.append(response.headers["x-request-id"])
            else:
                response = http.get(f"/v1/nothing?secret={CANARY_CONTENT}")
                ids.append(response.headers["x-request-id"])
    return ids


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_every_line_survives_sigterm(tmp_path: Path, fake: FakeUpstream, log_format: str) -> None:
    with ServeProcess(tmp_path, fake.base_url, "--log-format", log_format) as relay:
        relay.wait_ready()
        ids = _traffic(relay, fake)
        # SIGTERM right after the last answer: its line is still in the writer's queue.
        relay.terminate()
        text = relay.log_text()
    missing = [request_id for request_id in ids if request_id not in text]
    assert not missing, (missing, text[-2000:])
    for secret in (CANARY_CONTENT, CANARY_ANSWER, UPSTREAM_SECRET):
        assert secret not in text
    if log_format == "plain":
        assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO toolrelay\.access POST /v1/chat/completions 200 ", text, re.M), text[-2000:]


def test_json_logs_parse_line_by_line_and_hold_no_secrets(tmp_path: Path, fake: FakeUpstream) -> None:
    admin_key = "tr-admin-CANARYADMINSECRET1234567890"
    with ServeProcess(tmp_path, fake.base_url, "--log-format", "json", auth={"admin_key": admin_key}) as relay:
        relay.wait_ready()
        created = httpx.post(relay.root_url + "/admin/keys", json={"name": "logs"}, headers={"Authorization": f"Bearer {admin_key}"})
        assert created.status_code == 200, created.text
        key_id, key = created.json()["id"], created.json()["value"]
        ids = _traffic(relay, fake, api_key=key, n=12)
        # A wrong key, sent as a bearer token, must not be logged either.
        wrong = httpx.get(relay.base_url + "/models", headers={"Authorization": "Bearer tr-nokey-WRONGSECRETCANARY"})
        assert wrong.status_code == 401
        relay.terminate()
        text = relay.log_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records and all(isinstance(r, dict) and {"time", "level", "logger"} <= r.keys() for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "toolrelay.access"}
    assert set(ids) <= access.keys()
    first = access[ids[0]]
    assert first.keys() >= ACCESS_FIELDS
    assert (first["method"], first["path"], first["status"], first["model"], first["mode"]) == ("POST", "/v1/chat/completions", 200, "fake-model", "proxy")
    assert isinstance(first["latency_ms"], float) and first["prompt_tokens"] >= 1 and first["key"] == key_id
    assert access[ids[2]]["error"] == "model_not_found" and access[ids[2]]["model"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    for secret in (CANARY_CONTENT, CANARY_ANSWER, UPSTREAM_SECRET, key, key.removeprefix(f"tr-{key_id}-"), admin_key, "WRONGSECRETCANARY", "Bearer"):
        assert secret not in text, secret
