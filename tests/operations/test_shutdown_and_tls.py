"""A real ``toolrelay serve`` process: a stream in flight when SIGTERM arrives ends with its
[DONE] (within ``shutdown_timeout_seconds``), and native TLS with a self-signed certificate
through the OpenAI SDK."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from fakes.tls import self_signed_certificate
from fakes.upstream import FakeUpstream, Reply
from operations.serve_process import ServeProcess

USER = [{"role": "user", "content": "count"}]
WORDS = [f"w{i} " for i in range(12)]


@pytest.mark.parametrize(("timeout", "finishes"), [(20.0, True), (0.3, False)])
def test_a_stream_in_flight_finishes_after_sigterm(tmp_path: Path, fake: FakeUpstream, timeout: float, finishes: bool) -> None:
    fake.enqueue(Reply(chunk_tokens=list(WORDS), chunk_delay=0.25))  # about 3 s of stream
    with ServeProcess(tmp_path, fake.base_url, server={"shutdown_timeout_seconds": timeout}) as relay:
        relay.wait_ready()
        client = openai.OpenAI(base_url=relay.base_url, api_key="sk-none", max_retries=0)
        lines: list[str] = []
        exit_code: list[int] = []
        stopper = threading.Thread(target=lambda: exit_code.append(relay.terminate()))
        cut = False
        with client.chat.completions.with_streaming_response.create(model="fake-model", messages=USER, stream=True) as stream:  # type: ignore[arg-type]
            request_id = stream.headers["x-request-id"]
            try:
                for line in stream.iter_lines():
                    lines.append(line)
                    if len(lines) == 2:  # the stream is under way: stop the server now
                        stopper.start()
                        time.sleep(0.3)
                        # Shutting down: no new connection is served.
                        with pytest.raises(httpx.HTTPError):
                            httpx.get(relay.root_url + "/health", timeout=2.0)
            except Exception:  # noqa: BLE001 - the connection cut under the reader (an httpx2 error inside the SDK)
                cut = True
        stopper.join(30)
        text = relay.log_text()
    data = [line for line in lines if line.startswith("data: ")]
    if finishes:
        assert not cut and data[-1] == "data: [DONE]", lines
        content = "".join(chunk.split('"content":"', 1)[1].split('"', 1)[0] for chunk in data if '"content":"' in chunk)
        assert content == "".join(WORDS)
        assert "POST /v1/chat/completions 200 " in text and request_id in text
    else:
        # Past the timeout the stream is cut: the test above can tell the difference.
        assert cut and "data: [DONE]" not in data
    assert exit_code, "toolrelay did not exit"


def test_tls_with_a_self_signed_certificate_through_the_openai_sdk(tmp_path: Path, fake: FakeUpstream) -> None:
    pytest.importorskip("cryptography")
    cert, key = self_signed_certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    fake.enqueue(Reply(content="over TLS"), Reply(content="streamed over TLS"))
    with ServeProcess(tmp_path, fake.base_url, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as relay:
        assert relay.base_url.startswith("https://")
        relay.wait_ready(verify=trust)
        with httpx.Client(verify=trust) as http:
            client = openai.OpenAI(base_url=relay.base_url, api_key="sk-none", max_retries=0, http_client=http)
            answer = client.chat.completions.create(model="fake-model", messages=USER)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == "over TLS"
            stream = client.chat.completions.create(model="fake-model", messages=USER, stream=True)  # type: ignore[arg-type]
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed over TLS"
        # The certificate is checked: a client that does not trust it is refused.
        with pytest.raises(httpx.ConnectError):
            httpx.get(relay.root_url + "/health")
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises(httpx.HTTPError):
            httpx.get(relay.root_url.replace("https://", "http://") + "/health", timeout=5.0)
