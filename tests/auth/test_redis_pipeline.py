"""The limit backend's pipelined Redis connection (app/auth/redis_pipeline.py) against a real redis-server.

Every request's admission and settlement share one socket, so the cases are
about what sharing could break: replies matched to the right caller, one
command's error or a cancelled caller leaving the others untouched, a lost or
silent connection failing what was on it and the next command reconnecting,
scripts Redis forgot, and the URL's user, password and database.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from toolrelay.app.auth.redis_pipeline import LuaScript, PipelinedRedis

_ECHO_KEYS = LuaScript("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")


def _client(url: str, **overrides: float) -> PipelinedRedis:
    return PipelinedRedis(url, socket_timeout=overrides.get("socket_timeout", 2.0), connect_timeout=overrides.get("connect_timeout", 2.0))


def _name() -> str:
    return f"pipe:{uuid.uuid4().hex[:10]}"


async def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    client = _client(redis_url)
    base = _name()
    try:
        replies = await asyncio.gather(*(client.script(_ECHO_KEYS, [f"{base}:{i % 7}"], [f"v{i}"]) for i in range(600)))
    finally:
        await client.close()
    for i, (key, value, _) in enumerate(replies):
        assert (key, value) == (f"{base}:{i % 7}".encode(), f"v{i}".encode())
    # Every INCR ran once: per key, the counts seen are exactly 1..n.
    for k in range(7):
        counts = sorted(count for key, _, count in replies if key == f"{base}:{k}".encode())
        assert counts == list(range(1, len(counts) + 1))


async def test_an_error_reply_fails_only_its_own_command(redis_url: str) -> None:
    client = _client(redis_url)
    key = _name()
    try:
        results = await asyncio.gather(
            client.execute("SET", key, "text"),
            client.execute("INCR", key),  # not an integer: an error reply for this caller alone
            client.execute("GET", key),
            return_exceptions=True,
        )
    finally:
        await client.close()
    assert results[0] == b"OK"
    assert isinstance(results[1], ResponseError)
    assert results[2] == b"text"


async def test_a_script_redis_forgot_is_sent_again_in_full(redis_url: str) -> None:
    client = _client(redis_url)
    plain = redis.Redis.from_url(redis_url)
    key = _name()
    try:
        assert (await client.script(_ECHO_KEYS, [key], ["a"]))[2] == 1
        plain.script_flush()
        assert plain.script_exists(_ECHO_KEYS.sha) == [False]
        assert (await client.script(_ECHO_KEYS, [key], ["b"]))[2] == 2
        assert plain.script_exists(_ECHO_KEYS.sha) == [True]  # EVAL cached it again: the next call is an EVALSHA
    finally:
        await client.close()
        plain.close()


async def test_a_killed_connection_fails_what_was_on_it_and_the_next_command_reconnects(redis_url: str) -> None:
    client = _client(redis_url)
    plain = redis.Redis.from_url(redis_url)
    key = _name()
    try:
        connection_id = await client.execute("CLIENT", "ID")
        # A command waiting on the server when its connection goes away.
        waiting = asyncio.ensure_future(client.execute("BLPOP", key, 5))
        await asyncio.sleep(0.1)
        assert plain.client_kill_filter(_id=connection_id) == 1
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await client.execute("ECHO", "again") == b"again"
    finally:
        await client.close()
        plain.close()


async def test_a_silent_server_times_out_and_the_next_command_gets_a_fresh_connection(redis_url: str) -> None:
    client = _client(redis_url, socket_timeout=0.3)
    key = _name()
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.execute("BLPOP", key, 2)  # Redis answers after 2 s; the client waits 0.3 s
        assert time.monotonic() - started < 1.5
        # The late reply belongs to the closed connection: it cannot be taken for this command's.
        assert await client.execute("ECHO", "fresh") == b"fresh"
    finally:
        await client.close()


async def test_a_cancelled_caller_leaves_the_replies_in_step(redis_url: str) -> None:
    client = _client(redis_url)
    key = _name()
    try:
        waiting = asyncio.ensure_future(client.execute("BLPOP", key, 0.3))
        await asyncio.sleep(0.05)
        waiting.cancel()
        # Sent behind the BLPOP: its reply comes after the BLPOP's, which nobody reads any more.
        assert await client.execute("ECHO", "mine") == b"mine"
    finally:
        await client.close()


async def test_user_password_and_database_from_the_url(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    plain.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    address = redis_url.removeprefix("redis://").rsplit("/", 1)[0]
    key = _name()
    client = _client(f"redis://{user}:{password}@{address}/3")
    wrong = _client(f"redis://{user}:not-{password}@{address}/3")
    try:
        assert await client.execute("SET", key, "in-db-3") == b"OK"
        assert redis.Redis.from_url(f"redis://{address}/3").get(key) == b"in-db-3"
        assert plain.get(key) is None  # database 0 does not hold it
        with pytest.raises((ResponseError, RedisConnectionError)):
            await wrong.execute("GET", key)
    finally:
        await client.close()
        await wrong.close()
        plain.acl_deluser(user)
        plain.close()


def test_tls_urls_are_left_to_redis_py() -> None:
    # app/auth/redis_backend.py sends rediss:// through redis-py's client instead.
    with pytest.raises(ValueError, match="TLS"):
        _client("rediss://127.0.0.1:6379/0")


async def test_an_unreachable_server_is_a_connection_error(dead_port: int) -> None:
    client = _client(f"redis://127.0.0.1:{dead_port}/0", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    assert time.monotonic() - started < 2
    await client.close()


async def test_the_redis_py_link_for_tls_urls_runs_scripts_the_same_way(redis_url: str) -> None:
    # rediss:// cannot be served here; the link is the same redis-py client over plain TCP.
    from toolrelay.app.auth.redis_backend import _RedisPyLink  # pyright: ignore[reportPrivateUsage]

    link = _RedisPyLink(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    plain = redis.Redis.from_url(redis_url)
    key = _name()
    try:
        assert await link.script(_ECHO_KEYS, [key], ["a"]) == [key.encode(), b"a", 1]
        plain.script_flush()
        assert (await link.script(_ECHO_KEYS, [key], ["b"]))[2] == 2
        assert await link.execute("GET", key) == b"2"
    finally:
        await link.close()
        plain.close()
