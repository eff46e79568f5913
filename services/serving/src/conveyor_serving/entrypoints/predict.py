"""Predictions from a project's raw fields over HTTP: enriched by the feature service (the code
the Kafka path runs), scored and published as the Kafka path's answers are, and returned."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Response
from pydantic import AwareDatetime, BaseModel, Field

from conveyor_auth import Action, Principal, caller
from conveyor_bus import PublishError
from conveyor_contracts.events import Id, PredictionServed, derived_id, new_id, utcnow
from conveyor_runtime import Invalid, ProjectCache, Refusal, refusals

from ..adapters.features import FeatureSource, FeaturesUnavailable
from ..domain.predictor import NoModel
from ..handlers import SERVED, NotServed, Serving

# What a 503 asks the caller to wait before trying again: a model loading, the feature service
# or the broker restarting take seconds.
RETRY_AFTER_S = 2


class PredictRequest(BaseModel):
    fields: dict[str, Any] = Field(
        description="The project's raw fields: its entity key, and any of the others (one left "
        "out comes from the entity's newest record). The label field, if sent, is ignored.",
        examples=[{"customer": "c-17", "amount": 42.0, "merchant": "online"}],
    )
    request_id: Id = Field(
        default_factory=new_id,
        description="The application's id, which feedback names later; when absent, a new one "
        "(the answer says it). Sent again, the same request is answered again as the same "
        "event downstream.",
    )
    requested_at: AwareDatetime = Field(
        default_factory=utcnow,
        description="When the application asked (RFC 3339 with a time zone); the request's "
        "event time when the project's event-time field is left out. Default: now.",
    )


Submitter = Annotated[Principal, caller(Action.SUBMIT)]
PREDICT_REFUSALS: dict[int | str, dict[str, Any]] = {
    200: {"model": PredictionServed, "description": "The answer, as on predictions.responses."},
    **refusals(404),
    422: {
        "model": Invalid | Refusal,
        "description": "The body does not validate, or the project's data contract refuses the "
        "request (`detail`: every failing field, with why).",
    },
    503: {
        "model": Refusal,
        "description": "No model is loaded for the project, or the feature service or the "
        "broker cannot be reached: try again after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def _unavailable(reason: str) -> HTTPException:
    return HTTPException(503, detail=reason, headers={"Retry-After": str(RETRY_AFTER_S)})


def router(serving: Serving, features: FeatureSource, projects: ProjectCache) -> APIRouter:
    api = APIRouter(tags=["serving"])

    @api.post(
        "/projects/{project}/predict",
        response_class=Response,
        responses=PREDICT_REFUSALS,
    )
    async def predict(project: str, body: PredictRequest, _who: Submitter) -> Response:
        """A prediction from the project's raw fields: checked and enriched exactly as a request
        on predictions.requests is (its entity's history and online state included), scored by
        the champion (a challenger instead for a canary's entities, beside it in shadow mode),
        published on predictions.responses for feedback and monitoring, and answered with that
        `PredictionServed`: its `request_id` and `model_version` are what feedback names."""
        received = time.perf_counter()
        if projects.get(project) is None:
            raise HTTPException(404, detail=f"unknown project {project!r}")
        try:
            serving.predictor.model(project)  # before asking for features no model would take
        except NoModel as exc:
            raise _unavailable(str(exc)) from exc
        try:
            enriched = await features.enrich(
                project, body.request_id, body.fields, body.requested_at
            )
        except FeaturesUnavailable as exc:
            raise _unavailable(str(exc)) from exc
        if isinstance(enriched, str):
            raise HTTPException(422, detail=enriched)
        # A function of the request: sent again (after a time-out, say), its answer is the same
        # event on predictions.responses, and a consumer that keeps one per request id (feedback,
        # the monitor) keeps one.
        event_id = derived_id(SERVED, project, body.request_id)
        try:
            answer = await serving.answer(enriched, received, event_id)
        except NotServed as exc:
            if _fits_float32(enriched.values):
                raise _unavailable(str(exc)) from exc  # the model's: none, or other features
            raise HTTPException(422, detail=str(exc)) from exc  # values no model can take
        except PublishError as exc:
            raise _unavailable(f"the answer could not be published: {exc}") from exc
        return Response(answer, media_type="application/json")

    return api


def _fits_float32(values: list[float]) -> bool:
    """Whether a model's float32 input can hold every value (one beyond ±3.4e38 cannot)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.asarray(values, dtype=np.float32)).all())
