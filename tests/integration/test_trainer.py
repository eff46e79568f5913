"""The trainer on the real broker and Postgres, with the registry faked at its adapter."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import (
    AuditRecorded,
    DriftDetected,
    FeatureRowComputed,
    FeedbackRecorded,
    StartTraining,
    new_id,
)
from conveyor_examples.fraud.traffic import FraudTraffic
from conveyor_feature.domain.features import featurize
from conveyor_trainer.adapters.registry import Registry
from conveyor_trainer.bootstrap import TrainerSettings, bootstrap
from conveyor_trainer.domain import training
from conveyor_trainer.domain.training import onnx_probabilities
from tests.support import Kafka, running, unique_project, until

pytestmark = pytest.mark.integration


class FakeRegistry(Registry):
    def __init__(self) -> None:
        self.versions: dict[int, dict[str, Any]] = {}
        self.champion_version: int | None = None
        self.moves: list[tuple[int, str]] = []
        self.requests: list[tuple[int, str, dict[str, Any]]] = []
        self.specs: list[Any] = []  # the project's spec at each project version

    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        version = len(self.versions) + 1
        self.versions[version] = body
        return {"version": version, "status": body["status"]}

    async def complete(self, project: str, version: int, body: dict[str, Any]) -> None:
        assert self.versions[version]["status"] == "pending", "a version completes once"
        self.versions[version] = self.versions[version] | body

    async def champion(self, project: str) -> tuple[int, bytes] | None:
        if self.champion_version is None:
            return None
        body = self.versions[self.champion_version]
        return self.champion_version, base64.b64decode(body["onnx_base64"])

    async def promote(self, project: str, version: int, reason: str) -> None:
        self.champion_version = version
        self.moves.append((version, reason))

    async def version(self, project: str, version: int) -> tuple[dict[str, Any], bytes | None]:
        body = self.versions[version]
        onnx = base64.b64decode(body["onnx_base64"]) if "onnx_base64" in body else None
        sha = hashlib.sha256(onnx).hexdigest() if onnx else None
        return {"version": version, "sha256": sha, **body}, onnx

    async def project_spec(self, project: str, project_version: int) -> dict[str, Any]:
        return self.specs[project_version - 1].model_dump(mode="json")

    async def request_approval(
        self, project: str, version: int, reason: str, evidence: dict[str, Any]
    ) -> int:
        self.requests.append((version, reason, evidence))
        return len(self.requests)


def _trainer(
    kafka: Any,
    database_url: str,
    prefix: str,
    retrain: dict[str, Any] | None = None,
    promotion: dict[str, Any] | None = None,
) -> tuple[Any, FakeRegistry, Any]:
    """A project with these policy changes, a fake registry that knows its spec, a trainer."""
    base = unique_project(prefix)
    policies = base.policies.model_copy(
        update={
            "retrain": base.policies.retrain.model_copy(update=retrain or {}),
            "promotion": base.policies.promotion.model_copy(update=promotion or {}),
        }
    )
    spec = base.model_copy(update={"policies": policies})
    registry = FakeRegistry()
    registry.specs.append(spec)
    settings = TrainerSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        trainer_poll_s=0.2,
    )
    return spec, registry, bootstrap(settings, registry=registry)


async def test_train_register_promote_then_retrain_once_per_episode(kafka, database_url, spans):
    spec, registry, runtime = _trainer(
        kafka, database_url, "trn", retrain={"min_new_rows": 300, "cooldown_s": 0}
    )
    name = spec.name
    traffic = FraudTraffic(seed=3)
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        await _labeled_rows(k, spec, traffic, t0, range(800))
        await until(lambda: _count(api, name, 800), 30, "examples")
        await k.send(
            catalog.TRAINER_REQUESTS, StartTraining(project=name, request_id="req-1"), key=name
        )
        await k.send(
            catalog.TRAINER_REQUESTS, StartTraining(project=name, request_id="req-1"), key=name
        )  # the same command again: one run
        await until(lambda: registry.champion_version == 1, 60, "a first champion")
        first = registry.versions[1]
        assert first["status"] == "ready" and first["metrics"]["accuracy"] > 0.85
        # A command read from Kafka names its sender, vouched for by nobody: recorded as a claim.
        entries = await _audited(runtime, name)
        assert [(e.action, e.actor, e.via, e.role) for e in entries] == [
            ("run.start", "kafka:api", "kafka", "")
        ]
        assert first["lineage"]["training_rows"] == 800
        training_set = first["lineage"]["training_set"]
        assert (
            training_set["example_ids_digest"]
            == hashlib.sha256(
                "".join(f"{x}\n" for x in sorted(f"r{i}" for i in range(800))).encode()
            ).hexdigest()
        )
        # Where the set was read: every example's partition and offset range of features.rows.
        assert sum(r["rows"] for r in training_set["sources"]) == 800
        assert {r["topic"] for r in training_set["sources"]} == {catalog.FEATURES_ROWS.name}
        assert first["lineage"]["trigger"]["kind"] == "request"
        assert first["lineage"]["trigger"]["request_id"] == "req-1"
        code = first["lineage"]["code"]
        assert (
            len(code["uv_lock_sha256"]) == 64
            and code["git_commit"]
            and code["git_dirty"]
            in (
                True,
                False,
            )
        )
        x = np.asarray(
            [featurize(spec, traffic.payment(t0, drifted=False).fields, t0, [])], dtype=np.float32
        )
        assert onnx_probabilities(base64.b64decode(first["onnx_base64"]), x).shape == (1, 2)

        # The world drifts: labeled feedback from the new concept, and one episode (sent twice).
        onset = datetime.now(UTC) - timedelta(seconds=1)
        episode = DriftDetected(
            episode_id=new_id(),
            project=name,
            model_version=1,
            kind="data",
            opened_at=datetime.now(UTC),
            onset_at=onset,
            windows=2,
        )
        traced = {"traceparent": f"00-{EPISODE_TRACE}-{EPISODE_SPAN}-01"}
        await k.send(catalog.MONITOR_DRIFT, episode, key=name, **traced)
        await k.send(catalog.MONITOR_DRIFT, episode, key=name, **traced)
        for i in range(400):
            p = traffic.payment(onset, drifted=True)
            await _feedback(
                k,
                spec,
                f"f{i}",
                "e",
                featurize(spec, p.fields, onset, []),
                p.truth,
                onset + timedelta(milliseconds=i),
            )
        await until(lambda: registry.champion_version == 2, 60, "the retrained champion")
        second = registry.versions[2]
        assert second["lineage"]["trigger"]["kind"] == "drift"
        assert second["lineage"]["trigger"]["episode_id"] == episode.episode_id
        # The first model's holdout is the fixed regression set: never trained on again, and
        # both models are measured on it.
        assert second["lineage"]["training_set"]["regression_set"]
        assert "regression_accuracy" in second["metrics"]
        # Metrics on named datasets, the champion's on the same rows beside the candidate's.
        held, fixed = second["evaluations"]["holdout"], second["evaluations"]["regression_set"]
        assert held["rows"] == round(second["lineage"]["training_rows"] * 0.25)
        assert held["metrics"] == {
            k: v for k, v in second["metrics"].items() if not k.startswith("regression_")
        }
        assert held["champion_version"] == 1 and "accuracy" in held["champion_metrics"]
        assert fixed["rows"] == first["lineage"]["holdout_rows"] == 200
        assert fixed["metrics"]["accuracy"] == second["metrics"]["regression_accuracy"]
        assert [list(x) for x in second["input_example"]] == [spec.feature_names()] * 5
        assert "on the regression set" in registry.moves[-1][1]
        # Retraining starts once min_new_rows (300) labeled rows followed the onset, and trains
        # on post-onset rows only: none of the 800 pre-drift rows.
        assert 300 <= second["lineage"]["training_rows"] <= 400
        assert second["lineage"]["parent_version"] == 1
        assert "vs champion v1" in registry.moves[-1][1]

        # The retraining run continues the episode's trace (an SRE walks from alarm to run).
        def run_spans():  # it ends once the run has recorded its outcome, after the promotion
            return [
                x
                for x in spans.get_finished_spans()
                if x.name == "training run"
                and x.attributes["conveyor.trigger"] == f"drift episode {episode.episode_id}"
            ]

        run = (await until(run_spans, 30, "the run's span"))[0]
        by_id = {x.context.span_id: x for x in spans.get_finished_spans()}
        assert format(run.context.trace_id, "032x") == EPISODE_TRACE
        received = by_id[run.parent.span_id]
        assert received.name == f"{catalog.MONITOR_DRIFT.name} process"
        assert format(received.parent.span_id, "016x") == EPISODE_SPAN

        finished = await k.collect(
            catalog.TRAINER_RUNS.name, lambda e: e.project == name, 2, decode=catalog.TRAINER_RUNS
        )
        assert [e.status for e in finished] == ["succeeded", "succeeded"]
        assert finished[1].metrics["accuracy"] > finished[1].champion_metrics["accuracy"]
        runs = (await api.get(f"/projects/{name}/runs")).json()
        assert len(runs) == 2  # one per command id, one per episode
        assert (await api.post("/projects/nope/runs", json={})).status_code == 404


EPISODE_TRACE = "6e0c63257de34c926f9efcd03899a8a3"
EPISODE_SPAN = "51a6f3bd6c14e2ab"


async def _labeled_rows(k: Kafka, spec, traffic: FraudTraffic, t0: datetime, ids: range) -> None:
    """Labeled feature rows r{i} of one entity, a minute apart from t0."""
    for i in ids:
        p = traffic.payment(t0 + timedelta(seconds=60 * i), drifted=False)
        row = FeatureRowComputed(
            project=spec.name,
            project_version=1,
            record_id=f"r{i}",
            entity_id="e",
            event_time=t0 + timedelta(seconds=60 * i),
            feature_names=spec.feature_names(),
            values=featurize(spec, p.fields, t0, []),
            label=p.truth,
        )
        await k.send(catalog.FEATURES_ROWS, row, key="e")


async def _feedback(
    k: Kafka, spec, feedback_id: str, entity: str, values: list[float], label: str, at: datetime
) -> None:
    """A label for a prediction of `legit` on `values`, made at `at`."""
    event = FeedbackRecorded(
        feedback_id=feedback_id,
        request_id=feedback_id,
        project=spec.name,
        entity_id=entity,
        model_version=1,
        feature_names=spec.feature_names(),
        values=values,
        predicted_label="legit",
        label=label,
        correct=label == "legit",
        predicted_at=at,
        labeled_at=datetime.now(UTC),
    )
    await k.send(catalog.FEEDBACK_RECORDED, event, key=feedback_id)


async def _count(api, name, n):
    return (await api.get(f"/projects/{name}/examples")).json().get("count", 0) >= n


async def test_reproduce_a_version_then_compare_variants(kafka, database_url, monkeypatch):
    """Approval mode: the run asks for approval instead of promoting. `reproduce` reads the
    version's examples again from the recorded offsets (rows and feedback, several partitions),
    retrains and matches the registered model on the holdout; a tampered record is refused.
    An experiment trains two variants on one snapshot, compared side by side."""
    spec, registry, runtime = _trainer(kafka, database_url, "rep", promotion={"mode": "approval"})
    name = spec.name
    traffic = FraudTraffic(seed=11)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    names = spec.feature_names()
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        for i in range(500):
            p = traffic.payment(t0 + timedelta(seconds=30 * i), drifted=False)
            row = FeatureRowComputed(
                project=name,
                project_version=1,
                record_id=f"r{i}",
                entity_id=f"e{i % 7}",
                event_time=t0 + timedelta(seconds=30 * i),
                feature_names=names,
                values=featurize(spec, p.fields, t0, []),
                label=p.truth if i % 10 else None,  # some rows are not labeled: no example
            )
            await k.send(catalog.FEATURES_ROWS, row, key=f"e{i % 7}")
        for i in range(150):
            p = traffic.payment(t0, drifted=False)
            await _feedback(
                k,
                spec,
                f"f{i}",
                f"e{i % 5}",
                featurize(spec, p.fields, t0, []),
                p.truth,
                t0 + timedelta(seconds=30 * i + 7),
            )
        for i in range(10):  # labels the project does not know, among the newest examples
            await _feedback(
                k,
                spec,
                f"x{i}",
                "e0",
                featurize(spec, traffic.payment(t0, drifted=False).fields, t0, []),
                "chargeback",
                t0 + timedelta(seconds=30 * (490 + i) + 11),
            )
        await until(lambda: _count(api, name, 610), 30, "examples")

        run = await _run(api, (await api.post(f"/projects/{name}/runs", json={})).json()["run_id"])
        assert run["status"] == "succeeded" and not run["promoted"], run
        assert "promotion request 1 awaits an approver" in run["reason"]
        assert registry.champion_version is None and registry.requests[0][0] == 1
        lineage = registry.versions[1]["lineage"]
        sources = lineage["training_set"]["sources"]
        assert {s["topic"] for s in sources} == {
            catalog.FEATURES_ROWS.name,
            catalog.FEEDBACK_RECORDED.name,
        }
        assert sum(s["rows"] for s in sources) == lineage["training_rows"] == 610
        # The regression set is the holdout the model was judged on: the newest 150 of the 600
        # examples with a known label, none of the unknown ones.
        pinned = await runtime.db.pool.fetchval(
            "SELECT example_ids FROM regression_sets WHERE project = $1", name
        )
        assert len(pinned) == 150 and not any(x.startswith("feedback:x") for x in pinned)

        r = await api.post(f"/projects/{name}/versions/1/reproduce")
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["reproduced"] and again["max_abs_diff"] <= 1e-6, again
        assert again["training_rows"] == 610 and again["holdout_rows"] == 150
        assert again["content_digest"] == lineage["training_set"]["content_digest"]

        # A record that does not describe what is on the topics is refused, not "reproduced".
        lineage["training_set"]["content_digest"] = "0" * 64
        r = await api.post(f"/projects/{name}/versions/1/reproduce")
        assert r.status_code == 409 and "the version trained on 610" in r.text

        variants = [
            {
                "class_path": "sklearn.linear_model.LogisticRegression",
                "params": {"C": 0.01, "max_iter": 3},
            },
            # docs/training.md's variant: a forest behind the default StandardScaler.
            {
                "class_path": "sklearn.ensemble.RandomForestClassifier",
                "params": {"n_estimators": 50},
            },
        ]
        started = await api.post(
            f"/projects/{name}/experiments", json={"variants": variants, "reason": "try two"}
        )
        assert started.status_code == 202, started.text
        experiment = started.json()["experiment_id"]

        async def both_done():
            runs = (
                await api.get(f"/projects/{name}/runs", params={"experiment": experiment})
            ).json()
            return runs if len(runs) == 2 and all(x["status"] != "running" for x in runs) else None

        runs = await until(both_done, 60, "the experiment's two runs")
        assert [x["variant"]["class_path"] for x in runs] == [v["class_path"] for v in variants]
        # A listing is bounded: the newest runs, still oldest first.
        newest = await api.get(
            f"/projects/{name}/runs", params={"experiment": experiment, "limit": 1}
        )
        assert [x["run_id"] for x in newest.json()] == [runs[-1]["run_id"]]
        too_many = await api.get(f"/projects/{name}/runs", params={"limit": 100_000})
        assert too_many.status_code == 422
        assert all(x["status"] == "succeeded" and not x["promoted"] for x in runs), runs
        assert len(registry.requests) == 1  # variants ask no one to promote them
        # A run's log holds what the libraries said while it worked, with its own lines.
        assert "ConvergenceWarning" in runs[0]["logs"] and "promotion:" in runs[0]["logs"]
        table = (
            await api.get("/runs/compare", params={"run_id": [x["run_id"] for x in runs]})
        ).json()
        assert [x["estimator"] for x in table["runs"]] == [v["class_path"] for v in variants]
        assert {x["training_rows"] for x in table["runs"]} == {460}  # the regression set is held
        assert table["best"]["accuracy"] in {x["run_id"] for x in runs}
        assert table["runs"][1]["params"]["n_estimators"] == 50
        assert (await api.get("/runs/compare", params={"run_id": "nope"})).status_code == 404

        # Who started each run is in the audit log, written with the run (the trainer's outbox).
        audited = await _audited(runtime, name)
        assert [(a.action, a.actor, a.role, a.target) for a in audited] == [
            ("run.start", "test-admin", "admin", f"run {run['run_id']}"),
            (
                "experiment.start",
                "test-admin",
                "admin",
                f"run {runs[0]['run_id']} of experiment {experiment}",
            ),
        ]
        assert audited[1].reason == "try two"

        # The ONNX gate: an export whose probabilities differ from scikit-learn's by more than
        # the tolerance (here, by anything at all) makes a failed version, with the reason.
        monkeypatch.setattr(training, "ONNX_TOLERANCE", -1.0)
        run = await _run(api, (await api.post(f"/projects/{name}/runs", json={})).json()["run_id"])
        failed = registry.versions[run["model_version"]]
        assert run["status"] == "failed" and failed["status"] == "failed", run
        assert "ONNX probabilities differ from scikit-learn's" in failed["failure_reason"]
        assert "onnx_base64" not in failed and len(registry.requests) == 1


async def _audited(runtime, project: str) -> list[AuditRecorded]:
    """The audit entries the trainer wrote for the project, oldest first (from its outbox, where
    they stay a while after the relay published them)."""
    rows = await runtime.db.pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id",
        catalog.AUDIT_EVENTS.name,
        project,
    )
    return [AuditRecorded.model_validate_json(r["value"]) for r in rows]


async def _run(api, run_id: str) -> dict:
    async def finished():
        run = (await api.get(f"/runs/{run_id}")).json()
        return run if run["status"] != "running" else None

    return await until(finished, 60, f"run {run_id}")


async def test_scheduled_runs_within_a_daily_budget(kafka, database_url):
    """`every_s` starts a run once none started for that long and enough new rows arrived;
    the daily budget then holds everyone: people get a 429, a Kafka request a skipped run with
    the reason on trainer.runs, an experiment that would not fit is refused whole."""
    spec, registry, runtime = _trainer(
        kafka,
        database_url,
        "sch",
        retrain={"every_s": 2, "min_new_rows": 100, "cooldown_s": 0, "max_runs_per_day": 2},
    )
    name = spec.name
    traffic = FraudTraffic(seed=5)
    t0 = datetime(2026, 4, 1, tzinfo=UTC)

    async def runs(n: int) -> list[dict] | None:
        found = (await api.get(f"/projects/{name}/runs")).json()
        return found if len(found) >= n and all(r["status"] != "running" for r in found) else None

    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        await _labeled_rows(k, spec, traffic, t0, range(300))
        first = (await until(lambda: runs(1), 60, "the first scheduled run"))[0]
        assert first["status"] == "succeeded", first
        assert (
            first["trigger_info"]["kind"] == "schedule"
            and first["trigger"] == "scheduler: every 2s"
        )
        assert registry.versions[1]["lineage"]["trigger"]["kind"] == "schedule"
        # Due again after 2 s, but only once 100 new labeled rows arrived since it started.
        await _labeled_rows(k, spec, traffic, t0, range(300, 450))
        second = (await until(lambda: runs(2), 60, "the second scheduled run"))[1]
        assert second["status"] == "succeeded" and second["trigger_info"]["kind"] == "schedule"
        assert second["started_at"] > first["finished_at"]
        # Same world, more rows: not better than the champion on the same holdout (or better by
        # too few rows to count — which rows the run saw depends on when it started), so it is
        # registered (ready) but not promoted, and the run says why with both figures.
        assert not second["promoted"] and registry.champion_version == 1
        assert registry.versions[2]["status"] == "ready"
        assert "vs champion v1" in second["reason"], second["reason"]
        assert re.search(r"not (significantly )?better", second["reason"]), second["reason"]

        # Two runs in 24 hours: the budget is spent, whoever asks.
        refused = await api.post(f"/projects/{name}/runs", json={})
        assert refused.status_code == 429 and "daily budget: 2 of 2" in refused.json()["detail"]
        experiment = await api.post(
            f"/projects/{name}/experiments",
            json={"variants": [{"class_path": "sklearn.linear_model.LogisticRegression"}]},
        )
        assert experiment.status_code == 429
        await k.send(
            catalog.TRAINER_REQUESTS, StartTraining(project=name, request_id="req-b"), key=name
        )
        declined = await k.collect(
            catalog.TRAINER_RUNS.name,
            lambda e: e.project == name and e.status == "skipped",
            1,
            decode=catalog.TRAINER_RUNS,
        )
        assert "not started: daily budget: 2 of 2" in declined[0].reason
        listed = await until(lambda: runs(3), 30, "the declined request's run")
        assert [r["status"] for r in listed] == ["succeeded", "succeeded", "skipped"]
        assert len(registry.versions) == 2
