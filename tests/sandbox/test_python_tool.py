"""The built-in ``python`` tool on top of the sandbox."""

from __future__ import annotations

import jsonschema
import pytest

from toolrelay.tools.base import Tool, ToolContext, tool_schema
from toolrelay.tools.python import PythonTool
from toolrelay.tools.sandbox import DisabledSandbox

from .helpers import BACKENDS, TEST_SETTINGS, make_sandbox

CTX = ToolContext(scope="test")


@pytest.fixture(scope="module")
def tool():
    # One backend is enough here: the escape suite covers each of them.
    for name in BACKENDS:
        try:
            sandbox = make_sandbox(name)
        except pytest.skip.Exception:
            continue
        yield PythonTool(sandbox, max_output_chars=2000)
        from .helpers import discard

        discard(sandbox)
        return
    pytest.skip("no sandbox backend on this host")


def test_follows_the_tool_protocol(tool):
    assert isinstance(tool, Tool)
    assert tool.name == "python"
    assert tool.parameters == {
        "type": "object",
        "properties": {"code": {"type": "string", "description": tool.parameters["properties"]["code"]["description"]}},
        "required": ["code"],
        "additionalProperties": False,
    }
    assert tool.timeout > TEST_SETTINGS.wall_seconds
    schema = tool_schema(tool)
    assert schema["function"]["name"] == "python"
    validator = jsonschema.Draft202012Validator(tool.parameters)
    assert validator.is_valid({"code": "print(1)"})
    for bad in ({}, {"code": 1}, {"code": "x", "extra": True}):
        assert not validator.is_valid(bad)


def test_description_tells_the_model_the_rules(tool):
    text = tool.description.lower()
    wall = f"{TEST_SETTINGS.wall_seconds:g} s"
    for phrase in ("standard library", "no network", "do not persist", "expression", wall):
        assert phrase in text, phrase


async def test_print_and_value(tool):
    result = await tool.run({"code": "print('hi')\n6 * 7"}, CTX)
    assert not result.is_error
    assert result.content == "stdout:\nhi\n\nvalue: 42"
    assert set(result.data) == {"backend", "exit_code", "limit", "duration_ms"}
    assert result.data["backend"] == tool.sandbox.backend_name
    assert result.data["exit_code"] == 0 and result.data["limit"] is None


async def test_exception_is_an_error_with_traceback(tool):
    result = await tool.run({"code": "print('partial')\n{}['missing']"}, CTX)
    assert result.is_error
    assert "stdout:\npartial" in result.content
    assert "KeyError: 'missing'" in result.content
    assert result.data["exit_code"] == 1


async def test_limit_is_reported_and_content_bounded(tool):
    result = await tool.run({"code": "print('y' * 5_000_000)"}, CTX)
    assert result.is_error
    assert result.data["limit"] == "output"
    assert "stopped: the output limit" in result.content
    assert "characters omitted" in result.content
    assert len(result.content) < tool.max_output_chars + 500


async def test_no_output(tool):
    result = await tool.run({"code": "x = 1"}, CTX)
    assert not result.is_error
    assert "no output" in result.content


async def test_nonzero_exit_is_an_error(tool):
    result = await tool.run({"code": "import sys\nsys.exit(4)"}, CTX)
    assert result.is_error and "exit code: 4" in result.content


async def test_empty_code_is_refused(tool):
    result = await tool.run({"code": "   "}, CTX)
    assert result.is_error and "non-empty" in result.content


async def test_disabled_tool():
    tool = PythonTool(DisabledSandbox("no bubblewrap here"))
    assert "disabled" in tool.description and "no bubblewrap here" in tool.description
    result = await tool.run({"code": "print(1)"}, CTX)
    assert result.is_error
    assert result.content == "error: code execution is unavailable on this host: no bubblewrap here"
