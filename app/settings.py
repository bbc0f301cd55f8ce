"""The whole settings tree: one frozen msgspec Struct per configuration section.

These are plain declarations: this module imports nothing but msgspec and the
standard library, so the loader (:mod:`toolrelay.app.config`) and every
feature package (auth, agent, tools, memory) can import it without importing
one another. A section's ranges are declared once, as ``msgspec.Meta``
constraints on its fields; they are checked when the loader converts the
TOML/environment tree, and again when code or tests build a section directly
(:class:`Section` re-checks on construction, which msgspec itself does not).
Rules that span several fields live in the section's ``_check``.

Documented in docs/configuration.md; tests/test_config.py keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import re
from contextvars import ContextVar
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

DEFAULT_LOCAL_SYSTEM_PROMPT = "You are a helpful, concise assistant. Answer the user's question directly and correctly in English."

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
# 0 lets the operating system pick (tests bind that way).
BindPort = Annotated[int, Meta(ge=0, le=65535)]
MIN_ADMIN_KEY_CHARS = 16

# Set while a section re-validates itself, so the nested conversion does not recurse.
_rechecking: ContextVar[bool] = ContextVar("_rechecking", default=False)


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A configuration section; constructing one checks it as loading does."""

    def __post_init__(self) -> None:
        if _rechecking.get():
            return
        token = _rechecking.set(True)
        try:
            # msgspec checks Meta constraints only while converting, so a
            # section built in code is converted once more from its own fields.
            msgspec.convert(msgspec.structs.asdict(self), type(self), from_attributes=True)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None
        finally:
            _rechecking.reset(token)
        self._check()

    def _check(self) -> None:
        """Rules spanning several fields; raise ValueError naming the setting."""


# --------------------------------------------------------------------------- [server]


class ServerSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: BindPort = 8000
    data_dir: str = "./data"
    # Binding a public address with no API key would expose every upstream
    # key's spending power; refuse unless the operator says so.
    allow_unauthenticated_public: bool = False
    # Enforced by Litestar (request_max_body_size) while the body is read,
    # content-length or chunked: the one place this limit is checked.
    max_body_bytes: PositiveInt = 32 * 1024 * 1024
    max_messages: PositiveInt = 2048
    max_tools: NonNegativeInt = 128
    # Client JSON Schemas (tool parameters, response_format): jsonschema's
    # meta-validation costs 0.35 s per 1,000 properties, so a request's
    # schemas are capped in total bytes and objects, and each in depth, before
    # anything else; then checked after admission in a few worker threads
    # under a time limit (app/schema_check.py).
    max_schema_bytes: PositiveInt = 512 * 1024
    max_schema_objects: PositiveInt = 10_000
    max_schema_depth: PositiveInt = 64
    schema_check_seconds: PositiveFloat = 10.0
    schema_check_threads: PositiveInt = 2
    # Token estimates (tiktoken) run in this many worker threads; text beyond
    # token_count_exact_chars per request is bounded by its UTF-8 length
    # instead of being encoded (a 10-million-character word took 6-13 s).
    token_count_threads: PositiveInt = 2
    token_count_exact_chars: NonNegativeInt = 1_000_000
    access_log: bool = True
    # "plain" lines, or "json": one object per line for every log line (app/logs/).
    log_format: Literal["plain", "json"] = "plain"
    # On SIGTERM/SIGINT, requests and streams in flight get this long to finish.
    shutdown_timeout_seconds: NonNegativeFloat = 10.0
    # Serve HTTPS (uvicorn's TLS): PEM paths; the certificate file may hold the key too.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Serve /metrics without the admin key even while authentication is on.
    metrics_public: bool = False
    log_level: str = "info"
    # Browser origins allowed to call the API (CORS), "*" for any; other
    # origins and cross-site requests are refused with 403 (app/http_guard.py).
    cors_origins: list[str] = []
    # Host names (besides loopback names, IP addresses and the bound host)
    # this server answers to. With authentication off other Host headers get
    # 403 (DNS rebinding); once set, the list is enforced with auth on too.
    # "name", ".suffix" / "*.suffix" for subdomains, "*" for any.
    allowed_hosts: list[str] = []
    # /ready reuses one upstream probe for this long (each probe is a call
    # with the operator's upstream key; concurrent hits share one probe).
    ready_cache_seconds: NonNegativeFloat = 10.0

    def _check(self) -> None:
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("server.ssl_keyfile needs server.ssl_certfile (the certificate, PEM; it may hold the key too)")


