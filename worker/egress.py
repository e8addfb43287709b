"""Where a document URL may lead: public addresses only, unless a setting allows more.

A document job's author chooses its URL, and the worker's answer (the document,
summarised) goes back to that author. A URL that reaches cloud metadata
(169.254.169.254), the worker's own host, or a service inside the cluster
would hand the author what only the cluster should see. So:

- every address a URL's host resolves to must be public (``is_global``), or
  inside a network the operator of LLMLoom allows
  (``LLMLOOM_DOCUMENT_ALLOWED_NETWORKS``, for an in-cluster document store);
- the name is vetted when the connection is made (the connector's resolver
  drops every address that is not allowed), so a name that resolves to a
  public address when checked and to a private one when fetched
  (DNS rebinding) connects nowhere;
- redirects are followed by hand, each hop checked again (an IP literal in a
  ``Location`` never reaches a resolver);
- only http and https.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Forbidden(Exception):
    """A URL that leads where documents may not be fetched from."""


def networks(cidrs: Iterable[str]) -> list[Network]:
    """The allowed networks of the setting (``10.0.0.0/8``, ``127.0.0.1/32``...)."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def permitted(address: str, allowed: list[Network]) -> bool:
    """Whether a document may be fetched from this address."""
    ip: Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if any(ip in net for net in allowed):
        return True
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allowed: list[Network]) -> str:
    """The host of an http(s) URL whose literal address (if it is one) is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Forbidden(f"{url}: only http and https URLs are fetched")
    host = parts.hostname or ""
    if not host:
        raise Forbidden(f"{url}: no host")
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host  # a name: vetted when it is resolved
    if not permitted(host, allowed):
        raise Forbidden(f"{url}: {host} is not a public address")
    return host


class VettedResolver(AbstractResolver):
    """The system's resolver, keeping only the addresses documents may come from."""

    def __init__(self, allowed: list[Network]) -> None:
        self.allowed = allowed
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        kept = [r for r in found if permitted(r["host"], self.allowed)]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self.inner.close()


async def check_host(resolver: VettedResolver, host: str) -> None:
    """Refuse, with a clear reason, a name that resolves to no allowed address (the fetch
    itself would only fail to connect)."""
    try:
        found = await resolver.inner.resolve(host, 0, socket.AF_UNSPEC)
    except OSError:
        return  # the fetch reports the unresolvable name
    if not any(permitted(r["host"], resolver.allowed) for r in found):
        raise Forbidden(f"{host} resolves to {found[0]['host']}, not a public address")


@dataclass
class DocumentClient:
    """Sessions for document URLs: vetted addresses only, no redirects of their own, no
    proxy (a proxy would resolve the names itself, past these checks)."""

    http: aiohttp.ClientSession
    resolver: VettedResolver

    @classmethod
    def create(cls, allowed: list[Network], max_connections: int = 16) -> DocumentClient:
        """A client; create it on the loop that will use it."""
        resolver = VettedResolver(allowed)
        connector = aiohttp.TCPConnector(
            limit=max_connections, resolver=resolver, family=socket.AF_UNSPEC
        )
        http = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        return cls(http, resolver)

    async def check(self, url: str) -> None:
        """Raise Forbidden for a URL (one hop) that may not be fetched."""
        host = check_url(url, self.resolver.allowed)
        await check_host(self.resolver, host)

    async def close(self) -> None:
        await self.http.close()
