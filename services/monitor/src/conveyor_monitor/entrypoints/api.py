from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..adapters.repository import Repository


def router(repo: Repository) -> APIRouter:
    api = APIRouter(tags=["monitor"])

    @api.get("/projects/{project}/drift")
    async def drift(project: str) -> dict[str, Any]:
        """The reference, the latest windows with their statistics, and the episodes."""
        return await repo.overview(project)

    @api.get("/projects/{project}/compare")
    async def compare(project: str) -> list[dict[str, Any]]:
        """Each challenger that scored in shadow mode beside the version that answered the same
        requests: agreement, and both accuracies on the requests labeled so far."""
        return await repo.compare(project)

    return api