# --------------------------------------------------------------------------- [upstreams.<name>], [models."<id>"]

ToolCalling = Literal["auto", "native", "constrained"]
# How /v1/responses reaches an upstream: passed through to its own /responses
# ("native"), translated to chat ("translate"), or probed once ("auto").
ResponsesAPI = Literal["translate", "native", "auto"]


class UpstreamSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["openai", "local", "anthropic", "gemini"] = "openai"
    base_url: str = ""
    api_key: str | None = None
    api_key_env: str | None = None
    # Model ids this upstream serves, as clients name them.
    models: list[str] = []
    # Ask the upstream's GET /models at start-up and serve what it lists.
    discover_models: bool = False
    # Any "<prefix><name>" model id routes here as "<name>" (e.g. "openrouter/").
    model_prefix: str | None = None
    headers: dict[str, str] = {}
    timeout: PositiveFloat = 600.0
    connect_timeout: PositiveFloat = 10.0
    max_connections: PositiveInt = 256
    # "native": the model calls tools itself; "constrained": the agent forces
    # a JSON shape; "auto": native unless the upstream is known not to.
    tool_calling: ToolCalling = "auto"
    # Keyword rules pick the first tool for models too small to choose (default: on for kind "local").
    tool_hints: bool | None = None
    context_window: PositiveInt | None = None
    # kind = "anthropic": max_tokens sent when the client set none (the Messages API requires one).
    default_max_tokens: PositiveInt = 4096
    # /v1/responses: "native" passes requests through to the upstream's /responses,
    # "translate" sends them as chat, "auto" probes /responses once (kind "local": always translate).
    responses_api: ResponsesAPI = "translate"
    # kind = "local" only
    model_path: str | None = None
    n_ctx: PositiveInt = 4096
    threads: PositiveInt = 2
    parallel: PositiveInt = 2
    system_prompt: str = DEFAULT_LOCAL_SYSTEM_PROMPT


# How a model with several deployments picks one for an attempt (app/providers/routing/strategy.py).
RoutingStrategy = Literal["weighted", "least_busy", "latency", "priority"]


class DeploymentSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One upstream serving a model: an entry of ``[models."<id>"] deployments``."""

    upstream: str
    # The model's name at that upstream; default: the served id.
    model: str | None = None
    # The name in logs, metrics, /ready and x-toolrelay-deployment; default: the upstream's
    # name (with "#<n>" when the same upstream appears twice).
    name: str | None = None
    # Share of the traffic under strategy "weighted", relative to the tier's other deployments.
    weight: PositiveFloat = 1.0
    # Tier: lower tiers are used first; a higher one only when every deployment below is unavailable.
    priority: NonNegativeInt = 0
    # Capacity at that upstream, per minute and per server process (0: unbounded); a
    # deployment at its capacity is skipped while another one has room.
    rpm: NonNegativeInt = 0
    tpm: NonNegativeInt = 0


class ModelSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-model overrides, keyed by the served model id."""

    tool_calling: ToolCalling | None = None
    tool_hints: bool | None = None
    context_window: PositiveInt | None = None
    # Several upstreams behind one id, with failover (docs/configuration.md#routing).
    # Empty: the upstream whose ``models`` lists the id, as before.
    deployments: list[DeploymentSettings] = []
    strategy: RoutingStrategy = "weighted"
    # Served ids tried in order when every deployment of this one failed.
    fallbacks: list[str] = []
    # Served ids with larger windows, tried in order for a request too large for this one.
    context_fallbacks: list[str] = []

    def _check(self) -> None:
        names = [d.name for d in self.deployments if d.name]
        if len(names) != len(set(names)):
            raise ValueError("deployment names of a model must be unique")


