"""The monitor's check of what a webhook's host resolves to: every address public, or allowed
by the operator's `MONITOR_WEBHOOK_ALLOWED_HOSTS` (host names and CIDR blocks)."""

from __future__ import annotations

import json
from ipaddress import ip_address

import pytest
from pydantic import ValidationError

from conveyor_monitor.adapters.targets import Allowance, Refused, check
from conveyor_monitor.bootstrap import MonitorSettings


def test_any_address_that_is_not_public_refuses_the_host():
    public, private = ip_address("93.184.216.34"), ip_address("10.0.0.5")
    check("hooks.example.com", [public], Allowance())
    with pytest.raises(Refused) as refused:
        check("hooks.example.com", [public, private], Allowance())
    assert str(refused.value) == (
        "10.0.0.5 is a private address; allow it with MONITOR_WEBHOOK_ALLOWED_HOSTS"
    )


def test_a_cidr_allowance_lets_its_addresses_through_and_no_others():
    allowance = Allowance.parse(["10.20.0.0/16", "::1", "127.0.0.1"])
    check("hooks.internal", [ip_address("10.20.3.4")], allowance)
    check("localhost", [ip_address("127.0.0.1"), ip_address("::1")], allowance)
    check("mapped", [ip_address("::ffff:10.20.0.9")], allowance)  # the IPv4 it leads to
    with pytest.raises(Refused, match=r"10\.21\.0\.1 is a private address"):
        check("hooks.internal", [ip_address("10.20.3.4"), ip_address("10.21.0.1")], allowance)
    with pytest.raises(Refused, match=r"127\.0\.0\.2 is a loopback address"):
        check("localhost", [ip_address("127.0.0.2")], allowance)


def test_a_host_name_allowance_lets_that_name_through_whatever_it_resolves_to():
    allowance = Allowance.parse(["Hooks.Internal."])
    check("hooks.internal", [ip_address("10.0.0.5"), ip_address("127.0.0.1")], allowance)
    check("HOOKS.INTERNAL.", [ip_address("10.0.0.5")], allowance)
    with pytest.raises(Refused):
        check("other.internal", [ip_address("10.0.0.5")], allowance)
    with pytest.raises(Refused):  # a name, not a suffix
        check("evil.hooks.internal", [ip_address("10.0.0.5")], allowance)


def test_the_allowance_is_a_json_setting_and_a_mistyped_block_is_an_error(monkeypatch):
    monkeypatch.setenv(
        "MONITOR_WEBHOOK_ALLOWED_HOSTS", json.dumps(["hooks.internal", "10.0.0.0/8"])
    )
    assert MonitorSettings().monitor_webhook_allowed_hosts == ["hooks.internal", "10.0.0.0/8"]
    assert MonitorSettings(monitor_webhook_allowed_hosts=[]).monitor_webhook_allowed_hosts == []
    with pytest.raises(ValidationError, match="neither a host name nor a CIDR block"):
        MonitorSettings(monitor_webhook_allowed_hosts=["10.0.0.0/33"])
