"""fetch_page's network guard: which addresses a model-chosen URL may reach.

The URL comes from a model, which may have read it on a hostile page, so every
hop is treated as an SSRF attempt until proven otherwise: the host name is
resolved by us and every address it resolves to must be public (or in the
operator's ``allow_networks``), on an allowed port, and not an address of this
very host (:mod:`toolrelay.tools.host_addresses`). The vetted addresses are
then the only ones the fetch connects to (:mod:`toolrelay.tools.page_fetch`),
so a DNS answer that changes between the check and the connect cannot
redirect us inward.
"""

from __future__ import annotations

import inspect
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import httpx

from toolrelay.app.settings import FetchPageSettings
from toolrelay.tools.host_addresses import HostAddresses

__all__ = [
    "FetchRefused",
    "IPAddress",
    "NetworkGuard",
    "Resolver",
    "VettedTarget",
    "default_resolve",
    "forbidden_reason",
    "parse_ip",
    "parse_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# resolve(host, port) -> addresses as strings; may be sync or async. Sync ones
# run in a worker thread because the natural implementation blocks.
Resolver = Callable[[str, int], Sequence[str] | Awaitable[Sequence[str]]]


class FetchRefused(Exception):
    """The URL (or a redirect hop) is not allowed; the message is model-facing."""


# Ranges refused on top of the ``ipaddress`` flags: those flags have shifted
# between Python releases, and a few ranges (CGNAT, benchmarking, 6to4 relay)
# are not "private" by them yet are not somewhere a web page lives either.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
# Cloud instance metadata / platform endpoints. 168.63.129.16 (Azure) is a
# public address, so only an explicit entry catches it.
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one tunnels to, if any (mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` must be refused, or None if it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and (reason := forbidden_reason(inner)):
            return f"{reason} (embedded in {ip})"
        if ip.scope_id:
            return "a scoped (interface-local) address"
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
        (any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version), "a special-use address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def default_resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class VettedTarget:
    url: httpx.URL  # as the model gave it (name, not IP), fragment dropped
    host: str  # ASCII (IDNA) host, no brackets
    port: int
    ips: tuple[str, ...]  # vetted addresses, in resolver order


_SCHEMELESS = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}(:\d+)?(/|$)")


def parse_url(raw: str) -> httpx.URL:
    raw = raw.strip()
    if "://" not in raw and _SCHEMELESS.match(raw):
        raw = "https://" + raw  # models often drop the scheme; https is the safe guess
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchRefused(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {url.scheme or 'a relative URL'}:")
    if not url.raw_host:
        raise FetchRefused("the URL has no host")
    if url.userinfo:
        # Credentials in a model-chosen URL are either a leak or an injection.
        raise FetchRefused("URLs with a user name or password are not fetched")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise FetchRefused(f"invalid port {url.port}")
    return url.copy_with(fragment=None)


class NetworkGuard:
    """Vets each URL a fetch is about to follow; holds the resolver and this host's addresses."""

    def __init__(
        self,
        settings: FetchPageSettings,
        resolver: Resolver | None = None,
        *,
        server_addresses: Sequence[IPAddress] = (),
    ) -> None:
        self.settings = settings
        self.resolve: Resolver = resolver or default_resolve
        self._exempt = tuple(ipaddress.ip_network(net) for net in settings.allow_networks)
        # This host's interface addresses plus the ones the server is bound to.
        self.host_addresses = HostAddresses(settings.own_addresses_refresh_seconds, server_addresses)

    async def vet(self, url: httpx.URL) -> VettedTarget:
        """Where ``url`` may be fetched from; raises :class:`FetchRefused` with the reason."""
        host = url.raw_host.decode("ascii").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        allowed_ports = self.settings.allowed_ports
        if allowed_ports and port not in allowed_ports:
            shown_ports = ", ".join(str(p) for p in allowed_ports)
            raise FetchRefused(f"port {port} is not one of the allowed ports ({shown_ports})")
        allow = self.settings.allow_private
        literal = parse_ip(host)
        if literal is not None:
            addresses: Sequence[str] = [host]
        else:
            if not allow and (host == "localhost" or host.endswith(".localhost")):
                raise FetchRefused(f"{host} is a loopback name")
            addresses = await self._lookup(host, port)
        ips: list[str] = []
        own = frozenset() if self.settings.allow_own_addresses else await self.host_addresses.current()
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                raise FetchRefused(f"the resolver returned an invalid address {text!r} for {host}")
            exempt = any(ip.version == net.version and ip in net for net in self._exempt)
            shown = host if literal is not None else f"{host} resolves to {ip}, which"
            if not allow and not exempt and (reason := forbidden_reason(ip)):
                raise FetchRefused(f"{shown} is {reason}")
            # Loopback is this host too, but the loopback rule above already
            # decides it (an operator's allow_networks may open it on purpose).
            if ip in own and not ip.is_loopback:
                raise FetchRefused(f"{shown} is an address of this host")
            ips.append(str(ip))
        if not ips:
            raise FetchRefused(f"{host} has no addresses")
        return VettedTarget(url=url, host=host, port=port, ips=tuple(dict.fromkeys(ips)))

    async def _lookup(self, host: str, port: int) -> Sequence[str]:
        try:
            if inspect.iscoroutinefunction(self.resolve):
                result = await self.resolve(host, port)
            else:
                result = await anyio.to_thread.run_sync(self.resolve, host, port, abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    result = await result
        except (OSError, UnicodeError) as exc:
            raise FetchRefused(f"could not resolve {host}: {exc}") from None
        return list(result)