# --------------------------------------------------------------------------- [agent]


class AgentSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    max_steps: PositiveInt = 8
    max_wall_seconds: PositiveFloat = 300.0
    max_total_tokens: PositiveInt = 200_000
    tool_timeout_seconds: PositiveFloat = 60.0
    max_tool_output_chars: PositiveInt = 16_000
    max_parallel_tools: PositiveInt = 8
    keepalive_seconds: PositiveFloat = 10.0
    # 0: a paused run's steps expire at once (the client must resend them).
    continuation_ttl_seconds: NonNegativeInt = 3600
    builtin_tools: list[str] = msgspec.field(
        default_factory=lambda: ["current_time", "python", "web_search", "fetch_page", "memory_save", "memory_search", "memory_forget"]
    )
    disabled_tools: list[str] = []
    auto_recall: bool = False
    auto_recall_limit: NonNegativeInt = 3
    # Prompt injection (agent/taint.py): once memories entered a run
    # (memory_search, memory_forget or auto_recall), fetch_page and web_search
    # are refused for the rest of it, so a page's instructions cannot send
    # them out in a URL or a search query.
    refuse_fetch_after_memory_read: bool = True
    # Once web content entered a run, memory_save and memory_forget are
    # refused, so a page can neither erase memories nor plant one that
    # auto_recall would later put in front of the model.
    refuse_memory_writes_after_web: bool = True
    system_prompt: str | None = None


# --------------------------------------------------------------------------- [sandbox]

SandboxBackend = Literal["auto", "bwrap", "landlock", "off"]
CgroupMode = Literal["auto", "require", "off"]


class SandboxSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits and knobs of the python tool's sandbox (tools/sandbox/)."""

    # There is deliberately no "unsafe"/"subprocess" value: if no isolating
    # backend passes its self-test the tool is disabled.
    backend: SandboxBackend = "auto"
    wall_seconds: PositiveFloat = 10.0
    memory_mb: PositiveInt = 512
    # The only writable place inside (bwrap: a tmpfs; landlock: a per-run dir
    # whose total size the supervisor polls).
    tmpfs_mb: PositiveInt = 64
    # Cap for stdout and for stderr, each; the run is killed when one overflows.
    output_bytes: PositiveInt = 1_048_576
    max_concurrent: PositiveInt = 2
    queue_timeout_seconds: PositiveFloat = 30.0
    # RLIMIT_CPU soft limit (hard = soft + 1); per process, so the wall clock
    # is the real bound once code forks.
    cpu_seconds: PositiveFloat = 10.0
    # RLIMIT_NPROC counts every process of the uid, hence one uid per slot;
    # with a run cgroup it is also the run's pids.max.
    nproc: PositiveInt = 64
    # Per-run cgroup (v2, else v1) capping the run's total memory (memory_mb),
    # processes (nproc) and CPU (cpu_cores): rlimits alone are per process, and
    # a run forked 6 x 400 MB under a 512 MiB RLIMIT_AS (measured). "auto" falls
    # back to rlimits with a warning when no cgroup is writable; "require"
    # disables the tool instead; "off" never tries.
    cgroup: CgroupMode = "auto"
    # CPU time per wall-clock second for the whole run (cgroup cpu.max quota),
    # so a run's busy children cannot take every core from the server.
    cpu_cores: Annotated[float, Meta(ge=0.01, le=1024)] = 1.0
    file_size_mb: PositiveInt = 16
    nofile: PositiveInt = 256
    # The interpreter run inside. Must live under /usr (the only tree bound
    # into the sandbox) and must never be the server's own venv.
    python: str = "/usr/bin/python3"
    # When the server runs as root, slot i runs as uid/gid base + i. These
    # uids must own no files and run no other processes; below 1000 a system
    # uid could own files.
    sandbox_uid_base: Annotated[int, Meta(ge=1000, le=2**31)] = 60000
    # Executables looked up on PATH when not absolute; a missing one makes
    # the backend unavailable (the selector then fails closed).
    bwrap: str = "bwrap"
    prlimit: str = "prlimit"
    # Switches to the pool uid after exec, so the server is vfork()ed rather
    # than fork()ed (measured: 4 ms against 46 ms for a server with 1 GB RSS).
    setpriv: str = "setpriv"
    # Landlock per-run work dirs are created under this directory (None: a
    # fresh private directory under the system temp dir).
    workdir_base: str | None = None
    max_code_bytes: PositiveInt = 256 * 1024
    # repr() of the final expression is cut to this many characters.
    value_chars: PositiveInt = 10_000

    def _check(self) -> None:
        if self.sandbox_uid_base <= 65534 < self.sandbox_uid_base + self.max_concurrent:
            raise ValueError("the sandbox uid pool must not include 65534 (nobody)")
        if self.sandbox_uid_base + self.max_concurrent > 2**31:
            raise ValueError("sandbox_uid_base is out of range")


