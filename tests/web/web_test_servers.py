"""Real HTTP servers on 127.0.0.1 for the web tool tests (nothing here touches the internet).

Servers run in daemon threads so a handler that sleeps (the "slow page" cases)
never blocks the event loop the tests run on; every request is recorded so a
test can count what actually reached the server.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CERTS = Path(__file__).parent / "certs"
# A private test CA and a leaf for html.duckduckgo.com, docs.example.com and
# localhost, valid 2000-2100. Never trusted anywhere but these tests.
CA_FILE = str(CERTS / "ca.pem")


def server_tls_context(sni_seen: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
    # Offer HTTP/1.1 only: clients that would speak HTTP/2 (primp) fall back.
    ctx.set_alpn_protocols(["http/1.1"])
    if sni_seen is not None:

        def _record(_sock: ssl.SSLObject, name: str, _ctx: ssl.SSLContext) -> None:
            sni_seen.append(name or "")

        ctx.sni_callback = _record
    return ctx


@dataclass(slots=True)
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    host: str = ""  # CONNECT target host for the proxy server


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes | str = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line is sent
    # When set, the body is sent as these pieces with ``chunk_delay`` between
    # them and no Content-Length (read-until-close), like a slow or endless page.
    chunks: Iterable[bytes] | None = None
    chunk_delay: float = 0.0
    send_length: bool = True


Route = Callable[[Hit], Reply]


def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    if reply.delay:
        time.sleep(reply.delay)
    body = reply.body.encode() if isinstance(reply.body, str) else reply.body
    try:
        handler.send_response(reply.status)
        if reply.content_type is not None:
            handler.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Connection", "close")
        if reply.chunks is None and reply.send_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if reply.chunks is None:
            handler.wfile.write(body)
            return
        for piece in reply.chunks:
            handler.wfile.write(piece)
            handler.wfile.flush()
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
    except OSError:
        pass  # the client hung up (size or time limit): exactly what some tests provoke
    finally:
        handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RecordingServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        hit = Hit(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            host=getattr(self, "connect_host", ""),
        )
        owner = self.server.owner
        with owner.lock:
            owner.hits.append(hit)
            route = owner.routes.get(parts.path)
        _send(self, route(hit) if route else Reply(404, b"not found"))

    do_GET = do_POST = do_HEAD = _handle


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LocalServer


class LocalServer:
    """An HTTP(S) server on an ephemeral 127.0.0.1 (or ``host``) port with per-path routes."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self._server = _RecordingServer((host, 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self.host = host
        self.url = f"{self.scheme}://{host}:{self.port}"
        # A short poll interval keeps shutdown (one per test) from costing 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def route(self, path: str, reply: Reply | Route) -> None:
        if not isinstance(reply, Reply):
            self.routes[path] = reply
            return

        def fixed(_hit: Hit, answer: Reply = reply) -> Reply:
            return answer

        self.routes[path] = fixed

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for hit in self.hits if hit.path == path)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _ConnectHandler(socketserver.StreamRequestHandler):
    """An HTTP CONNECT proxy that terminates TLS itself and answers as the target.

    ddgs (through primp) only ever talks HTTPS to fixed public hosts; the one
    knob it offers that reaches every engine is ``proxy``. Pointing that at
    this handler lets the real DDGS code path run, TLS verification included
    (against the test CA), with the "remote" site served from this process.
    """

    rbufsize = 0  # unbuffered: the TLS handshake bytes must stay on the socket
    server: _ProxyServer

    def handle(self) -> None:
        request_line = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        owner = self.server.owner
        if len(request_line) != 3 or request_line[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host = request_line[1].rsplit(":", 1)[0]
        with owner.lock:
            owner.connects.append(host)
        if host not in owner.site.routes_by_host:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        try:
            tls = owner.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return
        inner = owner.site

        class _Site(_Handler):
            connect_host = host

        _Site.server = inner._server  # type: ignore[assignment]
        with contextlib.suppress(OSError):
            _Site(tls, self.client_address, inner._server)
        with contextlib.suppress(OSError):
            tls.close()


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: TlsInterceptingProxy


class FakeSite(LocalServer):
    """Routes for virtual HTTPS hosts reached only through :class:`TlsInterceptingProxy`."""

    def __init__(self, hosts: Iterable[str]) -> None:
        super().__init__()
        self.routes_by_host = set(hosts)


class TlsInterceptingProxy:
    def __init__(self, site: FakeSite) -> None:
        self.site = site
        self.connects: list[str] = []
        self.lock = threading.Lock()
        self.tls = server_tls_context()
        self._server = _ProxyServer(("127.0.0.1", 0), _ConnectHandler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> TlsInterceptingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.site._server.server_close()


def free_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused cases."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MapResolver:
    """A resolver for FetchPageTool that answers from a table and records every lookup.

    Names missing from the table fail like NXDOMAIN, so a test never falls
    back to real DNS. A list of answers is served one per call (the last one
    repeating), which is how the DNS-rebinding case is staged.
    """

    def __init__(self, table: dict[str, list[str] | list[list[str]]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.table[host]
        if answer and isinstance(answer[0], list):
            seen = sum(1 for name, _ in self.calls if name == host)
            return list(answer[min(seen, len(answer)) - 1])  # type: ignore[arg-type]
        return list(answer)  # type: ignore[arg-type]
