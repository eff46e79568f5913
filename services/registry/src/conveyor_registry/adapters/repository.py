"""The registry's tables. Every change and its event (via the outbox) commit together."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import asyncpg

from conveyor_auth import Actor
from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import (
    AliasMoved,
    ModelVersionRegistered,
    ProjectApplied,
    PromotionDecided,
    PromotionRequested,
)
from conveyor_db import Database, enqueue, record_audit

from ..domain.load_failures import check_loadable
from ..domain.model import (
    GATED_ALIASES,
    AliasMove,
    CompleteVersion,
    Conflict,
    NotFound,
    RegisterVersion,
    RequestPromotion,
    artifact_digest,
    changed_policies,
    check_decision,
    check_registration,
    held_for_approval,
    rollback_target,
    spec_digest,
)
from . import load_failures

SOURCE = "conveyor/registry"


async def _audit(con: asyncpg.Connection, entry: Any) -> None:
    await record_audit(con, entry, source=SOURCE)


_REQUEST_COLUMNS = (
    "id, project, alias, version, requested_by, reason, evidence, state, decided_by, "
    "decision_reason, decided_at, created_at"
)
_CHANGE_COLUMNS = (
    "id, project, spec, spec_sha256, requested_by, reason, state, decided_by, decision_reason, "
    "decided_at, created_at"
)
_VERSION_COLUMNS = (
    "project, version, run_id, project_version, status, failure_reason, sha256, metrics, "
    "signature, profile, lineage, input_example, evaluations, created_at"
)


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool  # connected when the runtime starts

    # --- projects -------------------------------------------------------------------------------

    async def apply_project(
        self, spec: ModelProject, actor: Actor, *, may_decide: bool = False
    ) -> tuple[int, bool] | dict[str, Any]:
        """Apply `spec` as the project's next version: (version, created), the same version when
        nothing changed. A change that the project's approval mode holds (see
        `held_for_approval`) becomes a pending change request instead, returned as a dict —
        unless `may_decide` (an approver applying; recorded as such)."""
        body = spec.model_dump(mode="json")
        digest = spec_digest(body)
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "project:" + spec.name)
            latest = await con.fetchrow(
                "SELECT version, spec, spec_sha256 FROM projects WHERE name = $1 "
                "ORDER BY version DESC LIMIT 1",
                spec.name,
            )
            if latest is not None and latest["spec_sha256"] == digest:
                return int(latest["version"]), False
            why = held_for_approval(None if latest is None else dict(latest["spec"]), body)
            if why is not None and not may_decide:
                return await self._hold_change(con, spec.name, body, digest, actor, why)
            return await self._apply(con, spec, body, digest, actor), True

    async def _apply(
        self,
        con: asyncpg.Connection,
        spec: ModelProject,
        body: dict[str, Any],
        digest: str,
        actor: Actor,
        author: str | None = None,
        reason: str = "",
    ) -> int:
        """The spec as the project's next version, with its audit entries (`project.apply`,
        and `policy.change` naming the policies that differ from the last version's). `author`:
        who is recorded as having applied it, when not the actor (an approved change's)."""
        latest = await con.fetchrow(
            "SELECT version, spec FROM projects WHERE name = $1 ORDER BY version DESC LIMIT 1",
            spec.name,
        )
        version = 1 if latest is None else int(latest["version"]) + 1
        await con.execute(
            "INSERT INTO projects (name, version, spec, spec_sha256, applied_by) "
            "VALUES ($1, $2, $3, $4, $5)",
            spec.name,
            version,
            body,
            digest,
            author or actor.name,
        )
        await enqueue(
            con,
            catalog.REGISTRY_EVENTS,
            ProjectApplied(project=spec.name, project_version=version, spec=spec),
            key=spec.name,
            source=SOURCE,
        )
        target = f"project v{version}"
        extra = {"author": author} if author else {}
        await _audit(
            con,
            actor.entry("project.apply", project=spec.name, target=target, reason=reason, **extra),
        )
        changed = changed_policies(None if latest is None else dict(latest["spec"]), body)
        if changed:
            await _audit(
                con,
                actor.entry(
                    "policy.change",
                    project=spec.name,
                    target=target,
                    reason=reason,
                    policies=changed,
                    **extra,
                ),
            )
        return version

    async def _hold_change(
        self,
        con: asyncpg.Connection,
        project: str,
        body: dict[str, Any],
        digest: str,
        actor: Actor,
        why: str,
    ) -> dict[str, Any]:
        existing = await con.fetchrow(
            f"SELECT {_CHANGE_COLUMNS} FROM project_changes WHERE project = $1 "
            "AND spec_sha256 = $2 AND state = 'pending'",
            project,
            digest,
        )
        if existing is not None:
            return dict(existing)
        row = await con.fetchrow(
            "INSERT INTO project_changes (project, spec, spec_sha256, requested_by, reason) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_CHANGE_COLUMNS}",
            project,
            body,
            digest,
            actor.name,
            why,
        )
        await _audit(
            con,
            actor.entry(
                "project.change.request", project=project, target=f"change {row['id']}", reason=why
            ),
        )
        return dict(row)

    async def project_changes(self, project: str, state: str | None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM project_changes WHERE project = $1 "
            "AND ($2::text IS NULL OR state = $2) ORDER BY id",
            project,
            state,
        )
        return [dict(r) for r in rows]

    async def decide_change(
        self, project: str, change_id: int, decider: Actor, approve: bool, reason: str
    ) -> dict[str, Any]:
        """Accept (the spec is applied, its author recorded as who applied it) or refuse a held
        change to a project; never by its author."""
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "project:" + project)
            row = await con.fetchrow(
                f"SELECT {_CHANGE_COLUMNS} FROM project_changes WHERE project = $1 AND id = $2 "
                "FOR UPDATE",
                project,
                change_id,
            )
            if row is None:
                raise NotFound(f"project {project!r} has no change request {change_id}")
            check_decision(dict(row), decider.name)
            if approve:
                spec = ModelProject.model_validate(row["spec"])
                await self._apply(
                    con,
                    spec,
                    dict(row["spec"]),
                    row["spec_sha256"],
                    decider,
                    author=row["requested_by"],
                    reason=f"approved change {change_id}: {reason}",
                )
            decided = await con.fetchrow(
                "UPDATE project_changes SET state = $2, decided_by = $3, decision_reason = $4, "
                f"decided_at = now() WHERE id = $1 RETURNING {_CHANGE_COLUMNS}",
                change_id,
                "approved" if approve else "rejected",
                decider.name,
                reason,
            )
            verb = "approve" if approve else "reject"
            await _audit(
                con,
                decider.entry(
                    f"project.change.{verb}",
                    project=project,
                    target=f"change {change_id} of {row['requested_by']}",
                    reason=reason,
                ),
            )
            return dict(decided)

    async def projects(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (name) name, version FROM projects ORDER BY name, version DESC"
        )
        return [{"project": r["name"], "project_version": r["version"]} for r in rows]

    async def project(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The project's latest spec, or the one it had at `version`."""
        row = await self.pool.fetchrow(
            "SELECT name, version, spec FROM projects WHERE name = $1 "
            "AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
            name,
            version,
        )
        if row is None:
            raise NotFound(f"unknown project {name!r}" + (f" version {version}" if version else ""))
        return {"project": row["name"], "project_version": row["version"], "spec": row["spec"]}

    # --- versions -------------------------------------------------------------------------------

    async def register(
        self, project: str, body: RegisterVersion, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        artifact, sha = _artifact(body)
        async with self.pool.acquire() as con, con.transaction():
            await self._require_project(con, project)
            # One registration at a time per project: version numbers never collide.
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "versions:" + project)
            existing = await con.fetchrow(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 AND run_id = $2",
                project,
                body.run_id,
            )
            if existing is not None:
                return dict(existing), False
            version = int(
                await con.fetchval(
                    "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE project = $1",
                    project,
                )
            )
            row = await con.fetchrow(
                "INSERT INTO model_versions (project, version, run_id, project_version, status, "
                "failure_reason, artifact, sha256, metrics, signature, profile, lineage, "
                "input_example, evaluations, registered_by) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
                f"RETURNING {_VERSION_COLUMNS}",
                project,
                version,
                body.run_id,
                body.project_version,
                body.status,
                body.failure_reason,
                artifact,
                sha,
                body.metrics,
                body.signature,
                body.profile,
                body.lineage,
                body.input_example,
                body.evaluations,
                actor.name,
            )
            await _announce(con, row)
            await _audit(
                con,
                actor.entry(
                    "version.register",
                    project=project,
                    target=f"v{version}",
                    run_id=body.run_id,
                    status=body.status,
                ),
            )
            return dict(row), True

    async def complete(
        self, project: str, version: int, body: CompleteVersion
    ) -> tuple[dict[str, Any], bool]:
        """A pending version becomes ready or failed, once: versions are immutable after that
        (the same completion again is answered with the version, changing nothing)."""
        artifact, sha = _artifact(body)
        async with self.pool.acquire() as con, con.transaction():
            current = await con.fetchrow(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 "
                "AND version = $2 FOR UPDATE",
                project,
                version,
            )
            if current is None:
                raise NotFound(f"project {project!r} has no version {version}")
            if current["status"] != "pending":
                if current["status"] == body.status and current["sha256"] == sha:
                    return dict(current), False
                raise Conflict(
                    f"version {version} is already {current['status']}: versions are immutable"
                )
            row = await con.fetchrow(
                "UPDATE model_versions SET status = $3, failure_reason = $4, artifact = $5, "
                "sha256 = $6, metrics = $7, signature = $8, profile = $9, lineage = $10, "
                "input_example = $11, evaluations = $12 "
                f"WHERE project = $1 AND version = $2 RETURNING {_VERSION_COLUMNS}",
                project,
                version,
                body.status,
                body.failure_reason,
                artifact,
                sha,
                body.metrics,
                body.signature,
                body.profile,
                body.lineage,
                body.input_example,
                body.evaluations,
            )
            await _announce(con, row)
            return dict(row), True

    async def versions(self, project: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as con:
            await self._require_project(con, project)
            rows = await con.fetch(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 "
                "ORDER BY version",
                project,
            )
            failures = await load_failures.of_project(con, project)
        return [dict(r) | {"load_failures": failures.get(r["version"], [])} for r in rows]

    async def version(self, project: str, version: int) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 AND version = $2",
            project,
            version,
        )
        if row is None:
            raise NotFound(f"project {project!r} has no version {version}")
        failures = await load_failures.of_version(self.pool, project, version)
        return dict(row) | {"load_failures": failures}

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        row = await self.pool.fetchrow(
            "SELECT artifact, sha256, status FROM model_versions "
            "WHERE project = $1 AND version = $2",
            project,
            version,
        )
        if row is None:
            raise NotFound(f"project {project!r} has no version {version}")
        if row["artifact"] is None:
            raise NotFound(f"version {version} of {project!r} is {row['status']}: no artifact")
        return bytes(row["artifact"]), row["sha256"]

    # --- aliases --------------------------------------------------------------------------------

    async def aliases(self, project: str) -> dict[str, int]:
        async with self.pool.acquire() as con:
            await self._require_project(con, project)
            rows = await con.fetch(
                "SELECT alias, version FROM aliases WHERE project = $1 ORDER BY alias", project
            )
        return {r["alias"]: r["version"] for r in rows}

    async def move_alias(
        self, project: str, alias: str, version: int, actor: Actor, reason: str
    ) -> AliasMove:
        async with self.pool.acquire() as con, con.transaction():
            return await self._move(con, project, alias, version, actor, reason, "alias.move")

    async def rollback(self, project: str, alias: str, actor: Actor, reason: str) -> AliasMove:
        async with self.pool.acquire() as con, con.transaction():
            await self._require_project(con, project)
            await con.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"alias:{project}:{alias}"
            )
            rows = await con.fetch(
                "SELECT from_version, to_version FROM alias_history WHERE project = $1 "
                "AND alias = $2 ORDER BY id",
                project,
                alias,
            )
            target = rollback_target([(r["from_version"], r["to_version"]) for r in rows])
            return await self._move(con, project, alias, target, actor, reason, "alias.rollback")

    async def history(self, project: str, alias: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as con:
            await self._require_project(con, project)
            rows = await con.fetch(
                "SELECT alias, from_version, to_version, actor, reason, at FROM alias_history "
                "WHERE project = $1 AND alias = $2 ORDER BY id",
                project,
                alias,
            )
        return [dict(r) for r in rows]

    # --- approvals ------------------------------------------------------------------------------

    async def requires_approval(self, project: str, alias: str) -> bool:
        """Whether moving `alias` of `project` waits for an approver (policies.promotion.mode)."""
        if alias not in GATED_ALIASES:
            return False
        mode = await self.pool.fetchval(
            "SELECT spec->'policies'->'promotion'->>'mode' FROM projects WHERE name = $1 "
            "ORDER BY version DESC LIMIT 1",
            project,
        )
        return mode == "approval"

    async def request_promotion(
        self, project: str, body: RequestPromotion, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        """Open a request (the same pending one when asked again) and announce it."""
        async with self.pool.acquire() as con, con.transaction():
            await self._require_project(con, project)
            await con.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"alias:{project}:{body.alias}"
            )
            await self._ready_sha(con, project, body.version)
            existing = await con.fetchrow(
                f"SELECT {_REQUEST_COLUMNS} FROM promotion_requests WHERE project = $1 "
                "AND alias = $2 AND version = $3 AND state = 'pending'",
                project,
                body.alias,
                body.version,
            )
            if existing is not None:
                return dict(existing), False
            row = await con.fetchrow(
                "INSERT INTO promotion_requests (project, alias, version, requested_by, reason, "
                f"evidence) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_REQUEST_COLUMNS}",
                project,
                body.alias,
                body.version,
                actor.name,
                body.reason,
                body.evidence,
            )
            await enqueue(
                con,
                catalog.REGISTRY_EVENTS,
                PromotionRequested(
                    project=project,
                    request_id=row["id"],
                    alias=body.alias,
                    version=body.version,
                    requested_by=actor.name,
                    reason=body.reason,
                ),
                key=project,
                source=SOURCE,
            )
            await _audit(
                con,
                actor.entry(
                    "promotion.request",
                    project=project,
                    target=f"request {row['id']}: {body.alias} → v{body.version}",
                    reason=body.reason,
                ),
            )
            return dict(row), True

    async def promotion_requests(
        self, project: str, state: str | None = None
    ) -> list[dict[str, Any]]:
        async with self.pool.acquire() as con:
            await self._require_project(con, project)
            rows = await con.fetch(
                f"SELECT {_REQUEST_COLUMNS} FROM promotion_requests WHERE project = $1 "
                "AND ($2::text IS NULL OR state = $2) ORDER BY id",
                project,
                state,
            )
        return [dict(r) for r in rows]

    async def promotion_request(self, project: str, request_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM promotion_requests WHERE project = $1 AND id = $2",
            project,
            request_id,
        )
        if row is None:
            raise NotFound(f"project {project!r} has no promotion request {request_id}")
        return dict(row)

    async def decide(
        self, project: str, request_id: int, actor: Actor, approve: bool, reason: str
    ) -> dict[str, Any]:
        """Approve (the alias moves, with the approver as its actor; other pending requests for
        the alias are superseded) or reject; the decision and its event commit together."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                f"SELECT {_REQUEST_COLUMNS} FROM promotion_requests WHERE project = $1 AND id = $2 "
                "FOR UPDATE",
                project,
                request_id,
            )
            if row is None:
                raise NotFound(f"project {project!r} has no promotion request {request_id}")
            decider = actor.name
            check_decision(dict(row), decider)
            state = "approved" if approve else "rejected"
            await enqueue(
                con,
                catalog.REGISTRY_EVENTS,
                PromotionDecided(
                    project=project,
                    request_id=request_id,
                    alias=row["alias"],
                    version=row["version"],
                    decision=state,
                    decided_by=decider,
                    reason=reason,
                ),
                key=project,
                source=SOURCE,
            )
            if approve:
                await self._move(
                    con,
                    project,
                    row["alias"],
                    row["version"],
                    actor,
                    f"approved request {request_id} of {row['requested_by']}: {reason}",
                    None,  # the approval's entry below says it all
                )
                await con.execute(
                    "UPDATE promotion_requests SET state = 'superseded', decided_by = $3, "
                    "decision_reason = $4, decided_at = now() WHERE project = $1 AND alias = $2 "
                    "AND state = 'pending' AND id <> $5",
                    project,
                    row["alias"],
                    decider,
                    f"request {request_id} was approved",
                    request_id,
                )
            decided = await con.fetchrow(
                "UPDATE promotion_requests SET state = $2, decided_by = $3, decision_reason = $4, "
                f"decided_at = now() WHERE id = $1 RETURNING {_REQUEST_COLUMNS}",
                request_id,
                state,
                decider,
                reason,
            )
            await _audit(
                con,
                actor.entry(
                    "promotion.approve" if approve else "promotion.reject",
                    project=project,
                    target=f"request {request_id} of {row['requested_by']}: "
                    f"{row['alias']} → v{row['version']}",
                    reason=reason,
                ),
            )
            return dict(decided)

    async def _ready_sha(self, con: asyncpg.Connection, project: str, version: int) -> str:
        target = await con.fetchrow(
            "SELECT status, sha256 FROM model_versions WHERE project = $1 AND version = $2",
            project,
            version,
        )
        if target is None:
            raise NotFound(f"project {project!r} has no version {version}")
        if target["status"] != "ready":
            raise Conflict(f"version {version} is {target['status']}: only ready versions serve")
        check_loadable(project, version, await load_failures.of_version(con, project, version))
        return str(target["sha256"])

    async def _move(
        self,
        con: asyncpg.Connection,
        project: str,
        alias: str,
        version: int,
        actor: Actor,
        reason: str,
        action: str | None,
    ) -> AliasMove:
        """Point the alias at `version`, recorded in its history and (under `action`, unless
        None) in the audit log."""
        await self._require_project(con, project)
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"alias:{project}:{alias}")
        sha256 = await self._ready_sha(con, project, version)
        current = await con.fetchval(
            "SELECT version FROM aliases WHERE project = $1 AND alias = $2", project, alias
        )
        move = AliasMove(alias, current, version)
        if not move.changes_anything:
            return move
        await con.execute(
            "INSERT INTO aliases (project, alias, version) VALUES ($1, $2, $3) "
            "ON CONFLICT (project, alias) DO UPDATE SET version = EXCLUDED.version",
            project,
            alias,
            version,
        )
        await con.execute(
            "INSERT INTO alias_history (project, alias, from_version, to_version, actor, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            project,
            alias,
            current,
            version,
            actor.name,
            reason,
        )
        if action is not None:
            was = "" if current is None else f"v{current} "
            await _audit(
                con,
                actor.entry(
                    action, project=project, target=f"{alias}: {was}→ v{version}", reason=reason
                ),
            )
        await enqueue(
            con,
            catalog.REGISTRY_EVENTS,
            AliasMoved(
                project=project,
                alias=alias,
                from_version=current,
                to_version=version,
                sha256=sha256,
                actor=actor.name,
                reason=reason,
            ),
            key=project,
            source=SOURCE,
        )
        return move

    @staticmethod
    async def _require_project(con: asyncpg.Connection, project: str) -> None:
        if not await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1)", project
        ):
            raise NotFound(f"unknown project {project!r}")


def _artifact(body: CompleteVersion) -> tuple[bytes | None, str | None]:
    """The decoded ONNX bytes and their sha256 (the registry's own), after the status checks."""
    check_registration(body)
    if not body.onnx_base64:
        return None, None
    try:
        artifact = base64.b64decode(body.onnx_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Conflict(f"onnx_base64 is not valid base64: {exc}") from exc
    return artifact, artifact_digest(artifact)


async def _announce(con: asyncpg.Connection, row: asyncpg.Record) -> None:
    """A version's new state on registry.events, in the transaction that made it."""
    await enqueue(
        con,
        catalog.REGISTRY_EVENTS,
        ModelVersionRegistered(
            project=row["project"],
            version=row["version"],
            status=row["status"],
            sha256=row["sha256"],
            metrics=row["metrics"],
            run_id=row["run_id"],
        ),
        key=row["project"],
        source=SOURCE,
    )
