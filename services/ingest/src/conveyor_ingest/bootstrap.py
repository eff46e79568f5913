from __future__ import annotations

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_db import Announcer, package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.repository import RawLog
from .entrypoints.api import router
from .handlers import Ingest
from .watch import QualityWatch


class IngestSettings(ServiceSettings):
    http_port: int = 8101
    # Records are stored and announced a chunk per transaction, a batch's chunks in a pipeline
    # (handlers.on_submitted) that empties at each batch's end, when ingest waits on its last
    # store and the commit: large batches amortize that (2,000 instead of 256 took the drain
    # from 6,800 to 8,500 records/s; 4,000 instead of 2,000, from 20,800 to 22,000).
    kafka_max_batch: int = 4000
    announce_grace_s: float = Field(
        5.0,
        gt=0,
        description="Stored records whose announcement is still owed this long after their "
        "commit are announced by a sweep (their process died, or is far behind).",
    )


def bootstrap(settings: IngestSettings | None = None) -> Runtime:
    settings = settings or IngestSettings()
    # Records are announced by reference (announcements, below); the outbox relay stays for
    # what an earlier version left in the outbox.
    runtime = Runtime(
        "ingest", settings, migrations=package_migrations("conveyor_ingest"), outbox=True
    )
    assert runtime.db is not None
    log = RawLog(runtime.db)
    log.announcer = Announcer(
        runtime.db,
        catalog.RECORDS_ACCEPTED.name,
        runtime.send,
        runtime.published_ids,
        log.rebuild,
        grace_s=settings.announce_grace_s,
    )
    runtime.on_stop(log.announcer.stop)

    async def sweep() -> None:
        assert log.announcer is not None
        await log.announcer.sweep()
        await log.announcer.backlog()

    runtime.on_start(sweep)  # what a stopped process owed, before new work
    runtime.every(settings.announce_grace_s / 2, sweep, name="announce-sweep")
    ingest = Ingest(runtime.projects, log, QualityWatch(log, runtime.bus))
    runtime.bus.consume(catalog.RECORDS_SUBMITTED, ingest.on_submitted)
    runtime.http.include_router(router(ingest))
    return runtime
