"""The client's calls against services faked at the transport (and its Kafka side faked at its
seam): what it asks, and what it makes of each answer."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conveyor_client import (
    Client,
    Conflict,
    ConveyorError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PredictionFailed,
    Record,
    Refused,
    TrainingFailed,
    Unauthorized,
    Unavailable,
)
from conveyor_client.aio import AsyncClient
from conveyor_client.config import Config
from tests.unit.client.fakes import FakeKafka
from tests.unit.client.support import SERVICES, Services, body, detail

PROJECT = {"project": "fraud", "project_version": 2, "spec": {"entity_key": "customer"}}
BATCH = "/projects/fraud/records/batch"


def _answer(request_id: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "request_id": request_id,
        "project": "fraud",
        "entity_id": "c-1",
        "status": "ok",
        "label": "fraud",
        "probabilities": {"legit": 0.2, "fraud": 0.8},
        "model_version": 4,
        "feature_names": ["log_amount"],
        "values": [1.5],
        "requested_at": now,
        "served_at": now,
        "latency_ms": 2.0,
    } | changes


# --- records ------------------------------------------------------------------------------------


async def test_records_go_in_batches_and_a_refused_record_leaves_the_rest_stored():
    def ingest(request: httpx.Request) -> httpx.Response:
        records = body(request)["records"]
        bad = [i for i, r in enumerate(records) if r["fields"].get("amount", 0) < 0]
        if bad:
            errors = [{"index": i, "problems": ["amount: -1 is below 0"]} for i in bad]
            return detail(422, {"message": "records do not meet the contract", "errors": errors})
        ids = [r.get("record_id") or f"id-{r['fields']['n']}" for r in records]
        return httpx.Response(
            201,
            json={
                "accepted": ids[1:],
                "duplicates": 1,
                "flagged": {ids[-1]: ["amount: outlier"]},
            },
        )

    services = Services()
    services.on("ingest", "POST", BATCH, ingest)
    records: list[Any] = [{"n": n, "amount": -1 if n in (1, 4) else n} for n in range(5)]
    records[2] = Record({"n": 2, "amount": 2}, record_id="mine-2")
    async with services.client() as conveyor:
        done = await conveyor.submit_records("fraud", iter(records), batch_size=3)
    sent = [[r["fields"]["n"] for r in body(q)["records"]] for q in services.requests]
    assert sent == [[0, 1, 2], [0, 2], [3, 4], [3]]  # each refused record left out, then again
    assert body(services.requests[1])["records"][1] == {
        "fields": {"n": 2, "amount": 2},
        "record_id": "mine-2",
    }
    assert done.via == "http" and done.sent == 5 and done.queued == 0
    assert done.accepted == ["mine-2"] and done.duplicates == 2
    assert [(r.index, r.problems) for r in done.refused] == [
        (1, ["amount: -1 is below 0"]),
        (4, ["amount: -1 is below 0"]),
    ]
    assert done.flagged == {"mine-2": ["amount: outlier"], "id-3": ["amount: outlier"]}


async def test_a_batch_refused_for_another_reason_raises():
    services = Services()
    services.on("ingest", "POST", BATCH, detail(404, "unknown project 'fraud'"))
    async with services.client() as conveyor:
        with pytest.raises(NotFound, match="unknown project"):
            await conveyor.submit_records("fraud", [{"a": 1}])
    services.on(
        "ingest", "POST", BATCH, detail(422, [{"loc": ["body"], "msg": "bad", "type": "x"}])
    )
    async with services.client() as conveyor:
        with pytest.raises(Refused, match="bad"):
            await conveyor.submit_records("fraud", [{"a": 1}])
        with pytest.raises(InvalidArgument, match="batch_size"):
            await conveyor.submit_records("fraud", [{"a": 1}], batch_size=10_001)
        with pytest.raises(InvalidArgument, match="record #1"):
            await conveyor.submit_records("fraud", [{"a": 1}, ["not", "a", "mapping"]])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument, match="cannot be sent as JSON"):
            await conveyor.submit_records("fraud", [{"a": float("nan")}])


async def test_records_over_kafka_are_keyed_by_entity_and_one_without_it_is_refused_here():
    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    kafka = FakeKafka()
    async with services.client() as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        records = [{"customer": f"c-{n}", "n": n} for n in range(5)]
        records[3] = {"n": 3}
        done = await conveyor.submit_records("fraud", records, via="kafka", batch_size=2)
        again = await conveyor.submit_records("fraud", records[:1], via="kafka")
    assert (done.sent, done.queued, done.accepted) == (5, 4, [])
    assert [(r.index, r.problems) for r in done.refused] == [
        (3, ["the fields lack the project's entity key 'customer'"])
    ]
    assert [m[0] for _, m in kafka.sent] == ["c-0", "c-1", "c-2", "c-4", "c-0"]
    assert again.queued == 1
    # The project's entity key was read once and kept.
    assert [q.url.path for q in services.requests] == ["/projects/fraud"]


# --- predictions --------------------------------------------------------------------------------


async def test_predict_over_http_posts_the_fields_and_returns_the_answer():
    services = Services()
    services.on(
        "serving",
        "POST",
        "/projects/fraud/predict",
        lambda q: httpx.Response(200, json=_answer(body(q)["request_id"])),
    )
    async with services.client() as conveyor:
        answer = await conveyor.predict("fraud", {"customer": "c-1", "amount": 3}, via="http")
    sent = body(services.requests[0])
    assert set(sent) == {"fields", "request_id", "requested_at"}
    assert sent["fields"] == {"customer": "c-1", "amount": 3}
    assert datetime.fromisoformat(sent["requested_at"]).tzinfo is not None
    assert answer.request_id == sent["request_id"] and len(answer.request_id) == 32
    assert (answer.label, answer.model_version, answer.probabilities["fraud"]) == ("fraud", 4, 0.8)
    assert answer.values == [1.5] and answer.served_at is not None
    assert services.requests[0].headers["authorization"] == "Bearer secret"


@pytest.mark.parametrize(
    ("reply", "kind", "why"),
    [
        (
            httpx.Response(200, json=_answer("q", status="error", error="amount: not a number")),
            PredictionFailed,
            "amount: not a number",
        ),
        (
            httpx.Response(200, json=_answer("q", status="error", error="deadline exceeded (…)")),
            DeadlineExceeded,
            "deadline exceeded",
        ),
        (detail(504, "no answer in time"), DeadlineExceeded, "no answer in time"),
        (detail(404, "unknown project 'fraud'"), NotFound, "unknown project"),
        (detail(401, "no bearer token"), Unauthorized, "no bearer token"),
    ],
)
async def test_predict_over_http_raises_for_an_error_answer(reply, kind, why):
    services = Services()
    services.on("serving", "POST", "/projects/fraud/predict", reply)
    async with services.client() as conveyor:
        with pytest.raises(kind, match=why) as caught:
            await conveyor.predict("fraud", {"customer": "c-1"}, via="http", request_id="q")
    if kind is PredictionFailed:
        assert caught.value.prediction is not None
        assert caught.value.prediction.status == "error"
        assert caught.value.reason == "amount: not a number"


async def test_concurrent_predictions_over_kafka_each_get_their_own_answer():
    """Answers come back in another order than asked, and each call gets the answer to its own
    request (the label says which)."""
    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    kafka = FakeKafka()
    asked: list[dict[str, Any]] = []
    kafka.answer = lambda request, headers: asked.append(request)  # answered below
    async with services.client() as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        calls = [
            asyncio.create_task(
                conveyor.predict("fraud", {"customer": f"c-{n}", "n": n}, timeout=5)
            )
            for n in range(20)
        ]
        while len(asked) < 20:
            await asyncio.sleep(0.01)
        for request in reversed(asked):
            label = f"label-{request['fields']['n']}"
            kafka.reply._deliver(
                httpx.Response(200, json=_answer(request["request_id"], label=label)).content
            )
        answers = await asyncio.gather(*calls)
    assert [a.label for a in answers] == [f"label-{n}" for n in range(20)]
    assert kafka.reply._waiting == {}


async def test_a_prediction_over_kafka_without_an_answer_in_time_is_deadline_exceeded():
    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    kafka = FakeKafka(lambda request, headers: None)
    async with services.client() as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        began = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceeded, match="no answer to request q-1") as caught:
            await conveyor.predict("fraud", {"customer": "c-1"}, timeout=0.3, request_id="q-1")
        assert 0.25 < asyncio.get_running_loop().time() - began < 2
        assert isinstance(caught.value, TimeoutError)
        assert kafka.reply._waiting == {}  # forgotten: a late answer is dropped
        kafka.reply._deliver(httpx.Response(200, json=_answer("q-1")).content)
        # An error answer raises with its reason; a deadline given as a time is sent as it is.
        kafka.answer = lambda request, headers: _answer(
            request["request_id"],
            status="error",
            error=f"no model is loaded ({headers['ce_deadline']})",
        )
        at = datetime.now(UTC) + timedelta(seconds=5)
        with pytest.raises(
            PredictionFailed, match=re.escape(f"no model is loaded ({at.isoformat()})")
        ):
            await conveyor.predict("fraud", {"customer": "c-1"}, deadline=at)


@pytest.mark.parametrize(
    ("fields", "options", "why"),
    [
        ({"amount": 1}, {}, "lack the project's entity key 'customer'"),
        ({"customer": True}, {}, "must be text or an integer"),
        ({"customer": "c" * 201}, {}, "at most 200"),
        ({"customer": "c-1"}, {"timeout": 1, "deadline": datetime.now(UTC)}, "not both"),
        ({"customer": "c-1"}, {"deadline": datetime(2030, 1, 1)}, "aware datetime"),
        ({"customer": "c-1"}, {"timeout": 0}, "more than 0"),
        ({"customer": "c-1"}, {"request_id": "x" * 201}, "request_id is 201"),
    ],
)
async def test_a_prediction_request_the_platform_would_refuse_is_refused_here(fields, options, why):
    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    kafka = FakeKafka()
    async with services.client() as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        with pytest.raises(InvalidArgument, match=why):
            await conveyor.predict("fraud", fields, **options)
    assert kafka.sent == []


async def test_a_reply_that_is_not_an_answer_or_no_ones_is_dropped():
    kafka = FakeKafka()
    future = kafka.reply.expect("q-1")
    for junk in (b"not json", b"[1, 2]", b'{"no": "id"}', None, b'{"request_id": "other"}'):
        kafka.reply._deliver(junk)
    assert not future.done()
    kafka.reply._deliver(b'{"request_id": "q-1", "status": "ok"}')
    assert future.result() == {"request_id": "q-1", "status": "ok"}
    kafka.reply.expect("q-2")
    with pytest.raises(InvalidArgument, match="already waiting"):
        kafka.reply.expect("q-2")


# --- feedback -----------------------------------------------------------------------------------


async def test_feedback_over_http_says_whether_it_joined_its_prediction():
    def feedback(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        joined = sent["request_id"] == "known"
        ids = [sent["feedback_id"]]
        return httpx.Response(
            202, json={"recorded": ids if joined else [], "waiting": [] if joined else ids}
        )

    services = Services()
    services.on("feedback", "POST", "/feedback", feedback)
    async with services.client() as conveyor:
        recorded = await conveyor.send_feedback("fraud", "known", "fraud", feedback_id="f-1")
        waiting = await conveyor.send_feedback("fraud", "later", "legit")
    assert (recorded.feedback_id, recorded.status) == ("f-1", "recorded")
    assert waiting.status == "waiting" and len(waiting.feedback_id) == 32
    sent = body(services.requests[0])
    assert {k: sent[k] for k in ("feedback_id", "project", "request_id", "label")} == {
        "feedback_id": "f-1",
        "project": "fraud",
        "request_id": "known",
        "label": "fraud",
    }
    conflict = {"refused": [{"feedback_id": "f-1", "problem": "taken with another label"}]}
    services.on("feedback", "POST", "/feedback", detail(409, conflict))
    async with services.client() as conveyor:
        with pytest.raises(Conflict) as caught:
            await conveyor.send_feedback("fraud", "known", "legit", feedback_id="f-1")
    assert caught.value.problems == ["f-1: taken with another label"]
    refused = {
        "message": "no feedback of the request was taken",
        "errors": [{"index": 0, "problem": "label: 'maybe' is not one of ['legit', 'fraud']"}],
    }
    services.on("feedback", "POST", "/feedback", detail(422, refused))
    async with services.client() as conveyor:
        with pytest.raises(Refused, match="'maybe' is not one of"):
            await conveyor.send_feedback("fraud", "known", "maybe")


# --- training -----------------------------------------------------------------------------------


def _run(status: str, run_id: str = "r-1", **changes: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "project": "fraud",
        "status": status,
        "reason": "",
        "model_version": 3 if status == "succeeded" else None,
        "promoted": status == "succeeded",
        "metrics": {"accuracy": 0.9},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": None if status == "running" else "2026-01-01T00:00:05+00:00",
    } | changes


async def test_train_then_wait_for_that_run():
    statuses = iter(["running", "running", "succeeded"])
    services = Services()
    services.on(
        "trainer", "POST", "/projects/fraud/runs", httpx.Response(202, json={"run_id": "r-1"})
    )
    services.on(
        "trainer", "GET", "/runs/r-1", lambda q: httpx.Response(200, json=_run(next(statuses)))
    )
    async with services.client() as conveyor:
        run_id = await conveyor.train("fraud", "new labels")
        run = await conveyor.wait_until_trained("fraud", run_id=run_id, poll_interval=0.01)
    assert body(services.requests[0]) == {"reason": "new labels"}
    assert (run.run_id, run.status, run.model_version, run.promoted) == (
        "r-1",
        "succeeded",
        3,
        True,
    )
    assert run.metrics == {"accuracy": 0.9} and run.finished_at is not None
    assert len(services.requests) == 4


async def test_waiting_without_a_run_id_follows_the_newest_run_that_trains():
    polls = iter(
        [
            [],  # none yet
            [_run("succeeded", "old"), _run("skipped", "s")],  # a finished one is enough
        ]
    )
    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    services.on(
        "trainer", "GET", "/projects/fraud/runs", lambda q: httpx.Response(200, json=next(polls))
    )
    async with services.client() as conveyor:
        run = await conveyor.wait_until_trained("fraud", poll_interval=0.01)
    assert run.run_id == "old"  # the skipped run after it is left out

    polls = iter([[_run("failed", "r-9", reason="2 labeled rows; at least 50 are needed")]])
    services.on(
        "trainer", "GET", "/projects/fraud/runs", lambda q: httpx.Response(200, json=next(polls))
    )
    async with services.client() as conveyor:
        with pytest.raises(TrainingFailed, match="at least 50 are needed") as caught:
            await conveyor.wait_until_trained("fraud", poll_interval=0.01)
    assert caught.value.run.run_id == "r-9"

    services.on(
        "trainer", "GET", "/projects/fraud/runs", httpx.Response(200, json=[_run("running")])
    )
    services.on("trainer", "GET", "/runs/r-1", httpx.Response(200, json=_run("running")))
    async with services.client() as conveyor:
        with pytest.raises(
            DeadlineExceeded, match=re.escape("run r-1 of fraud did not finish within 0.2s")
        ):
            await conveyor.wait_until_trained("fraud", timeout=0.2, poll_interval=0.05)
        services.on("registry", "GET", "/projects/ghost", detail(404, "unknown project 'ghost'"))
        with pytest.raises(NotFound, match="unknown project 'ghost'"):
            await conveyor.wait_until_trained("ghost")


# --- registry -----------------------------------------------------------------------------------


async def test_registry_reads_ask_the_right_paths():
    services = Services()
    answers: dict[str, Any] = {
        "/projects": [{"project": "fraud", "project_version": 2}],
        "/projects/fraud": PROJECT,
        "/projects/fraud/versions": [{"version": 1}],
        "/projects/fraud/versions/1": {"version": 1, "lineage": {"rows": 9}},
        "/projects/fraud/aliases": {"champion": "1"},
        "/projects/fraud/aliases/champion/history": [{"to_version": 1}],
        "/projects/fraud/versions/1/openlineage": [{"eventType": "START"}],
    }
    for url_path, answer in answers.items():
        services.on("registry", "GET", url_path, httpx.Response(200, json=answer))
    async with services.client(token=None) as conveyor:
        assert await conveyor.projects() == answers["/projects"]
        assert await conveyor.project("fraud") == PROJECT
        assert await conveyor.versions("fraud") == [{"version": 1}]
        assert (await conveyor.version("fraud", 1))["lineage"] == {"rows": 9}
        assert await conveyor.aliases("fraud") == {"champion": 1}
        assert await conveyor.alias_history("fraud") == [{"to_version": 1}]
        assert await conveyor.lineage("fraud", 1) == [{"eventType": "START"}]
        await conveyor.project("fraud", version=1)
    assert services.requests[-1].url.params["version"] == "1"
    assert all("authorization" not in q.headers for q in services.requests)


async def test_an_id_is_one_path_segment_whatever_it_holds():
    services = Services()
    services.on(
        "trainer", "GET", "/runs/a%2Fb%3Fc", httpx.Response(200, json=_run("running", "a/b?c"))
    )
    async with services.client() as conveyor:
        assert (await conveyor.run("a/b?c")).run_id == "a/b?c"


# --- the synchronous client ---------------------------------------------------------------------


def _sync_client(services: Services) -> Client:
    return Client(Config(services=SERVICES, token="secret"), transport=services.transport())


def test_the_sync_client_has_the_same_calls():
    services = Services()
    services.on(
        "registry", "GET", "/projects/fraud/aliases", httpx.Response(200, json={"champion": 2})
    )
    services.on(
        "registry", "GET", "/projects/ghost/aliases", detail(404, "unknown project 'ghost'")
    )
    with _sync_client(services) as conveyor:
        assert conveyor.aliases("fraud") == {"champion": 2}
        with pytest.raises(NotFound, match="unknown project 'ghost'"):
            conveyor.aliases("ghost")
        assert conveyor.config.token == "secret"
    with pytest.raises(ConveyorError, match="the client is closed"):
        conveyor.aliases("fraud")
    conveyor.close()  # again: nothing to do


async def test_the_sync_client_works_inside_a_running_event_loop():
    services = Services()
    services.on("registry", "GET", "/projects", httpx.Response(200, json=[]))
    conveyor = _sync_client(services)
    try:
        assert asyncio.get_running_loop().is_running()
        assert conveyor.projects() == []
    finally:
        conveyor.close()


# --- the broker and tracing ---------------------------------------------------------------------


async def test_a_broker_that_cannot_be_reached_is_unavailable():
    async with AsyncClient(Config(bootstrap_servers="127.0.0.1:1")) as conveyor:
        with pytest.raises(
            Unavailable, match=r"cannot reach Kafka at bootstrap_servers=127\.0\.0\.1:1"
        ):
            await conveyor.send_feedback("fraud", "q-1", "legit", via="kafka")


async def test_requests_and_messages_made_in_a_span_carry_its_trace(spans):
    from opentelemetry import trace

    services = Services()
    services.on("registry", "GET", "/projects", httpx.Response(200, json=[]))
    kafka = FakeKafka()
    async with services.client() as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        with trace.get_tracer("test").start_as_current_span("checkout") as span:
            await conveyor.projects()
            await conveyor.send_feedback("fraud", "q-1", "legit", via="kafka")
        await conveyor.projects()  # outside the span: none
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert trace_id in services.requests[0].headers["traceparent"]
    assert trace_id in kafka.sent[0][1][2]["traceparent"]
    assert "traceparent" not in services.requests[1].headers
