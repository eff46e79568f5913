from __future__ import annotations

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.notifier import Notifier
from .adapters.registry import HttpProfiles, Profiles
from .adapters.repository import Repository
from .entrypoints.api import router
from .handlers import Monitor


class MonitorSettings(ServiceSettings):
    http_port: int = 8106
    notify_interval_s: float = 1.0


def bootstrap(
    settings: MonitorSettings | None = None, *, profiles: Profiles | None = None
) -> Runtime:
    settings = settings or MonitorSettings()
    runtime = Runtime(
        "monitor", settings, migrations=package_migrations("conveyor_monitor"), outbox=True
    )
    assert runtime.db is not None
    repo = Repository(runtime.db)
    monitor = Monitor(runtime.projects, repo, profiles or HttpProfiles(settings.registry_url))
    runtime.on_registry_events(monitor.on_registry_events)
    runtime.bus.consume(catalog.PREDICTIONS_RESPONSES, monitor.on_predictions)
    runtime.bus.consume(catalog.FEEDBACK_RECORDED, monitor.on_feedback)
    runtime.bus.consume(catalog.PREDICTIONS_SHADOW, monitor.on_shadow)
    runtime.every(15.0, monitor.measure_coverage, name="label-coverage")
    notifier = Notifier(runtime.db)
    runtime.every(settings.notify_interval_s, notifier.deliver, name="webhooks")
    runtime.on_stop(notifier.close)
    runtime.http.include_router(router(repo))
    return runtime
