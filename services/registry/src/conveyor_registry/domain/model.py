"""The registry's rules, free of I/O."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, FiniteFloat, StringConstraints

ALIAS_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"


class RegistryError(Exception):
    """Root of the registry's domain errors."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class Forbidden(RegistryError):
    """The caller is known but may not do this."""


CHAMPION = "champion"
GATED_ALIASES = frozenset({CHAMPION})  # the aliases an approval-mode project holds for approval


def check_decision(request: dict[str, Any], decider: str) -> None:
    """Only a pending request, never by the person who asked (the role to decide is checked
    at the edge)."""
    if request["state"] != "pending":
        raise Conflict(
            f"promotion request {request['id']} is already {request['state']}"
            + (f" by {request['decided_by']}" if request["decided_by"] else "")
        )
    if request["requested_by"] == decider:
        raise Forbidden(f"{decider} asked for this: another approver must decide")


def held_for_approval(current: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """Why applying `new` over the project's `current` spec needs an approver, or None: a
    project in approval mode leaves it only when someone other than the author agrees (else
    re-applying it with `mode: auto` would bypass every approval)."""
    if current is None:
        return None
    mode = current.get("policies", {}).get("promotion", {}).get("mode")
    new_mode = new.get("policies", {}).get("promotion", {}).get("mode")
    if mode == "approval" and new_mode != "approval":
        return f"the project is in approval mode: leaving it ({new_mode}) needs an approver"
    return None


def changed_policies(current: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The policies (`promotion`, `drift`, `retrain`, ...) whose settings `new` changes from
    `current`: what the audit log records as a policy change. A first version sets them; it
    changes none."""
    if current is None:
        return []
    old, now = current.get("policies", {}), new.get("policies", {})
    return sorted(k for k in old.keys() | now.keys() if old.get(k) != now.get(k))


def spec_digest(spec: dict[str, Any]) -> str:
    """A stable digest of a project spec: applying the same spec twice is one version."""
    return hashlib.sha256(
        json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def artifact_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_alias(name: str) -> bool:
    return re.match(ALIAS_PATTERN, name) is not None


# What a person writes as a reason: bounded, and free of NUL (which text columns refuse).
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
# Version numbers are Postgres integers.
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


class CompleteVersion(BaseModel):
    """What a pending version becomes: ready with its artifact, or failed with the reason."""

    status: Literal["ready", "failed"]
    failure_reason: (
        Annotated[str, StringConstraints(max_length=4000, pattern=r"^[^\x00]*$")] | None
    ) = None
    onnx_base64: str | None = Field(None, pattern=r"^[A-Za-z0-9+/=\s]*$")
    metrics: dict[Annotated[str, StringConstraints(max_length=200)], FiniteFloat] = Field(
        default_factory=dict
    )
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

    run_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    project_version: VersionNumber
    status: Literal["pending", "ready", "failed"]  # type: ignore[assignment]


class MoveAlias(BaseModel):
    """Point an alias at a version; the actor recorded is the caller's token's name."""

    version: VersionNumber
    reason: Reason


class RequestPromotion(BaseModel):
    alias: str = Field(CHAMPION, pattern=ALIAS_PATTERN)
    version: VersionNumber
    reason: Reason
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="What the request rests on: metrics, tests, run id."
    )


class Decision(BaseModel):
    reason: Reason


class Rollback(BaseModel):
    reason: Reason


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
