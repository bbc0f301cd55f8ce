"""Serve ``app/ui/static/`` at ``/ui``: read once at start-up, answered from memory.

The set of files is fixed when the package is installed, so it is read into a dict once (about
60 kB) and a request is a dict lookup: no path from the URL ever reaches the file system, which
rules out traversal by construction. ``/ui`` and ``/ui/`` answer ``index.html``; the pages are
modules loaded by that one document, so any other unknown path is a 404.

The policy (:data:`UI_POLICY`) lets the page load only its own files and talk only to this
server: no inline script or style, no other origin, no framing, no forms, no plugins. The ASGI
layer (``app/middleware.py``) sends it instead of the API's ``default-src 'none'`` on ``/ui``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from litestar import Request, get
from litestar.response import Response

from toolrelay.app.errors import OpenAIError, error_response
from toolrelay.app.middleware import request_info
from toolrelay.app.security_headers import UI_POLICY, UI_PREFIX

__all__ = ["UI_POLICY", "UI_PREFIX", "StaticFiles", "build_ui_handlers"]


_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain",
    ".json": "application/json",
}
# The page changes with the package; a browser revalidates rather than running last release's script.
_CACHE = {"cache-control": "no-cache"}


class StaticFiles:
    """The console's files by URL path below ``/ui/`` (``"app.js"``, ``"vendor/LICENSE.txt"``)."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        self._files = files

    @classmethod
    def from_package(cls) -> StaticFiles:
        root = resources.files("toolrelay.app.ui").joinpath("static")
        files: dict[str, tuple[bytes, str]] = {}
        pending: list[tuple[str, Any]] = [("", root)]
        while pending:
            prefix, folder = pending.pop()
            for entry in folder.iterdir():
                if entry.is_dir():
                    pending.append((f"{prefix}{entry.name}/", entry))
                    continue
                suffix = "." + entry.name.rpartition(".")[2]
                if suffix in _TYPES:
                    files[prefix + entry.name] = (entry.read_bytes(), _TYPES[suffix])
        return cls(files)

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._files.get(name or "index.html")

    def names(self) -> list[str]:
        return sorted(self._files)


def build_ui_handlers(files: StaticFiles | None = None) -> list[Any]:
    static = files or StaticFiles.from_package()

    @get([UI_PREFIX, f"{UI_PREFIX}/{{name:path}}"], summary="The web console", include_in_schema=False)
    async def console_file(request: Request[Any, Any, Any]) -> Response[bytes]:
        name = str(request.path_params.get("name", "")).lstrip("/")
        found = static.get(name)
        if found is None:
            error = OpenAIError(404, f"Unknown request URL: GET {request.url.path}.", type="invalid_request_error", code="unknown_url")
            return error_response(error, request_info(request.scope))
        body, media_type = found
        return Response(content=body, media_type=media_type, headers=_CACHE)

    return [console_file]
