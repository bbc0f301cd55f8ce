"""Security headers on every response, and a Content-Security-Policy for the HTML docs pages.

Every response gets ``X-Content-Type-Options: nosniff`` (a browser never guesses a JSON error to be
HTML), ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and, for JSON and SSE, the
strictest policy (``default-src 'none'; frame-ancestors 'none'``): nothing served here should
load anything or be framed. Cost: four constant header pairs per response.

The docs pages under ``/docs`` (Litestar's Redoc, Swagger UI, RapiDoc and Stoplight Elements) load
their scripts and styles from CDNs and start with an inline script holding the OpenAPI document.
Their policy is derived from the page itself (:func:`docs_policy`): scripts only from the exact URLs
the page names plus the hashes of its own inline scripts (no ``'unsafe-inline'`` for scripts),
styles and fonts from the CDNs it names (inline styles allowed: the UIs inject them at run time),
images from those CDNs and ``data:``, fetches to this server only, workers from ``blob:`` (Redoc's
search), no framing, no forms, no ``<base>``. Those pages are built once per process and are not
on the request path of the API, so buffering their body to hash it costs nothing that matters.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
API_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_PREFIX = "/docs"
# The web console (app/ui/): its own files only, fetches to this server only, nothing inline.
UI_PREFIX = "/ui"
UI_POLICY = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
)

_SCRIPT = re.compile(rb"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
_SRC = re.compile(rb"""\bsrc\s*=\s*["']([^"']+)["']""", re.I)
_LINK = re.compile(rb"<link\b([^>]*)>", re.I)
_HREF = re.compile(rb"""\bhref\s*=\s*["']([^"']+)["']""", re.I)
_GOOGLE_FONTS_CSS = "https://fonts.googleapis.com"

Send = Callable[[dict[str, Any]], Awaitable[None]]


def docs_policy(html: bytes) -> str:
    """The Content-Security-Policy allowing exactly what ``html`` loads."""
    scripts: list[str] = []
    for attributes, body in _SCRIPT.findall(html):
        src = _SRC.search(attributes)
        if src:
            scripts.append(_https_url(src.group(1)))
        elif body.strip():
            scripts.append("'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'")
    style_origins: list[str] = []
    image_origins: list[str] = []
    for attributes in _LINK.findall(html):
        href = _HREF.search(attributes)
        if not href:
            continue
        origin = _https_origin(href.group(1))
        if b"stylesheet" in attributes.lower():
            style_origins.append(origin)
        elif b"icon" in attributes.lower():
            image_origins.append(origin)
    script_origins = [_https_origin(s.encode()) for s in scripts if s.startswith("https://")]
    fonts = ["https://fonts.gstatic.com"] if _GOOGLE_FONTS_CSS in style_origins else []
    directives = [
        "default-src 'none'",
        "script-src " + _sources(scripts),
        "style-src " + _sources(["'unsafe-inline'", *style_origins, *script_origins]),
        "font-src " + _sources(["data:", *fonts, *script_origins]),
        "img-src " + _sources(["data:", *image_origins, *script_origins]),
        "connect-src 'self'",
        "worker-src blob:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    return "; ".join(directives)


def _https_url(url: bytes) -> str:
    text = url.decode("latin-1")
    # A page's own relative URL is 'self'; anything that is not https is not allowed at all.
    if text.startswith("https://"):
        return text
    return "'self'" if not urlsplit(text).scheme else "'none'"


def _https_origin(url: bytes) -> str:
    parts = urlsplit(url.decode("latin-1"))
    if parts.scheme == "https" and parts.netloc:
        return f"https://{parts.netloc}"
    return "'self'" if not parts.scheme else "'none'"


def _sources(values: list[str]) -> str:
    unique = [v for i, v in enumerate(values) if v not in values[:i] and v != "'none'"]
    return " ".join(unique) or "'none'"


def docs_send(send: Send) -> Send:
    """``send`` for a ``/docs`` response: an HTML page's start is held until its body is complete,
    then sent with the policy of :func:`docs_policy`; anything else passes with :data:`API_POLICY`."""
    start: dict[str, Any] | None = None
    chunks: list[bytes] = []

    async def send_docs(message: dict[str, Any]) -> None:
        nonlocal start
        kind = message["type"]
        if kind == "http.response.start":
            content_type = next((v for k, v in message.get("headers", ()) if k.lower() == b"content-type"), b"")
            if content_type.startswith(b"text/html"):
                start = message
                return
            message["headers"] = [*message.get("headers", ()), API_POLICY]
        elif kind == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            policy = (b"content-security-policy", docs_policy(body).encode("latin-1"))
            head, start = start, None
            head["headers"] = [(k, v) for k, v in head.get("headers", ()) if k.lower() != b"content-length"]
            head["headers"].extend(((b"content-length", str(len(body)).encode()), policy))
            await send(head)
            message = {"type": "http.response.body", "body": body}
        await send(message)

    return send_docs
