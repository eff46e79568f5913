"""Where the monitor gets a version's reference profile."""

from __future__ import annotations

import abc
from typing import Any

import httpx


class Profiles(abc.ABC):
    @abc.abstractmethod
    async def profile(self, project: str, version: int) -> dict[str, Any]: ...


class HttpProfiles(Profiles):
    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30.0)

    async def profile(self, project: str, version: int) -> dict[str, Any]:
        r = await self.client.get(f"/projects/{project}/versions/{version}")
        r.raise_for_status()
        return dict(r.json()["profile"])
