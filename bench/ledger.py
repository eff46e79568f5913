"""A stream whose every message is traced through the stack, and its accounting (bench/chaos.py,
bench/scale.py).

Each message carries its own id as `ce_id` (and as its record, request or feedback id), all
starting with the run's prefix (`Ledger.prefix`), so that after the run the output and
dead-letter topics and the services' tables can be read whole and every message accounted for:
its effect there, dead-lettered, lost, or applied twice (`account`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import say

from conveyor_bus.lag import catalog_groups, consumer_lag
from conveyor_cli.stack import ServiceProcess, Stack, tail
from conveyor_contracts import CATALOG, SERVICES, TopicSpec, catalog, envelope_for
from conveyor_contracts.events import FeedbackSubmitted, PredictionRequested, RecordSubmitted
from conveyor_examples import load_project
from conveyor_examples.fraud.traffic import FraudTraffic

INPUTS = (catalog.RECORDS_SUBMITTED, catalog.PREDICTIONS_REQUESTS, catalog.FEEDBACK_SUBMITTED)
# The share of each input in the good stream (feedback only for answers already seen: a
# feedback due when none is waiting is a request instead).
MIX = {"records": 0.4, "requests": 0.4, "feedback": 0.2}
BAD_KINDS = (
    "random_bytes",
    "random_json",
    "wrong_type",
    "nan",
    "nul",
    "huge_id",
    "ts_1e30",
    "big_int",
    "unknown_project",
)
READY_TIMEOUT_S = 180.0


@dataclass
class Ledger:
    """What was sent (by id), and what the run saw along the way."""

    run: str
    project: str
    good: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"records": {}, "requests": {}, "feedback": {}}
    )  # kind → id → the topic it went to
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # ce_id → (topic, bad kind)
    answered: dict[str, str] = field(default_factory=dict)  # request id → truth, answered ok
    truths: dict[str, str] = field(default_factory=dict)  # request id → truth, until answered
    tag: str = "ch"  # every id of the run starts with "<tag>-<run>-"
    source: str = "bench/chaos"  # the messages' ce_source
    sent_at: dict[str, float] = field(default_factory=dict)  # id → when sent (epoch seconds)
    # Each answer to one of the run's requests as it came: (its Kafka timestamp in ms, its id).
    answer_times: list[tuple[int, str]] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    http: Counter[str] = field(default_factory=Counter)
    http_5xx: list[str] = field(default_factory=list)
    send_failures: int = 0
    stream_s: float = 0.0  # from the first message sent to the last acknowledged

    @property
    def prefix(self) -> str:
        return f"{self.tag}-{self.run}-"


def envelope(
    topic: TopicSpec, key: str, event: Any, ce_id: str, source: str
) -> tuple[bytes, bytes, list]:
    headers = envelope_for(topic, event, source=source, event_id=ce_id).to_headers()
    return (
        key.encode(),
        event.model_dump_json().encode(),
        [(k, v.encode()) for k, v in headers.items()],
    )


# --- the stream ---------------------------------------------------------------------------------


class Stream:
    """Good and bad messages, drawn from one seeded generator; the good ones of each kind in
    the shares of `mix`."""

    def __init__(self, ledger: Ledger, seed: int, mix: dict[str, float] = MIX) -> None:
        self.ledger = ledger
        self.mix = mix
        self.rng = random.Random(seed)
        self.traffic = FraudTraffic(seed=seed, customers=2000)
        self.n = 0
        self.feedback_due: list[str] = []  # answered request ids waiting for their feedback

    def _next_id(self, letter: str) -> str:
        self.n += 1
        return f"{self.ledger.prefix}{letter}{self.n}"

    def good(self) -> tuple[str, tuple[bytes, bytes, list]]:
        kind = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind == "feedback" and not self.feedback_due:
            kind = "requests"
        project = self.ledger.project
        if kind == "feedback":
            request_id = self.feedback_due.pop(self.rng.randrange(len(self.feedback_due)))
            feedback_id = self._next_id("f")
            event = FeedbackSubmitted(
                feedback_id=feedback_id,
                project=project,
                request_id=request_id,
                label=self.ledger.answered[request_id],
            )
            self.ledger.good["feedback"][feedback_id] = catalog.FEEDBACK_SUBMITTED.name
            return catalog.FEEDBACK_SUBMITTED.name, envelope(
                catalog.FEEDBACK_SUBMITTED, request_id, event, feedback_id, self.ledger.source
            )
        payment = self.traffic.payment(datetime.now(UTC), drifted=False)
        customer = payment.fields["customer"]
        if kind == "records":
            record_id = self._next_id("r")
            fields = payment.fields | {"outcome": payment.truth}
            record = RecordSubmitted(
                project=project, record_id=record_id, source="chaos", fields=fields
            )
            self.ledger.good["records"][record_id] = catalog.RECORDS_SUBMITTED.name
            return catalog.RECORDS_SUBMITTED.name, envelope(
                catalog.RECORDS_SUBMITTED, customer, record, record_id, self.ledger.source
            )
        request_id = self._next_id("q")
        request = PredictionRequested(request_id=request_id, project=project, fields=payment.fields)
        self.ledger.good["requests"][request_id] = catalog.PREDICTIONS_REQUESTS.name
        self.ledger.truths[request_id] = payment.truth
        return catalog.PREDICTIONS_REQUESTS.name, envelope(
            catalog.PREDICTIONS_REQUESTS, customer, request, request_id, self.ledger.source
        )

    def bad(self) -> tuple[str, tuple[bytes, bytes, list]]:
        """A malformed message for one of the inputs: its ce_id is its own id (kept in the dead
        letter's headers), whatever its value."""
        rng = self.rng
        topic = rng.choice(INPUTS)
        kind = rng.choice(BAD_KINDS)
        bad_id = self._next_id("b")
        payment = self.traffic.payment(datetime.now(UTC), drifted=False)
        fields: dict[str, Any] = dict(payment.fields)
        project = self.ledger.project
        if topic is catalog.RECORDS_SUBMITTED:
            body: dict[str, Any] = {"project": project, "record_id": bad_id, "fields": fields}
            id_field, numeric = "record_id", "amount"
        elif topic is catalog.PREDICTIONS_REQUESTS:
            body = {"project": project, "request_id": bad_id, "fields": fields}
            id_field, numeric = "request_id", "amount"
        else:
            body = {
                "project": project,
                "feedback_id": bad_id,
                "request_id": f"{self.ledger.prefix}nothing",
                "label": "fraud",
            }
            id_field, numeric = "feedback_id", "label"
        # A record or request carries the fault in its fields; a feedback in its own.
        target = body if topic is catalog.FEEDBACK_SUBMITTED else fields
        value: bytes
        if kind == "random_bytes":
            value = rng.randbytes(rng.randint(1, 300))
        elif kind == "random_json":
            value = json.dumps(
                rng.choice(
                    [
                        {"x": [1, "y", None], "n": rng.random()},
                        [rng.randint(0, 9) for _ in range(rng.randint(0, 5))],
                        rng.random(),
                        "just a string",
                        None,
                        {"project": None, "fields": "nope"},
                    ]
                )
            ).encode()
        else:
            if kind == "wrong_type":
                target[numeric if topic is not catalog.FEEDBACK_SUBMITTED else "label"] = [
                    "not",
                    "a",
                    "value",
                ]
            elif kind == "nan":
                target[numeric] = math.nan
            elif kind == "nul":
                if topic is catalog.FEEDBACK_SUBMITTED:
                    body["label"] = "fr\u0000aud"
                else:
                    fields["merchant"] = "gro\u0000cery"
            elif kind == "huge_id":
                body[id_field] = "x" * 16384
            elif kind == "ts_1e30":
                if topic is catalog.FEEDBACK_SUBMITTED:
                    body["submitted_at"] = 1e30
                else:
                    fields["ts"] = 1e30
            elif kind == "big_int":
                if topic is catalog.FEEDBACK_SUBMITTED:
                    body["submitted_at"] = 10**400
                else:
                    fields["hour"] = 10**400
            elif kind == "unknown_project":
                body["project"] = f"no-such-project-{self.ledger.run}"
            value = json.dumps(body).encode()  # NaN as the bare literal NaN, as some emit it
        headers = {
            "ce_id": bad_id,
            "ce_type": topic.schema.__name__ if isinstance(topic.schema, type) else "bad",
            "ce_source": self.ledger.source,
            "ce_specversion": "1.0",
            "content-type": "application/json",
        }
        self.ledger.bad[bad_id] = (topic.name, kind)
        key = rng.choice([fields.get("customer", "c-1"), bad_id, "k" * rng.randint(1, 40)])
        return topic.name, (
            str(key).encode(),
            value,
            [(k, v.encode()) for k, v in headers.items()],
        )


async def stream(
    bootstrap: str,
    ledger: Ledger,
    gen: Stream,
    *,
    messages: int,
    rate: float,
    seed: int,
    done: asyncio.Event,
    bad_share: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    """`messages` messages at `rate` a second (fewer when `stop` is set first); the bad ones
    spread at random."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    pending: list[tuple[str, bool, asyncio.Future]] = []
    start = time.monotonic()
    sent = 0
    rng = random.Random(seed + 1)

    async def settle() -> None:
        for ident, is_good, future in pending:
            try:
                await future
            except Exception as exc:  # not sent: not counted as sent either
                ledger.send_failures += 1
                say(f"  send of {ident} failed: {exc!r}")
                if is_good:
                    for ids in ledger.good.values():
                        ids.pop(ident, None)
                else:
                    ledger.bad.pop(ident, None)
        pending.clear()

    try:
        while sent < messages and not (stop is not None and stop.is_set()):
            due = min(messages, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                is_good = rng.random() >= bad_share
                topic, (key, value, headers) = gen.good() if is_good else gen.bad()
                ident = dict(headers)["ce_id"].decode()
                ledger.sent_at[ident] = time.time()
                future = await producer.send(topic, value, key=key, headers=headers)
                pending.append((ident, is_good, future))
                sent += 1
            if len(pending) > 500:
                await settle()
            await asyncio.sleep(0.01)  # pacing the offered load
        await settle()
        ledger.stream_s = time.monotonic() - start
    finally:
        await producer.stop()
        done.set()


async def answers(bootstrap: str, ledger: Ledger, gen: Stream, ready: asyncio.Event) -> None:
    """Tail predictions.responses: each answer to the run's requests is noted with its time
    (`Ledger.answer_times`), and each good request answered `ok` becomes due for feedback."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        await consumer.topics()
        topic = catalog.PREDICTIONS_RESPONSES.name
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        mine = f'"request_id":"{ledger.prefix}q'.encode()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batch.values():
                for r in records:
                    if r.value is None or mine not in r.value:
                        continue
                    answer = json.loads(r.value)
                    ledger.answer_times.append((r.timestamp, answer["request_id"]))
                    truth = ledger.truths.pop(answer["request_id"], None)
                    if truth is not None and answer.get("status") == "ok":
                        ledger.answered[answer["request_id"]] = truth
                        gen.feedback_due.append(answer["request_id"])
    finally:
        await consumer.stop()


# --- readiness ----------------------------------------------------------------------------------


async def ready(service: ServiceProcess, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds until `service` answers /readyz with 200."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() - start < timeout_s:
            if not service.alive():
                raise RuntimeError(f"{service.name} exited:\n{tail(service.log_path)}")
            try:
                if (await client.get(service.url + "/readyz")).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{service.name} not ready after {timeout_s:.0f} s")


async def in_flight(service: ServiceProcess, timeout_s: float = 10.0) -> bool:
    """Wait (up to `timeout_s`) until the service says a batch is being handled: received and
    not yet committed, where a kill tests redelivery. True when one was seen."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                text = (await client.get(service.url + "/metrics")).text
            except httpx.HTTPError:
                return False
            for line in text.splitlines():
                if line.startswith("conveyor_in_flight") and float(line.rsplit(" ", 1)[1]) > 0:
                    return True
            await asyncio.sleep(0.01)
    return False


# --- setup --------------------------------------------------------------------------------------


async def until(probe: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := await probe():
                return value
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def prepare(stack: Stack, ledger: Ledger, history: int, seed: int) -> int:
    """Apply the project, send labeled history over Kafka, train a first model and wait until
    serving has it. Returns its version."""
    assert stack.broker is not None
    urls = stack.urls
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    spec = load_project("fraud").model_copy(update={"name": ledger.project})
    async with httpx.AsyncClient(timeout=30, headers=auth) as http:
        r = await http.post(urls["registry"] + "/projects", json=spec.model_dump(mode="json"))
        r.raise_for_status()

        async def all_know() -> bool:
            for name in SERVICES:
                if name == "registry":
                    continue
                health = (await http.get(urls[name] + "/healthz")).json()
                if ledger.project not in health.get("projects", {}):
                    return False
            return True

        await until(all_know, 60, "every service to know the project")
        say(f"applied {ledger.project}; every service knows it")
        traffic = FraudTraffic(seed=seed + 2, customers=2000)
        end = datetime.now(UTC) - timedelta(minutes=1)
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            futures = []
            for i, payment in enumerate(traffic.history(history, end, timedelta(hours=4))):
                fields = payment.fields | {"outcome": payment.truth}
                event = RecordSubmitted(
                    project=ledger.project,
                    record_id=f"{ledger.prefix}h{i}",
                    source="chaos-history",
                    fields=fields,
                )
                key, value, headers = envelope(
                    catalog.RECORDS_SUBMITTED,
                    fields["customer"],
                    event,
                    event.record_id or "",
                    ledger.source,
                )
                futures.append(
                    await producer.send(
                        catalog.RECORDS_SUBMITTED.name, value, key=key, headers=headers
                    )
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

        async def materialized() -> bool:
            stats = (
                await http.get(urls["trainer"] + f"/projects/{ledger.project}/examples")
            ).json()
            return int(stats.get("count", 0)) >= history

        await until(materialized, 300, "the trainer to materialize the history")
        say(f"{history} labeled records ingested, featurized and materialized")
        r = await http.post(
            urls["trainer"] + f"/projects/{ledger.project}/runs", json={"reason": "chaos: first"}
        )
        r.raise_for_status()

        async def champion() -> int | None:
            aliases = await http.get(urls["registry"] + f"/projects/{ledger.project}/aliases")
            return aliases.json().get("champion") if aliases.status_code == 200 else None

        version = await until(champion, 300, "a first champion")

        async def served() -> bool:
            models = (await http.get(urls["serving"] + "/models")).json()
            return (models.get(ledger.project) or {}).get("version") == version

        await until(served, 120, f"serving to load v{version}")
        say(f"model v{version} trained, promoted and served")
        return int(version)


# --- accounting ---------------------------------------------------------------------------------


async def behind(bootstrap: str) -> dict[str, int]:
    """Per group and partition (`group topic[p]`), how far its committed offset is behind the
    end; only those behind. Every group the catalog gives the services, as `conveyor status`
    reads them (`conveyor_bus.lag`)."""
    wanted = [
        (group, topic) for service in SERVICES for topic, group in catalog_groups(service).items()
    ]
    lags = await consumer_lag({"bootstrap_servers": bootstrap}, wanted)
    return {
        f"{lag.group} {lag.topic}[{partition}]": records
        for lag in lags
        for partition, records in lag.partitions.items()
        if records > 0
    }


async def read_whole(bootstrap: str, topic: str) -> list[tuple[int, int, dict[str, str], bytes]]:
    """Every record of `topic`: (partition, offset, headers, value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet = 0
        while quiet < 4:
            batch = await consumer.getmany(timeout_ms=250, max_records=10000)
            quiet = 0 if batch else quiet + 1
            for tp, records in batch.items():
                for r in records:
                    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in r.headers}
                    out.append((tp.partition, r.offset, headers, r.value or b""))
    finally:
        await consumer.stop()
    return out


def by_id(records: list, field_name: str, project: str) -> dict[str, list[tuple[str, dict]]]:
    """The records of `project` on a topic, by the id in `field_name`: [(ce_id, event)]."""
    out: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for _, _, headers, value in records:
        try:
            event = json.loads(value)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("project") == project:
            out[str(event.get(field_name))].append((headers.get("ce_id", ""), event))
    return out


def twice(seen: dict[str, list[tuple[str, dict]]], ids: set[str], same: str = "") -> list[str]:
    """Ids announced under more than one event id (with `same`: among events with the same
    value of that field, e.g. a feature row's revision)."""
    out = []
    for ident in ids:
        groups_: dict[Any, set[str]] = defaultdict(set)
        for ce_id, event in seen.get(ident, ()):
            groups_[event.get(same) if same else None].add(ce_id)
        if any(len(c) > 1 for c in groups_.values()):
            out.append(ident)
    return out


async def account(stack: Stack, ledger: Ledger) -> dict[str, Any]:
    assert stack.broker is not None
    bootstrap = stack.broker.bootstrap_servers
    p = ledger.project
    read = {
        t: await read_whole(bootstrap, t)
        for t in (
            catalog.RECORDS_ACCEPTED.name,
            catalog.FEATURES_ROWS.name,
            catalog.PREDICTIONS_RESPONSES.name,
            catalog.FEEDBACK_RECORDED.name,
        )
    }
    accepted = by_id(read[catalog.RECORDS_ACCEPTED.name], "record_id", p)
    rows = by_id(read[catalog.FEATURES_ROWS.name], "record_id", p)
    answers = by_id(read[catalog.PREDICTIONS_RESPONSES.name], "request_id", p)
    recorded = by_id(read[catalog.FEEDBACK_RECORDED.name], "feedback_id", p)
    # Dead letters of every topic a message of ours passes through, by the ce_id it came with.
    dead: dict[str, list[dict[str, str]]] = defaultdict(list)
    for spec in CATALOG:
        for _, _, headers, _ in await read_whole(bootstrap, spec.dlq):
            if headers.get("ce_id", "").startswith(ledger.prefix):
                dead[headers["ce_id"]].append(headers)
    # Error answers to bad requests carry the request's ce_id with "/served".
    answered_ce = {
        ce_id.removesuffix("/served")
        for seen in answers.values()
        for ce_id, _ in seen
        if ce_id.endswith("/served")
    }

    records, requests, feedback = (set(ledger.good[k]) for k in ("records", "requests", "feedback"))
    effect = {
        "records": {i for i in records if i in accepted},
        "requests": {i for i in requests if i in answers},
        "feedback": {i for i in feedback if i in recorded},
    }
    lost_good = {
        kind: sorted(set(ledger.good[kind]) - effect[kind])
        for kind in ("records", "requests", "feedback")
    }
    error_answers = Counter(
        str(event.get("error"))[:120]
        for i in requests
        for _, event in answers.get(i, ())
        if event.get("status") != "ok"
    )
    dead_bad = {i for i in ledger.bad if i in dead}
    answered_bad = {i for i in ledger.bad if i in answered_ce}
    lost_bad = sorted(set(ledger.bad) - dead_bad - answered_bad)

    duplicated = {
        "records.accepted": twice(accepted, records),
        "features.rows": twice(rows, records, same="revision"),
        "predictions.responses": twice(answers, requests),
        "feedback.recorded": twice(recorded, feedback),
    }
    con = await asyncpg.connect(stack.database_url)
    try:
        prefix = f"{ledger.prefix}%"
        tables = {
            "ingest.raw_records": await con.fetchval(
                "SELECT count(*) - count(DISTINCT record_id) FROM ingest.raw_records "
                "WHERE project = $1 AND record_id LIKE $2",
                p,
                prefix,
            ),
            "feature.rows": await con.fetchval(
                "SELECT count(*) - count(DISTINCT record_id) FROM feature.rows WHERE project = $1",
                p,
            ),
            "feedback.labels (per request)": await con.fetchval(
                "SELECT coalesce(sum(n - 1), 0)::bigint FROM (SELECT count(*) AS n "
                "FROM feedback.labels WHERE project = $1 GROUP BY request_id) per",
                p,
            ),
        }
        stored = {
            r["record_id"]
            for r in await con.fetch(
                "SELECT record_id FROM ingest.raw_records WHERE project = $1 AND record_id LIKE $2",
                p,
                prefix,
            )
        }
    finally:
        await con.close()
    not_stored = sorted(effect["records"] - stored)

    per_topic = {}
    for kind, topic in (
        ("records", catalog.RECORDS_SUBMITTED.name),
        ("requests", catalog.PREDICTIONS_REQUESTS.name),
        ("feedback", catalog.FEEDBACK_SUBMITTED.name),
    ):
        bad_here = {i for i, (t, _) in ledger.bad.items() if t == topic}
        per_topic[topic] = {
            "sent": len(ledger.good[kind]),
            "processed": len(effect[kind]),
            "bad": len(bad_here),
            "dead_lettered": len(bad_here & dead_bad),
            "lost": len(lost_good[kind]) + len(bad_here & set(lost_bad)),
        }
    evidence = {
        "lost_good": {k: v[:20] for k, v in lost_good.items() if v},
        "lost_good_dead_lettered": {
            i: {h.get("dlq_source_topic", "?"): h.get("dlq_error", "")[:200] for h in dead[i]}
            for v in lost_good.values()
            for i in v[:20]
            if i in dead
        },
        "lost_bad": [(i, *ledger.bad[i]) for i in lost_bad[:20]],
        "duplicated": {k: v[:20] for k, v in duplicated.items() if v},
        "duplicated_rows": {k: v for k, v in tables.items() if v},
        "accepted_not_stored": not_stored[:20],
        "dead_letters_repeated": sum(1 for i in dead_bad if len(dead[i]) > 1),
        "good_error_answers": dict(error_answers.most_common(5)),
    }
    # The same event again under its own ce_id: a kill landed between a batch's effects and its
    # commit, and the contract's at-least-once delivery showed (not a duplicate).
    redelivered = {
        topic: sum(len(seen[i]) - len({ce for ce, _ in seen[i]}) for i in ids if i in seen)
        for topic, seen, ids in (
            ("records.accepted", accepted, records),
            ("features.rows", rows, records),
            ("predictions.responses", answers, requests),
            ("feedback.recorded", recorded, feedback),
        )
    }
    dup_count = sum(len(v) for v in duplicated.values()) + sum(tables.values())
    return {
        "sent": len(records) + len(requests) + len(feedback),
        "processed": sum(len(v) for v in effect.values()),
        "bad_sent": len(ledger.bad),
        "dead_lettered": len(dead_bad),
        "bad_answered_only": len(answered_bad - dead_bad),
        "lost": sum(len(v) for v in lost_good.values()) + len(lost_bad) + len(not_stored),
        "duplicated": dup_count,
        "per_topic": per_topic,
        "redelivered_same_ce_id": redelivered,
        "bad_kinds": dict(Counter(kind for _, kind in ledger.bad.values())),
        "evidence": evidence,
    }


# --- the run ------------------------------------------------------------------------------------


def on_a_stack(
    name: str, run: Callable[[Stack], Awaitable[dict[str, Any]]], failing: Sequence[str]
) -> int:
    """Bring the stack up in a directory of its own, `run` on it and bring it down; print the
    figures as one JSON line. The exit status is 1 when any figure named in `failing` is not
    0; the services' logs are kept then, or when `<NAME>_KEEP_LOGS` is set."""
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-{name}-"))
    stack = Stack(state_dir=workdir)
    say("starting the stack …")
    stack.up()
    assert stack.broker is not None and stack.postgres is not None
    say(
        f"broker: {stack.broker.kind} at {stack.broker.bootstrap_servers}; "
        f"database: {stack.postgres.kind}"
    )
    result: dict[str, Any] | None = None
    try:
        result = asyncio.run(run(stack))
    finally:
        stack.down()
        failed = [k for k in failing if (result or {}).get(k)]
        if result is None or failed or os.environ.get(f"{name.upper()}_KEEP_LOGS"):
            say(f"the services' logs are kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    if failed:
        say(f"FAILED: {', '.join(f'{k} {result[k]}' for k in failed)}")
    return 1 if failed else 0
