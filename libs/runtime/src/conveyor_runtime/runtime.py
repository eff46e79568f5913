"""One service process: its settings, database, bus, known projects and HTTP API, started and
stopped together.

Each service's `bootstrap()` builds a `Runtime`, registers its consumers and routes, and returns
it; `serve()` runs it under uvicorn. Tests call `bootstrap()` with their own settings (and may
skip `serve()`, driving `start()` / `stop()` themselves).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from conveyor_auth import Callers, OidcVerifier, TokenStore, install
from conveyor_bus import (
    Bus,
    Delivery,
    TopicSetupError,
    any_of,
    broker_transient,
    end_offsets,
    prepare_topics,
    published_ids,
)
from conveyor_client.kafka_security import KafkaSecurityError
from conveyor_contracts import catalog
from conveyor_contracts.events import ProjectApplied
from conveyor_db import Database, OutboxRelay, is_transient
from conveyor_telemetry import (
    configure_logging,
    configure_metrics,
    configure_tracing,
    prometheus_scrape,
)

from .http import harden
from .projects import ProjectCache
from .registry import RegistryUnavailable
from .settings import ServiceSettings

log = logging.getLogger(__name__)

# The collector's thresholds once started. Python's (700, 10, 10) collect the youngest
# generation every 700 net allocations of containers: a service with a few batches of hundreds of
# records in flight ran the collector ~800 times a second over those live records, for nothing
# (their objects go by reference counting) — serving spent 0.6 s of a 150,000-request drain there,
# 4 µs (a seventh of its CPU) a prediction. At 50,000 the same drain ran it not once (net
# allocations stay far below; what cycles there are still go, later): 28,100-31,800 →
# 30,900-33,700 predictions/s.
GC_THRESHOLDS = (50_000, 20, 10)

# A readiness probe's own database round trip: a database slower than this is not ready.
READY_QUERY_TIMEOUT_S = 1.0

# What a consumer retries in place rather than blames on a message: the broker's, the
# database's and the registry's unavailability.
transient_failure = any_of(
    broker_transient, is_transient, lambda exc: isinstance(exc, RegistryUnavailable)
)

Hook = Callable[[], Awaitable[object]]  # what a hook returns is ignored
Report = Callable[[], Any]  # a part of /readyz's answer: small, in memory, JSON-ready
RegistryListener = Callable[[list[Delivery[Any]]], Awaitable[None]]


KEEP_ALIVE_S = 75  # seconds an idle client connection stays open (as common proxies keep them)


def package_version(service: str) -> str:
    """The installed version of the service's package (`conveyor-<service>`)."""
    try:
        return version(f"conveyor-{service}")
    except PackageNotFoundError:
        return "unknown"  # a service assembled outside a package (a test's)


