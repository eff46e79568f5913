from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ..adapters.repository import Repository

MAX_MINUTES = 100 * 366 * 24 * 60  # a century


def router(repo: Repository) -> APIRouter:
    api = APIRouter(tags=["monitor"])

    @api.get("/projects/{project}/drift")
    async def drift(project: str) -> dict[str, Any]:
        """The reference, the latest windows with their statistics, the sequential detectors'
        evidence, and the episodes."""
        return await repo.overview(project)

    @api.get("/projects/{project}/compare")
    async def compare(project: str) -> list[dict[str, Any]]:
        """Each challenger that scored in shadow mode beside the version that answered the same
        requests: agreement, and both accuracies on the requests labeled so far."""
        return await repo.compare(project)

    @api.get("/projects/{project}/versions")
    async def by_version(
        project: str,
        # Bounded: the window's start is a timestamp, and one before the year 4713 BC (or an
        # interval over the database's range) is a value Postgres refuses.
        minutes: Annotated[float | None, Query(gt=0, le=MAX_MINUTES)] = None,
    ) -> list[dict[str, Any]]:
        """Each version that answered requests — the champion and, in canary mode, the
        challenger on its share of entities: requests, labeled so far, accuracy on those, and
        when it served (over the last `minutes` when given)."""
        return await repo.by_version(project, minutes)

    return api
