from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from .migrations import migrate
from .pool import DatabaseError, DatabaseSettings, create_pool


class Database:
    """A service's own schema: connect, apply its migrations, hand out the pool."""

    def __init__(
        self,
        settings: DatabaseSettings,
        schema: str,
        migrations: Traversable | Path | None,
        *,
        outbox: bool = False,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.migrations = migrations
        self.outbox = outbox
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseError(f"database for {self.schema} is not connected")
        return self._pool

    async def connect(self) -> list[str]:
        self._pool = await create_pool(self.settings, self.schema)
        return await migrate(self._pool, self.schema, self.migrations, outbox=self.outbox)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
