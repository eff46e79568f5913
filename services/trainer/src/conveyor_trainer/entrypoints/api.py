"""Start runs, follow them, see the examples."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from conveyor_auth import Action, Principal, acting, caller
from conveyor_contracts.project import EstimatorSpec
from conveyor_runtime import NotInRegistry, ProjectCache, refusals

from ..adapters.repository import ActiveRun, Repository
from ..runs import OverBudget, ReproduceFailed, Runs, Trigger


class RunRequest(BaseModel):
    """Who asked is the caller's token's name."""

    reason: str = Field("requested over HTTP", max_length=500, pattern=r"^[^\x00]*$")


class ExperimentRequest(RunRequest):
    variants: list[EstimatorSpec] = Field(
        min_length=1,
        max_length=20,
        description="Estimators (class, parameters, scaling, seed) to train on one snapshot of "
        "the examples, one run each; registered, never promoted by the run.",
    )


class Started(BaseModel):
    run_id: str
    experiment_id: str | None = None


class RunInfo(BaseModel):
    run_id: str
    project: str
    trigger: str
    trigger_info: dict[str, Any]
    experiment_id: str | None
    variant: dict[str, Any] | None
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
    duration_s: float | None
    logs: str


Trainer = Annotated[Principal, caller(Action.TRAIN)]


def _person(who: Principal, reason: str) -> Trigger:
    return Trigger("person", who.name, reason, actor=acting(who, Action.TRAIN))


def router(projects: ProjectCache, repo: Repository, runs: Runs) -> APIRouter:
    api = APIRouter(tags=["trainer"])

    @api.post(
        "/projects/{project}/runs",
        status_code=202,
        response_model=Started,
        responses=refusals(404, 409, 429),
    )
    async def start_run(project: str, body: RunRequest, who: Trainer) -> Any:
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        try:
            run_id = await runs.start(known, _person(who, body.reason))
        except ActiveRun as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        except OverBudget as exc:
            raise HTTPException(429, detail=str(exc)) from exc
        return Started(run_id=run_id)

    @api.post(
        "/projects/{project}/experiments",
        status_code=202,
        response_model=Started,
        responses=refusals(404, 409, 429),
    )
    async def start_experiment(project: str, body: ExperimentRequest, who: Trainer) -> Any:
        """Train variants side by side: the same examples, the same holdout, one run each
        (`GET /projects/{project}/runs?experiment=...`, `GET /runs/compare`)."""
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        try:
            experiment_id, run_id = await runs.start_experiment(
                known, _person(who, body.reason), body.variants
            )
        except ActiveRun as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        except OverBudget as exc:
            raise HTTPException(429, detail=str(exc)) from exc
        return Started(run_id=run_id, experiment_id=experiment_id)

    @api.get("/projects/{project}/runs", response_model=list[RunInfo])
    async def list_runs(
        project: str,
        experiment: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> Any:
        """The project's newest `limit` runs, oldest first (those of one experiment, given its
        id)."""
        return await repo.runs(project, experiment, limit)

    @api.get("/runs/compare", responses=refusals(404))
    async def compare_runs(
        run_id: Annotated[list[str], Query(min_length=1, max_length=50)],
    ) -> dict[str, Any]:
        """Runs side by side: estimator, parameters, every metric, rows, duration, version."""
        found = await repo.runs_by_id(run_id)
        missing = sorted(set(run_id) - {r["run_id"] for r in found})
        if missing:
            raise HTTPException(404, detail=f"no runs {missing}")
        metrics = sorted({m for r in found for m in r["metrics"]})
        return {
            "metrics": metrics,
            "runs": [
                {
                    "run_id": r["run_id"],
                    "status": r["status"],
                    "estimator": (r["variant"] or {}).get("class_path"),
                    "params": r["params"],
                    "metrics": {m: r["metrics"].get(m) for m in metrics},
                    "champion_metrics": r["champion_metrics"],
                    "training_rows": r["training_rows"],
                    "duration_s": r["duration_s"],
                    "model_version": r["model_version"],
                    "promoted": r["promoted"],
                    "reason": r["reason"],
                }
                for r in found
            ],
            "best": {m: _best(found, m) for m in metrics},
        }

    @api.post("/projects/{project}/versions/{version}/reproduce", responses=refusals(404, 409))
    async def reproduce(
        project: str, version: Annotated[int, Path(ge=1, le=2**31 - 1)], _who: Trainer
    ) -> dict[str, Any]:
        """Read the version's training set again from its recorded topic offsets, retrain,
        and compare the new model's probabilities with the registered ones on the holdout."""
        try:
            return await runs.reproduce(project, version)
        except NotInRegistry as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        except ReproduceFailed as exc:
            raise HTTPException(409, detail=str(exc)) from exc

    @api.get("/runs/{run_id}", response_model=RunInfo, responses=refusals(404))
    async def get_run(run_id: str) -> Any:
        run = await repo.run(run_id)
        if run is None:
            raise HTTPException(404, detail=f"no run {run_id!r}")
        return run

    @api.get("/projects/{project}/examples")
    async def examples(project: str) -> dict[str, int]:
        return await repo.example_stats(project)

    return api


def _best(runs: list[dict[str, Any]], metric: str) -> str:
    """The run with the highest `metric` (every metric here is higher-is-better)."""
    scored = [(r["metrics"][metric], r["run_id"]) for r in runs if metric in r["metrics"]]
    return max(scored)[1]
