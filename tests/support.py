"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor_auth import Role, TokenFile
from conveyor_bus import end_offsets
from conveyor_contracts import ModelProject, TopicSpec, catalog, envelope_for
from conveyor_contracts.events import PredictionServed, ProjectApplied, TrainingRunFinished
from conveyor_examples import load_project
from conveyor_runtime import Runtime
from conveyor_runtime.runtime import KEEP_ALIVE_S

# The callers the tests' services know (tests/conftest.py hands the file to every service the
# session starts): each name with its roles, and the token it calls with.
USERS = {
    "test-admin": [Role.ADMIN],
    "alice": [Role.APPROVER],
    "carol": [Role.APPROVER],
    "dave": [Role.SCIENTIST],
    "an-app": [Role.APP],
    "a-viewer": [Role.VIEWER],
}
TOKEN_FILE = TokenFile()
TOKENS: dict[str, str] = {}
for _name, _roles in USERS.items():
    TOKEN_FILE, TOKENS[_name] = TOKEN_FILE.issue(_name, _roles)


def bearer(name: str = "test-admin") -> dict[str, str]:
    """The Authorization header of one of the tests' callers (`USERS`)."""
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def unique_project(prefix: str = "t", base: str = "fraud") -> ModelProject:
    return load_project(base).model_copy(update={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})


def in_approval_mode(spec: ModelProject) -> ModelProject:
    """`spec` with its promotions held for an approver."""
    promotion = spec.policies.promotion.model_copy(update={"mode": "approval"})
    policies = spec.policies.model_copy(update={"promotion": promotion})
    return spec.model_copy(update={"policies": policies})


async def until(probe: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll `probe` (sync or async) until it returns something truthy, or fail at the deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = probe()
                if isinstance(value, Awaitable):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what or probe}") from None


@asynccontextmanager
async def running(
    runtime: Runtime, *, as_user: str | None = "test-admin"
) -> AsyncIterator[httpx.AsyncClient]:
    """Start a service in-process and give an HTTP client for its API, calling as `as_user`
    (None: without a token)."""
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=runtime.http)
        headers = bearer(as_user) if as_user else {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service", headers=headers
        ) as client:
            yield client
    finally:
        await runtime.stop()


async def caught_up(runtime: Runtime, timeout_s: float = 60.0) -> None:
    """Wait until each consumer group of a started service has handled every record its topic
    holds now. The groups outlive the service on the session's broker: started again (in a
    later test), it resumes where they stopped, so what other tests have sent since comes to it
    first — before what this test sends next, which a test timing its own records must not
    count."""
    bootstrap = runtime.settings.kafka_bootstrap_servers
    groups = {group: topic for topic, group in runtime.bus.groups().items()}
    ends = {topic: await end_offsets(bootstrap, topic) for topic in set(groups.values())}
    # Subscribed to nothing, each reads its group's commits and never joins it.
    readers = {
        group: AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        for group in groups
    }
    behind: list[str] = []

    async def done() -> bool:
        behind.clear()
        for group, topic in groups.items():
            for partition, end in ends[topic].items():
                at = await readers[group].committed(TopicPartition(topic, partition)) or 0
                if at < end:
                    behind.append(f"{group}[{partition}] at {at} of {end}")
        return not behind

    try:
        for reader in readers.values():
            await reader.start()
        await until(done, timeout_s, f"{runtime.name}'s consumer groups to catch up")
    except AssertionError:
        raise AssertionError(f"after {timeout_s:g}s still behind: {behind}") from None
    finally:
        for reader in readers.values():
            await reader.stop()


