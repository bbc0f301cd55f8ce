"""Test doubles that speak real HTTP on 127.0.0.1, and the helpers every suite shares.

- :mod:`fakes.upstream`: :class:`~fakes.upstream.FakeUpstream`, a scripted
  OpenAI Chat Completions server, and :class:`~fakes.upstream.Reply`.
- :mod:`fakes.server`: :func:`~fakes.server.run_toolrelay`, the real toolrelay
  app under uvicorn in a background thread, and TOML helpers.
- :mod:`fakes.relays`: the suites' settings trees and :class:`~fakes.relays.RelayPool`.
- :mod:`fakes.admin`: :class:`~fakes.admin.Admin`, keys and ledger over the admin API.
- :mod:`fakes.clients`: OpenAI SDK and httpx clients on a relay.
- :mod:`fakes.sse`: reading Server-Sent Events the way a strict client does.
- :mod:`fakes.redis`: a real ``redis-server`` for the shared-state backends.
- :mod:`fakes.waiting`: polling an observable condition with a deadline.
"""
