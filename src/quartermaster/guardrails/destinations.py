"""Where a webhook may send: not into the server's own network (SSRF).

A webhook URL is chosen by a tenant admin but fetched by the server, so a URL naming (or
resolving to) a loopback, private, link-local (cloud metadata at 169.254.169.254), shared
carrier-grade NAT, multicast or otherwise non-global address — or an IPv6 address carrying
such an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32,
IPv4-compatible ::a.b.c.d), which a gateway or the host's stack delivers to it — would let
a tenant probe or call services only the server can reach. Such URLs are refused when the
webhook is created and again before every delivery (DNS can change after creation), unless the
operator allows private destinations (`QM_WEBHOOK_ALLOW_PRIVATE`, e.g. for an internal
receiver or tests).

A name that does not resolve at creation is accepted (DNS may not be set up yet): the check
before each delivery covers it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


class DestinationRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host resolves to; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
NAT64_LOCAL_PREFIX = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use
IPV4_COMPATIBLE_PREFIX = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries and a gateway or the host's stack may
    deliver to (mapped, NAT64, 6to4, Teredo server and client, IPv4-compatible), each with
    the kind of its carrier (with its article). Pure."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(("an IPv4-mapped", address.ipv4_mapped))
    if address in NAT64_PREFIX:
        found.append(("a NAT64", low32))
    if address.sixtofour is not None:
        found.append(("a 6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("a Teredo", server), ("a Teredo", client)]
    if address in IPV4_COMPATIBLE_PREFIX and int(address) > 1:  # not :: nor ::1
        found.append(("an IPv4-compatible", low32))
    return found


def why_refused(address: IPAddress) -> str | None:
    """Why webhooks may not reach `address`, or None when it is a public address. Pure."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return why_refused(address.ipv4_mapped)
        if address in NAT64_LOCAL_PREFIX:
            return "a local-use NAT64 address"
        for carrier, inner in embedded_ipv4(address):
            reason = why_refused(inner)
            if reason is not None:
                return f"{carrier} address of {inner}, {reason}"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, label in (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
    ):
        if test:
            return label
    if not address.is_global:
        return "a non-public address"
    return None


def check_destination(url: str, *, allow_private: bool, resolve: Resolver = resolve_host) -> None:
    """Raise DestinationRefused, naming the URL and why, when its host is or resolves to a
    non-public address (and private destinations are not allowed)."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
    for address in addresses:
        reason = why_refused(address)
        if reason is not None:
            via = "is" if str(address) == host else f"resolves to {address},"
            raise DestinationRefused(
                f"url {url!r}: host {host!r} {via} {reason}; webhooks may only reach public "
                "addresses (an operator may allow private ones with QM_WEBHOOK_ALLOW_PRIVATE)"
            )