class Listener:
    """An ASGI app served on a free loopback port, reached as a separate process is (by a
    browser, the CLI, another service). With `lifespan="on"` the server starts and stops the
    app's service, as a deployment runs it; with "off" the service is started already."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                lifespan=lifespan,
                timeout_keep_alive=KEEP_ALIVE_S,  # as a service runs: longer than its clients'
            )
        )
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> Listener:
        self.task = task = asyncio.create_task(self.server.serve())
        await until(lambda: self.server.started or task.done(), 60, "the server listening")
        if task.done():
            task.result()  # its failure, raised here
            raise AssertionError("the server stopped before it listened")
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.server.should_exit = True
            await self.task


def run_finished(project: str, i: int) -> TrainingRunFinished:
    """The `i`-th of a series of failed runs, as the trainer announces them (an outbox's event)."""
    now = datetime.now(UTC)
    return TrainingRunFinished(
        project=project,
        run_id=f"run-{i}",
        status="failed",
        trigger="test",
        reason=str(i),
        started_at=now,
        finished_at=now,
    )


def served(project: str, request_id: str, label: str = "fraud") -> PredictionServed:
    """A prediction as serving announces it on predictions.responses."""
    now = datetime.now(UTC)
    return PredictionServed(
        request_id=request_id,
        project=project,
        entity_id="c-1",
        status="ok",
        model_version=1,
        label=label,
        probabilities={label: 0.9},
        feature_names=["a"],
        values=[1.0],
        requested_at=now,
        served_at=now,
        latency_ms=1.0,
    )


class Kafka:
    """Produce events and collect what appears on topics (group-less, from the beginning)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def __aenter__(self) -> Kafka:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, topic: TopicSpec, event: Any, key: str, **headers: str) -> None:
        env = envelope_for(topic, event, source="test").to_headers() | headers
        await self.producer.send_and_wait(
            topic.name,
            event.model_dump_json().encode(),
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in env.items()],
        )

    async def send_json(
        self, topic: TopicSpec, event: Any, value: bytes, key: str, **headers: str
    ) -> None:
        """`value`, JSON written by hand (what a model would not write: NaN, escapes, huge
        numbers), with the envelope of `event`'s type."""
        env = envelope_for(topic, event, source="test").to_headers() | headers
        await self.producer.send_and_wait(
            topic.name, value, key=key.encode(), headers=[(k, v.encode()) for k, v in env.items()]
        )

    async def send_raw(self, topic: str, value: bytes, key: str) -> None:
        await self.producer.send_and_wait(topic, value, key=key.encode())

    async def apply(self, spec: ModelProject, version: int = 1) -> None:
        """Announce a project as the registry would."""
        await self.send(
            catalog.REGISTRY_EVENTS,
            ProjectApplied(project=spec.name, project_version=version, spec=spec),
            key=spec.name,
        )

    async def collect(
        self,
        topic: str,
        predicate: Callable[[Any], bool],
        n: int,
        timeout_s: float = 30.0,
        decode: TopicSpec | None = None,
    ) -> list[Any]:
        """The first `n` records of `topic` matching `predicate` (decoded with `decode`)."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        found: list[Any] = []
        try:
            async with asyncio.timeout(timeout_s):
                while len(found) < n:
                    for records in (await consumer.getmany(timeout_ms=100)).values():
                        for r in records:
                            if r.value is None:
                                continue  # a tombstone: another test's hostile input
                            try:
                                item = decode.adapter.validate_json(r.value) if decode else r
                            except ValueError:
                                continue  # another test's hostile input on the shared topic
                            if predicate(item):
                                found.append(item)
        except TimeoutError:
            raise AssertionError(
                f"{topic}: found {len(found)} of {n} within {timeout_s}s"
            ) from None
        finally:
            await consumer.stop()
        return found

    async def snapshot(self, topic: str) -> list[Any]:
        """Every record of `topic` from the beginning up to its end now."""
        ends = await end_offsets(self.bootstrap, topic)
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        out: list[Any] = []
        if not tps:
            return out
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            async with asyncio.timeout(30):
                while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
                    for records in (await consumer.getmany(timeout_ms=100)).values():
                        out.extend(r for r in records if r.offset < ends[r.partition])
        finally:
            await consumer.stop()
        return out


async def broker_topics(bootstrap: str) -> set[str]:
    """The topics the broker has now (listed without creating any)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


class Webhook:
    """An HTTP receiver on a free local port that records every POST (and can refuse the
    first few with 503, as a receiver that is down would)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts: list[tuple[dict[str, str], Any]] = []
        self.received: list[tuple[dict[str, str], Any]] = []

        async def hook(request: Request) -> Response:
            entry = (dict(request.headers), await request.json())
            self.attempts.append(entry)
            if len(self.attempts) <= self.fail_first:
                return Response("down", status_code=503)
            self.received.append(entry)
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )

    async def __aenter__(self) -> Webhook:
        self._task = asyncio.create_task(self.server.serve())
        await until(lambda: self.server.started, 10, "the webhook receiver")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self._task

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        # By name: a drift policy refuses a literal loopback address when it is applied, while a
        # name is checked by the monitor at delivery (where a test allows loopback).
        return f"http://localhost:{self.port}/hook"
