from __future__ import annotations

from pydantic import Field, field_validator

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.notifier import Notifier
from .adapters.registry import HttpProfiles, Profiles
from .adapters.repository import Repository
from .adapters.targets import Allowance
from .entrypoints.api import router
from .handlers import Monitor


class MonitorSettings(ServiceSettings):
    http_port: int = 8106
    notify_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the monitor posts the drift webhooks that are due (first tries "
        "and retries alike).",
    )
    monitor_webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Webhook targets allowed although they are not public addresses (loopback, "
        "private, link-local, ...): host names, matched exactly, and addresses or CIDR blocks "
        'the resolved addresses may fall in. JSON, e.g. `["hooks.internal", "10.20.0.0/16"]`.',
    )

    @field_validator("monitor_webhook_allowed_hosts")
    @classmethod
    def _allowance(cls, value: list[str]) -> list[str]:
        Allowance.parse(value)  # a mistyped entry stops the monitor rather than being ignored
        return value


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
    notifier = Notifier(
        runtime.db, allowance=Allowance.parse(settings.monitor_webhook_allowed_hosts)
    )
    runtime.every(settings.notify_interval_s, notifier.deliver, name="webhooks")
    runtime.on_stop(notifier.close)
    runtime.http.include_router(router(repo))
    return runtime
