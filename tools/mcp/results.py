"""An MCP ``CallToolResult`` as the model reads it (a :class:`ToolResult`).

Chat Completions ``tool`` messages carry text only, so text parts are joined,
``structuredContent`` is sent as JSON when the server sent no text, and
binary parts (images, audio, blobs) become a one-line placeholder naming
their type and size, with the details in the step record's ``data``. A result
with ``isError`` is an error result the model may recover from, as for a
built-in tool.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import mcp_types as types
import orjson

from toolrelay.tools.base import ToolResult

__all__ = ["tool_result"]


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return 0


def _binary(kind: str, mime_type: str, data: str, parts: list[dict[str, Any]]) -> str:
    size = _decoded_size(data)
    parts.append({"type": kind, "mime_type": mime_type, "bytes": size})
    return f"[{kind}: {mime_type}, {size} bytes; not readable as text]"


def tool_result(result: types.CallToolResult) -> ToolResult:
    texts: list[str] = []
    binaries: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, types.TextContent):
            texts.append(part.text)
        elif isinstance(part, types.ImageContent):
            texts.append(_binary("image", part.mime_type, part.data, binaries))
        elif isinstance(part, types.AudioContent):
            texts.append(_binary("audio", part.mime_type, part.data, binaries))
        elif isinstance(part, types.ResourceLink):
            texts.append(f"[resource: {part.uri}" + (f" ({part.name})" if part.name else "") + "]")
        elif isinstance(part, types.EmbeddedResource):
            resource = part.resource
            if isinstance(resource, types.TextResourceContents):
                texts.append(resource.text)
            else:
                texts.append(_binary("resource", resource.mime_type or "application/octet-stream", resource.blob, binaries))
    has_text = any(isinstance(part, types.TextContent) for part in result.content)
    if result.structured_content is not None and not has_text:
        texts.append(orjson.dumps(result.structured_content, default=str).decode())
    content = "\n".join(texts)
    data: dict[str, Any] | None = {"content": binaries} if binaries else None
    if result.is_error:
        return ToolResult(content=f"error: {content or 'the tool reported an error'}", is_error=True, data=data)
    return ToolResult(content=content, data=data)