class Runtime:
    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        migrations: Traversable | Path | None = None,
        outbox: bool = False,
        uses_database: bool = True,
        bus: Bus | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.version = package_version(name)
        self.bus = bus or Bus(name, settings, transient=transient_failure)
        self.db = Database(settings, name, migrations, outbox=outbox) if uses_database else None
        self.relay: OutboxRelay | None = None
        self.projects = ProjectCache()
        self.started = False
        # Work waits until the service has read registry.events up to where it ended at start-up:
        # a restarted service must know every project (and serving its champions) before it
        # judges a record or answers a request, else it would dead-letter valid work.
        self.caught_up = asyncio.Event()
        self._changelog_end: dict[int, int] = {}
        self.bus.hold_until(self.caught_up)
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._registry_listeners: list[RegistryListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._before_work: list[Hook] = []
        self._reports: dict[str, Report] = {}
        self._work_gate = asyncio.Event()  # caught up, and every `before_work` wait done
        self.http = FastAPI(
            title=f"Conveyor {name}",
            version=self.version,
            lifespan=self._lifespan,
        )
        harden(self.http, settings.http_max_body_bytes)
        self.tokens = TokenStore(settings.conveyor_tokens_file, settings.conveyor_tokens)
        oidc = settings.oidc()
        self.callers = Callers(self.tokens, OidcVerifier(oidc) if oidc is not None else None)
        install(self.http, self.callers)
        self.http.add_api_route("/healthz", self.health, methods=["GET"], tags=["health"])
        self.http.add_api_route(
            "/readyz",
            self.readiness,
            methods=["GET"],
            tags=["health"],
            responses={503: {"description": "Not ready: the reasons are listed."}},
        )
        self.http.add_api_route(
            "/metrics", self.metrics, methods=["GET"], tags=["health"], include_in_schema=False
        )
        self.bus.consume(
            catalog.REGISTRY_EVENTS,
            self._on_registry_events,
            broadcast=True,
            consumed=self._on_changelog_positions,
        )

    # --- wiring ---------------------------------------------------------------------------------

    def on_start(self, hook: Hook) -> Hook:
        self._on_start.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        self._on_stop.append(hook)
        return hook

    def every(self, seconds: float, job: Hook, *, name: str) -> None:
        """Run `job` every `seconds` while the service runs; a failure is logged, not fatal."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.exception("%s failed; it runs again in %.1fs", name, seconds)

        async def start() -> None:
            self._tasks.append(asyncio.create_task(loop(), name=name))

        self._on_start.append(start)

    def report(self, key: str, part: Report) -> Report:
        """Add `part()` to what `/readyz` answers, under `key` (serving: the models it serves).
        It runs at every probe: a few fields read from memory, bounded in size."""
        self._reports[key] = part
        return part

    def on_registry_events(self, listener: RegistryListener) -> RegistryListener:
        """Also hand every batch of registry events to `listener` (after the project cache)."""
        self._registry_listeners.append(listener)
        return listener

    def before_work(self, wait: Hook) -> Hook:
        """Hold group consumers, once the changelog is read, until `wait()` is done too: for a
        service whose readiness follows from the changelog but is not complete when it has been
        read (serving's models load in the background). `wait` bounds itself; one that fails is
        logged and work starts anyway, since a service held forever answers no one."""
        if not self._before_work:
            self.bus.hold_until(self._work_gate)
            self._on_start.append(self._open_work_gate)
        self._before_work.append(wait)
        return wait

    async def _open_work_gate(self) -> None:
        async def open_after_waits() -> None:
            await self.caught_up.wait()
            for wait in self._before_work:
                try:
                    await wait()
                except Exception:
                    log.exception("a wait before work failed; taking work anyway")
            self._work_gate.set()

        self._tasks.append(asyncio.create_task(open_after_waits(), name="before-work"))

    @property
    def taking_work(self) -> bool:
        """Caught up with the changelog, and past every `before_work` wait."""
        return self.caught_up.is_set() and (not self._before_work or self._work_gate.is_set())

    async def _on_registry_events(self, batch: list[Delivery[Any]]) -> None:
        for delivery in batch:
            if isinstance(delivery.event, ProjectApplied) and self.projects.apply(delivery.event):
                log.info(
                    "project %s v%d known", delivery.event.project, delivery.event.project_version
                )
        for listener in self._registry_listeners:
            await listener(batch)

    def _on_changelog_positions(self, positions: list[tuple[int, int]]) -> None:
        for partition, offset in positions:
            if offset + 1 >= self._changelog_end.get(partition, 0):
                self._changelog_end.pop(partition, None)
        if not self._changelog_end and not self.caught_up.is_set():
            log.info("caught up with %s", catalog.REGISTRY_EVENTS.name)
            self.caught_up.set()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.db is not None:
            applied = await self.db.connect()
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
            if self.db.outbox:
                self.relay = OutboxRelay(
                    self.db.pool, self.send, self.published_ids, service=self.name
                )
        try:
            created = await prepare_topics(self.settings)
        except (KafkaSecurityError, TopicSetupError) as exc:
            # One line that says what to fix, before the traceback the server prints.
            log.critical("%s cannot start: %s", self.name, exc)
            raise
        if created:
            log.info("topics created: %s", ", ".join(created))
        ends = await end_offsets(self.settings, catalog.REGISTRY_EVENTS.name)
        self._changelog_end = {p: end for p, end in ends.items() if end > 0}
        self._on_changelog_positions([])
        await self.bus.start()
        if self.relay is not None:
            self.relay.start()
        for hook in self._on_start:
            await hook()
        # What start-up built (modules, clients, models) lives as long as the process: out of
        # the collector's sight, a full collection no longer walks it — tens of milliseconds a
        # pause in a process that imports scikit-learn and onnxruntime.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.started = True
        log.info("%s started", self.name)

    async def stop(self) -> None:
        self.started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for hook in reversed(self._on_stop):
            try:
                await hook()
            except Exception:
                log.exception("stop hook failed")
        if self.relay is not None:
            await self.relay.stop()
        await self.bus.stop()
        if self.db is not None:
            await self.db.close()

    async def send(
        self,
        topic: str,
        messages: Sequence[tuple[str | None, bytes, Mapping[str, str] | Sequence[Any]]],
    ) -> None:
        await self.bus.send(topic, messages)

    async def published_ids(self, topic: str, ids: set[str]) -> set[str]:
        """Which of these event ids are on `topic` already (its tail searched)."""
        return await published_ids(self.settings, topic, ids)

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "service": self.name,
            "version": self.version,
            "status": "ok" if self.started and self.taking_work else "starting",
            "projects": self.projects.versions(),
            "dead_letters": self.bus.dead_letters,
        }
        if self.relay is not None:
            body["outbox_published"] = self.relay.published
        return body

    async def readiness(self) -> JSONResponse:
        """200 when the service takes work: started, caught up with the registry's changelog,
        the broker and its database answering, every group consumer assigned its partitions by
        its group (none, when the group has more members than the topic partitions), and no
        consumer retrying a transient failure; else 503 with every reason (a probe that routes
        no traffic here meanwhile). `assigned` lists each group consumer's partitions, `groups`
        the consumer group each topic is read in (whose lag `conveyor status` reports),
        `version` the service's own; a service may add parts of its own (`report`: serving's
        `models`, what it serves)."""
        problems = [f"{consumer}: {why}" for consumer, why in self.bus.problems().items()]
        assigned = self.bus.assignments()
        if not self.started:
            problems.append("starting")
        elif not self.caught_up.is_set():
            problems.append(f"catching up with {catalog.REGISTRY_EVENTS.name}")
        elif not self.taking_work:
            problems.append("preparing before taking work (serving: loading models)")
        if self.started:
            problems += [
                f"{consumer}: not yet assigned partitions by its group"
                for consumer, partitions in assigned.items()
                if partitions is None
            ]
            broker = await self.bus.broker_problem(
                catalog.REGISTRY_EVENTS.name, READY_QUERY_TIMEOUT_S
            )
            if broker is not None:
                problems.append(f"broker: {broker}")
        if self.started and self.db is not None:
            try:
                async with asyncio.timeout(READY_QUERY_TIMEOUT_S):
                    await self.db.pool.fetchval("SELECT 1")
            except Exception as exc:
                problems.append(f"database: {type(exc).__name__}")
        body = {
            "service": self.name,
            "version": self.version,
            "ready": not problems,
            "problems": problems,
            "assigned": assigned,
            "groups": self.bus.groups(),
        }
        for key, part in self._reports.items():
            body[key] = part()
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics(self) -> Response:
        """For Prometheus to scrape (recorded through OpenTelemetry's API)."""
        body, content_type = prometheus_scrape()
        return Response(body, media_type=content_type)

    # --- running --------------------------------------------------------------------------------

    def serve(self) -> None:
        configure_logging(self.name)
        if configure_tracing(self.name):
            # An HTTP request joins the trace its `traceparent` names (or starts one); what the
            # handler publishes continues it.
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            self.http.add_middleware(
                OpenTelemetryMiddleware,
                excluded_urls="/healthz,/metrics",
                exclude_spans=["receive", "send"],
            )
        configure_metrics(self.name)
        config = uvicorn.Config(
            self.http,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            # Longer than a client keeps an idle connection (httpx: 5 s, as uvicorn's own
            # default): a server closing first races a client reusing the connection, and the
            # request then fails with a reset (seen as a trainer run failing on the registry).
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        # uvloop: aiokafka's and asyncpg's many small reads and callbacks cost less on it than
        # on the standard loop (measured in bench/ingest.py and bench/serving.py).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(uvicorn.Server(config).serve())
