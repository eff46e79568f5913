"""Where serving fetches models: the registry's API."""

from __future__ import annotations

import abc
from typing import Any

import httpx


class ModelSource(abc.ABC):
    @abc.abstractmethod
    async def version(self, project: str, version: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        """The bytes and the sha256 the registry claims for them."""


class HttpModelSource(ModelSource):
    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30.0)

    async def version(self, project: str, version: int) -> dict[str, Any]:
        r = await self.client.get(f"/projects/{project}/versions/{version}")
        r.raise_for_status()
        return dict(r.json())

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        r = await self.client.get(f"/projects/{project}/versions/{version}/artifact")
        r.raise_for_status()
        return r.content, r.headers.get("X-Artifact-SHA256", "")
