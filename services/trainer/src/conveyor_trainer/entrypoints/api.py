"""Start runs, follow them, see the examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from conveyor_runtime import ProjectCache

from ..adapters.repository import ActiveRun, Repository
from ..runs import Runs


class RunRequest(BaseModel):
    reason: str = Field("requested over HTTP", max_length=500)
    requested_by: str = Field("api", max_length=200)


class RunInfo(BaseModel):
    run_id: str
    project: str
    trigger: str
    status: str
    reason: str
    params: dict[str, Any]
    metrics: dict[str, float]
    champion_metrics: dict[str, float]
    model_version: int | None
    promoted: bool
    training_rows: int
    started_at: datetime
    finished_at: datetime | None
    logs: str


def router(projects: ProjectCache, repo: Repository, runs: Runs) -> APIRouter:
    api = APIRouter(tags=["trainer"])

    @api.post("/projects/{project}/runs", status_code=202)
    async def start_run(project: str, body: RunRequest) -> dict[str, str]:
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        try:
            run_id = await runs.start(known, f"{body.requested_by}: {body.reason}")
        except ActiveRun as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        return {"run_id": run_id}

    @api.get("/projects/{project}/runs", response_model=list[RunInfo])
    async def list_runs(project: str) -> Any:
        return await repo.runs(project)

    @api.get("/runs/{run_id}", response_model=RunInfo)
    async def get_run(run_id: str) -> Any:
        run = await repo.run(run_id)
        if run is None:
            raise HTTPException(404, detail=f"no run {run_id!r}")
        return run

    @api.get("/projects/{project}/examples")
    async def examples(project: str) -> dict[str, int]:
        return await repo.example_stats(project)

    return api
