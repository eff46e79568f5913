"""The registry client resends a read once when its connection was reset, never a write."""

from __future__ import annotations

import httpx
import pytest

from conveyor_runtime.registry import RegistryClient, RegistryUnavailable


def flaky(resets: int) -> tuple[httpx.MockTransport, list[str]]:
    """A transport whose first `resets` requests fail as a connection the server closed."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= resets:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"champion": 3})

    return httpx.MockTransport(handle), seen


async def test_a_read_is_resent_once_after_a_reset() -> None:
    transport, seen = flaky(1)
    client = RegistryClient("http://registry", transport=transport)
    assert await client.aliases("fraud") == {"champion": 3}
    assert seen == ["GET", "GET"]
    await client.close()


async def test_a_read_that_fails_twice_is_unavailable() -> None:
    transport, seen = flaky(2)
    client = RegistryClient("http://registry", transport=transport)
    with pytest.raises(RegistryUnavailable, match="Server disconnected"):
        await client.aliases("fraud")
    assert seen == ["GET", "GET"]
    await client.close()


async def test_a_write_is_not_resent() -> None:
    transport, seen = flaky(1)
    client = RegistryClient("http://registry", transport=transport)
    with pytest.raises(RegistryUnavailable):
        await client.move_alias("fraud", "champion", 3, reason="test")
    assert seen == ["PUT"]
    await client.close()
