from __future__ import annotations

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_db import package_migrations
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.repository import Repository
from .domain.model import RegistryError
from .entrypoints import audit
from .entrypoints.api import registry_error, router
from .handlers import AuditTrail, ServingReports


class RegistrySettings(ServiceSettings):
    http_port: int = 8104
    registry_public_url: str | None = Field(
        None, description="The registry's URL as others reach it (OpenLineage namespace)."
    )


def bootstrap(settings: RegistrySettings | None = None) -> Runtime:
    settings = settings or RegistrySettings()
    runtime = Runtime(
        "registry", settings, migrations=package_migrations("conveyor_registry"), outbox=True
    )
    assert runtime.db is not None
    first_broker = settings.kafka_bootstrap_servers.split(",")[0]
    runtime.http.state.lineage_namespaces = (
        f"kafka://{first_broker}",
        settings.registry_public_url or f"http://{settings.http_host}:{settings.http_port}",
    )
    runtime.http.include_router(router(Repository(runtime.db)))
    runtime.http.include_router(audit.router(runtime.db))
    runtime.bus.consume(catalog.SERVING_EVENTS, ServingReports(runtime.db).on_serving_events)
    runtime.bus.consume(catalog.AUDIT_EVENTS, AuditTrail(runtime.db).on_audit_events)
    runtime.http.add_exception_handler(RegistryError, registry_error)
    return runtime
