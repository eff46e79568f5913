"""Where the monitor may post a webhook.

Anyone who can apply a project names its webhook URLs, and the monitor posts from inside the
deployment: unchecked, a URL could reach the metadata service, the database or any other internal
endpoint. Before each delivery the URL's host is resolved and every address it resolves to must be
public (`conveyor_contracts.addresses.non_global`), unless the monitor's
`MONITOR_WEBHOOK_ALLOWED_HOSTS` names the host or a block holding the address. The POST then
goes to one of the addresses that were checked, not to a fresh resolution that a rebinding DNS
server could answer differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from conveyor_contracts.addresses import IPAddress, embedded_ipv4, non_global

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """A webhook target the monitor does not post to; the message says why and how to allow it."""


@dataclass(frozen=True)
class Allowance:
    """Targets an operator allows although they are not public: host names (matched exactly,
    without a trailing dot, case-insensitively) and addresses or CIDR blocks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowance:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower().rstrip(".")
            if not text:
                raise ValueError("an allowed webhook host is empty")
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                # A mistyped block would otherwise pass silently as a host name no URL has.
                if "/" in text or ":" in text:
                    raise ValueError(f"{entry!r} is neither a host name nor a CIDR block") from None
            hosts.add(text)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        inner = embedded_ipv4(address)
        return any(a in net for net in self.networks for a in (address, inner) if a is not None)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # A scope (`fe80::1%eth0`) cannot travel in a URL; such an address is link-local,
        # refused unless allowed.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise socket.gaierror(f"{host} has no IPv4 or IPv6 address")
    return addresses


def check(host: str, addresses: Sequence[IPAddress], allowance: Allowance) -> None:
    """Raise `Refused` unless every address is public or allowed (or the host is allowed): one
    private address among public ones is enough for a resolver to hand out that one."""
    if allowance.allows_host(host):
        return
    for address in addresses:
        kind = non_global(address)
        if kind is not None and not allowance.allows_address(address):
            raise Refused(f"{address} is {kind}; allow it with MONITOR_WEBHOOK_ALLOWED_HOSTS")
