"""Operator subcommands (keys, usage); filled in by the auth module."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    return None
