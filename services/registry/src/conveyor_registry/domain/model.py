"""The registry's rules, free of I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

ALIAS_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"


class RegistryError(Exception):
    """Root of the registry's domain errors."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class Unauthenticated(RegistryError):
    """A bearer token that names no user."""


class Forbidden(RegistryError):
    """The user is known but may not do this."""


APPROVER = "approver"
CHAMPION = "champion"
GATED_ALIASES = frozenset({CHAMPION})  # the aliases an approval-mode project holds for approval


class User(BaseModel):
    """A registry user: a name, the sha256 of their bearer token (the token itself is never
    stored) and their roles (`approver` may accept or reject promotion requests)."""

    name: str = Field(min_length=1, max_length=200)
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[str] = Field(default_factory=list)

    @property
    def approver(self) -> bool:
        return APPROVER in self.roles


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(users: list[User], token: str) -> User:
    digest = token_digest(token)
    for user in users:
        if hmac.compare_digest(user.token_sha256, digest):
            return user
    raise Unauthenticated("the bearer token names no registry user")


def check_decision(request: dict[str, Any], user: User) -> None:
    """Only a pending request, only by an approver, never by the person who asked."""
    if not user.approver:
        raise Forbidden(f"{user.name} does not have the {APPROVER} role")
    if request["state"] != "pending":
        raise Conflict(
            f"promotion request {request['id']} is already {request['state']}"
            + (f" by {request['decided_by']}" if request["decided_by"] else "")
        )
    if request["requested_by"] == user.name:
        raise Forbidden(f"{user.name} asked for this promotion: another approver must decide")


def spec_digest(spec: dict[str, Any]) -> str:
    """A stable digest of a project spec: applying the same spec twice is one version."""
    return hashlib.sha256(
        json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def artifact_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_alias(name: str) -> bool:
    return re.match(ALIAS_PATTERN, name) is not None


class CompleteVersion(BaseModel):
    """What a pending version becomes: ready with its artifact, or failed with the reason."""

    status: Literal["ready", "failed"]
    failure_reason: str | None = None
    onnx_base64: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    signature: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    input_example: list[dict[str, float]] = Field(
        default_factory=list,
        max_length=20,
        description="A few inputs the model was judged on, by feature name: what a request "
        "looks like.",
    )
    evaluations: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Metrics on named datasets: `holdout`, `regression_set`, ... each with its "
        "rows, its identity and the candidate's and the champion's metrics on it.",
    )


class RegisterVersion(CompleteVersion):
    """A new version: ready or failed at once, or pending until its run completes it."""

    run_id: str = Field(min_length=1, max_length=200)
    project_version: int = Field(ge=1)
    status: Literal["pending", "ready", "failed"]  # type: ignore[assignment]


class MoveAlias(BaseModel):
    version: int = Field(ge=1)
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class RequestPromotion(BaseModel):
    alias: str = Field(CHAMPION, pattern=ALIAS_PATTERN)
    version: int = Field(ge=1)
    requested_by: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="What the request rests on: metrics, tests, run id."
    )


class Decision(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class Rollback(BaseModel):
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


@dataclass(frozen=True)
class AliasMove:
    alias: str
    from_version: int | None
    to_version: int

    @property
    def changes_anything(self) -> bool:
        return self.from_version != self.to_version


def check_registration(body: CompleteVersion) -> None:
    """A ready version needs an artifact; a failed one says why and carries none; a pending
    one carries neither yet."""
    if body.status == "pending" and (body.onnx_base64 or body.failure_reason):
        raise Conflict("a pending version carries no artifact and no failure yet")
    if body.status == "ready" and not body.onnx_base64:
        raise Conflict("a ready version needs its ONNX artifact (onnx_base64)")
    if body.status == "failed" and not body.failure_reason:
        raise Conflict("a failed version needs a failure_reason")


def rollback_target(history: list[tuple[int | None, int]]) -> int:
    """The version an alias pointed at before its last move (history oldest first)."""
    if not history:
        raise Conflict("the alias has never moved: nothing to roll back to")
    previous, _current = history[-1]
    if previous is None:
        raise Conflict("the alias had no version before its last move")
    return previous
