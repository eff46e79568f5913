"""What the benchmarks share: the broker and Postgres (chosen as everywhere: environment, else
embedded), service processes, a plain aiokafka relay (the ceiling), and percentiles."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from conveyor_cli import infra
from conveyor_cli.stack import ServiceProcess, tail
from conveyor_contracts import ModelProject, TopicSpec, catalog, envelope_for

# The client settings serving's bus uses, so the relay ceiling is measured like for like.
MAX_BATCH = 256
PRODUCER = {"acks": "all", "linger_ms": 0}

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class Bench:
    broker: infra.Broker
    postgres: infra.Postgres
    workdir: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def start_service(self, name: str, **env: str) -> ServiceProcess:
        """Start one Conveyor service as its own process and wait until it is healthy."""
        port = infra.free_port()
        service = ServiceProcess(
            name,
            port,
            self.workdir / f"{name}.log",
            os.environ
            | self.broker.client_env()
            | {
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(port),
                "LOG_LEVEL": "WARNING",
            }
            | env,
        )
        service.start()
        self.processes.append(service)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"{name} exited:\n{tail(service.log_path)}")
            try:
                if httpx.get(service.url + "/healthz", timeout=1).json()["status"] == "ok":
                    return service
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy after 120 s:\n{tail(service.log_path)}")


@contextmanager
def bench_stack() -> Iterator[Bench]:
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    broker = infra.broker_from_env_or_start(log_path=workdir / "broker.log")
    postgres = infra.postgres_from_env_or_start()
    bench = Bench(broker, postgres, workdir)
    say(f"broker: {broker.kind} at {broker.bootstrap_servers}; database: {postgres.kind}")
    try:
        yield bench
    finally:
        for service in bench.processes:
            service.stop()
        postgres.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def produce(
    bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Produce (key, value, headers) messages as fast as the producer batches them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers)
            for key, value, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def message(topic: TopicSpec, key: str, event: BaseModel) -> Message:
    """`event` as a service would produce it onto `topic`: its JSON and its envelope headers."""
    headers = envelope_for(topic, event, source="bench").to_headers()
    return (
        key.encode(),
        event.model_dump_json().encode(),
        [(k, v.encode()) for k, v in headers.items()],
    )


async def apply_project(bench: Bench, registry_url: str, spec: ModelProject) -> None:
    """Apply `spec` through the registry and wait until its `project_applied` is on
    registry.events: a service started after that knows the project before it takes work."""
    async with httpx.AsyncClient(base_url=registry_url, timeout=30) as client:
        (await client.post("/projects", json=spec.model_dump(mode="json"))).raise_for_status()
    mine = f'"type":"project_applied","project":"{spec.name}"'.encode()
    _, _, seen = await receive(
        bench.broker.bootstrap_servers,
        catalog.REGISTRY_EVENTS.name,
        1,
        lambda r: mine in r.value,
        timeout_s=30,
        fetch_wait=fetch_wait_ms(bench.broker),
    )
    if not seen:
        raise SystemExit(f"project {spec.name} applied, but not announced on registry.events")


def fetch_wait_ms(broker: infra.Broker) -> int:
    """The same fetch wait the services get from `client_env()`."""
    return int(broker.client_env().get("KAFKA_FETCH_MAX_WAIT_MS", 500))


async def relay(bootstrap: str, source: str, sink: str, group: str, fetch_wait: int) -> None:
    """The ceiling: consume in batches, produce every record unchanged, commit after the acks."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_wait,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=MAX_BATCH)
            futures = [
                await producer.send(sink, r.value, key=r.key, headers=list(r.headers))
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            if batch:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


async def receive(
    bootstrap: str,
    topic: str,
    n: int,
    accept: Callable[[Any], bool],
    *,
    timeout_s: float,
    on_record: Callable[[Any, float], None] | None = None,
    ready: asyncio.Event | None = None,
    fetch_wait: int = 500,
) -> tuple[float, float, int]:
    """Read `topic` until `n` records pass `accept`; returns the perf-counter times of the first
    and last accepted records and how many were accepted (fewer when `timeout_s` ran out).

    With `ready`, reading starts at the topic's current end and `ready` is set once every
    partition's position is fixed (send only then); without it, from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_wait
    )
    await consumer.start()
    await consumer.topics()  # fetches the cluster's metadata
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    if ready is None:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
    first = last = 0.0
    count = 0
    try:
        async with asyncio.timeout(timeout_s):
            while count < n:
                batch = await consumer.getmany(timeout_ms=50, max_records=4096)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        if accept(r):
                            count += 1
                            if on_record is not None:
                                on_record(r, now)
                if count and not first:
                    first = now
                last = now
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return first, last, count


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]
