"""The registry's HTTP API (docs/contracts.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from conveyor_auth import Action, Principal, acting, caller
from conveyor_contracts import ModelProject
from conveyor_contracts.project import (
    NAME_PATTERN,
    consistency_problems,
    notify_problems,
    pattern_problems,
)
from conveyor_runtime import SHA256_HEADER, refusals

from ..adapters.repository import Repository
from ..domain import openlineage
from ..domain.model import (
    ALIAS_PATTERN,
    CompleteVersion,
    Decision,
    Forbidden,
    MoveAlias,
    NotFound,
    RegisterVersion,
    RequestPromotion,
    Rollback,
)

AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN)]
ProjectName = Annotated[str, Path(pattern=NAME_PATTERN)]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
RequestNumber = Annotated[int, Path(ge=1, le=2**63 - 1)]


class Applied(BaseModel):
    project: str
    project_version: int
    created: bool


class LoadFailure(BaseModel):
    """A serving replica's report that it could not load the version (serving.events)."""

    alias: str
    sha256: str
    reason: str
    replica: str
    occurred_at: datetime


class VersionInfo(BaseModel):
    project: str
    version: int
    run_id: str
    project_version: int
    status: str
    failure_reason: str | None
    sha256: str | None
    metrics: dict[str, float]
    signature: dict[str, Any]
    profile: dict[str, Any]
    lineage: dict[str, Any]
    input_example: list[dict[str, float]]
    evaluations: dict[str, dict[str, Any]]
    created_at: datetime
    load_failures: list[LoadFailure] = []


class Registered(BaseModel):
    project: str
    version: int
    sha256: str | None
    status: str


class Moved(BaseModel):
    alias: str
    from_version: int | None
    to_version: int


class HistoryEntry(BaseModel):
    alias: str
    from_version: int | None
    to_version: int
    actor: str
    reason: str
    at: datetime


class PromotionRequest(BaseModel):
    id: int
    project: str
    alias: str
    version: int
    requested_by: str
    reason: str
    evidence: dict[str, Any]
    state: str
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    created_at: datetime


class ChangeRequest(BaseModel):
    """A change to a project that its approval mode holds for an approver."""

    id: int
    project: str
    spec: dict[str, Any]
    requested_by: str
    reason: str
    state: str
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    created_at: datetime


