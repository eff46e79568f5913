from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
from pydantic import Field
from pydantic_core import from_json
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    pass


# SQLSTATE classes of failures that pass by themselves: connection exceptions (08), transaction
# rollbacks such as serialization failures and deadlocks (40), insufficient resources (53),
# operator intervention such as a shutting-down server (57), and a lock not available (55P03).
# Everything else (data exceptions (22), a value too large for an index (54000), a constraint
# (23)) is about the data a message carries.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")


def is_transient(exc: BaseException) -> bool:
    """Whether a database failure is the database's (unreachable, restarting, overloaded, a
    conflict with another transaction) rather than the data's: worth retrying as it is."""
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError | DatabaseError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(_TRANSIENT_CLASSES) or state == "55P03"
    return False


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL URL; each service uses its own schema inside this database.",
    )
    database_pool_size: int = Field(
        5, ge=2, description="Connections per service process (the outbox relay needs two)."
    )


async def _init_connection(con: asyncpg.Connection) -> None:
    # Decoded by pydantic-core: a small document (a stored record's fields, read by the hundred
    # for every batch of requests the feature service enriches) in an eighth of json.loads's
    # time, which is mostly the call's own overhead.
    for type_name in ("json", "jsonb"):
        await con.set_type_codec(
            type_name, encoder=json.dumps, decoder=from_json, schema="pg_catalog"
        )


async def create_pool(
    settings: DatabaseSettings, schema: str, *, timeout_s: float = 30.0
) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in the service's own schema."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.database_pool_size,
                server_settings={"search_path": schema, "application_name": f"conveyor-{schema}"},
                init=_init_connection,
            )
            assert pool is not None
            return pool
        except (OSError, asyncpg.PostgresError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise DatabaseError(f"cannot reach Postgres for schema {schema}: {exc!r}") from exc
            log.warning("Postgres not reachable yet (%r); retrying", exc)
            await asyncio.sleep(0.5)
