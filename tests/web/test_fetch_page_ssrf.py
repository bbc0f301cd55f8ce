"""fetch_page must not become a way into loopback, the LAN or cloud metadata.

Where a refusal could be mistaken for a connection failure, a real server is
listening at the target and the test asserts it received nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from web_test_servers import LocalServer, MapResolver, Reply

from toolrelay.tools.base import ToolContext
from toolrelay.tools.fetch_page import FetchPageSettings, FetchPageTool, forbidden_reason

LOCAL_ONLY = ("127.0.0.1/32",)
# The test servers listen on ephemeral ports; port checks have their own tests.
ANY_PORT: tuple[int, ...] = ()


@pytest.fixture
def secret() -> Iterator[LocalServer]:
    """An "internal" service on 127.0.0.2, which no test exempts."""
    with LocalServer(host="127.0.0.2") as server:
        server.route("/secret", Reply(200, "TOP-SECRET", "text/plain"))
        yield server


def assert_refused(result_content: str, is_error: bool, *fragments: str) -> None:
    assert is_error, result_content
    assert result_content.startswith("error: refused to fetch "), result_content
    for fragment in fragments:
        assert fragment in result_content, result_content


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "not a public address"),  # CGNAT
        ("100.100.100.200", "cloud metadata"),  # Alibaba
        ("168.63.129.16", "cloud metadata"),  # Azure, a public address
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "private"),
        ("198.18.0.1", "private"),
        ("240.0.0.1", "private"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[::ffff:127.0.0.1]", "loopback address (embedded in ::ffff:7f00:1)"),
        ("[::ffff:169.254.169.254]", "cloud metadata address (embedded"),
        ("[::ffff:10.0.0.1]", "private address (embedded"),
        ("[64:ff9b::a9fe:a9fe]", "cloud metadata address (embedded"),  # NAT64 of 169.254.169.254
        ("[2002:7f00:1::]", "loopback address (embedded"),  # 6to4 of 127.0.0.1
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("[fd00:ec2::254]", "cloud metadata"),  # AWS IMDS over IPv6
        ("[ff02::1]", "multicast"),
    ],
)
async def test_literal_private_addresses_are_refused(ctx: ToolContext, host: str, reason: str) -> None:
    resolver = MapResolver({})
    result = await FetchPageTool(resolver=resolver).run({"url": f"http://{host}/latest/meta-data/"}, ctx)
    assert_refused(result.content, result.is_error, reason)
    assert result.data is not None and result.data["refused"] is True
    assert resolver.calls == []  # a literal is checked as it is, never looked up


async def test_refusal_happens_before_any_connection(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/", Reply(200, "REACHED", "text/plain"))
    result = await FetchPageTool(FetchPageSettings(allowed_ports=ANY_PORT)).run({"url": site.url + "/"}, ctx)
    assert_refused(result.content, result.is_error, "127.0.0.1 is a loopback address")
    assert site.hits == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (["127.0.0.1"], "docs.example.com resolves to 127.0.0.1, which is a loopback address"),
        (["169.254.169.254"], "resolves to 169.254.169.254, which is a cloud metadata address"),
        (["::1"], "resolves to ::1, which is a loopback address"),
        (["::ffff:10.0.0.1"], "resolves to ::ffff:a00:1, which is a private address (embedded"),
        # One bad address among good ones is enough: we might be routed to it.
        (["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "10.0.0.7"], "resolves to 10.0.0.7"),
    ],
)
async def test_names_resolving_to_private_addresses_are_refused(site: LocalServer, ctx: ToolContext, answer: list[str], reason: str) -> None:
    site.route("/", Reply(200, "REACHED", "text/plain"))
    resolver = MapResolver({"docs.example.com": answer})
    fetcher = FetchPageTool(FetchPageSettings(allowed_ports=ANY_PORT), resolver=resolver)
    result = await fetcher.run({"url": f"http://docs.example.com:{site.port}/"}, ctx)
    assert_refused(result.content, result.is_error, reason)
    assert resolver.calls == [("docs.example.com", site.port)]
    assert site.hits == []


async def test_allow_private_lets_the_operator_reach_the_intranet(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/wiki", Reply(200, "<title>Intranet</title><p>internal page</p>", "text/html"))
    resolver = MapResolver({"docs.example.com": ["127.0.0.1"]})
    url = f"http://docs.example.com:{site.port}/wiki"
    refused = await FetchPageTool(FetchPageSettings(allowed_ports=ANY_PORT), resolver=resolver).run({"url": url}, ctx)
    assert refused.is_error and site.hits == []
    allowed = await FetchPageTool(FetchPageSettings(allow_private=True, allowed_ports=ANY_PORT), resolver=resolver).run({"url": url}, ctx)
    assert not allowed.is_error
    assert allowed.content.endswith("internal page")
    assert site.count("/wiki") == 1


async def test_allow_networks_is_narrow(secret: LocalServer, ctx: ToolContext) -> None:
    # 127.0.0.1 is exempt, 127.0.0.2 (same loopback interface) is not.
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT))
    result = await fetcher.run({"url": secret.url + "/secret"}, ctx)
    assert_refused(result.content, result.is_error, "127.0.0.2 is a loopback address")
    assert secret.hits == []


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        # The system resolver (no DNS needed: these are numeric) turns each of
        # these into 127.0.0.1; the check runs on what it returns.
        ("2130706433", "resolves to 127.0.0.1, which is a loopback address"),
        ("0x7f.1", "resolves to 127.0.0.1, which is a loopback address"),
        ("127.1", "resolves to 127.0.0.1, which is a loopback address"),
        ("017700000001", "resolves to 127.0.0.1, which is a loopback address"),
        # httpx itself rejects octal dotted quads.
        ("0177.0.0.1", "not a valid URL"),
    ],
)
async def test_numeric_host_spellings_are_refused(ctx: ToolContext, host: str, fragment: str) -> None:
    result = await FetchPageTool().run({"url": f"http://{host}/"}, ctx)
    assert_refused(result.content, result.is_error, fragment)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "api.localhost"])
async def test_localhost_names_are_refused_without_lookup(ctx: ToolContext, host: str) -> None:
    resolver = MapResolver({})
    result = await FetchPageTool(resolver=resolver).run({"url": f"http://{host}:8080/"}, ctx)
    assert_refused(result.content, result.is_error, "is a loopback name")
    assert resolver.calls == []


async def test_redirect_to_a_private_address_is_refused(site: LocalServer, secret: LocalServer, ctx: ToolContext) -> None:
    site.route("/go", Reply(302, headers={"Location": secret.url + "/secret"}))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT))
    result = await fetcher.run({"url": site.url + "/go"}, ctx)
    assert_refused(result.content, result.is_error, "redirect to", "127.0.0.2 is a loopback address")
    assert site.count("/go") == 1
    assert secret.hits == []  # reachable, listening, and never contacted


async def test_redirect_to_a_name_resolving_inward_is_refused(site: LocalServer, secret: LocalServer, ctx: ToolContext) -> None:
    resolver = MapResolver({"public.example.com": ["127.0.0.1"], "internal.example.com": ["127.0.0.2"]})
    site.route("/go", Reply(301, headers={"Location": f"http://internal.example.com:{secret.port}/secret"}))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT), resolver=resolver)
    result = await fetcher.run({"url": f"http://public.example.com:{site.port}/go"}, ctx)
    assert_refused(result.content, result.is_error, "internal.example.com resolves to 127.0.0.2")
    assert [name for name, _ in resolver.calls] == ["public.example.com", "internal.example.com"]
    assert secret.hits == []


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "//[::1]/admin",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
    ],
)
async def test_redirect_to_forbidden_targets(site: LocalServer, ctx: ToolContext, location: str) -> None:
    site.route("/go", Reply(302, headers={"Location": location}))
    result = await FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT)).run({"url": site.url + "/go"}, ctx)
    assert_refused(result.content, result.is_error, "redirect to")
    assert site.count("/go") == 1


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://ftp.example.com/file.txt",
        "gopher://example.com:70/1",
        "data:text/html,<script>alert(1)</script>",
        "javascript:alert(1)",
        "ws://example.com/socket",
        "dict://127.0.0.1:11211/stat",
        "/relative/path",
    ],
)
async def test_non_http_schemes_are_refused(ctx: ToolContext, url: str) -> None:
    # Even with every address allowed, the scheme check stands.
    resolver = MapResolver({})
    result = await FetchPageTool(FetchPageSettings(allow_private=True), resolver=resolver).run({"url": url}, ctx)
    assert_refused(result.content, result.is_error, "only http and https URLs can be fetched")
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://user:pass@docs.example.com/", "user name or password"),
        ("http://admin@docs.example.com/", "user name or password"),
        ("http://docs.example.com:0/", "invalid port 0"),
        ("http://docs.example.com:99999/", "invalid port 99999"),
        ("http://docs.example.com:notaport/", "not a valid URL"),
        ("http:///nohost", "no host"),
    ],
)
async def test_credentials_and_bad_ports_are_refused(ctx: ToolContext, url: str, fragment: str) -> None:
    resolver = MapResolver({"docs.example.com": ["93.184.215.14"]})
    result = await FetchPageTool(resolver=resolver).run({"url": url}, ctx)
    assert_refused(result.content, result.is_error, fragment)
    assert resolver.calls == []


async def test_userinfo_trick_is_judged_by_the_real_host(site: LocalServer, ctx: ToolContext) -> None:
    # Reads as "public.example.com" to a human; the host is 127.0.0.1.
    site.route("/", Reply(200, "REACHED", "text/plain"))
    result = await FetchPageTool().run({"url": f"http://public.example.com@127.0.0.1:{site.port}/"}, ctx)
    assert result.is_error and site.hits == []


async def test_unusual_port_on_an_allowed_host_works(site: LocalServer, ctx: ToolContext) -> None:
    # The local server sits on an ephemeral high port: ports are not the defence.
    site.route("/p", Reply(200, "port ok", "text/plain"))
    resolver = MapResolver({"docs.example.com": ["127.0.0.1"]})
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT), resolver=resolver)
    result = await fetcher.run({"url": f"http://docs.example.com:{site.port}/p"}, ctx)
    assert result.content.endswith("port ok")


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [([], "has no addresses"), (["not-an-ip"], "invalid address 'not-an-ip'")],
)
async def test_odd_resolver_answers_are_refused(ctx: ToolContext, answer: list[str], fragment: str) -> None:
    resolver = MapResolver({"docs.example.com": answer})
    result = await FetchPageTool(resolver=resolver).run({"url": "http://docs.example.com/"}, ctx)
    assert_refused(result.content, result.is_error, fragment)


async def test_a_url_without_scheme_is_taken_as_https(ctx: ToolContext) -> None:
    resolver = MapResolver({"docs.example.com": ["10.0.0.1"]})
    result = await FetchPageTool(resolver=resolver).run({"url": "docs.example.com/guide"}, ctx)
    assert_refused(result.content, result.is_error, "docs.example.com resolves to 10.0.0.1")
    assert resolver.calls == [("docs.example.com", 443)]


async def test_unresolvable_name_is_an_error(ctx: ToolContext) -> None:
    result = await FetchPageTool(resolver=MapResolver({})).run({"url": "https://nowhere.example.com/"}, ctx)
    assert_refused(result.content, result.is_error, "could not resolve nowhere.example.com")


async def test_async_resolvers_are_supported(ctx: ToolContext) -> None:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["169.254.169.254"]

    result = await FetchPageTool(resolver=resolve).run({"url": "http://metadata.example.com/"}, ctx)
    assert_refused(result.content, result.is_error, "cloud metadata")
    assert calls == ["metadata.example.com"]


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_mapped_public_address_is_still_refused() -> None:
    # A resolver has no business returning an IPv4-mapped address, so even a
    # public IPv4 inside one is not trusted.
    assert forbidden_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is not None


# -- ports and this host's own addresses (issue 10 item 19) ----------------------------


def host_address() -> str | None:
    """A non-loopback IPv4 address of this host's own interfaces (the route a packet out would take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: nothing is sent, the kernel only picks a source
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture
def own_site() -> Iterator[LocalServer]:
    address = host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with LocalServer(host=address) as server:
        server.route("/admin", Reply(200, "HOST-INTERNAL", "text/plain"))
        yield server


