"""Kafka edge of the registry: what serving reports about the versions it loads, and the audit
entries every service writes."""

from __future__ import annotations

import logging

from conveyor_bus import Delivery
from conveyor_contracts.events import AuditRecorded, ModelLoadFailed
from conveyor_db import Database

from .adapters import audit_log, load_failures

log = logging.getLogger(__name__)


class ServingReports:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def on_serving_events(self, batch: list[Delivery[ModelLoadFailed]]) -> None:
        await load_failures.record(self.db.pool, batch)
        for d in batch:
            log.warning(
                "serving %s could not load v%d of %s (%s): %s",
                d.event.replica,
                d.event.version,
                d.event.project,
                d.event.alias,
                d.event.reason,
            )


class AuditTrail:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def on_audit_events(self, batch: list[Delivery[AuditRecorded]]) -> None:
        await audit_log.keep(self.db.pool, batch)
