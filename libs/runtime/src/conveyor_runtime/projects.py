"""The project specs a service knows, kept current from `registry.events`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from conveyor_contracts import ModelProject
from conveyor_contracts.events import ProjectApplied


class UnknownProject(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown project {name!r}: apply it through the registry first")
        self.name = name


@dataclass(frozen=True)
class KnownProject:
    spec: ModelProject
    version: int


class ProjectCache:
    def __init__(self) -> None:
        self._projects: dict[str, KnownProject] = {}
        self._applied = asyncio.Event()  # set (and cleared) at each project applied

    def apply(self, event: ProjectApplied) -> bool:
        """Keep the newest version; an older or repeated event changes nothing."""
        current = self._projects.get(event.project)
        if current is not None and current.version >= event.project_version:
            return False
        self._projects[event.project] = KnownProject(event.spec, event.project_version)
        self._applied.set()
        self._applied.clear()
        return True

    async def wait_for(self, name: str, timeout_s: float) -> KnownProject:
        """The project, once this process has heard of it (another service may act on a
        project a moment before this one reads its announcement); UnknownProject after
        `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while (known := self._projects.get(name)) is None:
                    await self._applied.wait()  # woken by the next project applied
        except TimeoutError:
            raise UnknownProject(name) from None
        return known

    def get(self, name: str) -> KnownProject | None:
        return self._projects.get(name)

    def require(self, name: str) -> KnownProject:
        known = self._projects.get(name)
        if known is None:
            raise UnknownProject(name)
        return known

    def all(self) -> list[KnownProject]:
        return [self._projects[name] for name in sorted(self._projects)]

    def versions(self) -> dict[str, int]:
        return {name: p.version for name, p in sorted(self._projects.items())}
