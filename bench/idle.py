"""A stack at rest: what the seven services and the embedded broker cost when nothing happens.

1. `conveyor up` starts the stack in a fresh home (embedded broker and Postgres unless the
   environment names others); `up_ready_s` is the time from the command until every service
   answers `/readyz` (its consumers assigned), which is when traffic can flow.
2. The bundled `fraud` project is applied, its sample history ingested and a model trained,
   promoted and loaded by serving, as "Using it" in docs/getting-started.md does
   with the CLI.
3. Then `--idle` seconds with no traffic: each service's CPU time over the wall time is its core
   share; `idle_cpu_core_share` is the services' sum, `idle_broker_cpu_core_share` the embedded
   broker's (driven by the services' fetches and heartbeats); `rss_mb` each service's resident
   memory at the end.
4. After the idle spell one prediction is asked over Kafka with the client library, and its
   round trip (`after_idle_ms`) reported beside the median of warm ones asked before the idle
   spell (`warm_ms`), so a quiet stack that wakes slowly shows here.
5. The floor, in the same run: on a fresh embedded broker, as many plain aiokafka consumers as
   the services run (one per consumer group a service reported on `/readyz`, with the same
   fetch wait, session and heartbeat; one changelog reader per service at its 100 ms), idle
   for as long: `floor_cpu_core_share` (this process) and `floor_broker_cpu_core_share` (that
   broker). What the broker makes any idle consumer cost is the floor; what the services take
   above it is theirs.

    uv run python bench/idle.py [--idle 60]

Progress goes to stderr; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from common import cpu_seconds, say

from conveyor_bus import ensure_topics
from conveyor_cli import infra
from conveyor_client import Client, Config, DeadlineExceeded, PredictionFailed, Unavailable
from conveyor_contracts import catalog

TARGET_CORE_SHARE = 0.05
FIELDS = {"customer": "c-1", "amount": 12.5, "merchant": "fuel", "hour": 9, "foreign": False}


def timed(client: Client) -> float:
    """One prediction's round trip over Kafka, in milliseconds."""
    t0 = time.monotonic()
    client.predict("fraud", FIELDS)
    return (time.monotonic() - t0) * 1000


