"""The registry against real Postgres and the real broker: API, alias history, outbox events."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from conveyor_auth import Actor
from conveyor_contracts import catalog
from conveyor_contracts.events import (
    AliasMoved,
    ModelLoadFailed,
    ModelVersionRegistered,
    ProjectApplied,
    PromotionDecided,
    PromotionRequested,
)
from conveyor_contracts.project import ALLOWED_ESTIMATORS
from conveyor_examples import load_project, project_names
from conveyor_registry.bootstrap import RegistrySettings, bootstrap
from tests.support import Kafka, bearer, in_approval_mode, running, unique_project, until

pytestmark = pytest.mark.integration


def _settings(kafka, database_url) -> RegistrySettings:
    return RegistrySettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )


def _version(run_id: str, payload: bytes | None = b"onnx-bytes", **extra):
    body = {
        "run_id": run_id,
        "project_version": 1,
        "status": "ready" if payload else "failed",
        "metrics": {"accuracy": 0.9},
        "signature": {"feature_names": ["x"]},
        "profile": {"rows": 10},
        "lineage": {"training_rows": 10},
    }
    if payload:
        body["onnx_base64"] = base64.b64encode(payload).decode()
    else:
        body["failure_reason"] = "onnx outputs differ from scikit-learn's"
    return body | extra


async def test_projects_versions_aliases_and_their_events(kafka, database_url):
    spec = unique_project("reg")
    name = spec.name
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        r = await api.post("/projects", json=spec.model_dump(mode="json"))
        assert r.status_code == 201 and r.json() == {
            "project": name,
            "project_version": 1,
            "created": True,
        }
        r = await api.post("/projects", json=spec.model_dump(mode="json"))
        assert r.status_code == 200 and r.json()["created"] is False
        bad = spec.model_dump(mode="json") | {"entity_key": "nope"}
        r = await api.post("/projects", json=bad)
        assert r.status_code == 422 and "entity_key 'nope' is not a record field" in r.text

        described = {
            "input_example": [{"x": 1.5}],
            "evaluations": {"holdout": {"rows": 3, "metrics": {"accuracy": 0.9}}},
        }
        r1 = await api.post(
            f"/projects/{name}/versions", json=_version("run-1", b"model-one", **described)
        )
        assert r1.status_code == 201 and r1.json()["version"] == 1
        assert r1.json()["sha256"] == hashlib.sha256(b"model-one").hexdigest()
        again = await api.post(f"/projects/{name}/versions", json=_version("run-1", b"model-one"))
        assert again.status_code == 200 and again.json()["version"] == 1
        r2 = await api.post(f"/projects/{name}/versions", json=_version("run-2", b"model-two"))
        assert r2.json()["version"] == 2
        failed = await api.post(f"/projects/{name}/versions", json=_version("run-3", None))
        assert failed.json() == {"project": name, "version": 3, "sha256": None, "status": "failed"}

        art = await api.get(f"/projects/{name}/versions/2/artifact")
        assert art.content == b"model-two"
        assert art.headers["X-Artifact-SHA256"] == hashlib.sha256(b"model-two").hexdigest()
        assert (await api.get(f"/projects/{name}/versions/3/artifact")).status_code == 404
        info = (await api.get(f"/projects/{name}/versions/1")).json()
        assert info["metrics"] == {"accuracy": 0.9} and info["profile"] == {"rows": 10}
        assert info["input_example"] == described["input_example"]
        assert info["evaluations"] == described["evaluations"]

        # The actor of a move is the caller's token's name, whatever a body says.
        move = {"version": 1, "reason": "first model"}
        as_alice = bearer("alice")
        r = await api.put(f"/projects/{name}/aliases/champion", json=move, headers=as_alice)
        assert r.json() == {
            "alias": "champion",
            "from_version": None,
            "to_version": 1,
        }
        same = await api.put(f"/projects/{name}/aliases/champion", json=move, headers=as_alice)
        assert same.status_code == 200
        move2 = {"version": 2, "reason": "better on holdout"}
        await api.put(f"/projects/{name}/aliases/champion", json=move2, headers=bearer("dave"))
        r = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 3, "reason": "try"},
        )
        assert r.status_code == 409 and "failed" in r.text
        r = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 9, "reason": "try"},
        )
        assert r.status_code == 404
        r = await api.put(f"/projects/{name}/aliases/Bad_Alias", json=move)
        assert r.status_code == 422
        assert (await api.get("/projects/nope/aliases")).status_code == 404

        back = await api.post(
            f"/projects/{name}/aliases/champion/rollback",
            json={"reason": "v2 misbehaves"},
            headers=bearer("carol"),
        )
        assert back.json() == {"alias": "champion", "from_version": 2, "to_version": 1}
        history = (await api.get(f"/projects/{name}/aliases/champion/history")).json()
        assert [(h["from_version"], h["to_version"], h["actor"]) for h in history] == [
            (None, 1, "alice"),
            (1, 2, "dave"),
            (2, 1, "carol"),
        ]
        assert (await api.get(f"/projects/{name}/aliases")).json() == {"champion": 1}

        # The API is documented: every operation above is in the OpenAPI document.
        paths = (await api.get("/openapi.json")).json()["paths"]
        for path in (
            "/projects/{project}/versions/{version}/artifact",
            "/projects/{project}/aliases/{alias}/rollback",
            "/projects/{project}/aliases/{alias}/history",
            "/projects/{project}/promotions/{request_id}/approve",
            "/projects/{project}/versions/{version}/openlineage",
        ):
            assert path in paths, sorted(paths)

        async with Kafka(kafka.bootstrap_servers) as k:
            events = await k.collect(
                catalog.REGISTRY_EVENTS.name,
                lambda e: e.project == name,
                7,
                decode=catalog.REGISTRY_EVENTS,
            )
        kinds = [type(e).__name__ for e in events]
        assert kinds == [
            "ProjectApplied",
            "ModelVersionRegistered",
            "ModelVersionRegistered",
            "ModelVersionRegistered",
            "AliasMoved",
            "AliasMoved",
            "AliasMoved",
        ]
        assert isinstance(events[0], ProjectApplied) and events[0].spec == spec
        assert isinstance(events[3], ModelVersionRegistered) and events[3].status == "failed"
        last = events[-1]
        assert isinstance(last, AliasMoved) and (last.from_version, last.to_version) == (2, 1)
        assert last.sha256 == hashlib.sha256(b"model-one").hexdigest()


async def test_an_event_committed_but_not_yet_published_is_not_lost(kafka, database_url):
    spec = unique_project("reg")
    settings = _settings(kafka, database_url)
    runtime = bootstrap(settings)
    # Commit changes without a relay: the process "dies" before publishing anything.
    assert runtime.db is not None
    await runtime.db.connect()
    from conveyor_registry.adapters.repository import Repository

    repo = Repository(runtime.db)
    await repo.apply_project(spec, Actor("test", "scientist"))
    pending = await runtime.db.pool.fetch(
        "SELECT topic FROM outbox WHERE published_at IS NULL AND key = $1", spec.name
    )
    # The change's event and its audit entry, committed together.
    assert sorted(r["topic"] for r in pending) == sorted(
        [catalog.REGISTRY_EVENTS.name, catalog.AUDIT_EVENTS.name]
    )
    await runtime.db.close()
    # A new process starts: its relay publishes what was committed, and the audit log has it.
    async with running(bootstrap(settings)) as api:
        async with Kafka(kafka.bootstrap_servers) as k:
            found = await k.collect(
                catalog.REGISTRY_EVENTS.name,
                lambda e: e.project == spec.name,
                1,
                decode=catalog.REGISTRY_EVENTS,
            )
        assert isinstance(found[0], ProjectApplied)

        async def logged() -> list[dict]:
            page = await api.get("/audit", params={"project": spec.name})
            return page.json()["entries"]

        entries = await until(logged, what="the audit entry of the apply")
        assert [(e["action"], e["actor"], e["target"]) for e in entries] == [
            ("project.apply", "test", "project v1")
        ]


async def test_approval_mode_holds_promotions_for_an_approver(kafka, database_url):
    spec = in_approval_mode(unique_project("appr"))
    name = spec.name
    as_alice, as_carol, as_dave = bearer("alice"), bearer("carol"), bearer("dave")
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        await api.post("/projects", json=spec.model_dump(mode="json"))
        for run in ("run-1", "run-2"):
            await api.post(f"/projects/{name}/versions", json=_version(run, run.encode()))

        # A move of the champion is held as a request; asking twice is the same request.
        # (dave, a scientist: the trainer's role)
        move = {"version": 1, "reason": "passed the gate"}
        held = await api.put(f"/projects/{name}/aliases/champion", json=move, headers=as_dave)
        assert held.status_code == 202 and held.json()["state"] == "pending", held.text
        assert held.json()["requested_by"] == "dave"
        first = held.json()["id"]
        again = await api.put(f"/projects/{name}/aliases/champion", json=move, headers=as_dave)
        assert again.status_code == 202 and again.json()["id"] == first
        assert (await api.get(f"/projects/{name}/aliases")).json() == {}
        # Other aliases are not gated.
        r = await api.put(f"/projects/{name}/aliases/challenger", json=move, headers=as_dave)
        assert r.status_code == 200 and r.json()["to_version"] == 1

        # Who may decide: nobody without a token, nobody with an unknown one, not a user
        # without the role, not the person who asked.
        decide = f"/projects/{name}/promotions/{first}/approve"
        r = await api.post(decide, json={"reason": "ok"}, headers={"Authorization": ""})
        assert r.status_code == 401 and "needs a bearer token" in r.text
        r = await api.post(decide, json={"reason": "ok"}, headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "not one this service knows" in r.text
        r = await api.post(decide, json={"reason": "ok"}, headers=as_dave)
        assert r.status_code == 403 and "may not decide" in r.text
        own = await api.post(
            f"/projects/{name}/promotions",
            json={"version": 2, "requested_by": "ignored", "reason": "mine"},
            headers=as_alice,
        )
        assert own.status_code == 201 and own.json()["requested_by"] == "alice"
        r = await api.post(
            f"/projects/{name}/promotions/{own.json()['id']}/approve",
            json={"reason": "self"},
            headers=as_alice,
        )
        assert r.status_code == 403 and "another approver" in r.text

        # Carol rejects alice's request; alice approves the trainer's: the alias moves with
        # her as the actor, and the decided request cannot be decided again.
        rejected = await api.post(
            f"/projects/{name}/promotions/{own.json()['id']}/reject",
            json={"reason": "v2 is not reviewed"},
            headers=as_carol,
        )
        assert rejected.status_code == 200, rejected.text
        assert (rejected.json()["state"], rejected.json()["decided_by"]) == ("rejected", "carol")
        approved = await api.post(decide, json={"reason": "holdout reviewed"}, headers=as_alice)
        assert approved.status_code == 200 and approved.json()["state"] == "approved"
        assert (await api.get(f"/projects/{name}/aliases")).json()["champion"] == 1
        r = await api.post(decide, json={"reason": "twice"}, headers=as_carol)
        assert r.status_code == 409 and "already approved by alice" in r.text
        history = (await api.get(f"/projects/{name}/aliases/champion/history")).json()
        assert [(h["actor"], h["to_version"]) for h in history] == [("alice", 1)]
        assert f"approved request {first} of dave" in history[0]["reason"]

        # An approver's own move is not held; a rollback never is.
        r = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 2, "reason": "hotfix reviewed"},
            headers=as_carol,
        )
        assert r.status_code == 200 and r.json()["to_version"] == 2
        r = await api.post(
            f"/projects/{name}/aliases/champion/rollback",
            json={"reason": "v2 pages"},
        )
        assert r.status_code == 200 and r.json()["to_version"] == 1
        listed = (await api.get(f"/projects/{name}/promotions")).json()
        assert [(p["id"], p["state"]) for p in listed] == [
            (first, "approved"),
            (own.json()["id"], "rejected"),
        ]
        pending = await api.get(f"/projects/{name}/promotions", params={"state": "pending"})
        assert pending.json() == []

        async with Kafka(kafka.bootstrap_servers) as k:
            events = await k.collect(
                catalog.REGISTRY_EVENTS.name,
                lambda e: (
                    e.project == name and isinstance(e, PromotionRequested | PromotionDecided)
                ),
                4,
                decode=catalog.REGISTRY_EVENTS,
            )
        assert [(type(e).__name__, e.request_id) for e in events] == [
            ("PromotionRequested", first),
            ("PromotionRequested", own.json()["id"]),
            ("PromotionDecided", own.json()["id"]),
            ("PromotionDecided", first),
        ]
        assert [e.decision for e in events[2:]] == ["rejected", "approved"]


async def test_a_version_exports_as_openlineage_run_events(kafka, database_url):
    spec = unique_project("ol")
    name = spec.name
    run_id = uuid.uuid4().hex
    lineage = {
        "training_rows": 600,
        "training_set": {
            "sources": [
                {
                    "topic": "features.rows.v1",
                    "partition": 0,
                    "first_offset": 5,
                    "last_offset": 90,
                    "rows": 300,
                },
                {
                    "topic": "features.rows.v1",
                    "partition": 2,
                    "first_offset": 0,
                    "last_offset": 70,
                    "rows": 150,
                },
                {
                    "topic": "feedback.recorded.v1",
                    "partition": 1,
                    "first_offset": 3,
                    "last_offset": 99,
                    "rows": 150,
                },
            ],
            "rows": 600,
            "content_digest": "c" * 64,
            "example_ids_digest": "e" * 64,
            "boundary": {"observed_at": "2026-03-01T00:00:00+00:00", "example_id": "r1"},
        },
        "params": {"C": 1.0, "max_iter": 100},
        "estimator": "sklearn.linear_model.LogisticRegression",
        "seed": 0,
        "code": {
            "git_commit": "a" * 40,
            "git_dirty": False,
            "git_url": "file:///src",
            "uv_lock_sha256": "b" * 64,
        },
        "environment": {"sklearn": "1.7.2"},
        "trigger": {"kind": "person", "by": "ana"},
        "started_at": "2026-03-01T10:00:00+00:00",
    }
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        await api.post("/projects", json=spec.model_dump(mode="json"))
        await api.post(f"/projects/{name}/versions", json=_version(run_id, b"m1", lineage=lineage))
        r = await api.get(f"/projects/{name}/versions/1/openlineage")
        assert r.status_code == 200, r.text
        start, complete = r.json()
        assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
        assert start["run"]["runId"] == complete["run"]["runId"] == str(uuid.UUID(run_id))
        assert start["eventTime"] == "2026-03-01T10:00:00+00:00"
        assert start["job"]["name"] == complete["job"]["name"]
        assert start["job"]["name"] == f"{name}.train"
        assert start["job"]["facets"]["sourceCodeLocation"]["version"] == "a" * 40
        assert all(
            e["schemaURL"].startswith("https://openlineage.io/spec/") for e in (start, complete)
        )
        inputs = {i["name"]: i for i in complete["inputs"]}
        assert set(inputs) == {"features.rows.v1", "feedback.recorded.v1"}
        assert (
            inputs["features.rows.v1"]["namespace"]
            == f"kafka://{kafka.bootstrap_servers.split(',')[0]}"
        )
        offsets = inputs["features.rows.v1"]["inputFacets"]["kafkaOffsets"]["partitions"]
        assert [(o["partition"], o["first_offset"], o["last_offset"]) for o in offsets] == [
            (0, 5, 90),
            (2, 0, 70),
        ]
        assert inputs["feedback.recorded.v1"]["inputFacets"]["inputStatistics"]["rowCount"] == 150
        (model,) = complete["outputs"]
        assert model["name"] == f"{name}/versions/1"
        assert model["facets"]["version"]["datasetVersion"] == hashlib.sha256(b"m1").hexdigest()
        training = start["run"]["facets"]["conveyor_training"]
        assert (
            training["content_digest"] == "c" * 64
            and training["code"]["uv_lock_sha256"] == "b" * 64
        )
        params = start["run"]["facets"]["executionParameters"]["parameters"]
        assert {p["key"]: p["value"] for p in params} == {"C": "1.0", "max_iter": "100"}

        await api.post(f"/projects/{name}/versions", json=_version("run-failed", None))
        failed = (await api.get(f"/projects/{name}/versions/2/openlineage")).json()
        assert failed[1]["eventType"] == "FAIL"
        assert "differ from scikit-learn" in failed[1]["run"]["facets"]["errorMessage"]["message"]
        assert (await api.get(f"/projects/{name}/versions/9/openlineage")).status_code == 404


async def test_a_pending_version_completes_once(kafka, database_url):
    spec = unique_project("pend")
    name = spec.name
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        await api.post("/projects", json=spec.model_dump(mode="json"))
        pending = {"run_id": "run-p", "project_version": 1, "status": "pending"}
        r = await api.post(f"/projects/{name}/versions", json=pending)
        assert r.status_code == 201 and r.json()["status"] == "pending"
        r = await api.put(f"/projects/{name}/aliases/champion", json={"version": 1, "reason": "r"})
        assert r.status_code == 409 and "pending" in r.text
        bad = await api.post(
            f"/projects/{name}/versions", json=pending | {"run_id": "x", "onnx_base64": "AA=="}
        )
        assert bad.status_code == 409 and "pending version carries no artifact" in bad.text
        done = _version("run-p", b"m") | {"status": "ready"}
        done.pop("run_id"), done.pop("project_version")
        r = await api.post(f"/projects/{name}/versions/1/complete", json=done)
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert r.json()["sha256"] == hashlib.sha256(b"m").hexdigest()
        again = await api.post(f"/projects/{name}/versions/1/complete", json=done)
        assert again.status_code == 200  # a retry changes nothing
        other = done | {"onnx_base64": base64.b64encode(b"other").decode()}
        r = await api.post(f"/projects/{name}/versions/1/complete", json=other)
        assert r.status_code == 409 and "immutable" in r.text
        r = await api.post(f"/projects/{name}/versions/7/complete", json=done)
        assert r.status_code == 404
        async with Kafka(kafka.bootstrap_servers) as k:
            events = await k.collect(
                catalog.REGISTRY_EVENTS.name,
                lambda e: e.project == name and isinstance(e, ModelVersionRegistered),
                2,
                decode=catalog.REGISTRY_EVENTS,
            )
        assert [e.status for e in events] == ["pending", "ready"]


async def test_every_write_needs_a_caller_with_the_role_and_leaving_approval_mode_needs_another(
    kafka, database_url
):
    """No token, an unknown one, or a role that does not grant the action: refused with the
    reason. A project in approval mode is not taken out of it by re-applying it: the change
    waits for an approver other than its author, and only then is applied."""
    base = unique_project("mode")
    spec = in_approval_mode(base)
    approval = spec.policies
    name = spec.name
    body = spec.model_dump(mode="json")
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        r = await api.post("/projects", json=body, headers={"Authorization": ""})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        for user in ("a-viewer", "an-app"):
            r = await api.post("/projects", json=body, headers=bearer(user))
            assert r.status_code == 403 and "may not apply" in r.text, r.text
        hooked = spec.model_copy(
            update={
                "policies": approval.model_copy(
                    update={
                        "drift": approval.drift.model_copy(
                            update={"notify": ["http://169.254.169.254/latest"]}
                        )
                    }
                )
            }
        )
        r = await api.post("/projects", json=hooked.model_dump(mode="json"))
        assert r.status_code == 422 and "link-local" in r.text, r.text
        r = await api.post("/projects", json=body, headers=bearer("dave"))
        assert r.status_code == 201 and r.json()["project_version"] == 1

        auto = spec.model_copy(update={"policies": base.policies}).model_dump(mode="json")
        held = await api.post("/projects", json=auto, headers=bearer("alice"))
        assert held.status_code == 202, held.text
        change = held.json()
        assert (change["state"], change["requested_by"]) == ("pending", "alice")
        assert "approval mode" in change["reason"]
        assert (await api.get(f"/projects/{name}")).json()["project_version"] == 1
        again = await api.post("/projects", json=auto, headers=bearer("alice"))
        assert again.status_code == 202 and again.json()["id"] == change["id"]

        decide = f"/projects/{name}/changes/{change['id']}"
        r = await api.post(decide + "/approve", json={"reason": "mine"}, headers=bearer("alice"))
        assert r.status_code == 403 and "another approver" in r.text
        r = await api.post(decide + "/approve", json={"reason": "ok"}, headers=bearer("dave"))
        assert r.status_code == 403
        r = await api.post(decide + "/approve", json={"reason": "agreed"}, headers=bearer("carol"))
        assert r.status_code == 200 and r.json()["decided_by"] == "carol", r.text
        latest = (await api.get(f"/projects/{name}")).json()
        assert latest["project_version"] == 2
        assert latest["spec"]["policies"]["promotion"]["mode"] == "auto"
        listed = (await api.get(f"/projects/{name}/changes")).json()
        assert [(c["id"], c["state"]) for c in listed] == [(change["id"], "approved")]

        # Values the database cannot hold are the caller's fault, never a 5xx.
        r = await api.get(f"/projects/{name}/versions/{2**31}")
        assert r.status_code == 422
        r = await api.post(
            f"/projects/{name}/versions",
            json={
                "run_id": "r-\u00001",
                "project_version": 1,
                "status": "ready",
                "onnx_base64": "éé==",
            },
        )
        assert r.status_code == 422, r.text


async def test_no_alias_moves_to_a_version_serving_could_not_load(kafka, database_url):
    spec = unique_project("lf")
    name = spec.name
    async with (
        Kafka(kafka.bootstrap_servers) as k,
        running(bootstrap(_settings(kafka, database_url))) as api,
    ):
        await api.post("/projects", json=spec.model_dump(mode="json"))
        for run, payload in (("run-1", b"model-one"), ("run-2", b"not onnx")):
            await api.post(f"/projects/{name}/versions", json=_version(run, payload))
        move = {"version": 1, "reason": "first"}
        assert (await api.put(f"/projects/{name}/aliases/champion", json=move)).status_code == 200

        # Serving reports v2 broken, and the same report arrives twice (a redelivery): one
        # failure is kept.
        failure = ModelLoadFailed(
            project=name,
            version=2,
            alias="champion",
            sha256=hashlib.sha256(b"not onnx").hexdigest(),
            reason="InvalidProtobuf: Protobuf parsing failed.",
            replica="host-a/42",
        )
        for _ in range(2):
            await k.send(catalog.SERVING_EVENTS, failure, key=name, ce_id="report-" + name)

        async def recorded() -> list:
            return (await api.get(f"/projects/{name}/versions/2")).json()["load_failures"]

        failures = await until(recorded, 20, "the load failure recorded")
        assert [(f["alias"], f["replica"], f["reason"]) for f in failures] == [
            ("champion", "host-a/42", "InvalidProtobuf: Protobuf parsing failed.")
        ]
        listed = {v["version"]: v for v in (await api.get(f"/projects/{name}/versions")).json()}
        assert listed[2]["load_failures"] == failures and listed[1]["load_failures"] == []

        # Neither a move nor a promotion request may point an alias at it, for any alias; the
        # answer names the failure. v1 still moves.
        for alias in ("champion", "challenger"):
            r = await api.put(
                f"/projects/{name}/aliases/{alias}",
                json={"version": 2, "reason": "try"},
            )
            assert r.status_code == 409, r.text
            assert "failed to load" in r.text and "Protobuf parsing failed" in r.text
        r = await api.post(
            f"/projects/{name}/promotions",
            json={"alias": "champion", "version": 2, "requested_by": "bob", "reason": "try"},
        )
        assert r.status_code == 409 and "failed to load" in r.text
        assert (await api.get(f"/projects/{name}/aliases")).json() == {"champion": 1}
        move = {"version": 1, "reason": "as challenger"}
        assert (await api.put(f"/projects/{name}/aliases/challenger", json=move)).status_code == 200


async def test_a_project_whose_parts_disagree_is_refused_naming_each_json_path(kafka, database_url):
    """A categorical feature over an integer field, a label class the label field does not
    allow, an estimator that is not allowed: 422, each problem at its path in the project file,
    and nothing applied. The examples apply as they are."""
    spec = unique_project("parts")
    body = spec.model_dump(mode="json")
    body["features"][2] = {
        "kind": "categorical",
        "name": "hour_of_day",
        "field": "hour",
        "categories": [str(h) for h in range(24)],
    }
    body["label"]["classes"] = ["legit", "fraudulent"]
    async with running(bootstrap(_settings(kafka, database_url))) as api:
        r = await api.post("/projects", json=body)
        assert r.status_code == 422, r.text
        detail = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
        assert set(detail) == {
            ("body", "features", 2, "field"),
            ("body", "label", "classes", 1),
            ("body", "record_schema", "fields", "outcome", "allowed"),
        }
        assert "declare the field `string`" in detail[("body", "features", 2, "field")]
        assert "'fraudulent' is not an allowed value" in detail[("body", "label", "classes", 1)]

        unknown = spec.model_dump(mode="json")
        unknown["estimator"]["class_path"] = "sklearn.svm.SVC"
        r = await api.post("/projects", json=unknown)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "estimator", "class_path"]
        assert all(path in error["msg"] for path in ALLOWED_ESTIMATORS)

        assert (await api.get(f"/projects/{spec.name}")).status_code == 404
        for example in project_names():
            own = load_project(example).model_copy(update={"name": f"{spec.name}-{example}"})
            r = await api.post("/projects", json=own.model_dump(mode="json"))
            assert r.status_code == 201, r.text
