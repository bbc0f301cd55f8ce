"""Who can reach the address the server binds: decided once, at start-up.

:class:`Exposure` is computed by the composition root from ``[server]`` and
read by the CLI (refusal and banner) and the auth gate (auth forced on), so
the host is resolved once and both agree.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from toolrelay.app.settings import ServerSettings

# Hosts that bind every interface (uvicorn passes "" to the socket layer as "any").
WILDCARD_HOSTS = frozenset(("", "0.0.0.0", "::", "[::]"))  # noqa: S104 (recognises a wildcard bind, does not bind)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback addresses only.

    ``""``, ``0.0.0.0`` and ``::`` bind every interface: public. A name
    (``localhost`` too: /etc/hosts may say otherwise) is resolved, and is
    loopback only when every address it resolves to is (uvicorn binds them
    all); a name that does not resolve counts as public.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    try:
        return bool(found) and all(ipaddress.ip_address(str(address).partition("%")[0]).is_loopback for address in found)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Exposure:
    host: str
    # Reachable from other hosts: a non-loopback address, a wildcard, or a name
    # that does not resolve to loopback addresses only.
    public: bool
    # server.allow_unauthenticated_public: the operator vouches for the network.
    unauthenticated_allowed: bool

    @classmethod
    def of(cls, server: ServerSettings) -> Exposure:
        return cls(host=server.host, public=not is_loopback(server.host), unauthenticated_allowed=server.allow_unauthenticated_public)

    @property
    def every_interface(self) -> bool:
        return self.host.strip() in WILDCARD_HOSTS

    @property
    def requires_auth(self) -> bool:
        """Binding a public address with no credentials would expose every upstream key's spending power."""
        return self.public and not self.unauthenticated_allowed
