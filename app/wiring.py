"""Plug the optional subsystems (agent loop, built-in tools, admin API) into the services."""

from __future__ import annotations

from typing import Any

from app.services import Services


def extend_services(services: Services) -> list[Any]:
    """Attach subsystems to ``services`` and return their extra route handlers."""
    return []
