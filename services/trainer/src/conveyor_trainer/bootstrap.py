from __future__ import annotations

import logging

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.registry import HttpRegistry, Registry
from .adapters.repository import Repository
from .entrypoints.api import router
from .handlers import Trainer
from .runs import RunLog, Runs

log = logging.getLogger(__name__)


class TrainerSettings(ServiceSettings):
    http_port: int = 8103
    trainer_poll_s: float = Field(
        0.5,
        gt=0,
        description="How often pending drift episodes and scheduled runs are checked for a run "
        "their project's retrain policy allows now.",
    )
    trainer_abandon_check_s: float = Field(
        30.0,
        gt=0,
        description="How often a replica looks for runs whose trainer process is gone.",
    )


def bootstrap(
    settings: TrainerSettings | None = None, *, registry: Registry | None = None
) -> Runtime:
    settings = settings or TrainerSettings()
    runtime = Runtime(
        "trainer", settings, migrations=package_migrations("conveyor_trainer"), outbox=True
    )
    assert runtime.db is not None
    repo = Repository(runtime.db)
    token = settings.conveyor_token.get_secret_value() if settings.conveyor_token else None
    registry = registry or HttpRegistry(settings.registry_url, token)
    RunLog.capture()
    runs = Runs(repo, registry, settings)
    trainer = Trainer(runtime.projects, repo, runs)
    runtime.bus.consume(catalog.FEATURES_ROWS, trainer.on_examples)
    runtime.bus.consume(catalog.FEEDBACK_RECORDED, trainer.on_examples)
    runtime.bus.consume(catalog.TRAINER_REQUESTS, trainer.on_requests)
    runtime.bus.consume(catalog.MONITOR_DRIFT, trainer.on_drift)
    runtime.http.include_router(router(runtime.projects, repo, runs))

    async def abandon_interrupted() -> None:
        """Fail the runs of trainer processes that are gone (this one's predecessor, or a
        replica that died), whichever replica notices first."""
        if abandoned := await repo.abandon_interrupted():
            log.warning("%d runs were interrupted by a restart", len(abandoned))
        for project, version in abandoned:
            if version is not None:
                await runs.fail_version(project, version, "interrupted: the trainer restarted")

    @runtime.on_start
    async def _start() -> None:
        await repo.hold_alive()
        await abandon_interrupted()

    @runtime.on_stop
    async def _stop() -> None:
        await runs.wait()
        await repo.release_alive()

    runtime.every(settings.trainer_poll_s, trainer.check_episodes, name="drift-episodes")
    runtime.every(settings.trainer_poll_s, trainer.check_schedules, name="schedules")
    runtime.every(settings.trainer_abandon_check_s, abandon_interrupted, name="abandoned-runs")
    return runtime
