"""Feedback on the real broker and Postgres: joins in either order, duplicates, corrections with
their history, batches over HTTP, the horizon."""

from __future__ import annotations

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import FeedbackSubmitted, new_id
from conveyor_feedback.bootstrap import FeedbackSettings, bootstrap
from tests.support import (
    Kafka,
    caught_up,
    headers_of,
    running,
    served,
    unique_project,
    until,
)

pytestmark = pytest.mark.integration


async def test_labels_join_predictions(kafka, database_url):
    spec = unique_project("fb")
    name = spec.name
    runtime = bootstrap(
        FeedbackSettings(
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            database_url=database_url,
            feedback_horizon_s=1.0,
            feedback_sweep_s=0.2,
        )
    )
    q1, q2, q3 = new_id(), new_id(), new_id()
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        # What other tests left on the shared topics is joined first: the labels below, which
        # wait a second at most for their predictions, must not wait behind it.
        await caught_up(runtime)
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        await k.send(catalog.PREDICTIONS_RESPONSES, served(name, q1), key=q1)
        first = FeedbackSubmitted(project=name, request_id=q1, label="fraud")
        await k.send(catalog.FEEDBACK_SUBMITTED, first, key=q1)
        await k.send(catalog.FEEDBACK_SUBMITTED, first, key=q1)  # the same feedback again
        # Feedback before its prediction waits for it.
        r = await api.post("/feedback", json={"project": name, "request_id": q2, "label": "legit"})
        assert r.status_code == 202 and len(r.json()["waiting"]) == 1
        await k.send(catalog.PREDICTIONS_RESPONSES, served(name, q2), key=q2)
        # A correction of q1's label is kept as well.
        r = await api.post("/feedback", json={"project": name, "request_id": q1, "label": "legit"})
        recorded = await k.collect(
            catalog.FEEDBACK_RECORDED.name,
            lambda e: e.project == name,
            3,
            decode=catalog.FEEDBACK_RECORDED,
        )
        assert sorted((e.request_id, e.label, e.correct) for e in recorded) == sorted(
            [(q1, "fraud", True), (q2, "legit", False), (q1, "legit", False)]
        )
        assert all(e.values == [1.0] and e.model_version == 1 for e in recorded)
        history = (await api.get(f"/projects/{name}/predictions/{q1}/labels")).json()
        # Who sent each: a label over HTTP is its caller's; one from Kafka names no one.
        assert [(h["label"], h["current"], h["sent_by"]) for h in history] == [
            ("fraud", False, None),
            ("legit", True, "test-admin"),
        ]
        assert all(h["delay_s"] >= 0 for h in history)
        r = await api.get(f"/projects/{name}/predictions/{q3}/labels")
        assert r.status_code == 404

        # A batch over HTTP: all or nothing.
        q4, q5 = new_id(), new_id()
        for q in (q4, q5):
            await k.send(catalog.PREDICTIONS_RESPONSES, served(name, q), key=q)
        batch = [
            {"project": name, "request_id": q4, "label": "fraud"},
            {"project": name, "request_id": q5, "label": "nope"},
        ]
        r = await api.post("/feedback/batch", json={"feedback": batch})
        assert r.status_code == 422
        assert r.json()["detail"]["errors"] == [
            {"index": 1, "problem": "label: 'nope' is not one of ['legit', 'fraud']"}
        ]
        batch[1]["label"] = "legit"
        r = await api.post("/feedback/batch", json={"feedback": batch})
        assert r.status_code == 202 and len(r.json()["recorded"] + r.json()["waiting"]) == 2
        recorded = await k.collect(
            catalog.FEEDBACK_RECORDED.name,
            lambda e: e.request_id in (q4, q5),
            2,
            decode=catalog.FEEDBACK_RECORDED,
        )
        assert sorted((e.request_id, e.label) for e in recorded) == sorted(
            [(q4, "fraud"), (q5, "legit")]
        )

        # Bad input: unknown label, unknown project.
        r = await api.post("/feedback", json={"project": name, "request_id": q1, "label": "maybe"})
        assert r.status_code == 422 and "'maybe' is not one of" in r.text
        r = await api.post(
            "/feedback", json={"project": "nope", "request_id": q1, "label": "fraud"}
        )
        assert r.status_code == 404
        await k.send(
            catalog.FEEDBACK_SUBMITTED,
            FeedbackSubmitted(project=name, request_id=q1, label="maybe"),
            key="bad",
        )
        # Feedback whose prediction never comes is dead-lettered after the horizon.
        await k.send(
            catalog.FEEDBACK_SUBMITTED,
            FeedbackSubmitted(project=name, request_id=q3, label="fraud"),
            key=q3,
        )
        dead = await k.collect(
            catalog.FEEDBACK_SUBMITTED.dlq, lambda r: r.key in (b"bad", q3.encode()), 2
        )
        reasons = {r.key: headers_of(r)["dlq_error"] for r in dead}
        assert "'maybe' is not one of" in reasons[b"bad"]
        assert reasons[q3.encode()] == f"no prediction {q3} within 1s"
        stats = (await api.get(f"/projects/{name}/feedback/stats")).json()
        assert stats["labels"] == 4 and stats["corrections"] == 1 and stats["waiting"] == 0
        assert 0 <= stats["p50_label_delay_s"] <= stats["p90_label_delay_s"]
