"""Stored responses and paused agent runs behave alike on SQLite and PostgreSQL (the same test functions).

Plus what only PostgreSQL has: several hosts' stores on one database (a save
on one is read on the other; concurrent batches from two hosts neither
deadlock nor miscount), and background rows owned by (host, pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fakes.stores import BACKENDS, StoreMaker, scalar
from toolrelay.app.responses.store import StoredResponse

CRASH = {"code": "server_error", "message": "gone"}


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    maker = StoreMaker(request, request.param, tmp_path)
    yield maker
    maker.close()


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    maker = StoreMaker(request, "postgres", tmp_path)
    yield maker
    maker.close()


def _stored(response_id: str, created: int, item_id: str, status: str = "completed") -> StoredResponse:
    output = [{"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": item_id}]}]
    response = {"id": response_id, "object": "response", "created_at": created, "status": status, "output": output}
    return StoredResponse(response, [{"id": f"in_{item_id}", "type": "message", "content": "q\u0000uestion"}], [{"role": "user", "content": "q"}])


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


# ---------------------------------------------------------------------- responses, both backends


def test_a_saved_response_reads_back_exactly_and_only_in_its_scope(stores: StoreMaker) -> None:
    store = stores.responses()
    now = int(time.time())
    stored = _stored("resp_1", now, "msg_1")
    anyio.run(store.save, "k:a", stored)
    assert anyio.run(store.get, "k:a", "resp_1") == stored  # a NUL in a string survives (JSONB would refuse it)
    assert anyio.run(store.get, "k:b", "resp_1") is None
    assert anyio.run(store.delete, "k:b", "resp_1") is False
    assert anyio.run(store.delete, "k:a", "resp_1") is True
    assert anyio.run(store.get, "k:a", "resp_1") is None


def test_the_item_index_follows_saves_deletes_and_evictions(stores: StoreMaker) -> None:
    store = stores.responses(max_per_key=2)
    now = int(time.time())
    for i in range(2):
        store._save("k:a", _stored(f"resp_{i}", now + i, f"msg_{i}"))
    found = store._find_items("k:a", ["msg_0", "in_msg_1", "msg_9", "msg_0"])
    assert sorted(found) == ["in_msg_1", "msg_0"] and found["msg_0"]["content"][0]["text"] == "msg_0"
    assert store._find_items("k:b", ["msg_0"]) == {}  # another key's item is not found
    store._save("k:a", _stored("resp_2", now + 2, "msg_2"))  # evicts resp_0 and its items
    assert store._find_items("k:a", ["msg_0", "in_msg_0"]) == {}
    store._delete("k:a", "resp_1")
    assert store._find_items("k:a", ["msg_1"]) == {} and sorted(store._find_items("k:a", ["msg_2"])) == ["msg_2"]
    # Saving a response again (a background run's later states) counts it once.
    store._save("k:a", _stored("resp_2", now + 2, "msg_2"))
    assert scalar(store, "SELECT count FROM response_totals WHERE scope = 'k:a'") == 1
    assert scalar(store, "SELECT bytes FROM response_totals WHERE scope = 'k:a'") == scalar(store, "SELECT SUM(size) FROM responses WHERE scope = 'k:a'")


def test_expired_responses_and_their_items_are_gone(stores: StoreMaker) -> None:
    store = stores.responses(retention_days=1)
    old = int(time.time()) - 2 * 86400
    store._save("k:a", _stored("resp_old", old, "msg_old"))  # the save's sweep deletes it at once
    assert store._get("k:a", "resp_old") is None and store._find_items("k:a", ["msg_old"]) == {}
    assert scalar(store, "SELECT count(*) FROM responses") == 0


def test_rows_of_dead_processes_fail_and_live_ones_stay(stores: StoreMaker) -> None:
    store = stores.responses()
    now = int(time.time())
    store._save("local", _stored("resp_dead", now, "m1", "in_progress"), _dead_pid())
    store._save("local", _stored("resp_live", now, "m2", "in_progress"), os.getppid())  # pytest's parent: alive
    assert anyio.run(store.fail_abandoned, CRASH) == 1
    dead = store._get("local", "resp_dead").response
    assert dead["status"] == "failed" and dead["error"] == CRASH
    assert store._get("local", "resp_live").response["status"] == "in_progress"
    assert anyio.run(store.fail_abandoned, CRASH) == 0  # failed once


# ---------------------------------------------------------------------- responses, several hosts on PostgreSQL


def test_another_hosts_store_reads_what_one_saved(pg: StoreMaker) -> None:
    host_a, host_b = pg.responses(host="a"), pg.responses(host="b")
    stored = _stored("resp_1", int(time.time()), "msg_1")
    anyio.run(host_a.save, "k:a", stored)
    assert anyio.run(host_b.get, "k:a", "resp_1") == stored
    assert sorted(anyio.run(host_b.find_items, "k:a", ["msg_1"])) == ["msg_1"]


def test_two_hosts_saving_at_once_keep_the_caps_and_the_totals(pg: StoreMaker) -> None:
    """Batches from two hosts over the same keys (rows in opposite orders) neither deadlock nor miscount."""
    hosts = [pg.responses(host="a", max_per_key=30), pg.responses(host="b", max_per_key=30)]
    now = int(time.time())
    errors: list[BaseException] = []

    def host(n: int) -> None:
        try:
            for batch in range(10):
                rows = [(f"k:{s}", _stored(f"resp_{n}_{batch}_{s}", now + batch, f"m_{n}_{batch}_{s}"), None) for s in "abcd"]
                hosts[n]._save_all(rows if n == 0 else rows[::-1])
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for scope in "abcd":
        assert scalar(hosts[0], f"SELECT count FROM response_totals WHERE scope = 'k:{scope}'") == 20
    hosts[0]._save("k:a", _stored("resp_more", now + 99, "m_more"))
    assert scalar(hosts[0], "SELECT count(*) FROM responses WHERE scope = 'k:a'") == 21  # within the cap of 30: nothing evicted yet
    for i in range(15):
        hosts[1]._save("k:a", _stored(f"resp_late_{i}", now + 100 + i, f"m_late_{i}"))
    assert scalar(hosts[0], "SELECT count(*) FROM responses WHERE scope = 'k:a'") == 30
    assert scalar(hosts[0], "SELECT count FROM response_totals WHERE scope = 'k:a'") == 30
    assert hosts[0]._get("k:a", "resp_0_0_a") is None and hosts[0]._get("k:a", "resp_late_14") is not None  # the oldest went


def test_a_host_fails_only_its_own_dead_rows_and_those_of_silent_hosts(pg: StoreMaker) -> None:
    host_a = pg.responses(host="a")
    host_b = pg.responses(host="b")  # heartbeating (it just opened)
    now = int(time.time())
    dead = _dead_pid()
    host_b._save("local", _stored("resp_b_live_host", now, "m1", "in_progress"), dead)  # b's pid: only b may judge it
    host_a._save("local", _stored("resp_a_dead", now, "m2", "in_progress"), dead)
    pg.responses(host="c")._save("local", _stored("resp_c_silent", now, "m3", "in_progress"), os.getpid())
    with host_a._pool.connection() as conn:
        conn.execute("UPDATE response_hosts SET seen_at = now() - interval '5 minutes' WHERE host = 'c'")
    assert anyio.run(host_a.fail_abandoned, CRASH) == 2
    statuses = {rid: host_a._get("local", rid).response["status"] for rid in ("resp_b_live_host", "resp_a_dead", "resp_c_silent")}
    assert statuses == {"resp_b_live_host": "in_progress", "resp_a_dead": "failed", "resp_c_silent": "failed"}
    # Host b, restarting, judges its own pid.
    assert anyio.run(pg.responses(host="b").fail_abandoned, CRASH) == 1


# ---------------------------------------------------------------------- continuations, both backends


def _save(store: Any, run_key: str, scope: str, call_ids: list[str], text: str, ttl: float = 60.0) -> None:
    anyio.run(store.save, run_key, scope, call_ids, [{"role": "assistant", "content": text}], {"model": "m"}, ttl)


def test_a_paused_run_is_found_by_any_of_its_call_ids_in_its_scope_only(stores: StoreMaker) -> None:
    store = stores.continuations()
    _save(store, "run_a", "key:a|user:x", ["call_1", "call_2"], "alice")
    _save(store, "run_b", "key:a|user:y", ["call_1"], "bob")  # the same call id in another scope overwrites nothing
    found = anyio.run(store.find, "key:a|user:x", ["call_9", "call_2"])
    assert found is not None and found.run_key == "run_a" and found.messages == [{"role": "assistant", "content": "alice"}] and found.meta == {"model": "m"}
    other = anyio.run(store.find, "key:a|user:y", ["call_1"])
    assert other is not None and other.messages[0]["content"] == "bob"
    assert anyio.run(store.find, "key:a|user:z", ["call_1", "call_2"]) is None
    assert anyio.run(store.find, "key:a|user:x", []) is None


def test_an_expired_run_is_not_restored(stores: StoreMaker) -> None:
    store = stores.continuations()
    _save(store, "run_a", "s", ["call_1"], "old", ttl=-1)
    assert anyio.run(store.find, "s", ["call_1"]) is None
    _save(store, "run_a", "s", ["call_1"], "new")  # saved again: found again
    found = anyio.run(store.find, "s", ["call_1"])
    assert found is not None and found.messages[0]["content"] == "new"


def test_a_run_paused_through_one_host_resumes_through_another(pg: StoreMaker) -> None:
    host_a, host_b = pg.continuations(), pg.continuations()
    _save(host_a, "run_a", "s", ["call_1"], "hidden step")
    found = anyio.run(host_b.find, "s", ["call_1"])
    assert found is not None and found.messages[0]["content"] == "hidden step"