def conveyor(home: Path, *args: str, timeout_s: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor_cli.main", *args],
        env=os.environ | {"CONVEYOR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"conveyor {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def wait_ready(home: Path, up: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The stack's state file once every service it lists answers /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    state_path = home / "stack.json"
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"conveyor up exited with {up.returncode}")
        try:
            state = json.loads(state_path.read_text())
            urls = state["services"]
            if all(
                httpx.get(url + "/readyz", timeout=1).status_code == 200 for url in urls.values()
            ):
                return state
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"stack not ready after {timeout_s:.0f} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def consumer_groups(urls: dict[str, str]) -> dict[str, list[str]]:
    """Per service, the topics it reads in a consumer group (from its `/readyz`)."""
    found = {}
    for name, url in urls.items():
        groups = httpx.get(url + "/readyz", timeout=5).json().get("groups")
        if isinstance(groups, dict):
            found[name] = sorted(groups)
    return found


async def floor(topics: list[str], readers: int, idle_s: float) -> dict[str, float]:
    """Idle plain consumers on a fresh embedded broker, one per topic in `topics` (each its own
    group) and `readers` changelog readers: their CPU and the broker's over `idle_s`."""
    broker = infra.start_tansu()
    try:
        env = broker.client_env()
        await ensure_topics(broker.bootstrap_servers)
        common = {"bootstrap_servers": broker.bootstrap_servers, "enable_auto_commit": False}
        group = {
            "fetch_max_wait_ms": int(env.get("KAFKA_FETCH_MAX_WAIT_MS", 500)),
            "session_timeout_ms": int(env.get("KAFKA_SESSION_TIMEOUT_MS", 10_000)),
            "heartbeat_interval_ms": int(env.get("KAFKA_HEARTBEAT_INTERVAL_MS", 3_000)),
        }
        consumers = [
            AIOKafkaConsumer(topic, group_id=f"floor-{i}", **common, **group)
            for i, topic in enumerate(topics)
        ]
        changelog = catalog.REGISTRY_EVENTS
        readers_ = [AIOKafkaConsumer(**common, fetch_max_wait_ms=100) for _ in range(readers)]
        for consumer in consumers + readers_:
            await consumer.start()
        for reader in readers_:
            reader.assign([TopicPartition(changelog.name, p) for p in range(changelog.partitions)])
        deadline = time.monotonic() + 60
        while not all(c.assignment() for c in consumers):
            if time.monotonic() > deadline:
                raise RuntimeError("floor consumers not assigned within 60 s")
            await asyncio.sleep(0.1)
        polls = [
            asyncio.create_task(c.getmany(timeout_ms=int(idle_s * 1000) + 1000))
            for c in consumers + readers_
        ]
        assert broker.pid is not None
        before = cpu_seconds(os.getpid()), cpu_seconds(broker.pid)
        t0 = time.monotonic()
        await asyncio.sleep(idle_s)  # the measurement: the consumers wait on an idle broker
        wall = time.monotonic() - t0
        after = cpu_seconds(os.getpid()), cpu_seconds(broker.pid)
        for poll in polls:
            poll.cancel()
        for consumer in consumers + readers_:
            await consumer.stop()
        return {
            "consumers": (after[0] - before[0]) / wall,
            "broker": (after[1] - before[1]) / wall,
        }
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds at rest measured")
    parser.add_argument("--records", type=int, default=2000, help="labeled history ingested")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="conveyor-idle-"))
    started = time.monotonic()
    log = open(home / "up.log", "wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "conveyor_cli.main", "up"],
        env=os.environ | {"CONVEYOR_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        state = wait_ready(home, up, 180)
        up_ready_s = time.monotonic() - started
        say(f"stack ready {up_ready_s:.1f} s after `conveyor up`")

        conveyor(home, "apply", "fraud")
        sample = home / "payments.csv"
        sample.write_text(conveyor(home, "sample", "fraud", "--records", str(args.records)))
        conveyor(home, "ingest", "fraud", str(sample))
        conveyor(home, "train", "fraud", "--wait", timeout_s=600)
        client = Client(Config.discover(environ={"CONVEYOR_HOME": str(home)}, cwd=home))
        # the first prediction waits until serving has loaded the champion
        deadline = time.monotonic() + 120
        while True:
            try:
                client.predict("fraud", FIELDS)
                break
            except (Unavailable, PredictionFailed, DeadlineExceeded):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        warm_ms = sorted(timed(client) for _ in range(21))[10]
        say(f"project applied, trained and answering ({warm_ms:.1f} ms warm); at rest now")

        groups = consumer_groups(state["services"])
        # the processes `conveyor up` runs now, as its state file records them
        state = json.loads((home / "stack.json").read_text())
        pids = {name: process["pid"] for name, process in state["processes"].items()}
        broker = state["broker"].get("pid")
        watched = dict(pids) | ({"broker": broker} if broker else {})
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        t0 = time.monotonic()
        time.sleep(args.idle)  # the measurement itself: the stack is left alone this long
        wall = time.monotonic() - t0
        share = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in watched.items()}
        rss = {name: round(rss_mb(pid), 1) for name, pid in pids.items()}

        after_idle_ms = timed(client)
        client.close()
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(home, ignore_errors=True)

    topics = [topic for read in groups.values() for topic in read]
    say(f"the floor: {len(topics)} idle group consumers and {len(groups)} changelog readers")
    floor_share = asyncio.run(floor(topics, len(groups), wall))
    services_share = sum(v for k, v in share.items() if k != "broker")
    for name, value in sorted(share.items(), key=lambda kv: -kv[1]):
        say(f"{name:10s} {value * 100:5.1f} % of a core   {rss.get(name, '')} MB")
    say(
        f"services together {services_share * 100:.1f} % of a core"
        f" (target ≤ {TARGET_CORE_SHARE * 100:.0f} %)"
    )
    say(
        f"the floor: consumers {floor_share['consumers'] * 100:.1f} %, "
        f"broker {floor_share['broker'] * 100:.1f} % of a core"
    )
    result = {
        "bench": "idle",
        "idle_s": round(wall, 1),
        "idle_cpu_core_share": round(services_share, 4),
        "idle_broker_cpu_core_share": round(share.get("broker", 0.0), 4),
        "floor_cpu_core_share": round(floor_share["consumers"], 4),
        "floor_broker_cpu_core_share": round(floor_share["broker"], 4),
        "group_consumers": len(topics),
        "per_service_core_share": {k: round(v, 4) for k, v in share.items() if k != "broker"},
        "up_ready_s": round(up_ready_s, 2),
        "rss_mb": rss,
        "after_idle_ms": round(after_idle_ms, 1),
        "warm_ms": round(warm_ms, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
