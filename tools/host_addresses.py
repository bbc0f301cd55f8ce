"""The addresses of this host's own network interfaces, for fetch_page's self-fetch check.

A public address of this host passes every range check, yet a fetch to it
reaches services bound to that interface (or to every interface) on this very
machine: admin ports, databases, toolrelay itself. So fetch_page refuses the
host's own addresses, enumerated here and re-read periodically because
interfaces come and go (DHCP, VPNs, containers).

Linux exposes them without any dependency: ``/proc/net/fib_trie`` lists every
local IPv4 address (the "/32 host LOCAL" leaves) and ``/proc/net/if_inet6``
every IPv6 one. Elsewhere (or when /proc is hidden) a per-interface
``SIOCGIFADDR`` ioctl gives at least each interface's primary IPv4 address,
and the host name's own resolution adds what it knows.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys
import time
from collections.abc import Iterable

import anyio

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FIB_TRIE = "/proc/net/fib_trie"
_IF_INET6 = "/proc/net/if_inet6"
_SIOCGIFADDR = 0x8915  # Linux; the ioctl fallback is only tried there


def _from_fib_trie(text: str) -> set[IPAddress]:
    """Local IPv4 addresses: a leaf line ``|-- 192.0.2.2`` followed by ``/32 host LOCAL``."""
    found: set[IPAddress] = set()
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("/32 host LOCAL") and previous.startswith("|--"):
            try:
                found.add(ipaddress.IPv4Address(previous[3:].strip()))
            except ValueError:
                pass
        previous = stripped
    return found


def _from_if_inet6(text: str) -> set[IPAddress]:
    found: set[IPAddress] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
            except ValueError:
                pass
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _from_ioctl() -> set[IPAddress]:
    if not sys.platform.startswith("linux"):
        return set()
    import fcntl  # POSIX only; imported here so the module loads everywhere

    found: set[IPAddress] = set()
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in interfaces:
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            found.add(ipaddress.IPv4Address(packed[20:24]))
    return found


def _from_hostname() -> set[IPAddress]:
    found: set[IPAddress] = set()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return found
    for info in infos:
        try:
            found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            pass
    return found


def interface_addresses() -> set[IPAddress]:
    """Every address this host's interfaces carry right now (blocking: reads /proc)."""
    found: set[IPAddress] = set()
    fib = _read(_FIB_TRIE)
    if fib is not None:
        found |= _from_fib_trie(fib)
    else:
        found |= _from_ioctl()
    inet6 = _read(_IF_INET6)
    if inet6 is not None:
        found |= _from_if_inet6(inet6)
    found |= _from_hostname()
    return found


def parse_addresses(values: Iterable[str]) -> set[IPAddress]:
    """Literal addresses among ``values`` (bind hosts); names are resolved, wildcards skipped."""
    found: set[IPAddress] = set()
    for value in values:
        host = value.strip().strip("[]")
        if not host or host in ("0.0.0.0", "::"):  # noqa: S104
            continue  # a wildcard bind: every interface, which the enumeration covers
        try:
            found.add(ipaddress.ip_address(host))
            continue
        except ValueError:
            pass
        try:
            for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except (OSError, UnicodeError, ValueError):
            log.warning("could not resolve the bind address %r for fetch_page's self-fetch check", host)
    return found


class HostAddresses:
    """This host's addresses, re-enumerated at most every ``refresh_seconds`` (in a worker thread)."""

    def __init__(self, refresh_seconds: float = 30.0, extra: Iterable[IPAddress] = ()) -> None:
        self.refresh_seconds = refresh_seconds
        self.extra = frozenset(extra)
        self._addresses: frozenset[IPAddress] = frozenset()
        self._read_at = float("-inf")
        self._lock = anyio.Lock()

    async def current(self) -> frozenset[IPAddress]:
        if time.monotonic() - self._read_at < self.refresh_seconds:
            return self._addresses
        async with self._lock:
            if time.monotonic() - self._read_at >= self.refresh_seconds:
                try:
                    fresh = await anyio.to_thread.run_sync(interface_addresses)
                except Exception:  # keep the last known set rather than fail every fetch
                    log.exception("could not enumerate this host's addresses")
                    fresh = set(self._addresses)
                self._addresses = frozenset(fresh) | self.extra
                self._read_at = time.monotonic()
        return self._addresses
