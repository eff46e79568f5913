"""Chaos: the whole stack under a steady stream with poison in it, while every stream service is
killed (SIGKILL) and restarted in turn; then every message is accounted for.

1. The stack comes up as `conveyor up` brings it up (`conveyor_cli.stack.Stack`: Tansu and
   pgserver, or KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL), the bundled `fraud` project is applied
   under a fresh name with the stack's admin token, labeled history goes in over Kafka and a
   first model is trained, promoted and loaded by serving.
2. A stream of `--messages` at `--rate` goes to records.submitted, predictions.requests and
   feedback.submitted (feedback for answers already seen), `--bad-share` of it malformed in
   varied ways. Each message carries its own id as `ce_id` (and as its record, request or
   feedback id), so it can be traced through.
3. Meanwhile ingest, feature, serving, feedback, monitor and trainer are each killed with
   SIGKILL, restarted as a new process (as `conveyor up` does) and waited for (`/readyz` 200)
   before the next; and every service's HTTP API is asked, now and then, malformed and good
   requests, with and without a token.
4. Once every consumer group has caught up (or `--drain-timeout` passed), the output and
   dead-letter topics are read whole and the services' tables queried:

   - `processed`: good messages whose effect is there (a record on records.accepted, an answer
     to a request on predictions.responses, a feedback on feedback.recorded);
   - `dead_lettered`: bad messages found on `<topic>.dlq`;
   - `lost`: good messages without effect, bad ones neither dead-lettered nor answered;
   - `duplicated`: effects applied twice: one id announced under two event ids (`ce_id`) on
     records.accepted, features.rows (same revision), predictions.responses or
     feedback.recorded, or stored twice in the raw log, the feature rows or the labels (the
     same event re-sent under its own `ce_id` is the contract's at-least-once redelivery);
   - `stuck_partitions`: partitions whose group's committed offset is behind their end;
   - `http_5xx`: answers of 500 and over from the HTTP APIs.

    uv run python bench/chaos.py [--messages 100000] [--bad-share 0.02] [--rate 200] [--seed 1]

Progress goes to stderr; the last line is one JSON object with the figures. The exit status is
1 when anything was lost, duplicated, stuck, or answered with a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from common import say
from ledger import (
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
)

from conveyor_cli.stack import Stack

# Killed in this order: every service that consumes a stream (the registry serves the
# changelog's writes and is not one of them).
KILLED = ("ingest", "feature", "serving", "feedback", "monitor", "trainer")


# --- kills --------------------------------------------------------------------------------------


async def kill_each(stack: Stack, ledger: Ledger, span_s: float, done: asyncio.Event) -> None:
    """SIGKILL each stream service in turn, spread over the stream's span, restart it as a new
    process and wait until it is ready before the next."""
    start = time.monotonic()
    gap = span_s / (len(KILLED) + 1)
    for i, name in enumerate(KILLED, 1):
        await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
        service = stack.services[name]
        assert service.proc is not None
        pid = service.proc.pid
        mid_batch = await in_flight(service)
        os.killpg(pid, signal.SIGKILL)  # the service and anything it started
        await asyncio.to_thread(service.proc.wait)
        killed_at = time.monotonic()
        service.restarts += 1
        service.start()
        recovered = await ready(service)
        during = not done.is_set()
        ledger.kills.append(
            {
                "service": name,
                "at_s": round(killed_at - start, 1),
                "ready_after_s": round(time.monotonic() - killed_at, 1),
                "during_stream": during,
                "mid_batch": mid_batch,
            }
        )
        say(
            f"  [{killed_at - start:6.1f}s] kill -9 {name} (pid {pid}"
            f"{', a batch in flight' if mid_batch else ''}); restarted, ready after "
            f"{recovered:.1f} s{'' if during else ' (after the stream)'}"
        )


# --- HTTP ---------------------------------------------------------------------------------------


def http_cases(ledger: Ledger) -> list[tuple[str, str, str, Any]]:
    """(service, method, path, body) requests: malformed ones and good ones. A body that is
    bytes is sent as is; a dict as JSON; None as nothing."""
    p = ledger.project
    huge = "9" * 400
    record = {
        "record_id": f"{ledger.prefix}http",
        "fields": {
            "customer": "c-1",
            "ts": datetime.now(UTC).isoformat(),
            "amount": 10.0,
            "merchant": "fuel",
            "hour": 3,
            "foreign": False,
        },
    }
    return [
        # good
        ("registry", "GET", "/projects", None),
        ("registry", "GET", f"/projects/{p}/aliases", None),
        ("registry", "GET", f"/projects/{p}/versions", None),
        ("ingest", "GET", f"/projects/{p}/records/stats", None),
        ("ingest", "GET", f"/projects/{p}/quality", None),
        ("ingest", "POST", f"/projects/{p}/records", record),
        ("feature", "GET", f"/projects/{p}/entities/c-1/features", None),
        ("feature", "GET", f"/projects/{p}/freshness", None),
        ("feature", "GET", f"/projects/{p}/rows/count", None),
        ("serving", "GET", "/models", None),
        ("serving", "GET", f"/v2/models/{p}", None),
        ("feedback", "GET", f"/projects/{p}/feedback/stats", None),
        ("monitor", "GET", f"/projects/{p}/drift", None),
        ("monitor", "GET", f"/projects/{p}/versions", None),
        ("trainer", "GET", f"/projects/{p}/runs", None),
        ("trainer", "GET", f"/projects/{p}/examples", None),
        # bad JSON
        ("ingest", "POST", f"/projects/{p}/records", b'{"fields": {"amount": '),
        ("ingest", "POST", f"/projects/{p}/records/batch", b"\xff\xfe not json"),
        ("registry", "POST", "/projects", b"{]"),
        ("feedback", "POST", "/feedback", b'{"project":'),
        ("trainer", "POST", f"/projects/{p}/runs", b"[[[["),
        ("serving", "POST", f"/v2/models/{p}/infer", b'{"inputs": [{"name": '),
        ("feature", "POST", f"/projects/{p}/training-set", b"nul\x00l"),
        # wrong types
        ("ingest", "POST", f"/projects/{p}/records", {"fields": ["a", "b"]}),
        ("ingest", "POST", f"/projects/{p}/records/batch", {"records": "many"}),
        ("registry", "POST", "/projects", {"name": 123, "features": "none"}),
        ("feedback", "POST", "/feedback", {"project": p, "request_id": 5, "label": []}),
        ("feedback", "POST", "/feedback/batch", {"feedback": {"a": 1}}),
        ("trainer", "POST", f"/projects/{p}/runs", {"reason": ["x"]}),
        ("serving", "POST", f"/v2/models/{p}/infer", {"inputs": "x"}),
        ("feature", "POST", f"/projects/{p}/training-set", {"record_ids": 7}),
        (
            "registry",
            "PUT",
            f"/projects/{p}/aliases/champion",
            {"version": "one", "reason": None},
        ),
        # NUL and control characters
        ("ingest", "POST", f"/projects/{p}/records", {"record_id": "a\u0000b", "fields": {}}),
        ("ingest", "GET", "/projects/a%00b/records/stats", None),
        ("feedback", "POST", "/feedback", {"project": p, "request_id": "\u0000", "label": "x"}),
        ("feature", "GET", f"/projects/{p}/entities/c%00-1/features", None),
        ("monitor", "GET", "/projects/%00/drift", None),
        ("trainer", "GET", "/runs/%00%01", None),
        ("registry", "GET", f"/projects/{p}/versions/%00", None),
        # huge integers and ids in paths and bodies
        ("registry", "GET", f"/projects/{p}/versions/{huge}", None),
        ("registry", "GET", f"/projects/{p}/versions/-{huge}/openlineage", None),
        ("registry", "POST", f"/projects/{p}/versions/{huge}/complete", {}),
        ("registry", "GET", f"/projects/{p}/promotions/{huge}", None),
        ("serving", "GET", f"/v2/models/{p}/versions/{huge}", None),
        ("serving", "POST", f"/v2/models/{p}/versions/{huge}/infer", {"inputs": []}),
        ("trainer", "POST", f"/projects/{p}/versions/{huge}/reproduce", {}),
        ("trainer", "GET", "/runs/" + "r" * 16384, None),
        ("feature", "GET", f"/projects/{p}/entities/{'e' * 16384}/features", None),
        ("feedback", "GET", f"/projects/{p}/predictions/{huge}/labels", None),
        (
            "ingest",
            "POST",
            f"/projects/{p}/records",
            {"record_id": "x" * 16384, "fields": {"hour": 10**400}},
        ),
        ("registry", "GET", f"/projects/{'p' * 16384}", None),
        # a body over the limit (4 MiB)
        ("ingest", "POST", f"/projects/{p}/records/batch", "OVERSIZED"),
    ]


async def poke(stack: Stack, ledger: Ledger, rng: random.Random, stop: asyncio.Event) -> None:
    """A request every 0.2 s to some service's API, a third of them without a token."""
    cases = http_cases(ledger)
    oversized = b'{"records": [' + b" " * (5 * 1024 * 1024) + b"]}"
    token = {"Authorization": f"Bearer {stack.admin_token}"}
    async with httpx.AsyncClient(timeout=15) as client:
        while not stop.is_set():
            service, method, path, body = rng.choice(cases)
            if body == "OVERSIZED" and rng.random() > 0.1:
                continue  # five megabytes a time: now and then is enough
            headers = dict(token) if rng.random() > 1 / 3 else {}
            content: bytes | None = None
            if isinstance(body, bytes):
                content = body
            elif body == "OVERSIZED":
                content = oversized
            elif body is not None:
                content = json.dumps(body).encode()
            if content is not None:
                headers["content-type"] = "application/json"
            try:
                r = await client.request(
                    method,
                    stack.services[service].url + path,
                    content=content,
                    headers=headers,
                )
                ledger.http[f"{r.status_code // 100}xx"] += 1
                if r.status_code >= 500:
                    ledger.http_5xx.append(
                        f"{service} {method} {path[:80]} → {r.status_code} {r.text[:200]}"
                    )
                    say(f"  5xx: {ledger.http_5xx[-1]}")
            except httpx.HTTPError as exc:  # a service being killed refuses connections
                ledger.http[f"no answer ({type(exc).__name__})"] += 1
            await asyncio.sleep(0.2)


