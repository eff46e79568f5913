"""Online lookup and point-in-time training sets."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from conveyor_runtime import ProjectCache

from ..adapters.store import FeatureStore
from ..domain.features import featurize


class Vector(BaseModel):
    entity_id: str
    at: datetime
    feature_names: list[str]
    values: list[float]


class LabelAt(BaseModel):
    entity_id: str
    at: datetime = Field(description="The moment the label describes; features as of just before.")
    label: str
    fields: dict[str, object] = Field(default_factory=dict, description="The record's own fields.")


class TrainingSetRequest(BaseModel):
    labels: list[LabelAt] = Field(min_length=1, max_length=100_000)


class TrainingRow(Vector):
    label: str


def router(projects: ProjectCache, store: FeatureStore) -> APIRouter:
    api = APIRouter(tags=["feature"])

    def _spec(project: str):
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        return known.spec

    @api.get("/projects/{project}/entities/{entity_id}/features", response_model=Vector)
    async def online(project: str, entity_id: str, at: datetime | None = None) -> Vector:
        """The per-entity feature vector as of `at` (default now); the record's own fields are
        absent, so plain features take their defaults."""
        spec = _spec(project)
        at = at or datetime.now(UTC)
        if at.tzinfo is None:
            raise HTTPException(422, detail="at: a timestamp needs a time zone")
        history = (await store.histories(project, [entity_id])).get(entity_id, [])
        return Vector(
            entity_id=entity_id,
            at=at,
            feature_names=spec.feature_names(),
            values=featurize(spec, {}, at, history),
        )

    @api.post("/projects/{project}/training-set", response_model=list[TrainingRow])
    async def training_set(project: str, body: TrainingSetRequest) -> list[TrainingRow]:
        """Each label joined with features as of its moment: history strictly before `at`."""
        spec = _spec(project)
        histories = await store.histories(project, sorted({x.entity_id for x in body.labels}))
        return [
            TrainingRow(
                entity_id=x.entity_id,
                at=x.at,
                label=x.label,
                feature_names=spec.feature_names(),
                values=featurize(spec, x.fields, x.at, histories.get(x.entity_id, [])),
            )
            for x in body.labels
        ]

    @api.get("/projects/{project}/rows/count")
    async def rows(project: str) -> dict[str, int]:
        return {"count": await store.row_count(project)}

    return api
