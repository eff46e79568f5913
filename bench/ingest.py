"""Ingest's throughput from Kafka, beside the ceiling measured in the same run on the same Postgres.

1. Ingest: N valid records of the fraud example (varied customers and values, each its own
   record id) wait on records.submitted when the ingest process starts; ingest parses,
   validates, stores them in the raw log and announces them on records.accepted. Its rate is
   the N announcements over the span of their produce times (Kafka timestamps), like serving's
   figure; the announcements are read only once ingest says it has made them all, so neither
   the load generator nor the reader shares the two cores while it works. Every record must be
   announced once and stored (sent = accepted).
2. Ceiling: the same rows, read back from the raw log, written by one plain `COPY` (asyncpg's
   `copy_records_to_table`) into a table created like raw_records (its keys and index included)
   in the same database; the best of three such COPYs.

    uv run python bench/ingest.py [--records 50000]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from common import (
    Bench,
    Message,
    apply_project,
    bench_stack,
    cpu_seconds,
    fetch_wait_ms,
    message,
    produce,
    produced,
    receive,
    say,
)

from conveyor_cli import infra
from conveyor_contracts import catalog
from conveyor_contracts.events import RecordSubmitted
from conveyor_examples import load_project
from conveyor_examples.fraud.traffic import FraudTraffic

CUSTOMERS = 5000


def submissions(project: str, n: int) -> list[Message]:
    """`n` fraud payments over the last day, as applications submit them: `{project}-{i}` ids."""
    traffic = FraudTraffic(seed=2, customers=CUSTOMERS)
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(days=1) / n
    out: list[Message] = []
    for i in range(n):
        payment = traffic.payment(start + i * step, drifted=i % 2 == 1)  # both kinds of values
        event = RecordSubmitted(
            project=project, record_id=f"{project}-{i}", source="bench", fields=payment.fields
        )
        out.append(message(catalog.RECORDS_SUBMITTED, payment.fields["customer"], event))
    return out


def postgres_cpu_seconds() -> float:
    """CPU time so far of every process named `postgres` on this machine: the server and its
    backends (ingest's pool keeps its connections over the run, so none of its work is missed)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def drain(bench: Bench, database: str, project: str, records: list[Message]) -> dict:
    """Ingest's rate on `records`, waiting on the topic when ingest starts: from the first to
    the last RecordAccepted's produce time, with every record announced once and stored. The
    announcements are read once they are all out, so neither the load generator nor the reader
    takes a share of the two cores from ingest, Postgres and the broker while ingest works."""
    bootstrap = bench.broker.bootstrap_servers
    await produce(bootstrap, catalog.RECORDS_SUBMITTED.name, records)
    ingest = bench.start_service("ingest", DATABASE_URL=database)
    assert ingest.proc is not None
    # CPU from its first health check on: its start-up (imports, migrations) is not counted.
    cpu0, pg0 = cpu_seconds(ingest.proc.pid), postgres_cpu_seconds()
    if not await produced(ingest, catalog.RECORDS_ACCEPTED.name, len(records), timeout_s=300):
        say("  ingest did not announce every record in 300 s")
    used = cpu_seconds(ingest.proc.pid) - cpu0
    pg_used = postgres_cpu_seconds() - pg0
    mine = f'"record_id":"{project}-'.encode()
    seen: set[bytes] = set()
    repeated = 0

    def accept(record) -> bool:
        nonlocal repeated
        at = record.value.find(mine)
        if at < 0:
            return False
        at += len(b'"record_id":"')
        record_id = record.value[at : record.value.index(b'"', at)]
        if record_id in seen:
            repeated += 1  # the outbox sent it again (same ce_id): not counted twice
            return False
        seen.add(record_id)
        return True

    first, last, accepted = await receive(
        bootstrap,
        catalog.RECORDS_ACCEPTED.name,
        len(records),
        accept,
        timeout_s=60,
        fetch_wait=fetch_wait_ms(bench.broker),
    )
    async with httpx.AsyncClient(base_url=ingest.url, timeout=5) as client:
        health = (await client.get("/healthz")).json()
        stats = (await client.get(f"/projects/{project}/records/stats")).json()
    say(f"  accepted {accepted} of {len(records)} ({repeated} announced again), stats {stats}")
    if accepted < len(records) or stats["accepted"] != len(records) or health["dead_letters"]:
        raise SystemExit(
            f"ingest announced {accepted} of {len(records)} records, "
            f"{health['dead_letters']} dead letters, stats {stats}; see {ingest.log_path}"
        )
    say(
        f"  CPU-µs a record: ingest {used / accepted * 1e6:.0f}, "
        f"Postgres {pg_used / accepted * 1e6:.0f}"
    )
    return {"per_s": accepted / (last - first), "sent": len(records), "accepted": accepted}


async def copy_ceiling(database: str, project: str, repeats: int = 3) -> float:
    """Plain COPYs of the rows ingest stored, each into a fresh table created like raw_records;
    the best of `repeats` (one COPY lasts under a second, so one checkpoint or neighbour moves it
    by half)."""
    con = await asyncpg.connect(database)
    try:
        # A plain connection (no JSON codec) reads jsonb as its text, which COPY takes back.
        rows = await con.fetch("SELECT * FROM ingest.raw_records WHERE project = $1", project)
        columns = list(rows[0].keys())
        records = [tuple(r) for r in rows]
        await con.execute("CREATE SCHEMA IF NOT EXISTS bench")
        rates = []
        for _ in range(repeats):
            await con.execute("DROP TABLE IF EXISTS bench.raw_records")
            await con.execute(
                "CREATE TABLE bench.raw_records (LIKE ingest.raw_records INCLUDING ALL)"
            )
            start = time.perf_counter()
            await con.copy_records_to_table(
                "raw_records", schema_name="bench", columns=columns, records=records
            )
            rates.append(len(records) / (time.perf_counter() - start))
        await con.execute("DROP TABLE bench.raw_records")
    finally:
        await con.close()
    say(f"  runs: {', '.join(f'{r:,.0f}' for r in rates)} rows/s")
    return max(rates)


async def main(args: argparse.Namespace) -> dict:
    with bench_stack() as bench:
        database = await infra.create_database(bench.postgres.url, "conveyor_bench")
        registry = bench.start_service("registry", DATABASE_URL=database)
        project = f"bench-{uuid.uuid4().hex[:6]}"
        spec = load_project("fraud").model_copy(update={"name": project})
        await apply_project(bench, registry.url, spec)
        records = submissions(project, args.records)
        # The records wait on the topic before ingest starts (see drain), so
        # the rate is ingest's, not the load generator's.
        say(f"ingest over {args.records} records waiting on {catalog.RECORDS_SUBMITTED.name} …")
        ours = await drain(bench, database, project, records)
        say(f"  {ours['per_s']:,.0f} records/s")
        say(f"ceiling: COPY of the same {ours['accepted']} rows, best of 3 …")
        ceiling = await copy_ceiling(database, project)
        say(f"  {ceiling:,.0f} rows/s")
        say(f"ingest is {ours['per_s'] / ceiling:.3f} of the ceiling")
    return {
        "ingest_records_per_s": round(ours["per_s"]),
        "copy_ceiling_per_s": round(ceiling),
        "ratio": round(ours["per_s"] / ceiling, 3),
        "sent": ours["sent"],
        "accepted": ours["accepted"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000, help="records to ingest")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
