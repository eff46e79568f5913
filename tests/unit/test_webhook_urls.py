"""Which webhook targets are refused for what they are: the address classification both the
drift policy (literal addresses, when applied) and the monitor (resolved ones, at delivery) use,
and the URLs a drift policy refuses when applied."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pydantic import ValidationError

from conveyor_contracts.addresses import non_global
from conveyor_contracts.project import DriftPolicy, notify_problems


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata services
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a private address"),  # reserved, and in ipaddress's private list
        ("100.64.0.1", "not a global address"),  # shared address space (carrier-grade NAT)
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fec0::1", "a site-local address"),
        ("ff02::1", "a multicast address"),
        ("2001:db8::1", "a private address"),  # documentation
        # IPv6 addresses that lead to an IPv4 one are judged by it
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # NAT64 of 169.254.169.254
    ],
)
def test_addresses_that_are_not_public_are_named_by_their_kind(address, kind):
    assert non_global(ip_address(address)) == kind


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_pass(address):
    assert non_global(ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/x", "is not http(s)"),
        ("hooks.example.com/x", "is not http(s)"),
        ("https://user:secret@hooks.example.com/x", "carries credentials (user:pass@)"),
        ("https://token@hooks.example.com/x", "carries credentials (user:pass@)"),
        ("https://hooks.example.com/" + "x" * 2000, "is longer than 2,000 characters"),
        ("https://hooks.example.com:99999/x", "has an invalid port"),
        ("http://127.0.0.1:8080/hook", "points at 127.0.0.1, a loopback address"),
        ("http://127.1/hook", "points at 127.1, a loopback address"),
        ("http://2130706433/hook", "points at 2130706433, a loopback address"),
        ("http://[::1]/hook", "points at ::1, a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "points at ::ffff:127.0.0.1, a loopback address"),
        ("http://10.0.0.5/hook", "points at 10.0.0.5, a private address"),
        ("http://192.168.0.10/hook", "points at 192.168.0.10, a private address"),
        ("http://169.254.169.254/latest", "points at 169.254.169.254, a link-local address"),
        ("http://[fe80::1]/hook", "points at fe80::1, a link-local address"),
    ],
)
def test_a_drift_policy_refuses_webhooks_it_can_tell_are_wrong_when_applied(url, problem):
    (message,) = notify_problems(["https://hooks.example.com/ok", url])
    assert "drift policy: notify URL '" in message and problem in message


def test_a_spec_read_back_from_the_changelog_keeps_webhooks_applied_before_the_checks():
    # registry.events is kept forever: a spec applied with a URL that applying now refuses must
    # still read, or every service would drop the project.
    assert DriftPolicy(notify=["http://10.0.0.5/hook"]).notify == ["http://10.0.0.5/hook"]
    with pytest.raises(ValidationError, match="is not http"):
        DriftPolicy(notify=["ftp://hooks.example.com/x"])


def test_a_drift_policy_keeps_public_webhooks_and_host_names_for_the_monitor_to_judge():
    urls = [
        "https://hooks.example.com/drift?team=fraud",
        "http://93.184.216.34:8080/hook",
        "https://[2606:4700:4700::1111]/hook",
        "http://hooks.internal/drift",  # resolves later; the monitor checks it at delivery
        "https://hooks.example.com/" + "x" * 1974,  # 2,000 characters
    ]
    assert len(urls[-1]) == 2000
    assert DriftPolicy(notify=urls).notify == urls
    assert notify_problems(urls) == []
