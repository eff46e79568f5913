"""Where the monitor gets a version's reference profile."""

from __future__ import annotations

import abc
from typing import Any

from conveyor_runtime import RegistryClient


class Profiles(abc.ABC):
    @abc.abstractmethod
    async def profile(self, project: str, version: int) -> dict[str, Any]:
        """Raises `conveyor_runtime.NotInRegistry` when the registry has no such version."""


class HttpProfiles(Profiles):
    def __init__(self, base_url: str) -> None:
        self.registry = RegistryClient(base_url)

    async def profile(self, project: str, version: int) -> dict[str, Any]:
        return dict((await self.registry.version(project, version))["profile"])
