"""The Agents SDK snippet of docs/mcp.md, run: an Agent with toolrelay's /mcp as its MCP server.

The Agent's model is a plain model on the same toolrelay (the fake upstream,
scripted to call the MCP tool); the SDK lists toolrelay's tools over /mcp,
runs the model's ``python`` call there (in the real sandbox, under the key)
and sends the result back to the model. Tracing is off: it would upload to
api.openai.com.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import agents
import openai
import pytest
from agents.mcp import MCPServerStreamableHttp
from agents.models import _openai_shared as shared  # the SDK keeps its defaults as module globals

from fakes.admin import Admin
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply


@pytest.fixture
async def sdk_client(mcp_relay: RunningServer, admin: Admin) -> AsyncIterator[tuple[openai.AsyncOpenAI, str]]:
    _, key = admin.create_key("agents-sdk")
    saved = shared.get_default_openai_client()
    client = openai.AsyncOpenAI(base_url=mcp_relay.base_url, api_key=key, max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_tracing_disabled(True)
    try:
        yield client, key
    finally:
        shared.set_default_openai_client(saved)
        await client.close()


async def test_agents_sdk_uses_toolrelay_as_its_mcp_server(
    mcp_relay: RunningServer, admin: Admin, fake: FakeUpstream, sdk_client: tuple[openai.AsyncOpenAI, str]
) -> None:
    _, key = sdk_client
    fake.enqueue(
        Reply(tool_calls=[{"id": "call_py", "name": "python", "arguments": {"code": "print(2**100)"}}]),
        Reply(content="2**100 is 1267650600228229401496703205376."),
    )
    async with MCPServerStreamableHttp(
        params={"url": mcp_relay.url("/mcp"), "headers": {"Authorization": f"Bearer {key}"}},
        name="toolrelay",
        client_session_timeout_seconds=60,
    ) as toolrelay:
        listed = {tool.name for tool in await toolrelay.list_tools()}
        assert {"python", "memory_save", "memory_search", "current_time"} <= listed
        agent = agents.Agent(name="assistant", model="fake-model", mcp_servers=[toolrelay])
        result = await agents.Runner.run(agent, "What is 2**100? Use python.")
    assert result.final_output == "2**100 is 1267650600228229401496703205376."
    # The model saw the tools from /mcp, and the sandbox's output came back to it as the call's result.
    first, second = fake.chat_requests[-2:]
    assert "python" in {tool["function"]["name"] for tool in first.body["tools"]}
    tool_results = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert tool_results and "1267650600228229401496703205376" in str(tool_results[0]["content"])