# --- the run ------------------------------------------------------------------------------------


async def chaos(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.broker is not None
    bootstrap = stack.broker.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    ledger = Ledger(run=run, project=f"fraud-chaos-{run}")
    await prepare(stack, ledger, args.history, args.seed)
    gen = Stream(ledger, args.seed)
    span = args.messages / args.rate
    say(
        f"streaming {args.messages:,} messages at {args.rate:g}/s (~{span:.0f} s), "
        f"{args.bad_share:.1%} malformed; killing {', '.join(KILLED)} in turn"
    )
    tail_ready = asyncio.Event()
    tailer = asyncio.create_task(answers(bootstrap, ledger, gen, tail_ready))
    await tail_ready.wait()
    started = time.monotonic()
    done = asyncio.Event()
    stop_http = asyncio.Event()
    sender = asyncio.create_task(
        stream(
            bootstrap,
            ledger,
            gen,
            messages=args.messages,
            rate=args.rate,
            seed=args.seed,
            done=done,
            bad_share=args.bad_share,
        )
    )
    killer = asyncio.create_task(kill_each(stack, ledger, span, done))
    prober = asyncio.create_task(poke(stack, ledger, random.Random(args.seed + 2), stop_http))
    try:
        while not (sender.done() and killer.done()):
            await asyncio.wait({sender, killer}, timeout=15)
            for task in (sender, killer, prober, tailer):
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            sent = sum(len(v) for v in ledger.good.values()) + len(ledger.bad)
            say(
                f"  [{time.monotonic() - started:6.1f}s] sent {sent:,} "
                f"({len(ledger.bad)} bad), answered ok {len(ledger.answered):,}, "
                f"kills {len(ledger.kills)}, http {dict(ledger.http)}"
            )
        say(
            f"stream done in {ledger.stream_s:.0f} s, kills done at "
            f"{time.monotonic() - started:.0f} s; waiting for every consumer group to catch up …"
        )
        deadline = time.monotonic() + args.drain_timeout
        lag = await behind(bootstrap)
        while lag and time.monotonic() < deadline:
            say(f"  behind: {sum(lag.values()):,} records on {len(lag)} partitions")
            await asyncio.sleep(5)
            lag = await behind(bootstrap)
        stop_http.set()
        await prober
    finally:
        for task in (sender, killer, prober, tailer):
            task.cancel()
        await asyncio.gather(sender, killer, prober, tailer, return_exceptions=True)
    say("reading the output and dead-letter topics whole …")
    figures = await account(stack, ledger)
    stack.check_alive()
    return {
        "sent": figures.pop("sent"),
        "processed": figures.pop("processed"),
        "dead_lettered": figures.pop("dead_lettered"),
        "lost": figures.pop("lost"),
        "duplicated": figures.pop("duplicated"),
        "stuck_partitions": len(lag),
        "http_5xx": len(ledger.http_5xx),
        "seconds": round(time.monotonic() - started),
        "stream_seconds": round(ledger.stream_s),
        "kills": ledger.kills,
        "messages": args.messages,
        "rate": args.rate,
        "bad_share": args.bad_share,
        **figures,
        "stuck": lag,
        "http": dict(ledger.http),
        "http_5xx_seen": ledger.http_5xx[:20],
        "send_failures": ledger.send_failures,
        "broker": stack.broker.kind,
        "database": stack.postgres.kind if stack.postgres else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the stream")
    parser.add_argument("--bad-share", type=float, default=0.02, help="share malformed")
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history", type=int, default=2000, help="labeled records first")
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="seconds to wait for the lag to clear"
    )
    args = parser.parse_args()
    return on_a_stack(
        "chaos",
        lambda stack: chaos(stack, args),
        ("lost", "duplicated", "stuck_partitions", "http_5xx"),
    )


if __name__ == "__main__":
    sys.exit(main())