# --------------------------------------------------------------------------- [web_search]

_REGION = re.compile(r"^[a-z]{2}-[a-z]{2}$")


class WebSearchSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["ddgs", "searxng"] = "ddgs"
    searxng_url: str | None = None  # e.g. http://searxng:8080 (its settings.yml must allow the json format)
    max_results: PositiveInt = 5  # when the model does not ask for a number
    max_results_cap: PositiveInt = 10  # the most a model may ask for
    timeout: PositiveFloat = 15.0
    cache_ttl_seconds: NonNegativeFloat = 300.0
    cache_size: NonNegativeInt = 256
    # DuckDuckGo style country-language; wt-wt means no region
    region: Annotated[str, Meta(pattern=_REGION.pattern)] = "us-en"
    safesearch: Literal["on", "moderate", "off"] = "moderate"
    # ddgs engines: "auto" is the library's default and spreads over several
    # engines (DuckDuckGo among them), which survives one engine rate limiting
    # us; "duckduckgo" pins it to DuckDuckGo's HTML endpoint alone.
    ddgs_engines: str = "auto"
    proxy: str | None = None  # ddgs only: http/https/socks5 proxy URL
    verify: bool | str = True  # TLS verification for both backends; a str is a CA bundle path
    max_title_chars: PositiveInt = 200
    max_snippet_chars: PositiveInt = 400
    max_url_chars: PositiveInt = 2048

    def _check(self) -> None:
        if self.backend == "searxng" and not self.searxng_url:
            raise ValueError("web search backend 'searxng' needs searxng_url")
        if self.max_results > self.max_results_cap:
            raise ValueError("max_results must be between 1 and max_results_cap")


# --------------------------------------------------------------------------- [fetch_page]


class FetchPageSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_bytes: PositiveInt = 2_000_000  # decoded body bytes read before we stop reading
    max_chars: PositiveInt = 20_000  # characters of extracted text handed to the model
    timeout: PositiveFloat = 20.0  # whole fetch: resolution, redirects and body
    max_redirects: NonNegativeInt = 5
    user_agent: str = "Mozilla/5.0 (compatible; toolrelay-fetch/0.1)"
    # For operators who deliberately point the agent at an intranet. Off, a
    # model cannot reach loopback, LAN or cloud metadata addresses.
    allow_private: bool = False
    # Narrower than allow_private: these CIDRs (say one intranet wiki host)
    # are reachable while the rest of the private space, metadata included,
    # stays refused.
    allow_networks: tuple[str, ...] = ()
    verify: bool | str = True  # TLS verification; a str is a CA bundle path
    # Ports a URL (and every redirect hop) may name. Web pages live on these;
    # any other port of a public address is some other service (SSH, SMTP,
    # databases, admin consoles) that a model has no business talking HTTP
    # to. An empty list allows every port. Checked in _check, for a message
    # that names the port.
    allowed_ports: tuple[int, ...] = (80, 443, 8080, 8443)
    # A public address of this very host passes every range check yet reaches
    # its own services; refused unless the operator really wants self-fetches.
    # Loopback stays governed by the loopback rule (allow_networks/allow_private).
    allow_own_addresses: bool = False
    # How often the host's interface addresses are re-read (interfaces change).
    own_addresses_refresh_seconds: NonNegativeFloat = 30.0

    def _check(self) -> None:
        for port in self.allowed_ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"fetch_page allowed_ports: {port} is not a port")
        for net in self.allow_networks:
            ipaddress.ip_network(net)  # fail at startup, not at the first fetch


