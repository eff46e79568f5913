"""Postgres for Conveyor services.

DatabaseError
└── MigrationError   a migration failed, or an applied one was edited afterwards
"""

from .announce import Announcer, Message
from .audit import record as record_audit
from .database import Database
from .migrations import MigrationError, migrate, package_migrations
from .outbox import OutboxRelay, enqueue, enqueue_many
from .pool import DatabaseError, DatabaseSettings, create_pool, is_transient

__all__ = [
    "Announcer",
    "Database",
    "DatabaseError",
    "DatabaseSettings",
    "Message",
    "MigrationError",
    "OutboxRelay",
    "create_pool",
    "enqueue",
    "enqueue_many",
    "is_transient",
    "migrate",
    "package_migrations",
    "record_audit",
]