async def registry_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every registry error an endpoint (or its dependencies) raises, as its HTTP status:
    installed once on the app (`app.add_exception_handler(RegistryError, registry_error)`)."""
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 409
    return JSONResponse({"detail": str(exc)}, status_code=status)


def router(repo: Repository) -> APIRouter:
    # Every operation names a project, or a version, alias or request of one: each may not exist
    # (404) or be in a state the request conflicts with (409); `registry_error` answers both.
    api = APIRouter(tags=["registry"], responses=refusals(404, 409))

    @api.post(
        "/projects",
        response_model=Applied,
        status_code=201,
        responses={
            200: {"model": Applied, "description": "Nothing changed: the version it has."},
            202: {"model": ChangeRequest, "description": "Held for an approver."},
        },
    )
    async def apply_project(
        spec: ModelProject, who: Annotated[Principal, caller(Action.APPLY)]
    ) -> Any:
        """Apply a project: its next version (201), or the same one when nothing changed (200).
        A change that would take a project out of approval mode is held for another approver
        (202, a change request) — also when an approver asks. A spec whose parts disagree is
        refused (422, each problem at its JSON path: `consistency_problems`)."""
        # Checked here, not by `ModelProject` itself, which also reads every spec ever applied
        # back from the changelog: a rule added since must not make an older spec unreadable.
        problems: list[tuple[list[str | int], str]] = [
            (["body"], p)
            for p in pattern_problems(spec.record_schema.fields)
            + notify_problems(spec.policies.drift.notify)
        ]
        problems += [(["body", *p.path], p.message) for p in consistency_problems(spec)]
        if problems:
            # As the spec's own validation errors are answered (the one 422 the document has).
            raise RequestValidationError(
                [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]
            )
        outcome = await repo.apply_project(spec, acting(who, Action.APPLY))
        if isinstance(outcome, dict):
            held = ChangeRequest.model_validate(outcome)
            return JSONResponse(held.model_dump(mode="json"), status_code=202)
        version, created = outcome
        body = Applied(project=spec.name, project_version=version, created=created)
        return JSONResponse(body.model_dump(), status_code=201 if created else 200)

    @api.get("/projects/{project}/changes", response_model=list[ChangeRequest])
    async def list_changes(
        project: ProjectName,
        state: Annotated[
            str | None, Query(pattern="^(pending|approved|rejected|superseded)$")
        ] = None,
    ) -> Any:
        return await repo.project_changes(project, state)

    @api.post("/projects/{project}/changes/{change_id}/approve", response_model=ChangeRequest)
    async def approve_change(
        project: ProjectName,
        change_id: RequestNumber,
        body: Decision,
        who: Annotated[Principal, caller(Action.DECIDE)],
    ) -> Any:
        """Accept a held change: the spec is applied. Not by its author."""
        return await repo.decide_change(
            project, change_id, acting(who, Action.DECIDE), True, body.reason
        )

    @api.post("/projects/{project}/changes/{change_id}/reject", response_model=ChangeRequest)
    async def reject_change(
        project: ProjectName,
        change_id: RequestNumber,
        body: Decision,
        who: Annotated[Principal, caller(Action.DECIDE)],
    ) -> Any:
        return await repo.decide_change(
            project, change_id, acting(who, Action.DECIDE), False, body.reason
        )

    @api.get("/projects")
    async def list_projects() -> list[dict[str, Any]]:
        return await repo.projects()

    @api.get("/projects/{project}")
    async def get_project(
        project: ProjectName, version: Annotated[int | None, Query(ge=1)] = None
    ) -> dict[str, Any]:
        """The project's latest spec, or the one it had at `version`."""
        return await repo.project(project, version)

    @api.post(
        "/projects/{project}/versions",
        response_model=Registered,
        status_code=201,
        responses={200: {"model": Registered, "description": "Registered already (same run)."}},
    )
    async def register(
        project: ProjectName,
        body: RegisterVersion,
        who: Annotated[Principal, caller(Action.REGISTER)],
    ) -> Any:
        row, created = await repo.register(project, body, acting(who, Action.REGISTER))
        out = Registered(
            project=project, version=row["version"], sha256=row["sha256"], status=row["status"]
        )
        return JSONResponse(out.model_dump(), status_code=201 if created else 200)

    @api.post("/projects/{project}/versions/{version}/complete", response_model=Registered)
    async def complete(
        project: ProjectName,
        version: VersionNumber,
        body: CompleteVersion,
        _who: Annotated[Principal, caller(Action.REGISTER)],
    ) -> Any:
        """A pending version becomes ready (with its artifact) or failed (with the reason),
        once; 409 for a version already completed differently."""
        row, _ = await repo.complete(project, version, body)
        return Registered(
            project=project, version=row["version"], sha256=row["sha256"], status=row["status"]
        )

    @api.get("/projects/{project}/versions", response_model=list[VersionInfo])
    async def list_versions(project: ProjectName) -> Any:
        return await repo.versions(project)

    @api.get("/projects/{project}/versions/{version}", response_model=VersionInfo)
    async def get_version(project: ProjectName, version: VersionNumber) -> Any:
        return await repo.version(project, version)

    @api.get("/projects/{project}/versions/{version}/openlineage")
    async def openlineage_events(
        project: ProjectName, version: VersionNumber, request: Request
    ) -> list[Any]:
        """The run that made the version as OpenLineage run events (START, then COMPLETE or
        FAIL): Kafka inputs with the offset ranges read, the model as output (by sha256)."""
        row = await repo.version(project, version)
        settings = request.app.state.lineage_namespaces
        return openlineage.events(row, *settings)

    @api.get(
        "/projects/{project}/versions/{version}/artifact",
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def get_artifact(project: ProjectName, version: VersionNumber) -> Response:
        data, sha = await repo.artifact(project, version)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={SHA256_HEADER: sha, "ETag": f'"{sha}"'},
        )

    @api.get("/projects/{project}/aliases")
    async def list_aliases(project: ProjectName) -> dict[str, int]:
        return await repo.aliases(project)

    @api.put(
        "/projects/{project}/aliases/{alias}",
        response_model=Moved,
        responses={202: {"model": PromotionRequest, "description": "Held for approval."}},
    )
    async def move_alias(
        project: ProjectName,
        alias: AliasName,
        body: MoveAlias,
        who: Annotated[Principal, caller(Action.PROMOTE)],
    ) -> Any:
        """Move the alias; the recorded actor is the caller. When the project's promotion mode
        is `approval` and the caller is not an approver, the move becomes a pending promotion
        request (202)."""
        gated = await repo.requires_approval(project, alias)
        if gated and not who.can(Action.DEPLOY):
            request, _ = await repo.request_promotion(
                project,
                RequestPromotion(alias=alias, version=body.version, reason=body.reason),
                acting(who, Action.PROMOTE),
            )
            out = PromotionRequest.model_validate(request)
            return JSONResponse(out.model_dump(mode="json"), status_code=202)
        actor = acting(who, Action.DEPLOY if gated else Action.PROMOTE)  # the role it took
        move = await repo.move_alias(project, alias, body.version, actor, body.reason)
        return Moved(alias=alias, from_version=move.from_version, to_version=move.to_version)

    @api.post("/projects/{project}/aliases/{alias}/rollback", response_model=Moved)
    async def rollback(
        project: ProjectName,
        alias: AliasName,
        body: Rollback,
        who: Annotated[Principal, caller(Action.ROLLBACK)],
    ) -> Any:
        """Move the alias back to where its last move took it from: always allowed (the way
        out of a bad release needs no approval), and recorded like any move."""
        move = await repo.rollback(project, alias, acting(who, Action.ROLLBACK), body.reason)
        return Moved(alias=alias, from_version=move.from_version, to_version=move.to_version)

    @api.get("/projects/{project}/aliases/{alias}/history", response_model=list[HistoryEntry])
    async def alias_history(project: ProjectName, alias: AliasName) -> Any:
        return await repo.history(project, alias)

    @api.post(
        "/projects/{project}/promotions",
        response_model=PromotionRequest,
        status_code=201,
        responses={200: {"model": PromotionRequest, "description": "The open request asked."}},
    )
    async def request_promotion(
        project: ProjectName,
        body: RequestPromotion,
        who: Annotated[Principal, caller(Action.PROMOTE)],
    ) -> Any:
        """Ask for an alias move that an approver decides (the trainer does when a candidate
        passes the gate of an approval-mode project). Asking again returns the open request."""
        request, created = await repo.request_promotion(project, body, acting(who, Action.PROMOTE))
        out = PromotionRequest.model_validate(request)
        return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)

    @api.get("/projects/{project}/promotions", response_model=list[PromotionRequest])
    async def list_promotions(
        project: ProjectName,
        state: Annotated[
            str | None, Query(pattern="^(pending|approved|rejected|superseded)$")
        ] = None,
    ) -> Any:
        return await repo.promotion_requests(project, state)

    @api.get("/projects/{project}/promotions/{request_id}", response_model=PromotionRequest)
    async def get_promotion(project: ProjectName, request_id: RequestNumber) -> Any:
        return await repo.promotion_request(project, request_id)

    @api.post(
        "/projects/{project}/promotions/{request_id}/approve", response_model=PromotionRequest
    )
    async def approve(
        project: ProjectName,
        request_id: RequestNumber,
        body: Decision,
        who: Annotated[Principal, caller(Action.DECIDE)],
    ) -> Any:
        """Accept the request: the alias moves, with the approver as its actor. Needs the
        `approver` role, and not the one who asked (403 otherwise)."""
        return await repo.decide(project, request_id, acting(who, Action.DECIDE), True, body.reason)

    @api.post("/projects/{project}/promotions/{request_id}/reject", response_model=PromotionRequest)
    async def reject(
        project: ProjectName,
        request_id: RequestNumber,
        body: Decision,
        who: Annotated[Principal, caller(Action.DECIDE)],
    ) -> Any:
        """Refuse the request; the alias stays. Same rules as approving."""
        return await repo.decide(
            project, request_id, acting(who, Action.DECIDE), False, body.reason
        )

    return api
