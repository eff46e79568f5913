from __future__ import annotations

from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.repository import Repository
from .entrypoints.api import router


class RegistrySettings(ServiceSettings):
    http_port: int = 8104


def bootstrap(settings: RegistrySettings | None = None) -> Runtime:
    settings = settings or RegistrySettings()
    runtime = Runtime(
        "registry", settings, migrations=package_migrations("conveyor_registry"), outbox=True
    )
    assert runtime.db is not None
    runtime.http.include_router(router(Repository(runtime.db)))
    return runtime
