"""The registry, seen from the trainer."""

from __future__ import annotations

import abc
import base64
from typing import Any

from conveyor_runtime import NotInRegistry, RegistryClient, verify_artifact


class Registry(abc.ABC):
    @abc.abstractmethod
    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def complete(self, project: str, version: int, body: dict[str, Any]) -> None:
        """A pending version becomes ready or failed."""

    @abc.abstractmethod
    async def champion(self, project: str) -> tuple[int, bytes] | None:
        """The champion's version and its verified artifact, or None."""

    @abc.abstractmethod
    async def promote(self, project: str, version: int, reason: str) -> None: ...

    @abc.abstractmethod
    async def version(self, project: str, version: int) -> tuple[dict[str, Any], bytes | None]:
        """A registered version's record and its verified artifact (None for a failed one)."""

    @abc.abstractmethod
    async def project_spec(self, project: str, project_version: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def request_approval(
        self, project: str, version: int, reason: str, evidence: dict[str, Any]
    ) -> int:
        """Open a promotion request for an approver; its id."""


class HttpRegistry(Registry):
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.registry = RegistryClient(base_url, token=token)

    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.registry.register(project, body)

    async def complete(self, project: str, version: int, body: dict[str, Any]) -> None:
        await self.registry.complete(project, version, body)

    async def champion(self, project: str) -> tuple[int, bytes] | None:
        try:
            version = (await self.registry.aliases(project)).get("champion")
        except NotInRegistry:
            return None
        if version is None:
            return None
        data, claimed = await self.registry.artifact(project, version)
        verify_artifact(data, f"{project} champion v{version}", claimed)
        return version, data

    async def promote(self, project: str, version: int, reason: str) -> None:
        await self.registry.move_alias(project, "champion", version, reason=reason)

    async def version(self, project: str, version: int) -> tuple[dict[str, Any], bytes | None]:
        info = await self.registry.version(project, version)
        if info["sha256"] is None:
            return info, None
        data, claimed = await self.registry.artifact(project, version)
        verify_artifact(data, f"{project} v{version}", info["sha256"], claimed)
        return info, data

    async def project_spec(self, project: str, project_version: int) -> dict[str, Any]:
        return await self.registry.project_spec(project, project_version)

    async def request_approval(
        self, project: str, version: int, reason: str, evidence: dict[str, Any]
    ) -> int:
        request = await self.registry.request_promotion(
            project, version, reason=reason, evidence=evidence
        )
        return int(request["id"])

    async def close(self) -> None:
        await self.registry.close()


def encode(onnx: bytes) -> str:
    return base64.b64encode(onnx).decode()
