"""The audit log over HTTP: read it (`GET /audit`), and record what changes outside any
service (`POST /audit/tokens`: the token file, which `conveyor token` edits)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from conveyor_auth import Action, Forbidden, Principal, Role, acting, caller
from conveyor_contracts.project import NAME_PATTERN
from conveyor_db import Database, record_audit

from ..adapters import audit_log
from ..adapters.repository import SOURCE
from ..domain.model import Reason

MAX_PAGE = 500  # entries one answer holds at most; `next` pages on


class AuditEntry(BaseModel):
    id: int = Field(description="The entry's place in the log: `before=` pages past it.")
    at: datetime
    actor: str
    role: str
    via: str
    action: str
    project: str | None
    target: str
    reason: str
    request_id: str | None
    details: dict[str, Any]
    source: str = Field(description="The service that recorded it (`conveyor/registry`, ...).")


class AuditPage(BaseModel):
    entries: list[AuditEntry] = Field(description="Newest first.")
    next: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class TokenChange(BaseModel):
    """A change the CLI made to a token file: recorded with the caller as its actor."""

    action: Literal["token.issue", "token.revoke"]
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    roles: list[Role] = Field(default_factory=list, max_length=len(Role))
    projects: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(None, max_length=100)
    reason: Reason = "changed from the CLI"


class Recorded(BaseModel):
    event_id: str


def router(db: Database) -> APIRouter:
    api = APIRouter(tags=["audit"])

    @api.get("/audit", response_model=AuditPage)
    async def read(
        who: Annotated[Principal, caller(Action.READ, checks_project=True)],
        project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        actor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        action: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")] = None,
        since: datetime | None = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> Any:
        """Every change and who made it, newest first: project applies and policy changes,
        runs started, versions registered, alias moves, promotion requests and decisions,
        rollbacks, tokens issued and revoked. `action` matches the action or its family
        (`promotion` matches `promotion.approve`). Needs the `viewer` role; a token limited to
        some projects reads only theirs (`project=` required)."""
        if project is not None:
            who.require_project(project)
        elif who.projects is not None:
            raise Forbidden(f"{who.name} may read some projects only: name one (project=)")
        rows = await audit_log.entries(
            db.pool,
            project=project,
            actor=actor,
            action=action,
            since=since,
            before=before,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(
            entries=[AuditEntry.model_validate(r) for r in rows],
            next=rows[-1]["id"] if more else None,
        )

    @api.post("/audit/tokens", response_model=Recorded, status_code=201)
    async def token_changed(
        body: TokenChange, who: Annotated[Principal, caller(Action.ADMINISTER)]
    ) -> Recorded:
        """Record a token issued or revoked (`conveyor token` does, before it writes the token
        file). Needs the `admin` role; the actor is the caller, the token's holder the target."""
        extra: dict[str, Any] = {"roles": [str(r) for r in body.roles]}
        if body.projects is not None:
            extra["projects"] = sorted(set(body.projects))
        entry = acting(who, Action.ADMINISTER).entry(
            body.action, project=None, target=body.name, reason=body.reason, **extra
        )
        pool: asyncpg.Pool = db.pool
        async with pool.acquire() as con, con.transaction():
            event_id = await record_audit(con, entry, source=SOURCE)
        return Recorded(event_id=event_id)

    return api
