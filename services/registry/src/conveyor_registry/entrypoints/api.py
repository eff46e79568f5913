"""The registry's HTTP API (docs/contracts.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from conveyor_contracts import ModelProject
from conveyor_runtime import SHA256_HEADER

from ..adapters.repository import Repository
from ..domain.model import (
    ALIAS_PATTERN,
    MoveAlias,
    NotFound,
    RegisterVersion,
    RegistryError,
    Rollback,
)

AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN)]


class Applied(BaseModel):
    project: str
    project_version: int
    created: bool


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
    created_at: datetime


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


def _http(exc: RegistryError) -> HTTPException:
    return HTTPException(404 if isinstance(exc, NotFound) else 409, detail=str(exc))


def router(repo: Repository) -> APIRouter:
    api = APIRouter(tags=["registry"])

    @api.post("/projects", response_model=Applied, status_code=201)
    async def apply_project(spec: ModelProject) -> Any:
        version, created = await repo.apply_project(spec)
        body = Applied(project=spec.name, project_version=version, created=created)
        return JSONResponse(body.model_dump(), status_code=201 if created else 200)

    @api.get("/projects")
    async def list_projects() -> list[dict[str, Any]]:
        return await repo.projects()

    @api.get("/projects/{project}")
    async def get_project(project: str) -> dict[str, Any]:
        try:
            return await repo.project(project)
        except RegistryError as exc:
            raise _http(exc) from exc

    @api.post("/projects/{project}/versions", response_model=Registered, status_code=201)
    async def register(project: str, body: RegisterVersion) -> Any:
        try:
            row, created = await repo.register(project, body)
        except RegistryError as exc:
            raise _http(exc) from exc
        out = Registered(
            project=project, version=row["version"], sha256=row["sha256"], status=row["status"]
        )
        return JSONResponse(out.model_dump(), status_code=201 if created else 200)

    @api.get("/projects/{project}/versions", response_model=list[VersionInfo])
    async def list_versions(project: str) -> Any:
        try:
            return await repo.versions(project)
        except RegistryError as exc:
            raise _http(exc) from exc

    @api.get("/projects/{project}/versions/{version}", response_model=VersionInfo)
    async def get_version(project: str, version: int) -> Any:
        try:
            return await repo.version(project, version)
        except RegistryError as exc:
            raise _http(exc) from exc

    @api.get(
        "/projects/{project}/versions/{version}/artifact",
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def get_artifact(project: str, version: int) -> Response:
        try:
            data, sha = await repo.artifact(project, version)
        except RegistryError as exc:
            raise _http(exc) from exc
        return Response(
            data,
            media_type="application/octet-stream",
            headers={SHA256_HEADER: sha, "ETag": f'"{sha}"'},
        )

    @api.get("/projects/{project}/aliases")
    async def list_aliases(project: str) -> dict[str, int]:
        try:
            return await repo.aliases(project)
        except RegistryError as exc:
            raise _http(exc) from exc

    @api.put("/projects/{project}/aliases/{alias}", response_model=Moved)
    async def move_alias(project: str, alias: AliasName, body: MoveAlias) -> Any:
        try:
            move = await repo.move_alias(project, alias, body.version, body.actor, body.reason)
        except RegistryError as exc:
            raise _http(exc) from exc
        return Moved(alias=alias, from_version=move.from_version, to_version=move.to_version)

    @api.post("/projects/{project}/aliases/{alias}/rollback", response_model=Moved)
    async def rollback(project: str, alias: AliasName, body: Rollback) -> Any:
        try:
            move = await repo.rollback(project, alias, body.actor, body.reason)
        except RegistryError as exc:
            raise _http(exc) from exc
        return Moved(alias=alias, from_version=move.from_version, to_version=move.to_version)

    @api.get("/projects/{project}/aliases/{alias}/history", response_model=list[HistoryEntry])
    async def alias_history(project: str, alias: AliasName) -> Any:
        try:
            return await repo.history(project, alias)
        except RegistryError as exc:
            raise _http(exc) from exc

    return api
