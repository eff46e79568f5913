"""What the benchmarks share: the broker and Postgres (chosen as everywhere: environment, else
embedded), service processes, a plain aiokafka relay (the ceiling), and percentiles."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from conveyor_auth import Role, TokenFile
from conveyor_bus import create_topic, send_batches
from conveyor_bus.bus import BATCH_BYTES
from conveyor_cli import infra
from conveyor_cli.stack import ServiceProcess, tail
from conveyor_contracts import ModelProject, TopicSpec, catalog, envelope_for
from conveyor_runtime.runtime import GC_THRESHOLDS

HERE = Path(__file__).resolve().parent

# The client settings the services' bus uses, so the relay ceiling is measured like for like
# (a service with batches of its own size passes that size to `ceiling`).
MAX_BATCH = 256
PRODUCER = {"acks": "all", "linger_ms": 0, "max_batch_size": BATCH_BYTES}

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class Bench:
    broker: infra.Broker
    postgres: infra.Postgres
    workdir: Path
    processes: list[ServiceProcess] = field(default_factory=list)
    admin_token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        """The bench's own admin bearer header (its services accept only the token file's)."""
        if not self.admin_token:
            tokens, self.admin_token = TokenFile().issue("bench", [Role.ADMIN])
            tokens.write(self.workdir / "tokens.json")
        return {"Authorization": f"Bearer {self.admin_token}"}

    def start_service(self, name: str, **env: str) -> ServiceProcess:
        """Start one Conveyor service as its own process and wait until it is healthy."""
        port = infra.free_port()
        assert self.auth  # the token file exists before a service reads it
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
                "CONVEYOR_TOKENS_FILE": str(self.workdir / "tokens.json"),
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
    """Produce (key, value, headers) messages as fast as this process can: laid into record
    batches as the bus lays them (a per-message send caps the load near 20,000 a second, below
    what the services take), a few thousand at a time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await producer.start()
    try:
        for start in range(0, len(messages), 4096):
            await send_batches(producer, topic, messages[start : start + 4096])
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
    async with httpx.AsyncClient(base_url=registry_url, timeout=30, headers=bench.auth) as client:
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


async def relay(
    bootstrap: str,
    source: str,
    sink: str,
    group: str,
    fetch_wait: int,
    max_batch: int = MAX_BATCH,
    expect: int = 0,
) -> None:
    """The ceiling: consume in batches, produce every record unchanged, commit after the acks —
    produced as the services' bus produces (a record batch a partition), on the same loop, with
    the services' collector thresholds. It prints `up` once started and `forwarded` once it has
    forwarded `expect` records."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
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
    print("up", flush=True)
    forwarded = 0
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=max_batch)
            if batch:
                records = [r for rs in batch.values() for r in rs]
                await send_batches(producer, sink, [(r.key, r.value, r.headers) for r in records])
                await consumer.commit()
                forwarded += len(records)
                if forwarded >= expect > forwarded - len(records):
                    print("forwarded", flush=True)
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
    """Read `topic` until `n` records pass `accept`; returns the earliest and the latest time
    (seconds since the epoch) at which the accepted records were produced, from their Kafka
    timestamps, and how many were accepted (fewer when `timeout_s` ran out). A drain's rate is
    then the producer's own, wherever this reader started: a reader that starts late, or falls
    behind, does not shorten or stretch it.

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
    first, last = float("inf"), float("-inf")
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
                            first, last = min(first, r.timestamp), max(last, r.timestamp)
                            if on_record is not None:
                                on_record(r, now)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    if not count:
        return 0.0, 0.0, 0
    return first / 1000, last / 1000, count


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a service's Prometheus samples named `name` that carry `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def produced(service: ServiceProcess, topic: str, n: int, timeout_s: float) -> bool:
    """Wait until `service` says it has produced `n` records to `topic` (its metrics, asked
    every second: a reader decoding every record as it came would take a share of the
    two cores from what is measured; the broker's end offsets cannot serve, as Tansu reports a
    partition's end as its last record batch's first offset, plus one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(service.url, "conveyor_messages_produced_total", topic=topic) >= n:
            return True
        await asyncio.sleep(1.0)
    return False


def say_latency(at_load: dict, beside: str = "") -> None:
    """A latency run's p50 and p99 (`beside`: what to say after them), its p99 window by
    window, and the broker's CPU share in each."""
    say(f"  p50 {at_load['p50_ms']} ms, p99 {at_load['p99_ms']} ms{beside}")
    p99s = ", ".join(f"{p:g}" for p in at_load["p99_ms_by_window"])
    say(f"  p99 by {WINDOW_S:g} s window: {p99s} ms")
    if at_load["broker_cpu_pct_by_window"]:
        shares = ", ".join(f"{c}" for c in at_load["broker_cpu_pct_by_window"])
        say(f"  the broker's CPU by window: {shares} % (of one core)")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


