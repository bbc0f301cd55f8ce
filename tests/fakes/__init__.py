"""Test doubles that speak real HTTP on 127.0.0.1.

- :mod:`fakes.upstream`: :class:`~fakes.upstream.FakeUpstream`, a scripted
  OpenAI Chat Completions server, and :class:`~fakes.upstream.Reply`.
- :mod:`fakes.server`: :func:`~fakes.server.run_toolrelay`, the real toolrelay
  app under uvicorn in a background thread, and TOML helpers.
"""