async def test_a_port_outside_the_allowed_list_is_refused_before_connecting(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/p", Reply(200, "REACHED", "text/plain"))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY))  # default ports
    result = await fetcher.run({"url": f"{site.url}/p"}, ctx)
    assert_refused(result.content, result.is_error, f"port {site.port} is not one of the allowed ports (80, 443, 8080, 8443)")
    assert site.hits == []
    # The same server is reachable once its port is listed: the refusal was the port rule.
    listed = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=(site.port,)))
    assert (await listed.run({"url": f"{site.url}/p"}, ctx)).content.endswith("REACHED")


@pytest.mark.parametrize(("url", "port"), [("http://docs.example.com:22/", 22), ("https://docs.example.com:6379/", 6379)])
async def test_odd_ports_of_public_names_are_refused(ctx: ToolContext, url: str, port: int) -> None:
    resolver = MapResolver({"docs.example.com": ["93.184.215.14"]})
    result = await FetchPageTool(resolver=resolver).run({"url": url}, ctx)
    assert_refused(result.content, result.is_error, f"port {port} is not one of the allowed ports")
    assert resolver.calls == []  # decided from the URL alone


async def test_a_redirect_to_a_refused_port_is_refused(site: LocalServer, secret: LocalServer, ctx: ToolContext) -> None:
    site.route("/go", Reply(302, headers={"Location": f"http://127.0.0.1:{secret.port}/secret"}))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=("127.0.0.0/8",), allowed_ports=(site.port,)))
    result = await fetcher.run({"url": site.url + "/go"}, ctx)
    assert_refused(result.content, result.is_error, "redirect to", f"port {secret.port} is not one of the allowed ports")
    assert site.count("/go") == 1 and secret.hits == []


