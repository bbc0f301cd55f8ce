"""Pure parts of the MCP client: tool names, schema bounds, result translation, settings, and their documentation."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.settings import McpServerSettings, McpSettings
from toolrelay.tools.mcp.names import MAX_NAME_CHARS, tool_name
from toolrelay.tools.mcp.results import MAX_IMAGE_BYTES, MAX_IMAGES, tool_result
from toolrelay.tools.mcp.schema import SchemaLimits, bounded_parameters

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REPO = Path(__file__).resolve().parents[2]


@given(st.lists(st.tuples(st.text(max_size=80), st.text(max_size=120)), max_size=30))
def test_names_are_valid_openai_function_names_and_unique(pairs: list[tuple[str, str]]) -> None:
    taken: list[str] = ["current_time", "python"]
    for server, tool in pairs:
        name = tool_name(server, tool, taken)
        assert OPENAI_NAME.fullmatch(name), name
        assert name not in taken
        taken.append(name)


@pytest.mark.parametrize(
    ("server", "tool", "taken", "expected"),
    [
        ("files", "read", [], "files__read"),
        ("my.server", "read file", [], "my_server__read_file"),
        ("files", "read", ["files__read"], None),  # collision: a digest suffix
        ("s" * 70, "t", [], None),  # too long: cut, with a digest
    ],
)
def test_name_table(server: str, tool: str, taken: list[str], expected: str | None) -> None:
    name = tool_name(server, tool, taken)
    if expected is not None:
        assert name == expected
    else:
        assert len(name) <= MAX_NAME_CHARS and name not in taken and OPENAI_NAME.fullmatch(name)


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


LIMITS = SchemaLimits(max_bytes=2000, max_depth=12)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, None),
        ({}, None),  # no schema: an object with no declared properties
        ("nope", "not an object"),
        ({"type": "array"}, "does not describe an object"),
        ({"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 50} for i in range(40)}}, "bytes"),
        (_nested(10), "nested deeper"),
        ({"type": "object", "properties": {"a": {"type": 12}}}, "invalid"),
    ],
)
def test_schema_bounds(schema: Any, problem: str | None) -> None:
    parameters, why = bounded_parameters(schema, LIMITS)
    if problem is None:
        assert why is None and parameters is not None and parameters["type"] == "object"
    else:
        assert parameters is None and why is not None and problem in why


@pytest.mark.parametrize(
    ("result", "content", "is_error", "data"),
    [
        (types.CallToolResult(content=[types.TextContent(type="text", text="a"), types.TextContent(type="text", text="b")]), "a\nb", False, None),
        (types.CallToolResult(content=[], structured_content={"x": 1}), '{"x":1}', False, None),
        (types.CallToolResult(content=[types.TextContent(type="text", text="t")], structured_content={"x": 1}), "t", False, None),
        (types.CallToolResult(content=[types.TextContent(type="text", text="bad")], is_error=True), "error: bad", True, None),
        (types.CallToolResult(content=[], is_error=True), "error: the tool reported an error", True, None),
        (
            types.CallToolResult(content=[types.ImageContent(type="image", data="AAAA", mime_type="image/tiff")]),
            "[image: image/tiff, 3 bytes; not readable as text]",
            False,
            {"content": [{"type": "image", "mime_type": "image/tiff", "bytes": 3}]},
        ),
        (types.CallToolResult(content=[types.ResourceLink(type="resource_link", uri="file:///a", name="a")]), "[resource: file:///a (a)]", False, None),
    ],
)
def test_results_as_the_model_reads_them(result: types.CallToolResult, content: str, is_error: bool, data: Any) -> None:
    translated = tool_result(result)
    assert (translated.content, translated.is_error, translated.data) == (content, is_error, data)
    assert translated.images == ()


def _png(size: int) -> types.ImageContent:
    return types.ImageContent(type="image", data=base64.b64encode(b"\x89PNG" + b"x" * (size - 4)).decode(), mime_type="image/png")


def test_viewable_images_are_handed_to_the_model_within_bounds() -> None:
    shown = tool_result(types.CallToolResult(content=[_png(10) for _ in range(MAX_IMAGES + 2)]))
    assert len(shown.images) == MAX_IMAGES and all(url.startswith("data:image/png;base64,") for url in shown.images)
    assert shown.content.count("attached below for you to view") == MAX_IMAGES
    assert shown.content.count("not readable as text") == 2  # beyond the count: only described
    too_big = tool_result(types.CallToolResult(content=[_png(MAX_IMAGE_BYTES + 1)]))
    assert too_big.images == () and "not readable as text" in too_big.content
    described = tool_result(types.CallToolResult(content=[_png(10)]), images_to_model=False)
    assert described.images == () and described.content == "[image: image/png, 10 bytes; not readable as text]"
    failed = tool_result(types.CallToolResult(content=[_png(10)], is_error=True))
    assert failed.images == () and failed.is_error


@pytest.mark.parametrize(
    "fields",
    [{}, {"command": ["x"], "url": "http://h/mcp"}, {"url": "ftp://h/mcp"}],
)
def test_a_server_needs_exactly_one_transport(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="mcp server"):
        McpServerSettings(**fields)


def _table_keys(heading: str) -> set[str]:
    text = (REPO / "docs" / "configuration.md").read_text()
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append(line.split("`")[1])
    return set(rows)


def test_configuration_doc_lists_exactly_the_mcp_settings() -> None:
    assert _table_keys("## `[mcp]`") == set(McpSettings.__struct_fields__)
    assert _table_keys("### `[mcp.servers.<name>]`") == set(McpServerSettings.__struct_fields__)
