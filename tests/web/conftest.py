from __future__ import annotations

from collections.abc import Iterator

import pytest
from web_test_servers import LocalServer

from toolrelay.tools.base import ToolContext


@pytest.fixture
def ctx() -> ToolContext:
    return ToolContext(scope="test", request_id="req-web")


@pytest.fixture
def site() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server
