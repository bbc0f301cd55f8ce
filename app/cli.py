"""The ``toolrelay`` command."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from toolrelay.app import __version__
from toolrelay.app.bind import WILDCARD_HOSTS
from toolrelay.app.config import ConfigError, ServerSettings, Settings, load_settings
from toolrelay.app.logs import LogFormat, WriterHandler, install_logging
from toolrelay.app.metrics_workers import METRICS_DIR_ENV

if TYPE_CHECKING:
    from toolrelay.app.services import Services


def configure_logging(level: str, log_format: LogFormat = "plain") -> WriterHandler:
    """Every log line to stderr in ``log_format``, written off the event loop (app/logs/); close the
    returned handler when serving ends so no line is lost."""
    return install_logging(level, log_format)


def banner(settings: Settings, services: Services, host: str, port: int) -> str:
    every_interface = host.strip() in WILDCARD_HOSTS
    shown_host = "127.0.0.1" if every_interface else host
    scheme = "https" if settings.server.ssl_certfile else "http"
    base = f"{scheme}://{shown_host}:{port}/v1"
    models = [m for m, _ in services.router.served_models()]
    auth_on = bool(getattr(services.gate, "enabled", False))
    where = f"every interface, port {port} (host = {host!r})" if every_interface else f"{scheme}://{host}:{port}"
    lines = [
        f"toolrelay {__version__} listening on {where}",
        f"  OpenAI base URL : {base}",
        f"  models          : {', '.join(models) or '(none)'}",
    ]
    if services.agent is not None and models:
        lines.append(f"  agent models    : {', '.join('agent/' + m for m in models)}")
    lines.append(f"  default model   : {settings.default_model}")
    if auth_on:
        auth_line = "on (API keys required)"
    elif not services.exposure.public:
        auth_line = "off (no API keys configured; loopback only)"
    else:
        auth_line = "OFF on a non-loopback address (allow_unauthenticated_public): anyone who can reach this port can use it"
    lines.append(f"  authentication  : {auth_line}")
    for key, value in services.ready_extras().items():
        if isinstance(value, dict) and "backend" in value:
            lines.append(f"  {key:<16}: {value['backend']}" + (f" ({value.get('reason')})" if value.get("reason") else ""))
    auth_header = ' -H "Authorization: Bearer $TOOLRELAY_API_KEY"' if auth_on else ""
    lines.append("  try it:")
    lines.append(
        f"    curl -s {base}/chat/completions -H 'Content-Type: application/json'{auth_header} "
        f'-d \'{{"model": "{settings.default_model}", "messages": [{{"role": "user", "content": "Say hello"}}]}}\''
    )
    return "\n".join(lines)


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """How uvicorn serves toolrelay (the CLI and the tests' servers alike): host and port, TLS, shutdown."""
    return {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
        "lifespan": "on",
        "access_log": False,
        # The client address is ours to take (limits.trust_forwarded_for, off by default): uvicorn's
        # own X-Forwarded-For handling would take it from any loopback peer's header behind our back
        # (and cost each request a middleware layer).
        "proxy_headers": False,
        # No `server: uvicorn` line on every answer: it tells a scanner what runs here and costs a header.
        "server_header": False,
        "log_level": "warning",
        # uvicorn's own records reach the root logger, so they come out in server.log_format too.
        "log_config": None,
        # After SIGTERM/SIGINT the listener closes and requests in flight (streams too) get this long.
        "timeout_graceful_shutdown": server.shutdown_timeout_seconds,
        "ssl_certfile": server.ssl_certfile,
        "ssl_keyfile": server.ssl_keyfile,
    }


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    overrides: dict[str, Any] = {}
    if args.host is not None:  # `--host ""` binds every interface, and is treated so
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    for flag in ("log_format", "ssl_certfile", "ssl_keyfile"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if overrides:
        try:
            settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(server, **overrides))
        except ValueError as exc:
            print(f"toolrelay: {exc}", file=sys.stderr)
            return 2
        server = settings.server
    log_handler = configure_logging(server.log_level, server.log_format)
    try:
        return _serve(args, settings, server)
    finally:
        # The access lines of the last requests are still queued in the writer thread.
        log_handler.close()


def _serve(args: argparse.Namespace, settings: Settings, server: ServerSettings) -> int:
    from toolrelay.app.heap import settle_after_startup
    from toolrelay.app.server import create_app

    try:
        asgi, services = create_app(settings)
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    gate = services.gate
    has_credentials = bool(getattr(gate, "admin_enabled", False) or getattr(getattr(gate, "keys", None), "any_keys", False))
    if services.exposure.requires_auth and not has_credentials:
        print(
            f"toolrelay: refusing to listen on {_bind_description(server.host)} without API keys: anyone who can reach it could spend "
            "your upstream credits. Create a key (`toolrelay keys create --name NAME`), or set "
            "server.allow_unauthenticated_public = true if this network is private.",
            file=sys.stderr,
        )
        return 2

    import uvicorn

    async def announce() -> None:
        print(banner(settings, services, server.host, server.port), flush=True)

    common = uvicorn_options(server)
    try:
        if args.workers > 1:
            # Workers rebuild the app from the environment; hand them the same settings.
            if args.config:
                os.environ["TOOLRELAY_CONFIG"] = os.path.abspath(args.config)
            os.environ["TOOLRELAY_HOST"] = server.host
            os.environ["TOOLRELAY_PORT"] = str(server.port)
            os.environ["TOOLRELAY_DATA"] = os.path.abspath(server.data_dir)
            os.environ["TOOLRELAY_SERVER__LOG_FORMAT"] = server.log_format
            for name, path in (("SSL_CERTFILE", server.ssl_certfile), ("SSL_KEYFILE", server.ssl_keyfile)):
                if path:
                    os.environ[f"TOOLRELAY_SERVER__{name}"] = os.path.abspath(path)
            print(banner(settings, services, server.host, server.port) + f"\n  workers         : {args.workers}", flush=True)
            # A private (0700) directory where the workers find each other's metrics sockets.
            metrics_dir = tempfile.mkdtemp(prefix="toolrelay-metrics-")
            os.environ[METRICS_DIR_ENV] = metrics_dir
            try:
                uvicorn.run("toolrelay.app.server:app_from_env", factory=True, workers=args.workers, **common)
            finally:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        else:
            services.on_start(announce)
            services.on_start(settle_after_startup)
            uvicorn.Server(uvicorn.Config(asgi, **common)).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it already handled gracefully.
        pass
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the MCP server over stdio (``toolrelay mcp``): the key comes from $TOOLRELAY_MCP_KEY."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    if args.data_dir:
        settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(settings.server, data_dir=args.data_dir))
    configure_logging(settings.server.log_level)

    import anyio

    from toolrelay.app.mcp_server.stdio import StdioRefused, serve_stdio
    from toolrelay.app.services import Services
    from toolrelay.app.wiring import build_tool_catalogue, extend_services

    # No upstreams (nothing here calls a model: the embedded one would load for nothing), no /mcp route.
    quiet = msgspec.structs.replace(settings, upstreams={}, mcp_server=msgspec.structs.replace(settings.mcp_server, enabled=False))
    try:
        services = Services(quiet)
    except ConfigError as exc:  # the shared database unreachable
        print(f"toolrelay mcp: {exc}", file=sys.stderr)
        return 2
    extend_services(services)
    if services.agent is None:
        print("toolrelay mcp: it serves the agent's tools; set [agent] enabled = true", file=sys.stderr)
        return 2
    catalogue = dataclasses.replace(build_tool_catalogue(services, services.agent), settings=settings.mcp_server)
    try:
        anyio.run(serve_stdio, services, catalogue, _agent_models(settings))
    except StdioRefused as exc:
        print(f"toolrelay mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _agent_models(settings: Settings) -> list[str]:
    """The agent ids the configuration serves, for a process that starts no upstream: its models and aliases,
    and ``EVERY_AGENT_MODEL`` for the ones only a running upstream could name (discovered, prefixed)."""
    from toolrelay.app.mcp_server.stdio import EVERY_AGENT_MODEL

    ids = [*(m for upstream in settings.upstreams.values() for m in upstream.models), *settings.aliases]
    open_ended = any(upstream.discover_models or upstream.model_prefix for upstream in settings.upstreams.values())
    return ["agent/" + m for m in ids] + ([EVERY_AGENT_MODEL] if open_ended else [])


def _bind_description(host: str) -> str:
    if host.strip() in WILDCARD_HOSTS:
        return f"every interface (host = {host!r})"
    return f"{host} (not a loopback-only address)"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolrelay", description="OpenAI-compatible server for tool-using agents.")
    parser.add_argument("--version", action="version", version=f"toolrelay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--config", help="TOML config file (default: $TOOLRELAY_CONFIG)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--data-dir", help="data directory (default ./data or $TOOLRELAY_DATA)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (set [redis] url so limits are shared)")
    serve.add_argument("--log-format", choices=("plain", "json"), help="log lines as plain text (default) or one JSON object each")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--ssl-keyfile", help="the PEM private key of --ssl-certfile (if not in the same file)")
    serve.set_defaults(func=cmd_serve)

    mcp = sub.add_parser("mcp", help="serve toolrelay's tools over MCP on stdin/stdout (for desktop hosts); API key in $TOOLRELAY_MCP_KEY")
    mcp.add_argument("--config", help="TOML config file (default: $TOOLRELAY_CONFIG)")
    mcp.add_argument("--data-dir", help="data directory (default ./data or $TOOLRELAY_DATA)")
    mcp.set_defaults(func=cmd_mcp)

    from toolrelay.app.admin_cli import register as register_admin

    register_admin(sub)
    from toolrelay.app.db_cli import register as register_db

    register_db(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `toolrelay usage | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
