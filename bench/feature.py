"""The feature service's enrichment hop, beside the relay ceiling measured in the same run.

Before the figures, every customer of the fraud example gets `--history` records of the last hour
(RecordAccepted straight onto records.accepted), so each request's aggregates read a history.

1. Relay ceiling: a plain aiokafka consumer → producer that forwards N prediction requests
   unchanged (serving's bench's relay: same batches, produced as the bus produces, acks=all,
   commit after the acks, topics of the same partitions), draining the N requests and at the
   fixed load below.
2. Our throughput: the same N requests wait on predictions.requests when the feature process
   starts, and it enriches them (decode, one history query per batch, featurize, produce
   PredictionEnriched, commit after acks); the answers are read once its metrics say it made them
   all, and each must carry the history's aggregates. Both figures drain a backlog, so the load
   generator does not share the cores with what is measured; rates are spans of produce times
   (Kafka timestamps).
3. Latency at a fixed offered load (2,000 requests/s for 20 s): from sending each request to
   receiving its enriched event, and zero-loss accounting.

    uv run python bench/feature.py [--requests 40000] [--rate 2000] [--duration 20] [--history 10]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from common import (
    LOAD_PREFIX,
    Bench,
    Drain,
    Message,
    apply_project,
    bench_stack,
    ceiling,
    drain,
    message,
    offer,
    produce,
    say,
)

from conveyor_cli import infra
from conveyor_cli.stack import ServiceProcess
from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionRequested, RecordAccepted
from conveyor_examples import load_project
from conveyor_examples.fraud.traffic import FraudTraffic

CUSTOMERS = 400


def history(project: str, per_customer: int, now: datetime) -> list[Message]:
    """`per_customer` payments of each customer, spread over the hour before `now`."""
    traffic = FraudTraffic(seed=4, customers=CUSTOMERS)
    step = timedelta(minutes=50) / max(per_customer, 1)
    out: list[Message] = []
    for c in range(CUSTOMERS):
        for j in range(per_customer):
            at = now - timedelta(minutes=55) + j * step
            payment = traffic.payment(at, drifted=False)
            customer = f"c-{c}"
            event = RecordAccepted(
                project=project,
                project_version=1,
                record_id=f"{project}-h-{c}-{j}",
                entity_id=customer,
                event_time=at,
                ingested_at=at,
                fields=payment.fields | {"customer": customer, "outcome": payment.truth},
            )
            out.append(message(catalog.RECORDS_ACCEPTED, customer, event))
    return out


def requests(project: str, n: int, prefix: str, now: datetime) -> list[Message]:
    """`n` payments to score at `now`, of customers drawn at random: `{prefix}-{i}` ids."""
    traffic = FraudTraffic(seed=5, customers=CUSTOMERS)
    out: list[Message] = []
    for i in range(n):
        fields = traffic.payment(now, drifted=False).fields
        event = PredictionRequested(request_id=f"{prefix}-{i}", project=project, fields=fields)
        out.append(message(catalog.PREDICTIONS_REQUESTS, fields["customer"], event))
    return out


async def load_history(bench: Bench, database: str, project: str, records: list[Message]) -> None:
    """Feature stores every history record (its row count says so), then stops."""
    await produce(bench.broker.bootstrap_servers, catalog.RECORDS_ACCEPTED.name, records)
    feature = bench.start_service("feature", DATABASE_URL=database)
    deadline = time.monotonic() + 120
    count = 0
    async with httpx.AsyncClient(base_url=feature.url, timeout=5) as client:
        while count < len(records):
            if time.monotonic() > deadline:
                raise SystemExit(f"feature stored {count} of {len(records)} history records")
            await asyncio.sleep(0.2)  # polling a count toward the deadline above
            count = (await client.get(f"/projects/{project}/rows/count")).json()["count"]
    stop(bench, feature)


def stop(bench: Bench, service: ServiceProcess) -> None:
    service.stop()
    bench.processes.remove(service)


async def throughput(
    bench: Bench, database: str, project: str, messages: list[Message], per_customer: int
) -> Drain:
    """Feature's rate on `messages` (ids `tp-…`), waiting on its topic when feature starts;
    every answer must be of project version 1 and count the customer's history."""
    count_at = load_project("fraud").feature_names().index("payments_1h")
    errors = 0
    mine = b'"request_id":"tp-'

    def accept(record) -> bool:
        nonlocal errors
        if mine not in record.value:
            return False
        answer = json.loads(record.value)
        if answer["project_version"] != 1 or answer["values"][count_at] != per_customer:
            errors += 1
        return True

    drained = await drain(
        bench,
        "feature",
        {"DATABASE_URL": database},
        catalog.PREDICTIONS_REQUESTS.name,
        catalog.PREDICTIONS_ENRICHED.name,
        messages,
        accept,
    )
    if errors:
        raise SystemExit(
            f"{errors} of {len(messages)} enriched requests without the history's "
            f"{per_customer} payments or not of version 1; see {drained.service.log_path}"
        )
    say(f"  feature used {drained.cpu_us:.0f} CPU-µs a request")
    return drained


async def main(args: argparse.Namespace) -> dict:
    with bench_stack() as bench:
        database = await infra.create_database(bench.postgres.url, "conveyor_bench")
        registry = bench.start_service("registry", DATABASE_URL=database)
        project = f"bench-{uuid.uuid4().hex[:6]}"
        spec = load_project("fraud").model_copy(update={"name": project})
        await apply_project(bench, registry.url, spec)
        now = datetime.now(UTC)
        past = history(project, args.history, now)
        say(f"history: {len(past)} records of {CUSTOMERS} customers in the last hour …")
        await load_history(bench, database, project, past)

        messages = requests(project, args.requests, "tp", now)
        load = requests(project, int(args.rate * args.duration), LOAD_PREFIX, now)
        say(f"relay ceiling over {args.requests} requests …")
        relay = await ceiling(bench, messages, load, args.rate)
        say(f"feature over the same {args.requests} requests …")
        drained = await throughput(bench, database, project, messages, args.history)
        ours = drained.per_s
        say(f"  {ours:,.0f} requests/s ({ours / relay['per_s']:.2f} of the ceiling)")
        say(f"feature latency at {args.rate:.0f} requests/s for {args.duration:.0f} s …")
        assert drained.service.proc is not None
        lat = await offer(
            bench,
            catalog.PREDICTIONS_REQUESTS.name,
            catalog.PREDICTIONS_ENRICHED.name,
            load,
            args.rate,
            drained.service.proc.pid,
        )
        say(f"  p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms (the relay's: {relay['p99_ms']} ms)")
        say(
            f"  feature's CPU over the run: {lat['cpu_pct']} % of a core "
            f"(the relay's: {relay['cpu_pct']} %)"
        )
        say(f"  offered {lat['offered_per_s']}/s, sent {lat['sent']}, answered {lat['answered']}")
    return {
        "enrich_per_s": round(ours),
        "relay_ceiling_per_s": round(relay["per_s"]),
        "ratio": round(ours / relay["per_s"], 3),
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "relay_p50_ms": relay["p50_ms"],
        "relay_p99_ms": relay["p99_ms"],
        "cpu_pct": lat["cpu_pct"],
        "relay_cpu_pct": relay["cpu_pct"],
        "sent": lat["sent"],
        "answered": lat["answered"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=40_000, help="requests for the throughput runs"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="offered load, requests/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds at that load")
    parser.add_argument("--history", type=int, default=10, help="records per customer, last hour")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
