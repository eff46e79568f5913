"""The registry's tables. Every change and its event (via the outbox) commit together."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import asyncpg

from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import AliasMoved, ModelVersionRegistered, ProjectApplied
from conveyor_db import Database, enqueue

from ..domain.model import (
    AliasMove,
    Conflict,
    NotFound,
    RegisterVersion,
    artifact_digest,
    check_registration,
    rollback_target,
    spec_digest,
)

SOURCE = "conveyor/registry"
_VERSION_COLUMNS = (
    "project, version, run_id, project_version, status, failure_reason, sha256, metrics, "
    "signature, profile, lineage, created_at"
)


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool  # connected when the runtime starts

    # --- projects -------------------------------------------------------------------------------

    async def apply_project(self, spec: ModelProject) -> tuple[int, bool]:
        body = spec.model_dump(mode="json")
        digest = spec_digest(body)
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "project:" + spec.name)
            latest = await con.fetchrow(
                "SELECT version, spec_sha256 FROM projects WHERE name = $1 "
                "ORDER BY version DESC LIMIT 1",
                spec.name,
            )
            if latest is not None and latest["spec_sha256"] == digest:
                return int(latest["version"]), False
            version = 1 if latest is None else int(latest["version"]) + 1
            await con.execute(
                "INSERT INTO projects (name, version, spec, spec_sha256) VALUES ($1, $2, $3, $4)",
                spec.name,
                version,
                body,
                digest,
            )
            await enqueue(
                con,
                catalog.REGISTRY_EVENTS,
                ProjectApplied(project=spec.name, project_version=version, spec=spec),
                key=spec.name,
                source=SOURCE,
            )
            return version, True

    async def projects(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (name) name, version FROM projects ORDER BY name, version DESC"
        )
        return [{"project": r["name"], "project_version": r["version"]} for r in rows]

    async def project(self, name: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT name, version, spec FROM projects WHERE name = $1 "
            "ORDER BY version DESC LIMIT 1",
            name,
        )
        if row is None:
            raise NotFound(f"unknown project {name!r}")
        return {"project": row["name"], "project_version": row["version"], "spec": row["spec"]}

    # --- versions -------------------------------------------------------------------------------

    async def register(self, project: str, body: RegisterVersion) -> tuple[dict[str, Any], bool]:
        check_registration(body)
        artifact: bytes | None = None
        if body.onnx_base64:
            try:
                artifact = base64.b64decode(body.onnx_base64, validate=True)
            except binascii.Error as exc:
                raise Conflict(f"onnx_base64 is not valid base64: {exc}") from exc
        sha = artifact_digest(artifact) if artifact is not None else None
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
                "failure_reason, artifact, sha256, metrics, signature, profile, lineage) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) "
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
            )
            await enqueue(
                con,
                catalog.REGISTRY_EVENTS,
                ModelVersionRegistered(
                    project=project,
                    version=version,
                    status=body.status,
                    sha256=sha,
                    metrics=body.metrics,
                    run_id=body.run_id,
                ),
                key=project,
                source=SOURCE,
            )
            return dict(row), True

    async def versions(self, project: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as con:
            await self._require_project(con, project)
            rows = await con.fetch(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 "
                "ORDER BY version",
                project,
            )
        return [dict(r) for r in rows]

    async def version(self, project: str, version: int) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE project = $1 AND version = $2",
            project,
            version,
        )
        if row is None:
            raise NotFound(f"project {project!r} has no version {version}")
        return dict(row)

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
        self, project: str, alias: str, version: int, actor: str, reason: str
    ) -> AliasMove:
        async with self.pool.acquire() as con, con.transaction():
            return await self._move(con, project, alias, version, actor, reason)

    async def rollback(self, project: str, alias: str, actor: str, reason: str) -> AliasMove:
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
            return await self._move(con, project, alias, target, actor, reason)

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

    async def _move(
        self,
        con: asyncpg.Connection,
        project: str,
        alias: str,
        version: int,
        actor: str,
        reason: str,
    ) -> AliasMove:
        await self._require_project(con, project)
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"alias:{project}:{alias}")
        target = await con.fetchrow(
            "SELECT status, sha256 FROM model_versions WHERE project = $1 AND version = $2",
            project,
            version,
        )
        if target is None:
            raise NotFound(f"project {project!r} has no version {version}")
        if target["status"] != "ready":
            raise Conflict(f"version {version} is {target['status']}: only ready versions serve")
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
            actor,
            reason,
        )
        await enqueue(
            con,
            catalog.REGISTRY_EVENTS,
            AliasMoved(
                project=project,
                alias=alias,
                from_version=current,
                to_version=version,
                sha256=target["sha256"],
                actor=actor,
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
