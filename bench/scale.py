"""Scale-out: ingest, feature and serving run as two, then three replicas of each, every replica of
a service in the same consumer groups, under a steady stream, while a replica joins, one dies
(SIGKILL) and one leaves (SIGTERM); then every message is accounted for.

1. The stack comes up as `conveyor up` brings it up (`conveyor_cli.stack.Stack`), the bundled
   `fraud` project is applied under a fresh name, labeled history goes in and a first model is
   trained, promoted and served (as in bench/chaos.py), while a second replica of ingest,
   feature and serving starts (`Stack.add_replica`: same settings, same groups, an HTTP port of
   its own); the run goes on once every replica knows the project and serves the model.
2. A steady stream of prediction requests and records goes to predictions.requests and
   records.submitted at `--rate`, each message with its own id as `ce_id`. Under it, after
   `--phase` seconds each:

   - `join`: a third replica of each of the three services starts;
   - `kill`: one of the added replicas of each is killed with SIGKILL (while it handles a
     batch, when one is seen in flight within a few seconds);
   - `leave`: the other added replica of each is stopped with SIGTERM, and must exit cleanly.

   After each change the run waits until the groups have settled: every replica answers
   `/readyz` with 200, and each group's partitions are assigned once each among the live
   replicas. `--phase` seconds more of stream, then it stops.
3. Once every consumer group has caught up, the output topics and tables are read whole:

   - `sent`, `answered`: prediction requests sent, and those with an answer on
     predictions.responses (`records_sent`, `records_accepted`: the same for records);
   - `lost`: requests without an answer, records not accepted or not stored;
   - `duplicated_effects`: one id answered or announced under two event ids (`ce_id`), or
     stored twice in the raw log or the feature rows. The same event again under its own
     `ce_id` is the contract's at-least-once redelivery, which consumers dedupe: reported as
     `redelivered_same_ce_id`, not as a duplicate;
   - `rebalances`: the rebalances of each group while the stream ran, as counted by the first
     replica of its service, which stays throughout (every member of a group takes part in
     each of its rebalances: `conveyor_consumer_rebalances_total`); their sum;
   - `max_gap_ms`: the longest time no answer came out (between consecutive answers' Kafka
     timestamps) over a change-to-settled window; beside it the same for each phase, the
     longest gap in the steady stream outside those windows (`max_gap_ms_steady`), and each
     phase's longest time from request to answer.

    uv run python bench/scale.py [--rate 100] [--phase 30] [--seed 1] [--short]

Progress goes to stderr; the last line is one JSON object with the figures. The exit status is
1 when anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from common import metric, say
from ledger import (
    READY_TIMEOUT_S,
    Ledger,
    Stream,
    account,
    answers,
    behind,
    in_flight,
    on_a_stack,
    prepare,
    ready,
    stream,
    until,
)

from conveyor_cli.stack import ServiceProcess, Stack, tail
from conveyor_contracts import CATALOG, catalog

SCALED = ("ingest", "feature", "serving")
MIX = {"records": 0.5, "requests": 0.5}
PARTITIONS = {spec.name: spec.partitions for spec in CATALOG}
# What the two forms run: the full one by default, `--short` for the test suite.
FULL = {"rate": 100.0, "phase": 30.0, "history": 2000}
SHORT = {"rate": 40.0, "phase": 5.0, "history": 600}


@dataclass
class Replicas:
    """The live processes of each scaled service; the first of each is the stack's own."""

    stack: Stack
    live: dict[str, list[ServiceProcess]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.live = {name: [self.stack.services[name]] for name in SCALED}

    def count(self) -> str:
        return ", ".join(f"{name}: {len(procs)}" for name, procs in self.live.items())


async def settled(replicas: Replicas, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until every live replica is ready and each group's partitions are assigned once
    each among its service's replicas."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            shared = True
            for name, procs in replicas.live.items():
                assigned: dict[str, list[int]] = defaultdict(list)
                for proc in procs:
                    if not proc.alive():
                        raise RuntimeError(f"{name} (port {proc.port}) exited; see {proc.log_path}")
                    try:
                        r = await client.get(proc.url + "/readyz")
                    except httpx.HTTPError as exc:
                        last[f"{name}:{proc.port}"] = repr(exc)
                        shared = False
                        continue
                    last[f"{name}:{proc.port}"] = r.json()
                    if r.status_code != 200:
                        shared = False
                        continue
                    for title, partitions in r.json()["assigned"].items():
                        assigned[title] += partitions or []
                for title, partitions in assigned.items():
                    topic = title.split(":", 1)[1]
                    if sorted(partitions) != list(range(PARTITIONS[topic])):
                        shared = False
            if shared:
                return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"groups not settled after {timeout_s:.0f} s: {json.dumps(last)[:2000]}")


def rebalances(replicas: Replicas) -> dict[str, float]:
    """Each group's rebalances so far, as its service's first replica counted them."""
    out = {}
    for name in SCALED:
        first = replicas.live[name][0]
        for title in httpx.get(first.url + "/readyz", timeout=5).json()["assigned"]:
            topic = title.split(":", 1)[1]
            out[f"conveyor-{name}.{topic}"] = metric(
                first.url, "conveyor_consumer_rebalances_total", topic=topic
            )
    return out


async def join(replicas: Replicas) -> dict[str, Any]:
    for name in SCALED:
        replicas.live[name].append(replicas.stack.add_replica(name))
    ready_s = await asyncio.gather(*(ready(procs[-1]) for procs in replicas.live.values()))
    return {"ready_after_s": dict(zip(SCALED, (round(s, 1) for s in ready_s), strict=True))}


async def kill(replicas: Replicas) -> dict[str, Any]:
    mid_batch = {}
    for name in SCALED:
        victim = replicas.live[name].pop(1)
        mid_batch[name] = await in_flight(victim, timeout_s=3.0)
        assert victim.proc is not None
        os.killpg(victim.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait)
    return {"mid_batch": mid_batch}


async def leave(replicas: Replicas) -> dict[str, Any]:
    """SIGTERM, and the process's own clean exit (uvicorn raises the signal again once its
    shutdown is complete: an exit by SIGTERM after that line is clean; SIGKILL, after the grace,
    is not)."""
    took = {}
    for name in SCALED:
        leaving = replicas.live[name].pop(1)
        assert leaving.proc is not None
        start = time.monotonic()
        await asyncio.to_thread(leaving.stop, 60.0)
        took[name] = round(time.monotonic() - start, 1)
        clean = leaving.proc.returncode in (0, -signal.SIGTERM) and (
            "Application shutdown complete" in tail(leaving.log_path, 20)
        )
        if not clean:
            raise RuntimeError(
                f"{name} did not stop cleanly on SIGTERM (exit {leaving.proc.returncode}); "
                f"see {leaving.log_path}"
            )
    return {"stopped_after_s": took}


CHANGES = (("join", join), ("kill", kill), ("leave", leave))


@dataclass
class Window:
    phase: str
    start: float  # epoch seconds: the change began
    end: float  # the groups settled
    detail: dict[str, Any]


async def changes(
    replicas: Replicas, phase_s: float, windows: list[Window], started: float
) -> None:
    for phase, change in CHANGES:
        await asyncio.sleep(phase_s)
        start = time.time()
        detail = await change(replicas)
        await settled(replicas)
        end = time.time()
        windows.append(Window(phase, start, end, detail))
        say(
            f"  [{start - started:6.1f}s] {phase}: settled after {end - start:.1f} s "
            f"({replicas.count()}) {detail}"
        )
    await asyncio.sleep(phase_s)


def gaps(ledger: Ledger, windows: list[Window]) -> dict[str, Any]:
    """The longest time without an answer over each window and outside them; and the longest
    time from request to answer among the requests sent in each window."""
    stamps = sorted(ts / 1000 for ts, _ in ledger.answer_times)
    by_phase = {w.phase: 0.0 for w in windows}
    steady = 0.0
    for a, b in itertools.pairwise(stamps):
        over = [w.phase for w in windows if b > w.start and a < w.end]
        for phase in over:
            by_phase[phase] = max(by_phase[phase], b - a)
        if not over:
            steady = max(steady, b - a)
    first: dict[str, float] = {}
    for ts, request_id in ledger.answer_times:
        first[request_id] = min(first.get(request_id, ts / 1000), ts / 1000)
    latency = {w.phase: 0.0 for w in windows}
    outside: list[float] = []
    for request_id, answered_at in first.items():
        took = answered_at - ledger.sent_at[request_id]
        sent = ledger.sent_at[request_id]
        inside = [w.phase for w in windows if w.start <= sent <= w.end]
        for phase in inside:
            latency[phase] = max(latency[phase], took)
        if not inside:
            outside.append(took)
    ms = lambda s: round(s * 1000)  # noqa: E731
    return {
        "max_gap_ms": ms(max(by_phase.values(), default=0.0)),
        "max_gap_ms_by_phase": {p: ms(s) for p, s in by_phase.items()},
        "max_gap_ms_steady": ms(steady),
        "max_latency_ms_by_phase": {p: ms(s) for p, s in latency.items()},
        "steady_p99_latency_ms": ms(statistics.quantiles(outside, n=100)[98])
        if len(outside) > 1
        else None,
    }


async def scale(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.broker is not None
    bootstrap = stack.broker.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    ledger = Ledger(run=run, project=f"fraud-scale-{run}", tag="sc", source="bench/scale")
    replicas = Replicas(stack)
    for name in SCALED:  # they start while the first model is trained
        replicas.live[name].append(stack.add_replica(name))
    version = await prepare(stack, ledger, args.history, args.seed)

    async def all_serve() -> bool:
        """Every replica knows the project, and every serving replica serves `version`."""
        async with httpx.AsyncClient(timeout=5) as http:
            for proc in (p for procs in replicas.live.values() for p in procs):
                health = (await http.get(proc.url + "/healthz")).json()
                if ledger.project not in health.get("projects", {}):
                    return False
            for proc in replicas.live["serving"]:
                models = (await http.get(proc.url + "/models")).json()
                if (models.get(ledger.project) or {}).get("version") != version:
                    return False
        return True

    await until(all_serve, READY_TIMEOUT_S, f"every serving replica to load v{version}")
    await settled(replicas)
    say(f"a second replica of each is ready and the groups settled ({replicas.count()})")
    gen = Stream(ledger, args.seed, mix=MIX)
    tail_ready = asyncio.Event()
    tailer = asyncio.create_task(answers(bootstrap, ledger, gen, tail_ready))
    await tail_ready.wait()
    before = rebalances(replicas)
    say(
        f"streaming at {args.rate:g}/s; every {args.phase:g} s: "
        + ", then ".join(phase for phase, _ in CHANGES)
    )
    started = time.time()
    done, stop = asyncio.Event(), asyncio.Event()
    sender = asyncio.create_task(
        stream(
            bootstrap,
            ledger,
            gen,
            messages=sys.maxsize,
            rate=args.rate,
            seed=args.seed,
            done=done,
            stop=stop,
        )
    )
    windows: list[Window] = []
    changer = asyncio.create_task(changes(replicas, args.phase, windows, started))
    try:
        while not changer.done():
            await asyncio.wait({changer}, timeout=10)
            for task in (sender, changer, tailer):
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            say(
                f"  [{time.time() - started:6.1f}s] sent {len(ledger.sent_at):,}, "
                f"answers {len(ledger.answer_times):,} ({replicas.count()})"
            )
        stop.set()
        await sender
        say(f"stream done in {ledger.stream_s:.0f} s; waiting for every consumer group …")
        deadline = time.monotonic() + args.drain_timeout
        lag = await behind(bootstrap)
        while lag and time.monotonic() < deadline:
            say(f"  behind: {sum(lag.values()):,} records on {len(lag)} partitions")
            await asyncio.sleep(2)
            lag = await behind(bootstrap)
        await asyncio.sleep(1)  # the tail's last fetch
    finally:
        for task in (sender, changer, tailer):
            task.cancel()
        await asyncio.gather(sender, changer, tailer, return_exceptions=True)
    after = rebalances(replicas)
    by_group = {group: int(after[group] - before.get(group, 0)) for group in after}
    say("reading the output topics whole …")
    figures = await account(stack, ledger)
    stack.check_alive()
    per_topic = figures["per_topic"]
    requests = per_topic[catalog.PREDICTIONS_REQUESTS.name]
    records = per_topic[catalog.RECORDS_SUBMITTED.name]
    return {
        "sent": requests["sent"],
        "answered": requests["processed"],
        "lost": figures["lost"],
        "duplicated_effects": figures["duplicated"],
        "rebalances": sum(by_group.values()),
        **gaps(ledger, windows),
        "records_sent": records["sent"],
        "records_accepted": records["processed"],
        "rebalances_by_group": by_group,
        "membership_changes_by_group": len(CHANGES),
        "stuck_partitions": len(lag),
        "phases": [
            {
                "phase": w.phase,
                "at_s": round(w.start - started, 1),
                "settled_after_s": round(w.end - w.start, 1),
                **w.detail,
            }
            for w in windows
        ],
        "rate": args.rate,
        "phase_s": args.phase,
        "stream_seconds": round(ledger.stream_s),
        "redelivered_same_ce_id": figures["redelivered_same_ce_id"],
        "evidence": figures["evidence"],
        "send_failures": ledger.send_failures,
        "broker": stack.broker.kind,
        "database": stack.postgres.kind if stack.postgres else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, help=f"messages a second ({FULL['rate']:g})")
    parser.add_argument(
        "--phase", type=float, help=f"seconds of stream around each change ({FULL['phase']:g})"
    )
    parser.add_argument("--history", type=int, help=f"labeled records first ({FULL['history']})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for the lag to clear"
    )
    parser.add_argument(
        "--short", action="store_true", help=f"the test suite's form: {json.dumps(SHORT)}"
    )
    args = parser.parse_args()
    for name, value in (SHORT if args.short else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return on_a_stack("scale", lambda stack: scale(stack, args), ("lost", "duplicated_effects"))


if __name__ == "__main__":
    sys.exit(main())
