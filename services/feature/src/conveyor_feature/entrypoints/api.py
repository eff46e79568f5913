"""Online reads with each value's status, prediction requests enriched as on Kafka, and
point-in-time training sets from the offline rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

from conveyor_auth import Action, Principal, caller
from conveyor_contracts import ModelProject
from conveyor_contracts.events import Id, PredictionEnriched, new_id, utcnow
from conveyor_contracts.project import CategoricalFeature, NumericFeature
from conveyor_runtime import ProjectCache, refusals

from ..adapters.store import FeatureStore
from ..domain.features import featurize, status
from ..enrichment import Asked, enrich

Status = Literal["present", "expired", "missing"]


class FeatureValue(BaseModel):
    name: str
    value: float
    status: Status = Field(
        description="`present`; `expired`: its source is older than the project's TTL (the "
        "default is used); `missing`: nothing to compute it from (the default is used)."
    )
    source_time: datetime | None = Field(description="Event time of the record it comes from.")


class Vector(BaseModel):
    entity_id: str
    at: datetime
    feature_names: list[str]
    values: list[float]
    features: list[FeatureValue]


class LabelAt(BaseModel):
    entity_id: str
    # Aware at the edge: a naive time has no place on the timeline of the rows it is joined to.
    at: AwareDatetime = Field(description="The moment the label describes.")
    label: str


class TrainingSetRequest(BaseModel):
    labels: list[LabelAt] = Field(min_length=1, max_length=100_000)


class TrainingRow(BaseModel):
    entity_id: str
    at: datetime
    label: str
    status: Status = Field(
        description="`present`: joined with the entity's newest row at or before `at`; "
        "`expired`: that row is older than the TTL; `missing`: the entity has no row by then. "
        "Not present: `values` are null."
    )
    as_of: datetime | None = Field(description="Event time of the joined row.")
    feature_names: list[str]
    values: list[float] | None


# Requests one call may enrich: a batch the store reads in two queries, answered well within a
# caller's time-out.
MAX_ENRICH = 1000


class EnrichRequest(BaseModel):
    request_id: Id = Field(
        default_factory=new_id, description="Echoed in the answer; when absent, a new one."
    )
    fields: dict[str, Any] = Field(
        description="The entity key and the current record's fields, as on predictions.requests.",
        examples=[{"customer": "c-17", "amount": 42.0}],
    )
    requested_at: AwareDatetime = Field(
        default_factory=utcnow,
        description="The request's event time when its project's event-time field is left out.",
    )


class EnrichBatch(BaseModel):
    requests: list[EnrichRequest] = Field(min_length=1, max_length=MAX_ENRICH)


class Enriched(PredictionEnriched):
    """A request's feature vector: the `PredictionEnriched` the Kafka path would publish."""

    status: Literal["ok"] = "ok"


class RefusedRequest(BaseModel):
    """A request its project's data contract refuses (a Kafka request would be dead-lettered)."""

    request_id: str
    status: Literal["refused"] = "refused"
    reason: str = Field(description="Every failing field, each with why.")


class Enrichment(BaseModel):
    results: list[Annotated[Enriched | RefusedRequest, Field(discriminator="status")]] = Field(
        description="One per request, in the order of the requests."
    )


Submitter = Annotated[Principal, caller(Action.SUBMIT)]


def router(projects: ProjectCache, store: FeatureStore) -> APIRouter:
    api = APIRouter(tags=["feature"])

    def _spec(project: str) -> ModelProject:
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        return known.spec

    @api.get(
        "/projects/{project}/entities/{entity_id}/features",
        response_model=Vector,
        responses=refusals(404),
    )
    async def online(project: str, entity_id: str, at: AwareDatetime | None = None) -> Vector:
        """The entity's feature vector as of `at` (default now): plain features from its newest
        record, aggregates over its records before `at`; each value with its status."""
        spec = _spec(project)
        at = at or datetime.now(UTC)
        history = (await store.histories(project, [entity_id])).get(entity_id, [])
        state = (await store.states(project, [entity_id])).get(entity_id)
        ttl = spec.feature_ttl_s
        state_time = state.event_time if state else None
        state_ok = status(at, state_time, ttl) == "present"
        values = featurize(spec, state.fields if state and state_ok else {}, at, history)
        newest_before = max((r.event_time for r in history if r.event_time < at), default=None)
        features = []
        for value, (feature, name) in zip(values, spec.columns(), strict=True):
            if isinstance(feature, NumericFeature | CategoricalFeature):
                source = (
                    state_time if state and state.fields.get(feature.field) is not None else None
                )
            else:
                source = newest_before
            features.append(
                FeatureValue(
                    name=name, value=value, status=status(at, source, ttl), source_time=source
                )
            )
        return Vector(
            entity_id=entity_id,
            at=at,
            feature_names=spec.feature_names(),
            values=values,
            features=features,
        )

    @api.post(
        "/projects/{project}/training-set",
        response_model=list[TrainingRow],
        responses=refusals(404),
    )
    async def training_set(project: str, body: TrainingSetRequest) -> list[TrainingRow]:
        """Each label at time t joined with the entity's feature row as of t — the newest row at
        or before t, never a later one — within the project's TTL."""
        spec = _spec(project)
        joined = await store.training_set(project, [(x.entity_id, x.at) for x in body.labels])
        out = []
        for x, row in zip(body.labels, joined, strict=True):
            state = status(x.at, row.event_time if row else None, spec.feature_ttl_s)
            out.append(
                TrainingRow(
                    entity_id=x.entity_id,
                    at=x.at,
                    label=x.label,
                    status=state,
                    as_of=row.event_time if row else None,
                    feature_names=row.names if row else spec.feature_names(),
                    values=row.values if row and state == "present" else None,
                )
            )
        return out

    @api.post(
        "/projects/{project}/enrich",
        response_model=Enrichment,
        responses=refusals(404),
    )
    async def enrich_requests(project: str, batch: EnrichBatch, _who: Submitter) -> Enrichment:
        """Prediction requests' feature vectors, computed as for requests on
        predictions.requests (the same code): each checked against the project's data contract,
        plain fields it leaves out taken from the entity's online state, per-entity features
        over the entity's records before its event time. Nothing is published or stored; a
        refused request is answered with the reason, the others still enriched."""
        known = projects.get(project)
        if known is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        spec = known.spec
        asked = [Asked(r.fields, r.requested_at) for r in batch.requests]
        results = await enrich(spec, store, asked)
        now, names = datetime.now(UTC), spec.feature_names()
        return Enrichment(
            results=[
                RefusedRequest(request_id=r.request_id, reason=result)
                if isinstance(result, str)
                else Enriched(
                    request_id=r.request_id,
                    project=project,
                    project_version=known.version,
                    entity_id=result.entity_id,
                    requested_at=r.requested_at,
                    enriched_at=now,
                    feature_names=names,
                    values=result.values,
                )
                for r, result in zip(batch.requests, results, strict=True)
            ]
        )

    @api.get("/projects/{project}/freshness", responses=refusals(404))
    async def freshness(project: str) -> dict[str, object]:
        """Now minus the newest event time in the project's online state (also the metric
        `conveyor_feature_freshness_seconds`)."""
        _spec(project)
        newest = await store.newest_event_time(project)
        return {
            "newest_event_time": newest,
            "freshness_s": None if newest is None else (datetime.now(UTC) - newest).total_seconds(),
        }

    @api.get("/projects/{project}/rows/count")
    async def rows(project: str) -> dict[str, int]:
        return {"count": await store.row_count(project)}

    return api
