"""POST feedback over HTTP: the same validation and join as the Kafka path.

`POST /feedback` and `/feedback/batch` name the project in the body, for applications;
`POST /projects/{project}/feedback` names it in the path, for web pages: CORS allows the
project's own `feedback.allowed_origins` there (`cors.ProjectCors`), and the browser module that
calls it is served at `/client/conveyor-feedback.js`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from conveyor_auth import Action, Principal, caller
from conveyor_bus import tracing
from conveyor_contracts.events import FeedbackSubmitted, Id
from conveyor_contracts.events import ProjectName as ProjectField
from conveyor_contracts.project import NAME_PATTERN
from conveyor_runtime import Invalid, UnknownProject, refusals

from ..domain.join import InvalidFeedback
from ..handlers import Feedback


class ProjectFeedback(BaseModel):
    """One label for a prediction of the path's project."""

    model_config = ConfigDict(extra="ignore")  # as the event: newer pages may send more

    feedback_id: Id | None = Field(
        None,
        description="The page's own id for this label: sending it again (a retry) is taken once. "
        "Absent: the service gives one.",
    )
    project: ProjectField | None = Field(
        None, description="Optional: when given, it must be the path's project."
    )
    request_id: Id = Field(description="The prediction this label judges (its `request_id`).")
    label: Id = Field(description="The true label: one of the project's classes.")
    submitted_at: datetime | None = Field(None, description="When it was given; absent: now.")


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


# The body names the projects: each is checked against a caller limited to some projects.
Sender = Annotated[Principal, caller(Action.FEEDBACK, checks_project=True)]
# The path names it: `caller` checks it.
PageSender = Annotated[Principal, caller(Action.FEEDBACK)]
ProjectPath = Annotated[str, Path(pattern=NAME_PATTERN)]
SUBMIT_REFUSALS: dict[int | str, dict[str, Any]] = {
    **refusals(404),
    409: {"model": FeedbackConflicts, "description": "Feedback ids taken already."},
    422: {
        "model": Invalid | FeedbackRefused,
        "description": "The request does not validate, or some of its feedback is invalid "
        "(none is taken).",
    },
}


# The browser module, shipped in this package (package data) and served from it.
CLIENT_MODULE = "conveyor-feedback.js"
# A page imports the module on every load: a browser keeps it a while and then asks again with
# its ETag, so a new release reaches pages within minutes at the cost of a 304.
CLIENT_MAX_AGE_S = 300


class ClientModule:
    def __init__(self) -> None:
        self.body = files("conveyor_feedback").joinpath("web", CLIENT_MODULE).read_bytes()
        self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'

    def answer(self, request: Request) -> Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": f"public, max-age={CLIENT_MAX_AGE_S}",
            # Public code that carries no secret, imported by pages of any origin: a module
            # script is fetched with CORS, so without this no other origin could import it.
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
        }
        wanted = request.headers.get("if-none-match", "")
        if self.etag in (t.strip().removeprefix("W/") for t in wanted.split(",")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type="text/javascript; charset=utf-8", headers=headers)


def router(feedback: Feedback) -> APIRouter:
    api = APIRouter(tags=["feedback"])
    client = ClientModule()

    async def _submit(items: list[FeedbackSubmitted], who: Principal) -> Outcome:
        for item in items:  # before anything else: a limited caller learns nothing of others
            who.require_project(item.project)
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
        recorded, waiting, refused = await feedback.repo.add_feedback(
            items, [here] * len(items), sent_by=who.name
        )
        if refused:
            raise HTTPException(
                409,
                detail={"refused": [{"feedback_id": fid, "problem": why} for fid, why in refused]},
            )
        return Outcome(recorded=[r.feedback_id for r in recorded], waiting=waiting)

    @api.post("/feedback", response_model=Outcome, status_code=202, responses=SUBMIT_REFUSALS)
    async def post_feedback(item: FeedbackSubmitted, who: Sender) -> Outcome:
        return await _submit([item], who)

    @api.post("/feedback/batch", response_model=Outcome, status_code=202, responses=SUBMIT_REFUSALS)
    async def post_batch(batch: FeedbackBatch, who: Sender) -> Outcome:
        return await _submit(batch.feedback, who)

    @api.post(
        "/projects/{project}/feedback",
        response_model=Outcome,
        status_code=202,
        responses=SUBMIT_REFUSALS,
    )
    async def post_project_feedback(
        project: ProjectPath, item: ProjectFeedback, who: PageSender
    ) -> Outcome:
        """One label for a prediction of `project`, as a web page sends it: CORS allows the
        origins the project lists in `feedback.allowed_origins`."""
        if item.project is not None and item.project != project:
            problem = f"project: {item.project!r} is not the path's {project!r}"
            raise HTTPException(
                422,
                detail={
                    "message": "no feedback of the request was taken",
                    "errors": [{"index": 0, "problem": problem}],
                },
            )
        fields = item.model_dump(exclude_none=True) | {"project": project}
        return await _submit([FeedbackSubmitted.model_validate(fields)], who)

    @api.get(
        f"/client/{CLIENT_MODULE}",
        tags=["client"],
        response_class=Response,
        responses={
            200: {"content": {"text/javascript": {}}, "description": "The ES module."},
            304: {"description": "Not modified since the ETag the browser holds."},
        },
    )
    async def client_module(request: Request) -> Response:
        """The browser module a web page imports to send labels (`sendFeedback`)."""
        return client.answer(request)

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
