"""Which IP addresses a webhook may reach: the one classification behind both the drift policy's
apply-time check of literal addresses and the monitor's check of what a host name resolves to."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# DNS64's well-known prefix: the last 32 bits are the IPv4 address a NAT64 gateway reaches.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (IPv4-mapped, 6to4, NAT64), if any: judging
    `::ffff:127.0.0.1` by its IPv6 ranges alone would let loopback through under another name."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def non_global(address: IPAddress) -> str | None:
    """What makes `address` no place to send a webhook ("a loopback address", ...), or None when
    it is a public (global) address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return non_global(inner)
    # The named kinds first, for a reason a person recognises; `is_global` last catches the
    # rest (shared address space, benchmarking, documentation ranges...). Multicast and IPv6
    # site-local addresses count as global to `ipaddress`, so they are asked about by name.
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a global address"
    return None
