"""Where serving fetches models: the registry's API."""

from __future__ import annotations

import abc
from typing import Any

from conveyor_runtime import RegistryClient


class ModelSource(abc.ABC):
    """Raises `conveyor_runtime.RegistryError`s: `NotInRegistry` is permanent for that version,
    `RegistryUnavailable` is worth a retry."""

    @abc.abstractmethod
    async def version(self, project: str, version: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        """The version's ONNX bytes and the sha256 the registry claims for them."""


class HttpModelSource(ModelSource):
    def __init__(self, base_url: str) -> None:
        self.registry = RegistryClient(base_url)

    async def version(self, project: str, version: int) -> dict[str, Any]:
        return await self.registry.version(project, version)

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        return await self.registry.artifact(project, version)
