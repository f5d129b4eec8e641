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
before each delivery covers it. A delivery connects to the very address it checked
(`pin_destination`), so a name cannot resolve to a public address for the check and to a
private one for the connection (DNS rebinding).

A webhook URL is itself a credential (Slack's path, a `?token=` query, userinfo), so every
message that names one shows it redacted (`redact_url`: scheme, host and port), and
`redact_in` takes a whole URL and its secret parts out of a text the server did not write
(an HTTP library's error, a receiver's answer) before it is stored.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

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


def redact_url(url: str) -> str:
    """The URL up to its host and port, `/...` standing for a path or query
    (`https://hooks.slack.com/...`): its path, query and userinfo may be the credential.
    `GET /v1/webhooks` shows URLs so, and every message naming a webhook URL. Pure; an
    unparsable URL gives what can be told of it, never its path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: shown as written, the host's part of the netloc
        host = parts.netloc.rpartition("@")[2]
        port = None
    if port is not None:
        host = f"{host}:{port}"
    shown = f"{parts.scheme}://{host}"
    return f"{shown}/..." if (parts.path not in ("", "/") or parts.query) else shown


SHORTEST_SECRET_PART = 4  # shorter pieces (`/h`) are left: replacing them garbles the text


def redact_in(text: str, url: str) -> str:
    """`text` with `url` replaced by `redact_url(url)`, and its userinfo, path, query and
    fragment replaced by `...` wherever they appear apart (an error quoting the request
    target, a receiver echoing it). Pure."""
    out = text.replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    pieces = [parts.netloc.rpartition("@")[0], parts.path, parts.query, parts.fragment]
    if parts.query:
        pieces.append(f"{parts.path}?{parts.query}")
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= SHORTEST_SECRET_PART:
            out = out.replace(piece, "...")
    return out


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host resolves to, in the resolver's order of preference (RFC 6724:
    an IPv6 address first only where IPv6 is reachable); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
    """Raise DestinationRefused, naming the URL (redacted: scheme, host and port) and why,
    when its host is or resolves to a non-public address (and private destinations are not
    allowed)."""
    if allow_private:
        return
    host, addresses = _addresses(url, resolve)
    _refuse_non_public(url, host, addresses)


def _addresses(url: str, resolve: Resolver) -> tuple[str, list[IPAddress]]:
    """The URL's host and its addresses: itself when it is an address literal, else what it
    resolves to (none when it does not)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        return host, [ipaddress.ip_address(host)]
    except ValueError:
        return host, [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]


def _refuse_non_public(url: str, host: str, addresses: list[IPAddress]) -> None:
    for address in addresses:
        reason = why_refused(address)
        if reason is not None:
            via = "is" if str(address) == host else f"resolves to {address},"
            raise DestinationRefused(
                f"url {redact_url(url)!r}: host {host!r} {via} {reason}; webhooks may only "
                "reach public addresses (an operator may allow private ones with "
                "QM_WEBHOOK_ALLOW_PRIVATE)"
            )


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a delivery connects: `url` with its host replaced by the address that was
    checked, and the name it had for the `Host` header and TLS (`host_header`,
    `sni_hostname`; None when the URL named an address)."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None
    # The name's other addresses (all checked), tried in order when one refuses to connect,
    # as a client connecting by name would.
    fallbacks: tuple[str, ...] = ()


def pin_destination(
    url: str, *, allow_private: bool, resolve: Resolver = resolve_host
) -> Destination:
    """Resolve the URL's host once, check every address (unless private ones are allowed)
    and connect to the first: the connection goes to an address the check saw, so a name
    re-pointed at a private address between the check and the connection (DNS rebinding)
    reaches nothing. TLS still verifies the certificate for the name. A name that does not
    resolve is refused, naming it."""
    host, addresses = _addresses(url, resolve)
    if not allow_private:
        _refuse_non_public(url, host, addresses)
    if not addresses:
        raise DestinationRefused(f"url {redact_url(url)!r}: host {host!r} does not resolve")
    target = httpx.URL(url)
    if str(addresses[0]) == host:
        return Destination(url)
    first, *others = (str(target.copy_with(host=str(address))) for address in addresses)
    name = target.raw_host.decode("ascii")
    port = f":{target.port}" if target.port is not None else ""
    sni = name if target.scheme == "https" else None
    return Destination(first, f"{name}{port}", sni, tuple(others))
