"""POST feedback over HTTP: the same validation and join as the Kafka path."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from conveyor_auth import Action, Principal, caller
from conveyor_bus import tracing
from conveyor_contracts.events import FeedbackSubmitted
from conveyor_runtime import Invalid, UnknownProject, refusals

from ..domain.join import InvalidFeedback
from ..handlers import Feedback


class FeedbackBatch(BaseModel):
    feedback: list[FeedbackSubmitted] = Field(min_length=1, max_length=10_000)


class Outcome(BaseModel):
    recorded: list[str] = Field(description="Feedback ids joined to their prediction now.")
    waiting: list[str] = Field(description="Feedback ids waiting for their prediction.")


class Invalidity(BaseModel):
    index: int = Field(description="The feedback's place in the request.")
    problem: str


class NotTaken(BaseModel):
    message: str
    errors: list[Invalidity]


class FeedbackRefused(BaseModel):
    """Feedback that names no prediction it can be, or a label the project does not have."""

    detail: NotTaken


class Conflicting(BaseModel):
    feedback_id: str
    problem: str


class Conflicts(BaseModel):
    refused: list[Conflicting]


class FeedbackConflicts(BaseModel):
    """Feedback ids already taken with something else."""

    detail: Conflicts


Submitter = Annotated[Principal, caller(Action.SUBMIT)]
SUBMIT_REFUSALS: dict[int | str, dict[str, Any]] = {
    **refusals(404),
    409: {"model": FeedbackConflicts, "description": "Feedback ids taken already."},
    422: {
        "model": Invalid | FeedbackRefused,
        "description": "The request does not validate, or some of its feedback is invalid "
        "(none is taken).",
    },
}


def router(feedback: Feedback) -> APIRouter:
    api = APIRouter(tags=["feedback"])

    async def _submit(items: list[FeedbackSubmitted]) -> Outcome:
        errors = []
        for index, item in enumerate(items):
            try:
                feedback.validate(item)
            except UnknownProject as exc:
                raise HTTPException(404, detail=str(exc)) from exc
            except InvalidFeedback as exc:
                errors.append({"index": index, "problem": str(exc)})
        if errors:
            raise HTTPException(
                422, detail={"message": "no feedback of the request was taken", "errors": errors}
            )
        # Each label's own trace: the HTTP request's, when the caller sent a traceparent.
        here = tracing.current_traceparent()
        recorded, waiting, refused = await feedback.repo.add_feedback(items, [here] * len(items))
        if refused:
            raise HTTPException(
                409,
                detail={"refused": [{"feedback_id": fid, "problem": why} for fid, why in refused]},
            )
        return Outcome(recorded=[r.feedback_id for r in recorded], waiting=waiting)

    @api.post("/feedback", response_model=Outcome, status_code=202, responses=SUBMIT_REFUSALS)
    async def post_feedback(item: FeedbackSubmitted, _who: Submitter) -> Outcome:
        return await _submit([item])

    @api.post("/feedback/batch", response_model=Outcome, status_code=202, responses=SUBMIT_REFUSALS)
    async def post_batch(batch: FeedbackBatch, _who: Submitter) -> Outcome:
        return await _submit(batch.feedback)

    @api.get("/projects/{project}/feedback/stats")
    async def stats(project: str) -> dict[str, Any]:
        """Labels (the newest per prediction), their accuracy, label delay, corrections, and
        feedback still waiting for its prediction."""
        return await feedback.repo.stats(project)

    @api.get("/projects/{project}/predictions/{request_id}/labels", responses=refusals(404))
    async def labels(project: str, request_id: str) -> list[dict[str, Any]]:
        """Every label given for one prediction, oldest first (`current`: the one that counts)."""
        history = await feedback.repo.history(project, request_id)
        if not history:
            raise HTTPException(404, detail=f"no labels for request {request_id} in {project}")
        return history

    return api
