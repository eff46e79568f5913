"""Plain-SQL migrations, applied at start-up, each once, recorded with its checksum.

A service keeps its migrations as `NNN_description.sql` files. They run in order inside one
transaction per file, with the service's schema as `search_path`, under an advisory lock so that
replicas starting together apply each file once. Editing a file after it was applied is an error:
write a new migration instead.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from .pool import DatabaseError

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]*$")

OUTBOX_SQL = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text,
    value bytea NOT NULL,
    headers jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
"""


# Outbox rows a relay began to publish: if it dies before marking them published, the next
# relay checks the topic for them instead of publishing them again.
OUTBOX_ATTEMPTS_SQL = """
CREATE TABLE IF NOT EXISTS outbox_attempts (id bigint PRIMARY KEY);
"""


class MigrationError(DatabaseError):
    pass


def _files(source: Traversable | Path) -> list[tuple[str, str]]:
    files = sorted((f.name, f.read_text()) for f in source.iterdir() if f.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), sql) for name, sql in files]


def package_migrations(package: str) -> Traversable:
    return importlib.resources.files(package).joinpath("migrations")


async def migrate(
    pool: asyncpg.Pool, schema: str, source: Traversable | Path | None, *, outbox: bool = False
) -> list[str]:
    """Apply what has not been applied; returns the versions applied now."""
    if not _SCHEMA.match(schema):
        raise MigrationError(f"bad schema name {schema!r}")
    migrations = _files(source) if source is not None else []
    if outbox:
        migrations[:0] = [("000_outbox", OUTBOX_SQL), ("000_outbox_attempts", OUTBOX_ATTEMPTS_SQL)]
    applied_now: list[str] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await con.execute(f'SET LOCAL search_path TO "{schema}"')
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]: r["checksum"]
            for r in await con.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for version, sql in migrations:
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise MigrationError(
                        f"{schema}: migration {version} changed after it was applied"
                    )
                continue
            try:
                await con.execute(sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{schema}: migration {version} failed: {exc}") from exc
            await con.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                version,
                checksum,
            )
            applied_now.append(version)
    return applied_now
