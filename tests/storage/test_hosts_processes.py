"""Two real ``toolrelay serve`` processes on one PostgreSQL database: started at once, one killed with SIGKILL under load.

What only separate processes show: both migrating an empty database at the
same moment (the advisory lock, not a shared interpreter, keeps them apart),
and a host dying without its shutdown (no final ledger flush), which may lose
only the rows of requests that completed within its last flush interval.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psycopg
from operations.serve_process import ServeProcess

from fakes.admin import ADMIN_KEY
from fakes.upstream import FakeUpstream

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
FLUSH_SECONDS = 0.25  # the documented default of [auth] ledger_flush_seconds: the crash window
# What one batch takes to reach the database on a loaded 2-core machine, on top of the interval.
WRITE_SLACK_SECONDS = 0.5


def _host(tmp: Path, fake: FakeUpstream, name: str, url: str) -> ServeProcess:
    (tmp / name).mkdir(exist_ok=True)
    return ServeProcess(
        tmp / name,
        fake.base_url,
        auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": FLUSH_SECONDS},
        database={"url": url, "host_name": name, "connect_timeout_seconds": 2.0},
    )


@dataclass
class _Load:
    """Requests sent back to back to one host until stopped: each answered request's id and when it completed."""

    host: ServeProcess
    key: str
    completed: dict[str, float] = field(default_factory=dict)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.host.root_url, headers={"authorization": f"Bearer {self.key}"}, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    response = http.post("/v1/chat/completions", json=CHAT)
                except httpx.HTTPError:
                    self.failures += 1
                    time.sleep(0.02)
                    continue
                if response.status_code == 200:
                    self.completed[response.headers["x-request-id"]] = time.monotonic()
                else:
                    self.failures += 1


def _ledger_ids(url: str, host: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM usage WHERE host = %s", (host,))}


def test_two_hosts_started_at_once_then_one_killed_under_load(tmp_path: Path, fake: FakeUpstream, postgres_url: str) -> None:
    # Both processes start on an empty database at the same moment: one migrates, the other waits on the lock.
    a, b = _host(tmp_path, fake, "a", postgres_url), _host(tmp_path, fake, "b", postgres_url)
    with a, b:
        a.wait_ready()
        b.wait_ready()
        with psycopg.connect(postgres_url) as conn:
            schemas = dict(conn.execute("SELECT name, version FROM toolrelay_schema").fetchall())
        assert schemas["keys"] >= 1 and schemas["ledger"] >= 1
        created = httpx.post(a.root_url + "/admin/keys", json={"name": "load"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert created.status_code == 200, created.text
        key = created.json()["value"]

        loads = [_Load(a, key), _Load(b, key)]
        threads = [threading.Thread(target=load.run, daemon=True) for load in loads]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        a.kill()  # SIGKILL: no shutdown, no final flush
        time.sleep(1.0)
        loads[0].stop.set()
        served_during = sum(1 for t in loads[1].completed.values() if t > killed_at)
        loads[1].stop.set()
        for thread in threads:
            thread.join(15)
        # The other host kept answering while A was dead.
        assert served_during >= 5, served_during
        with openai.OpenAI(base_url=b.base_url, api_key=key, max_retries=0) as client:
            assert client.chat.completions.create(**CHAT).choices[0].message.content

        on_a = loads[0].completed
        assert len(on_a) >= 10, "A served too little before the kill to say anything"
        # A restarted host (same name, same data directory) serves again; its earlier rows are intact.
        with _host(tmp_path, fake, "a", postgres_url) as again:
            again.wait_ready()
            with openai.OpenAI(base_url=again.base_url, api_key=key, max_retries=0) as client:
                assert client.chat.completions.create(**CHAT).choices[0].message.content

        rows_a = _ledger_ids(postgres_url, "a")
        lost = {rid: t for rid, t in on_a.items() if rid not in rows_a}
        window = FLUSH_SECONDS + WRITE_SLACK_SECONDS
        # Only requests that completed within the last flush window before the kill may be missing.
        assert all(t >= killed_at - window for t in lost.values()), sorted(killed_at - t for t in lost.values())
        assert len(lost) < len(on_a) / 2
        print(f"A answered {len(on_a)}, lost {len(lost)}; B answered {served_during} while A was dead")
        # B was never killed: after its clean shutdown every request it answered is in the ledger.
        b.terminate()  # SIGTERM: the graceful shutdown writes what is left
        rows_b = _ledger_ids(postgres_url, "b")
        assert set(loads[1].completed) <= rows_b
