"""Refuse requests a web page could make on the operator's behalf, before any handler runs.

The default server listens on loopback with authentication off, so the only
thing between a website the operator visits and the API is the browser.
Three checks close that door (issue 10, item 1):

- **Host**: DNS rebinding points a name the attacker owns at 127.0.0.1; the
  page is then "same-origin" with our server and can read its answers. The
  browser still sends the attacker's name as ``Host``, so while
  authentication is off only loopback names (``localhost``, ``*.localhost``,
  ``127.0.0.0/8``, ``[::1]``), IP literals, the bound host's own name and
  ``server.allowed_hosts`` are served. An IP literal cannot be rebound: a
  browser sends one only to a page whose own origin is that address. When
  ``allowed_hosts`` is set it is enforced with authentication on as well.
- **Origin / Sec-Fetch-Site**: a cross-site ``fetch`` or form post carries
  ``Origin`` (and ``Sec-Fetch-Site: cross-site``); both are refused unless
  ``server.cors_origins`` names the origin. Requests without these headers
  (SDKs, curl) are untouched.
- **Content-Type**: a body sent with ``text/plain`` (or a form type) needs no
  CORS preflight, so a page could post it blind; every endpoint here takes
  JSON, so a body must say ``application/json`` (or ``application/*+json``).

Cost: one pass over the headers, set lookups on precomputed sets, no regexes;
the IP-literal verdict of a Host is cached (bounded).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from toolrelay.app.config import ServerSettings
from toolrelay.app.errors import OpenAIError

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_CROSS = frozenset((b"cross-site", b"same-site"))
_WILDCARD_BINDS = frozenset(("", "0.0.0.0", "::", "[::]"))  # noqa: S104 (recognises a wildcard bind, does not bind)
_MAX_CACHED_HOSTS = 1024
_SHOWN_CHARS = 100


def host_name(raw: str) -> str:
    """The host part of a ``Host`` header value: lower case, no port, no brackets, no trailing dot."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        end = raw.find("]")
        name = raw[1:end] if end > 0 else raw[1:]
    elif raw.count(":") == 1:
        name = raw.partition(":")[0]
    else:
        name = raw  # a bare name, or an (invalid) unbracketed IPv6 literal
    return name.rstrip(".")


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _normalize_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


class HttpGuard:
    """Checks one request's headers; :meth:`check` returns the refusal or None."""

    def __init__(self, server: ServerSettings, auth_enabled: Callable[[], bool]) -> None:
        self._auth_enabled = auth_enabled
        allowed = [host_name(h) for h in server.allowed_hosts if h.strip()]
        self._any_host = "*" in allowed
        # Configured names are enforced with authentication on as well.
        self._enforce_always = bool(allowed) and not self._any_host
        names = {"localhost"}
        suffixes = [".localhost"]
        for entry in allowed:
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            elif entry.startswith("."):
                suffixes.append(entry)
            elif entry != "*":
                names.add(entry)
        bound = host_name(server.host)
        if bound not in _WILDCARD_BINDS:
            # The operator expects the address or name they bound to work.
            names.add(bound)
        self._names = frozenset(names)
        self._suffixes = tuple(suffixes)
        self._verdicts: dict[str, bool] = {}
        origins = {_normalize_origin(o) for o in server.cors_origins if o.strip()}
        self._any_origin = "*" in origins
        self._origins = frozenset(origins)

    def check(self, scope: dict[str, Any]) -> OpenAIError | None:
        host = origin = fetch_site = content_type = length = chunked = None
        for name, value in scope.get("headers") or ():
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                fetch_site = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if host is not None and not self._any_host:
            refusal = self._check_host(host)
            if refusal is not None:
                return refusal
        if (origin is not None or fetch_site in _CROSS) and not self._any_origin:
            refusal = self._check_origin(origin, fetch_site, host)
            if refusal is not None:
                return refusal
        if scope.get("method") in _BODY_METHODS and (chunked is not None or (length is not None and length.strip() != b"0")):
            return _check_content_type(content_type)
        return None

    # -- the checks ------------------------------------------------------

    def _check_host(self, raw: bytes) -> OpenAIError | None:
        text = raw.decode("latin-1")
        verdict = self._verdicts.get(text)
        if verdict is None:
            name = host_name(text)
            verdict = name in self._names or name.endswith(self._suffixes) or _ip_literal(name)
            if len(self._verdicts) < _MAX_CACHED_HOSTS:
                self._verdicts[text] = verdict
        if verdict or (not self._enforce_always and self._auth_enabled()):
            return None
        shown = host_name(text)[:_SHOWN_CHARS]
        why = "server.allowed_hosts is set" if self._enforce_always else "authentication is off"
        return OpenAIError(
            403,
            f"Host '{shown}' is not allowed: {why}, so toolrelay answers only requests addressed to a loopback name, "
            "an IP address, the bound host or a name in server.allowed_hosts (this stops DNS-rebinding attacks from web pages). "
            "If this name is yours, add it to server.allowed_hosts in the configuration.",
            type="invalid_request_error",
            code="host_not_allowed",
        )

    def _check_origin(self, origin: bytes | None, fetch_site: bytes | None, host: bytes | None) -> OpenAIError | None:
        if fetch_site == b"same-origin":
            return None  # set by the browser itself; a page cannot forge it
        if origin is not None:
            text = _normalize_origin(origin.decode("latin-1"))
            if text in self._origins:
                return None
            own = host is not None and text.partition("://")[2] == host.decode("latin-1").strip().lower()
            if own and fetch_site not in _CROSS:
                return None
            shown = text[:_SHOWN_CHARS]
            return OpenAIError(
                403,
                f"Cross-origin request from '{shown}' refused: browsers on other origins may call toolrelay only when "
                "server.cors_origins lists the origin. Add it there if this page should have access.",
                type="invalid_request_error",
                code="origin_not_allowed",
            )
        return OpenAIError(
            403,
            "Cross-site browser request refused (Sec-Fetch-Site: cross-site): a web page may call toolrelay only from an origin listed in server.cors_origins.",
            type="invalid_request_error",
            code="origin_not_allowed",
        )


def _check_content_type(value: bytes | None) -> OpenAIError | None:
    if value is not None:
        media = value.partition(b";")[0].strip().lower()
        if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
            return None
    shown = value.decode("latin-1")[:_SHOWN_CHARS] if value is not None else "(none)"
    return OpenAIError(
        415,
        f"Unsupported Content-Type '{shown}': send the request body as JSON with 'Content-Type: application/json'.",
        type="invalid_request_error",
        code="unsupported_media_type",
    )