async def ceiling(
    bench: Bench,
    messages: list[Message],
    load: list[Message] | None,
    rate: float,
    max_batch: int = MAX_BATCH,
) -> dict:
    """The relay, as its own process like the service measured beside it: how fast it drains
    `messages` (in batches of up to `max_batch`) waiting on its input when it starts, and (unless
    `load` is None) its end-to-end latency when offered `load` at `rate`."""
    bootstrap = bench.broker.bootstrap_servers
    source, sink = (
        f"bench.relay.in.{uuid.uuid4().hex[:6]}",
        f"bench.relay.out.{uuid.uuid4().hex[:6]}",
    )
    await create_topic(bootstrap, source, catalog.PREDICTIONS_ENRICHED.partitions)
    await create_topic(bootstrap, sink, catalog.PREDICTIONS_RESPONSES.partitions)
    wait = fetch_wait_ms(bench.broker)
    await produce(bootstrap, source, messages)
    code = (
        f"import sys, uvloop; sys.path.insert(0, {str(HERE)!r}); from common import relay; "
        f"uvloop.run(relay({bootstrap!r}, {source!r}, {sink!r}, 'bench-relay', {wait}, "
        f"{max_batch}, {len(messages)}))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(300):
            said = await proc.stdout.readline()
            cpu0 = cpu_seconds(proc.pid) if said == b"up\n" else 0.0
            if said != b"up\n" or await proc.stdout.readline() != b"forwarded\n":
                raise SystemExit(f"the relay stopped (exit {await proc.wait()})")
        used = cpu_seconds(proc.pid) - cpu0
        first, last, count = await receive(
            bootstrap, sink, len(messages), lambda r: True, timeout_s=60, fetch_wait=wait
        )
        if count < len(messages):
            raise SystemExit(f"relay forwarded {count} of {len(messages)}")
        say(f"  relay used {used / count * 1e6:.0f} CPU-µs a message")
        say(f"  {count / (last - first):,.0f} msg/s")
        at_load = {}
        if load is not None:
            say(f"  relay latency at {rate:.0f} messages/s …")
            at_load = await offer(bench, source, sink, load, rate, proc.pid)
            say_latency(at_load)
            say(f"  the relay's CPU over the run: {at_load['cpu_pct']} % of a core")
    finally:
        proc.terminate()
        await proc.wait()
    return {"per_s": count / (last - first), **at_load}


@dataclass
class Drain:
    per_s: float
    cpu_us: float  # the service's CPU time a message, between its first and last answer
    service: ServiceProcess


class CpuTrace(threading.Thread):
    """The CPU time of the newest process named `name` in `bench`, sampled every 20 ms from a
    thread (starting a service blocks the loop), so it can be read at any instant after."""

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(daemon=True)
        self.bench, self.name = bench, name
        self.before = {id(p) for p in bench.processes}
        self.samples: list[tuple[float, float]] = []  # (seconds since the epoch, CPU seconds)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            new = [p for p in self.bench.processes if id(p) not in self.before]
            if new and new[-1].name == self.name and new[-1].proc is not None:
                with contextlib.suppress(OSError, IndexError):
                    self.samples.append((time.time(), cpu_seconds(new[-1].proc.pid)))

    def at(self, t: float) -> float:
        """CPU seconds at `t`, between the samples around it (nan without two samples)."""
        if len(self.samples) < 2:
            return float("nan")
        times = [when for when, _ in self.samples]
        i = min(max(bisect.bisect_left(times, t), 1), len(times) - 1)
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * min(max((t - t0) / (t1 - t0), 0.0), 1.0)


async def drain(
    bench: Bench,
    name: str,
    env: dict[str, str],
    source: str,
    sink: str,
    messages: list[Message],
    accept: Callable[[Any], bool],
) -> Drain:
    """How fast service `name` (started with `env`) drains `messages`, waiting on `source` when
    it starts (so the load generator does not share the cores with it): its answers on `sink`
    are read once its own metrics say it has produced them all, and must pass `accept`; the rate
    is the span of their produce times, and its CPU time is read over that span."""
    bootstrap = bench.broker.bootstrap_servers
    await produce(bootstrap, source, messages)
    trace = CpuTrace(bench, name)
    trace.start()
    service = bench.start_service(name, **env)
    if not await produced(service, sink, len(messages), timeout_s=300):
        raise SystemExit(f"{service.name} did not answer {len(messages)}; see {service.log_path}")
    trace.done.set()
    first, last, count = await receive(
        bootstrap, sink, len(messages), accept, timeout_s=60, fetch_wait=fetch_wait_ms(bench.broker)
    )
    if count < len(messages):
        raise SystemExit(f"{service.name}: {count} of {len(messages)} answers as expected")
    return Drain(count / (last - first), (trace.at(last) - trace.at(first)) / count * 1e6, service)


# Latency is also reported by the window of the run its requests were sent in, beside the
# broker's CPU share in that window (when it runs here): on Tansu, what a fetch costs grows with
# the record batches a partition holds, so the figures of a run's last seconds are not its first.
WINDOW_S = 5.0


# A latency run's load: requests (or records) whose ids are "lat-0", "lat-1", …, found again in
# what comes out by this marker.
LOAD_PREFIX = "lat"
LOAD_MARKER = f'"request_id":"{LOAD_PREFIX}-'.encode()


async def offer(
    bench: Bench,
    source: str,
    sink: str,
    load: list[Message],
    rate: float,
    service: int | None = None,
) -> dict:
    """Send `load` (ids starting with `LOAD_PREFIX`) to `source` at `rate` and time each
    answer's arrival on `sink` (matched by request id); sent and answered are counted. With
    `service` (a pid), that process's CPU share over the run (from the first request sent to the
    last answer read) is reported too: what the load costs the process in between."""
    bootstrap = bench.broker.bootstrap_servers
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    windows: dict[int, list[float]] = {}  # by the window their request was sent in

    def request_id(value: bytes) -> bytes:
        at = value.index(LOAD_MARKER) + len(LOAD_MARKER) - len(LOAD_PREFIX) - 1  # at "lat-"
        return value[at : value.index(b'"', at)]

    answers: list[bytes] = []  # serving's, read for its own time once the load is over

    def on_record(record, now: float) -> None:
        sent = sent_at[request_id(record.value)]
        latency = (now - sent) * 1000
        latencies.append(latency)
        windows.setdefault(int((sent - start) // WINDOW_S), []).append(latency)
        if b'"latency_ms":' in record.value:
            answers.append(record.value)

    # The load generator's own pauses are not the system's: a full collection over the messages
    # built for the run (hundreds of thousands of objects) stalls this process for 90-200 ms,
    # which showed up as the p99 of every hop measured. Frozen, those are left out; the run's
    # own objects (a send future a request) still drew two or three 45-56 ms collections in 30 s,
    # so the collector is off while the load runs.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        ready = asyncio.Event()
        n = len(load)
        receiver = asyncio.create_task(
            receive(
                bootstrap,
                sink,
                n,
                lambda r: LOAD_MARKER in r.value,
                timeout_s=n / rate + 60,
                on_record=on_record,
                ready=ready,
                fetch_wait=fetch_wait_ms(bench.broker),
            )
        )
        await ready.wait()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        tick = 0.005
        broker = bench.broker.pid  # None when the broker does not run here
        broker_cpu: list[float] = []  # its CPU share, window by window
        start = time.perf_counter()
        mark = (start, cpu_seconds(broker) if broker else 0.0)
        service_start = cpu_seconds(service) if service else 0.0
        futures = []
        i = 0
        try:
            while i < n:
                due = min(n, int((time.perf_counter() - start) * rate) + 1)
                while i < due:
                    key, value, headers = load[i]
                    sent_at[request_id(value)] = time.perf_counter()
                    futures.append(await producer.send(source, value, key=key, headers=headers))
                    i += 1
                await asyncio.sleep(tick)  # pacing the offered load, not waiting on an outcome
                now = time.perf_counter()
                if broker and now - mark[0] >= WINDOW_S:
                    used = cpu_seconds(broker)
                    broker_cpu.append(round((used - mark[1]) / (now - mark[0]) * 100))
                    mark = (now, used)
            await asyncio.gather(*futures)
            offered = n / (time.perf_counter() - start)
        finally:
            await producer.stop()
        _, _, answered = await receiver
        if service:
            service_share = (cpu_seconds(service) - service_start) / (time.perf_counter() - start)
    finally:
        gc.enable()
    figures = {
        "offered_per_s": round(offered),
        "sent": n,
        "answered": answered,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        # the last window holds the requests sent after the last full one (a few, or none)
        "p99_ms_by_window": [
            round(percentile(windows[w], 99), 1) for w in sorted(windows) if len(windows[w]) > 1
        ],
        "broker_cpu_pct_by_window": broker_cpu,
    }
    if service:
        figures["cpu_pct"] = round(service_share * 100)
    if own := [json.loads(a)["latency_ms"] for a in answers]:
        figures["own_p50_ms"] = round(percentile(own, 50), 2)
        figures["own_p99_ms"] = round(percentile(own, 99), 2)
    return figures


async def broker_hop(bench: Bench, load: list[Message], rate: float, partitions: int) -> dict:
    """The broker alone: `load` sent at `rate` to a fresh topic of `partitions` and read back
    from it by the same process — one hop, nothing between producer and consumer. The floor
    under every path through the broker at that load: the relay's and serving's have two."""
    topic = f"bench.hop.{uuid.uuid4().hex[:6]}"
    await create_topic(bench.broker.bootstrap_servers, topic, partitions)
    return await offer(bench, topic, topic, load, rate)
