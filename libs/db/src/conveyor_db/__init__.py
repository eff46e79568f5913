"""Postgres for Conveyor services.

DatabaseError
└── MigrationError   a migration failed, or an applied one was edited afterwards
"""

from .database import Database
from .migrations import MigrationError, migrate, package_migrations
from .outbox import OutboxRelay, enqueue, enqueue_many
from .pool import DatabaseError, DatabaseSettings, create_pool

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseSettings",
    "MigrationError",
    "OutboxRelay",
    "create_pool",
    "enqueue",
    "enqueue_many",
    "migrate",
    "package_migrations",
]
