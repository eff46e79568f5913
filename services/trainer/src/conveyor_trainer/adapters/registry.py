"""The registry, seen from the trainer."""

from __future__ import annotations

import abc
import base64
import hashlib
from typing import Any

import httpx


class RegistryUnavailable(RuntimeError):
    pass


class Registry(abc.ABC):
    @abc.abstractmethod
    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def champion(self, project: str) -> tuple[int, bytes] | None:
        """The champion's version and its verified artifact, or None."""

    @abc.abstractmethod
    async def promote(self, project: str, version: int, reason: str) -> None: ...


class HttpRegistry(Registry):
    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30.0)

    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(f"/projects/{project}/versions", json=body)
        r.raise_for_status()
        return dict(r.json())

    async def champion(self, project: str) -> tuple[int, bytes] | None:
        r = await self.client.get(f"/projects/{project}/aliases")
        r.raise_for_status()
        version = r.json().get("champion")
        if version is None:
            return None
        art = await self.client.get(f"/projects/{project}/versions/{version}/artifact")
        art.raise_for_status()
        if hashlib.sha256(art.content).hexdigest() != art.headers.get("X-Artifact-SHA256"):
            raise RegistryUnavailable(f"champion v{version} artifact does not match its sha256")
        return int(version), art.content

    async def promote(self, project: str, version: int, reason: str) -> None:
        r = await self.client.put(
            f"/projects/{project}/aliases/champion",
            json={"version": version, "actor": "trainer", "reason": reason},
        )
        r.raise_for_status()

    async def close(self) -> None:
        await self.client.aclose()


def encode(onnx: bytes) -> str:
    return base64.b64encode(onnx).decode()
