"""An MCP ``CallToolResult`` as the model reads it (a :class:`ToolResult`).

Chat Completions ``tool`` messages carry text only, so text parts are joined,
``structuredContent`` is sent as JSON when the server sent no text, and
binary parts (images, audio, blobs) become a one-line placeholder naming
their type and size, with the details in the step record's ``data``. Images
the model can view (PNG, JPEG, GIF, WebP, at most :data:`MAX_IMAGES` of at
most :data:`MAX_IMAGE_BYTES` each) are also handed over as ``data:`` URLs,
unless the server is set to ``image_results = "text"``. A result
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

__all__ = ["MAX_IMAGES", "MAX_IMAGE_BYTES", "tool_result"]

#: Images of one result shown to the model; more are only described.
MAX_IMAGES = 4
#: Decoded bytes of one image shown to the model (a vision model's own limits are near this).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_VIEWABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return 0


def _binary(kind: str, mime_type: str, data: str, parts: list[dict[str, Any]]) -> str:
    size = _decoded_size(data)
    parts.append({"type": kind, "mime_type": mime_type, "bytes": size})
    return f"[{kind}: {mime_type}, {size} bytes; not readable as text]"


def _viewable(part: types.ImageContent, shown: list[str]) -> bool:
    if len(shown) >= MAX_IMAGES or part.mime_type not in _VIEWABLE:
        return False
    size = _decoded_size(part.data)
    return 0 < size <= MAX_IMAGE_BYTES


def tool_result(result: types.CallToolResult, *, images_to_model: bool = True) -> ToolResult:
    texts: list[str] = []
    binaries: list[dict[str, Any]] = []
    images: list[str] = []
    for part in result.content:
        if isinstance(part, types.TextContent):
            texts.append(part.text)
        elif isinstance(part, types.ImageContent):
            if images_to_model and _viewable(part, images):
                # Base64 checked by _decoded_size; the characters are the server's, so re-encode them canonically.
                images.append(f"data:{part.mime_type};base64," + base64.b64encode(base64.b64decode(part.data)).decode())
                size = _decoded_size(part.data)
                binaries.append({"type": "image", "mime_type": part.mime_type, "bytes": size, "shown_to_model": True})
                texts.append(f"[image: {part.mime_type}, {size} bytes; attached below for you to view]")
            else:
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
    return ToolResult(content=content, data=data, images=tuple(images))