def test_allowed_ports_are_checked_at_startup() -> None:
    with pytest.raises(ValueError, match="not a port"):
        FetchPageSettings(allowed_ports=(0,))


async def test_this_hosts_own_address_is_refused_even_inside_allow_networks(own_site: LocalServer, ctx: ToolContext) -> None:
    # allow_networks opens the whole network the host sits in (an intranet),
    # and the host's own address still stays closed: its services are not
    # "another machine of the intranet".
    network = f"{own_site.host}/32"
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=(network,), allowed_ports=ANY_PORT))
    result = await fetcher.run({"url": f"{own_site.url}/admin"}, ctx)
    assert_refused(result.content, result.is_error, f"{own_site.host} is an address of this host")
    assert own_site.hits == []
    # Listening and reachable: the refusal is the own-address rule, not a dead port.
    opted_in = FetchPageTool(FetchPageSettings(allow_networks=(network,), allowed_ports=ANY_PORT, allow_own_addresses=True))
    assert (await opted_in.run({"url": f"{own_site.url}/admin"}, ctx)).content.endswith("HOST-INTERNAL")


async def test_a_name_or_redirect_leading_to_this_host_is_refused(site: LocalServer, own_site: LocalServer, ctx: ToolContext) -> None:
    resolver = MapResolver({"public.example.com": ["127.0.0.1"], "mirror.example.com": [own_site.host]})
    site.route("/go", Reply(302, headers={"Location": f"http://mirror.example.com:{own_site.port}/admin"}))
    settings = FetchPageSettings(allow_networks=(LOCAL_ONLY[0], f"{own_site.host}/32"), allowed_ports=ANY_PORT)
    fetcher = FetchPageTool(settings, resolver=resolver)
    result = await fetcher.run({"url": f"http://public.example.com:{site.port}/go"}, ctx)
    assert_refused(result.content, result.is_error, f"mirror.example.com resolves to {own_site.host}, which is an address of this host")
    assert site.count("/go") == 1 and own_site.hits == []


async def test_the_servers_bind_address_counts_as_its_own(ctx: ToolContext) -> None:
    # Behind NAT or in a container the public address the server is bound to
    # may not show on any interface; the operator's bind address is passed in.
    public = ipaddress.ip_address("93.184.215.14")
    resolver = MapResolver({"docs.example.com": [str(public)]})
    fetcher = FetchPageTool(resolver=resolver, server_addresses=[public])
    result = await fetcher.run({"url": "http://docs.example.com/"}, ctx)
    assert_refused(result.content, result.is_error, "resolves to 93.184.215.14, which is an address of this host")


def test_interface_enumeration_finds_the_hosts_addresses() -> None:
    from toolrelay.tools.host_addresses import interface_addresses

    found = interface_addresses()
    assert ipaddress.ip_address("127.0.0.1") in found
    address = host_address()
    if address is not None:
        assert ipaddress.ip_address(address) in found