# --------------------------------------------------------------------------- [memory]


# The text-search languages of memories on PostgreSQL: its Snowball stemmers, and "simple" (lower case only).
MemoryLanguage = Literal[
    "simple",
    "arabic",
    "armenian",
    "basque",
    "catalan",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hindi",
    "hungarian",
    "indonesian",
    "irish",
    "italian",
    "lithuanian",
    "nepali",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "serbian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
    "yiddish",
]


class MemorySettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    # Database file; empty means <data_dir>/memory.db.
    path: str = ""
    # The stemmer of memory search on PostgreSQL ([database] url); changing it rebuilds
    # every memory's index entry once, at start-up. SQLite's FTS5 index is always English (porter).
    language: MemoryLanguage = "english"
    # Per-search cost budget of the ranking planner, in milliseconds (None: the store's default, 3 ms).
    search_budget_ms: PositiveFloat | None = None
    # Storage caps (0: none), checked on every save (HTTP and memory_save): one
    # key could otherwise fill the disk (issue 10 item 12). A scope is one key
    # or one `user` of a key; the per-key caps count all its users together,
    # since a key can mint any number of `user` values.
    max_memories_per_scope: NonNegativeInt = 10_000
    max_bytes_per_scope: NonNegativeInt = 16 * 1024 * 1024
    max_memories_per_key: NonNegativeInt = 100_000
    max_bytes_per_key: NonNegativeInt = 256 * 1024 * 1024


class ResponsesSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``/v1/responses``: stored responses (``store: true``, the default) live in <data_dir>/responses.db."""

    # Stored responses older than this are gone (swept on writes, refused on reads).
    retention_days: PositiveFloat = 30.0
    # Per API key (the local scope when auth is off): beyond either cap the key's
    # oldest stored responses are deleted, so one key cannot fill the disk.
    max_stored_per_key: PositiveInt = 10_000
    max_stored_bytes_per_key: PositiveInt = 256 * 1024 * 1024
    # ``background: true`` runs in flight at once (each also holds one of its key's
    # parallel slots until it ends): per API key, and in this server process.
    max_background_per_key: PositiveInt = 4
    max_background_total: PositiveInt = 64


# --------------------------------------------------------------------------- [mcp]

McpTransport = Literal["streamable_http", "sse"]
# What the taint rules (agent/taint.py) assume of a server's tools: "untrusted" (results are untrusted
# content and calls can send data out), "no_egress" (untrusted results, nothing sent out), "trusted" (neither).
McpTrust = Literal["untrusted", "no_egress", "trusted"]


class McpServerSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[mcp.servers.<name>]``: a stdio child (``command``) or a remote server (``url``)."""

    # stdio: the argv of the child process, started at start-up and restarted when it dies.
    command: list[str] = []
    # The child's own variables, each taken from one of ours: { CHILD_VAR = "OUR_VAR" }.
    # The child gets these plus a minimal set (PATH, HOME...), never our whole environment.
    env: dict[str, str] = {}
    cwd: str | None = None
    # Remote: streamable HTTP (or the older SSE transport).
    url: str = ""
    transport: McpTransport = "streamable_http"
    headers: dict[str, str] = {}
    # Header values taken from our environment: { Authorization = "OUR_VAR" }.
    headers_env: dict[str, str] = {}
    # Tool names (as the server names them) offered to the model; None: all.
    allowed_tools: list[str] | None = None
    # Per-call timeout and output cap; None: [agent] tool_timeout_seconds / max_tool_output_chars.
    timeout_seconds: PositiveFloat | None = None
    max_output_chars: PositiveInt | None = None
    # Connecting, the handshake and the first tools/list, together.
    connect_timeout_seconds: PositiveFloat = 30.0
    # How the prompt-injection rules treat its tools; the default assumes the worst.
    trust: McpTrust = "untrusted"
    # Images in its results: "model" shows them to the model as image parts (it needs a
    # vision model); "text" only describes them (type and size), for text-only models.
    image_results: Literal["model", "text"] = "model"

    def _check(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ValueError("an mcp server needs either command (stdio) or url (HTTP), not both")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("mcp server url must start with http:// or https://")


class McpSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MCP servers whose tools join the agent's built-in tools (tools/mcp/)."""

    servers: dict[str, McpServerSettings] = {}
    # A dead server is reconnected (a stdio child restarted) after this delay,
    # doubled after each failure up to restart_max_seconds.
    restart_initial_seconds: PositiveFloat = 1.0
    restart_max_seconds: PositiveFloat = 60.0
    # A live server is pinged this often; a failed ping counts as a dead server
    # (an HTTP server that went away closes no stream we could watch).
    ping_interval_seconds: PositiveFloat = 30.0
    # A server's tools are hostile input: beyond these caps a tool is skipped.
    max_tools_per_server: PositiveInt = 128
    max_schema_bytes: PositiveInt = 64 * 1024
    max_schema_depth: PositiveInt = 32
    max_description_chars: PositiveInt = 4000
    # Per-request servers ({"type": "mcp", "server_url": ...} in a Responses
    # request, agent mode): a client makes toolrelay connect to a URL of its
    # choice, so off unless the operator turns it on. The URL passes
    # fetch_page's network guard: no loopback, private, link-local or metadata
    # address unless one of these CIDRs (say "127.0.0.1/32") allows it.
    allow_request_servers: bool = False
    request_server_allow_networks: tuple[str, ...] = ()
    # Connecting, the handshake and tools/list of one per-request server, together.
    request_server_connect_timeout_seconds: PositiveFloat = 10.0
    # Per-request servers one request may list.
    max_request_servers: PositiveInt = 4

    def _check(self) -> None:
        for net in self.request_server_allow_networks:
            ipaddress.ip_network(net)  # fail at startup, not at the first request


# --------------------------------------------------------------------------- [auth], [limits], [pricing], [redis]


class AuthSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Enables the /admin/* API (Bearer <admin_key>); it also turns auth on.
    # Also TOOLRELAY_ADMIN_KEY (a loader shortcut); surrounding blanks are
    # dropped and a blank key is no key.
    admin_key: str | None = None
    # Require an API key even while no key exists (every request then gets 401
    # until one is created). Auth is on anyway once any key exists, when an
    # admin key is set, or when the server binds a non-loopback address.
    required: bool = False
    # Record one usage row per chat request in <data_dir>/usage.db.
    ledger: bool = True
    # How often the background writer commits a batch of ledger rows.
    ledger_flush_seconds: NonNegativeFloat = 0.25
    # Most ledger rows held in memory while the writer is behind (disk stalled,
    # database locked); beyond it the oldest unwritten rows are dropped, counted
    # and logged, so a stalled disk cannot grow the process without bound.
    ledger_max_queued_rows: PositiveInt = 100_000
    # Brute-force guard (app/auth/throttle.py): after this many wrong
    # credentials (admin key or API key) from one client address within
    # failed_auth_window_seconds, that address gets 429 for the same time
    # without its credential being checked. 0 turns the guard off.
    max_failed_auth: NonNegativeInt = 10
    failed_auth_window_seconds: PositiveFloat = 60.0

    def _check(self) -> None:
        key = (self.admin_key or "").strip() or None
        if key != self.admin_key:
            msgspec.structs.force_setattr(self, "admin_key", key)
        if key is not None and len(key) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(f"auth.admin_key must be at least {MIN_ADMIN_KEY_CHARS} characters (use a random string)")


class LimitSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Completion tokens assumed for the TPM reservation and the cost cap when
    # a request sets neither max_completion_tokens nor max_tokens.
    completion_estimate_tokens: NonNegativeInt = 256
    # Refuse (400 cost_cap_exceeded) a request whose worst-case cost, prompt
    # plus max_tokens at the model's price, is above this. 0 = no cap.
    max_request_cost_usd: NonNegativeFloat = 0.0
    # Limits for requests without a key (auth off), per client address. 0 = none.
    ip_rpm: NonNegativeInt = 0
    ip_tpm: NonNegativeInt = 0
    ip_max_parallel: NonNegativeInt = 0
    # Take the client address from the last X-Forwarded-For hop (the one our
    # own reverse proxy appended). Only safe behind such a proxy.
    trust_forwarded_for: bool = False
    # A parallel-request slot whose release was never seen (a crash between
    # admit and release) frees itself after this long.
    slot_ttl_seconds: PositiveFloat = 3600.0
    # With Redis configured but unreachable: False refuses requests with 503
    # (limits and budgets stay enforced), True serves them unlimited.
    fail_open: bool = False
    # Ceiling on the completion tokens of one request (or one agent step): a
    # request asking for more is clamped to it, one asking for none gets it;
    # a key's own max_output_tokens lowers it further. 0 = no ceiling.
    max_output_tokens: NonNegativeInt = 0
    # Requests per minute across every key together while authentication is
    # on (shared through [redis] when configured); /admin is not counted, so
    # an operator can still act during a flood. 0 = none.
    global_rpm: NonNegativeInt = 0


class ModelPrice(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per one million tokens."""

    input: NonNegativeFloat = 0.0
    output: NonNegativeFloat = 0.0
    # Price of prompt tokens served from the upstream's prompt cache
    # (usage.prompt_tokens_details.cached_tokens); defaults to ``input``.
    cached_input: NonNegativeFloat | None = None


class PricingSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Use the built-in table of OpenAI prices (app/auth/pricing.py) for models not listed here.
    builtin: bool = True
    # Exact served/upstream model ids or ``*`` patterns ("my-org/*").
    models: dict[str, ModelPrice] = {}
    # Price of models found nowhere (local upstreams are always free unless listed).
    default: ModelPrice = ModelPrice()


class RedisSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # e.g. "redis://127.0.0.1:6379/0"; empty: counters live in this process.
    url: str = ""
    # Namespace for every key we write, so one Redis can serve several deployments.
    prefix: str = "toolrelay"
    socket_timeout: PositiveFloat = 1.0
    connect_timeout: PositiveFloat = 2.0

    def _check(self) -> None:
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis.url must start with redis://, rediss:// or unix://")


# --------------------------------------------------------------------------- [database]


class DatabaseSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the durable state lives: SQLite files in data_dir (no url), or one PostgreSQL database several hosts share."""

    # "postgresql://user:password@host:5432/dbname"; absent: SQLite files in server.data_dir.
    url: str | None = None
    pool_min_size: NonNegativeInt = 1
    pool_max_size: PositiveInt = 10
    # Opening a connection, and waiting for a free one: a request that needs the
    # database while it is down gets a 503 after this long, never a hang.
    connect_timeout_seconds: PositiveFloat = 5.0
    # Keys are mirrored in memory and reloaded on every change (LISTEN/NOTIFY) and
    # at least this often; while the database is unreachable the mirror keeps
    # authenticating for at most this long, then key-checked requests get 503.
    key_cache_seconds: PositiveFloat = 30.0
    # Ledger rows held in memory while the database is unreachable; written when it returns.
    ledger_buffer_rows: PositiveInt = 100_000
    # This process's name in the ledger's host column; empty: "<hostname>:<pid>".
    host_name: str = ""

    def _check(self) -> None:
        if self.url is not None and not self.url.strip():
            msgspec.structs.force_setattr(self, "url", None)  # TOOLRELAY_DATABASE__URL="" is no database
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("database.url must start with postgresql:// (leave it out for SQLite files in server.data_dir)")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("database.pool_min_size must not exceed database.pool_max_size")


# --------------------------------------------------------------------------- [routing]


class RoutingSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries, cooldowns and circuit breakers of models with deployments or fallbacks."""

    # Attempts per model (the one asked for, then each fallback) before the next is tried.
    max_attempts: PositiveInt = 3
    # Time all attempts of one request may take before its first byte, waits included;
    # once spent, the last error is the answer.
    max_retry_seconds: PositiveFloat = 30.0
    # The longest retry-after (from a 429/503) worth waiting for when no other deployment is free.
    max_retry_after_seconds: NonNegativeFloat = 5.0
    # Retry a request whose connection dropped after it was sent (it may have been processed and billed).
    retry_after_send: bool = False
    # A deployment failing breaker_failures times within breaker_window_seconds is taken
    # out for breaker_cooldown_seconds, then one request probes it.
    breaker_failures: PositiveInt = 5
    breaker_window_seconds: PositiveFloat = 60.0
    breaker_cooldown_seconds: PositiveFloat = 30.0
    # With [redis]: how often this process reads the breakers other processes opened.
    breaker_sync_seconds: PositiveFloat = 1.0


# --------------------------------------------------------------------------- [tracing]


class TracingSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry spans exported over OTLP/HTTP (needs the ``toolrelay[otel]`` extra); off: nothing is imported."""

    enabled: bool = False
    # The collector's OTLP/HTTP base URL; spans go to <otlp_endpoint>/v1/traces.
    # Headers (an API key of a hosted backend) come from OTEL_EXPORTER_OTLP_HEADERS.
    otlp_endpoint: str = "http://localhost:4318"
    service_name: str = "toolrelay"
    # Share of new traces recorded; a client's sampled traceparent is always followed.
    sample_ratio: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0


# --------------------------------------------------------------------------- [cache]


class CacheSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The exact-match response cache of proxied chat completions (app/cache/); off by default."""

    enabled: bool = False
    # "memory": this process only; "redis": shared through [redis] url (every worker and host).
    backend: Literal["memory", "redis"] = "memory"
    ttl_seconds: PositiveFloat = 3600.0
    # Bounds of the memory backend (least recently used entries go first).
    max_entries: PositiveInt = 10_000
    max_bytes: PositiveInt = 64 * 1024 * 1024
    # Also cache answers that call tools (off: a tool call usually starts an action the client wants to run again).
    cache_tool_calls: bool = False


# --------------------------------------------------------------------------- [mcp_server]


class McpEndpointSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """toolrelay's own tools served over MCP: ``/mcp`` (streamable HTTP) and ``toolrelay mcp`` (stdio)."""

    enabled: bool = True
    # Tool names served; empty: every built-in tool the agent offers
    # ([agent] builtin_tools minus disabled_tools, python once its sandbox is up).
    tools: list[str] = []
    # Also serve the tools of the MCP servers in [mcp.servers] (off: their
    # operator may have given them to toolrelay's agent only).
    reexport_mcp_tools: bool = False
    # One /mcp request body (a JSON-RPC message) at most; tool input is hostile.
    max_body_bytes: PositiveInt = 1024 * 1024


# --------------------------------------------------------------------------- the tree


class Settings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    aliases: dict[str, str] = {}
    models: dict[str, ModelSettings] = {}
    default_model: str | None = None
    agent: AgentSettings = AgentSettings()
    sandbox: SandboxSettings = SandboxSettings()
    web_search: WebSearchSettings = WebSearchSettings()
    fetch_page: FetchPageSettings = FetchPageSettings()
    memory: MemorySettings = MemorySettings()
    responses: ResponsesSettings = ResponsesSettings()
    mcp: McpSettings = McpSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    pricing: PricingSettings = PricingSettings()
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()
    routing: RoutingSettings = RoutingSettings()
    mcp_server: McpEndpointSettings = McpEndpointSettings()
    tracing: TracingSettings = TracingSettings()
    cache: CacheSettings = CacheSettings()

    def _check(self) -> None:
        if self.cache.enabled and self.cache.backend == "redis" and not self.redis.url:
            raise ValueError('cache.backend = "redis" needs [redis] url')
        for model_id, model in self.models.items():
            for deployment in model.deployments:
                if deployment.upstream not in self.upstreams:
                    raise ValueError(f"models.{model_id}: deployment upstream '{deployment.upstream}' is not in [upstreams]")
