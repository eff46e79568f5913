from __future__ import annotations

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.store import FeatureStore
from .domain.features import retention_s
from .entrypoints.api import router
from .handlers import Features


class FeatureSettings(ServiceSettings):
    http_port: int = 8102
    feature_prune_every_s: float = Field(
        60.0,
        gt=0,
        description="How often each project's entity history is pruned of records older than "
        "its longest aggregate window (at least a day) before its newest event time.",
    )


def bootstrap(settings: FeatureSettings | None = None) -> Runtime:
    settings = settings or FeatureSettings()
    runtime = Runtime(
        "feature", settings, migrations=package_migrations("conveyor_feature"), outbox=True
    )
    assert runtime.db is not None
    store = FeatureStore(runtime.db)
    features = Features(
        runtime.projects, store, runtime.bus, reply_prefix=settings.reply_topic_prefix
    )
    runtime.bus.consume(catalog.RECORDS_ACCEPTED, features.on_accepted)
    runtime.bus.consume(catalog.PREDICTIONS_REQUESTS, features.on_requests)
    runtime.http.include_router(router(runtime.projects, store))

    async def prune() -> None:
        for name in runtime.projects.versions():
            known = runtime.projects.get(name)
            if known is not None:
                await store.prune(name, retention_s(known.spec))

    runtime.every(settings.feature_prune_every_s, prune, name="feature-prune")
    return runtime
