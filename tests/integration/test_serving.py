"""Serving on the real broker: answers, hot-swap under a stream, refused artifacts, OIP v2."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from conveyor_bus import create_topic
from conveyor_cli.kafka_io import tail
from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import AliasMoved, PredictionEnriched, PredictionServed, new_id
from conveyor_registry.bootstrap import RegistrySettings
from conveyor_registry.bootstrap import bootstrap as registry_bootstrap
from conveyor_runtime import NotInRegistry
from conveyor_serving.adapters.registry import HttpModelSource, ModelSource
from conveyor_serving.bootstrap import ServingSettings, bootstrap
from conveyor_serving.domain.predictor import in_canary
from tests.models import Model, make_model
from tests.support import Kafka, broker_topics, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration


class FakeSource(ModelSource):
    def __init__(self, models: dict[int, Model]) -> None:
        self.models = models
        self.tampered: set[int] = set()

    async def version(self, project: str, version: int) -> dict[str, Any]:
        if version not in self.models:
            raise NotInRegistry(f"{project} v{version}")
        return {"signature": self.models[version].signature}

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        m = self.models[version]
        data = m.onnx + b"tampered" if version in self.tampered else m.onnx
        return data, m.sha256


def _move(project, to, model, frm=None, alias="champion"):
    return AliasMoved(
        project=project,
        alias=alias,
        from_version=frm,
        to_version=to,
        sha256=model.sha256,
        actor="test",
        reason="test",
    )


def _request(project, names, x0: float, entity: str = "e") -> PredictionEnriched:
    values = [0.0] * len(names)
    values[0] = x0
    now = datetime.now(UTC)
    return PredictionEnriched(
        request_id=new_id(),
        project=project,
        project_version=1,
        entity_id=entity,
        requested_at=now,
        enriched_at=now,
        feature_names=names,
        values=values,
    )


async def test_answers_hot_swap_and_errors(kafka):
    spec = unique_project("srv")
    name, names = spec.name, spec.feature_names()
    models = {1: make_model(spec), 2: make_model(spec, flip=True), 3: make_model(spec, seed=5)}
    source = FakeSource(models)
    source.tampered.add(3)
    runtime = bootstrap(
        ServingSettings(kafka_bootstrap_servers=kafka.bootstrap_servers), source=source
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        # Before any model: an error answer, not silence.
        early = _request(name, names, 3.0)
        await k.send(catalog.PREDICTIONS_ENRICHED, early, key="e")
        got = await k.collect(
            catalog.PREDICTIONS_RESPONSES.name,
            lambda r: r.request_id == early.request_id,
            1,
            decode=catalog.PREDICTIONS_RESPONSES,
        )
        assert got[0].status == "error" and "no model is loaded" in got[0].error

        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1, models[1]), key=name)
        await until(lambda: runtime_version(api, name, 1), 30, "v1 loaded")

        # A sustained stream of requests, with the champion swapped ten times in the middle of it
        # (v1 → v2 → v1 …): every request is answered exactly once, by a valid version, and
        # none fails.
        sent: list[str] = []
        answered: dict[str, list[PredictionServed]] = defaultdict(list)
        stop = asyncio.Event()

        async def stream() -> None:
            i = 0
            while not stop.is_set():
                r = _request(name, names, 3.0)
                sent.append(r.request_id)
                await k.send(catalog.PREDICTIONS_ENRICHED, r, key=f"e{i % 3}")
                i += 1
                await asyncio.sleep(0.002)  # pacing the offered load, not waiting on an outcome

        async def collect() -> None:
            async for a in tail(kafka.bootstrap_servers, catalog.PREDICTIONS_RESPONSES):
                if a.project == name:  # the topic holds other tests' answers too
                    answered[a.request_id].append(a)

        def by(version: int) -> int:
            return sum(a[0].model_version == version for a in answered.values())

        tasks = [asyncio.create_task(stream()), asyncio.create_task(collect())]
        try:
            await until(lambda: by(1) >= 50, 30, "v1 answering the stream")
            for swap in range(10):
                to, frm = (2, 1) if swap % 2 == 0 else (1, 2)
                enough = by(to) + 30
                await k.send(catalog.REGISTRY_EVENTS, _move(name, to, models[to], frm), key=name)
                # The probe is awaited within this iteration: late binding cannot bite.
                await until(lambda: by(to) >= enough, 30, f"v{to} answering after swap {swap}")  # noqa: B023
            stop.set()
            await tasks[0]
            await until(lambda: all(r in answered for r in sent), 30, "every request answered")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert all(len(answered[r]) == 1 for r in sent)  # each exactly once
        answers = [answered[r][0] for r in sent]
        assert all(a.status == "ok" for a in answers)
        assert {a.model_version for a in answers} == {1, 2}
        for a in answers:  # v1 says fraud for x0 = 3, the flipped v2 says legit
            assert a.label == ("fraud" if a.model_version == 1 else "legit")
            assert a.values[0] == 3.0 and a.latency_ms >= 0
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 2, models[2], 1), key=name)
        await until(lambda: runtime_version(api, name, 2), 30, "v2 loaded")

        # An artifact that does not match its sha256 is refused, and a move to a version the
        # registry does not have is skipped: each is marked failed, and v2 keeps serving.
        for version in (3, 9):
            await k.send(catalog.REGISTRY_EVENTS, _move(name, version, models[3], 2), key=name)
            await until(partial(_failed, api, name, version), 30, f"v{version} marked failed")
        probe = _request(name, names, 3.0)
        await k.send(catalog.PREDICTIONS_ENRICHED, probe, key="e")
        got = await k.collect(
            catalog.PREDICTIONS_RESPONSES.name,
            lambda r: r.request_id == probe.request_id,
            1,
            decode=catalog.PREDICTIONS_RESPONSES,
        )
        assert got[0].model_version == 2
        assert (await api.get("/models")).json()[name]["version"] == 2

        # Inputs that do not fit the signature: an error answer and a dead letter.
        bad = _request(name, names[::-1], 1.0)
        await k.send(catalog.PREDICTIONS_ENRICHED, bad, key="e")
        got = await k.collect(
            catalog.PREDICTIONS_RESPONSES.name,
            lambda r: r.request_id == bad.request_id,
            1,
            decode=catalog.PREDICTIONS_RESPONSES,
        )
        assert got[0].status == "error" and "do not match" in got[0].error
        dead = await k.collect(
            catalog.PREDICTIONS_ENRICHED.dlq, lambda r: bad.request_id.encode() in r.value, 1
        )
        assert headers_of(dead[0])["dlq_stage"] == "infer"

        # A deadline already past gets "deadline exceeded" instead of a late answer; one still
        # ahead is answered. A reply-to topic of the applications' prefix gets a copy; one that
        # is not a topic name, a platform topic, outside the prefix or missing is a dead letter
        # with the reason, and is never created; predictions.responses has every answer
        # regardless.
        replies = f"replies.{new_id()[:8]}"
        missing = f"replies.{new_id()[:8]}"
        await create_topic(kafka.bootstrap_servers, replies)
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        ahead = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
        late, timely = _request(name, names, 3.0), _request(name, names, 3.0)
        mine, lost = _request(name, names, 3.0), _request(name, names, 3.0)
        await k.send(catalog.PREDICTIONS_ENRICHED, late, key="e", ce_deadline=past)
        await k.send(catalog.PREDICTIONS_ENRICHED, timely, key="e", ce_deadline=ahead)
        await k.send(catalog.PREDICTIONS_ENRICHED, mine, key="e", ce_replyto=replies)
        await k.send(catalog.PREDICTIONS_ENRICHED, lost, key="e", ce_replyto="not a topic")
        refused = {
            catalog.REGISTRY_EVENTS.name: "one of the platform's topics",
            f"mine-{new_id()[:8]}": "does not start with 'replies.'",
            missing: "does not exist",
        }
        elsewhere = {}
        for topic in refused:
            elsewhere[topic] = _request(name, names, 3.0)
            await k.send(catalog.PREDICTIONS_ENRICHED, elsewhere[topic], key="e", ce_replyto=topic)
        ids = {r.request_id for r in (late, timely, mine, lost, *elsewhere.values())}
        got = {
            a.request_id: a
            for a in await k.collect(
                catalog.PREDICTIONS_RESPONSES.name,
                lambda r: r.request_id in ids,
                len(ids),
                decode=catalog.PREDICTIONS_RESPONSES,
            )
        }
        assert got[late.request_id].status == "error"
        assert "deadline exceeded" in got[late.request_id].error
        assert all(got[r.request_id].status == "ok" for r in (timely, mine, lost))
        copy = await k.collect(replies, lambda r: True, 1, decode=catalog.PREDICTIONS_RESPONSES)
        assert copy[0].request_id == mine.request_id and copy[0].model_version == 2
        dead = await k.collect(
            catalog.PREDICTIONS_ENRICHED.dlq, lambda r: lost.request_id.encode() in r.value, 1
        )
        assert headers_of(dead[0])["dlq_stage"] == "reply"
        assert "not a valid topic name" in headers_of(dead[0])["dlq_error"]
        for topic, why in refused.items():
            request_id = elsewhere[topic].request_id.encode()
            (dead,) = await k.collect(
                catalog.PREDICTIONS_ENRICHED.dlq, lambda r, i=request_id: i in r.value, 1
            )
            assert why in headers_of(dead)["dlq_error"], headers_of(dead)["dlq_error"]
        assert missing not in await broker_topics(kafka.bootstrap_servers)

        # The HTTP edge answers with the same model.
        n = len(names)
        body = {
            "id": "q1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, n],
                    "datatype": "FP32",
                    "data": [[3.0] + [0.0] * (n - 1), [-3.0] + [0.0] * (n - 1)],
                }
            ],
        }
        r = await api.post(f"/v2/models/{name}/infer", json=body)
        assert r.status_code == 200
        out = {o["name"]: o for o in r.json()["outputs"]}
        assert out["label"]["data"] == ["legit", "fraud"] and r.json()["model_version"] == "2"
        assert out["probabilities"]["shape"] == [2, 2]
        assert (await api.post(f"/v2/models/{name}/versions/1/infer", json=body)).status_code == 404
        assert (await api.post(f"/v2/models/{name}/versions/2/infer", json=body)).status_code == 200
        bad_shape = body | {"inputs": [body["inputs"][0] | {"shape": [1, n]}]}
        r = await api.post(f"/v2/models/{name}/infer", json=bad_shape)
        assert r.status_code == 400 and "values for shape" in r.text
        assert (await api.get("/v2/models/nope")).status_code == 404
        meta = (await api.get(f"/v2/models/{name}")).json()
        assert meta["inputs"][0]["shape"] == [-1, n] and meta["versions"] == ["2"]
        assert (await api.get("/v2/health/ready")).json() == {"ready": True}


async def runtime_version(api, name, version) -> bool:
    return (await api.get("/models")).json().get(name, {}).get("version") == version


async def _failed(api, name, version) -> str | None:
    """Why serving could not load `version` of the champion of `name`, once it says so."""
    failed = (await api.get("/models")).json().get(name, {}).get("failed") or {}
    return failed.get("reason") if failed.get("version") == version else None


def _with_challenger(spec, mode: str, share: float = 0.1):
    serving = spec.policies.serving.model_copy(update={"challenger": mode, "canary_share": share})
    return spec.model_copy(
        update={"policies": spec.policies.model_copy(update={"serving": serving})}
    )


async def test_a_challenger_in_shadow_then_in_canary(kafka):
    spec = unique_project("chl")
    name, names = spec.name, spec.feature_names()
    models = {1: make_model(spec), 2: make_model(spec, flip=True)}  # v1: fraud, v2: legit
    runtime = bootstrap(
        ServingSettings(kafka_bootstrap_servers=kafka.bootstrap_servers), source=FakeSource(models)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(_with_challenger(spec, "shadow"))
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1, models[1]), key=name)
        await k.send(
            catalog.REGISTRY_EVENTS, _move(name, 2, models[2], alias="challenger"), key=name
        )
        await until(lambda: _loaded(api, name, {"version": 1, "challenger": 2}), 30, "both loaded")

        # Shadow: applications get the champion's answers; the challenger's go to their topic.
        requests = [_request(name, names, 3.0, f"e{i}") for i in range(40)]
        for r in requests:
            await k.send(catalog.PREDICTIONS_ENRICHED, r, key=r.entity_id)
        ids = {r.request_id for r in requests}
        answers = await _answers(k, catalog.PREDICTIONS_RESPONSES.name, ids)
        shadows = await _answers(k, catalog.PREDICTIONS_SHADOW.name, ids)
        assert {(a.model_version, a.label) for a in answers.values()} == {(1, "fraud")}
        assert {(a.model_version, a.label) for a in shadows.values()} == {(2, "legit")}

        # Canary: half the entities, always the same ones, get the challenger's answers, and
        # nothing goes to the shadow topic.
        await k.apply(_with_challenger(spec, "canary", 0.5), version=2)
        await until(lambda: runtime.projects.get(name).version == 2, 30, "the canary policy")
        entities = [f"e{i}" for i in range(100)] * 2  # every entity twice
        requests = [_request(name, names, 3.0, e) for e in entities]
        for r in requests:
            await k.send(catalog.PREDICTIONS_ENRICHED, r, key=r.entity_id)
        answers = await _answers(
            k, catalog.PREDICTIONS_RESPONSES.name, {r.request_id for r in requests}
        )
        version_of: dict[str, set[int]] = defaultdict(set)
        for r in requests:
            a = answers[r.request_id]
            assert a.status == "ok" and a.label == ("fraud" if a.model_version == 1 else "legit")
            version_of[r.entity_id].add(a.model_version)
        assert all(len(v) == 1 for v in version_of.values())  # sticky per entity
        canary = {e for e, v in version_of.items() if v == {2}}
        assert canary == {e for e in version_of if in_canary(e, 0.5)}
        assert 30 <= len(canary) <= 70
        assert not await _answers(
            k, catalog.PREDICTIONS_SHADOW.name, {r.request_id for r in requests}, expect=False
        )


async def _loaded(api, name, expected) -> bool:
    current = (await api.get("/models")).json().get(name, {})
    return (
        current.get("version") == expected["version"]
        and current.get("challenger", {}).get("version") == expected["challenger"]
    )


async def _answers(
    k, topic: str, ids: set[str], expect: bool = True
) -> dict[str, PredictionServed]:
    """The answers to `ids` on `topic`: all of them, or (expect=False) whatever is there now."""
    if not expect:
        present = {}
        for r in await k.snapshot(topic):
            try:
                answer = catalog.PREDICTIONS_RESPONSES.adapter.validate_json(r.value)
            except ValueError:
                continue  # another test's hostile input on the shared topic
            if answer.request_id in ids:
                present[answer.request_id] = answer
        return present
    found = await k.collect(
        topic, lambda a: a.request_id in ids, len(ids), decode=catalog.PREDICTIONS_RESPONSES
    )
    return {a.request_id: a for a in found}


# --- a version that does not load -----------------------------------------------------------------

GARBAGE = b"these bytes are not an ONNX model"


def _through(registry: httpx.AsyncClient) -> HttpModelSource:
    """Serving's own registry client, talking to the in-process registry's app."""
    source = HttpModelSource(str(registry.base_url))
    source.registry.client = registry
    return source


async def _register_and_promote(registry, project: str, body: dict) -> int:
    r = await registry.post(f"/projects/{project}/versions", json=body)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    move = {"version": version, "actor": "test", "reason": "test"}
    r = await registry.put(f"/projects/{project}/aliases/champion", json=move)
    assert r.status_code == 200, r.text
    return int(version)


async def _a_broken_b_fine(registry, api=None) -> tuple[ModelProject, ModelProject]:
    """Project A serves v1, then its champion moves to v2, a garbage artifact with a valid
    signature; project B's first version is promoted right after. With a serving (`api`), returns
    once it has loaded A's v1 before the move, B's v1, and marked A's v2 failed."""
    a, b = unique_project("bad"), unique_project("fine")
    for spec in (a, b):
        assert (await registry.post("/projects", json=spec.model_dump(mode="json"))).is_success
    model_a = make_model(a)
    await _register_and_promote(registry, a.name, model_a.registration("a-1"))
    if api is not None:
        await until(partial(runtime_version, api, a.name, 1), 30, "A v1 loaded")
    garbage = model_a.registration("a-2") | {"onnx_base64": base64.b64encode(GARBAGE).decode()}
    assert await _register_and_promote(registry, a.name, garbage) == 2
    await _register_and_promote(registry, b.name, make_model(b, flip=True).registration("b-1"))
    if api is not None:
        await until(partial(runtime_version, api, b.name, 1), 30, "B v1 loaded meanwhile")
        await until(partial(_failed, api, a.name, 2), 30, "A v2 marked failed")
    return a, b


async def _answer(k: Kafka, *requests: PredictionEnriched) -> dict[str, PredictionServed]:
    ids = {r.request_id for r in requests}
    found = await k.collect(
        catalog.PREDICTIONS_RESPONSES.name,
        lambda r: r.request_id in ids,
        len(ids),
        decode=catalog.PREDICTIONS_RESPONSES,
    )
    return {a.project: a for a in found}


def _registry_settings(kafka, database_url) -> RegistrySettings:
    return RegistrySettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )


async def test_a_version_that_does_not_load_stalls_no_one(kafka, database_url):
    async with (
        Kafka(kafka.bootstrap_servers) as k,
        running(registry_bootstrap(_registry_settings(kafka, database_url))) as registry,
    ):
        settings = ServingSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
        async with running(bootstrap(settings, source=_through(registry))) as api:
            a, b = await _a_broken_b_fine(registry, api)

            # A keeps answering with v1, and says why v2 is not served; B answers with its v1.
            models = (await api.get("/models")).json()
            assert models[a.name]["version"] == 1 and models[b.name]["version"] == 1
            assert models[a.name]["failed"]["version"] == 2
            assert "INVALID_PROTOBUF" in models[a.name]["failed"]["reason"]
            assert GARBAGE.decode() not in models[a.name]["failed"]["reason"]
            asked = [_request(s.name, s.feature_names(), 3.0) for s in (a, b)]
            for r in asked:
                await k.send(catalog.PREDICTIONS_ENRICHED, r, key=r.entity_id)
            answers = await _answer(k, *asked)
            assert (answers[a.name].status, answers[a.name].model_version) == ("ok", 1)
            assert answers[a.name].label == "fraud"  # v1's answer for x0 = 3
            assert (answers[b.name].status, answers[b.name].model_version) == ("ok", 1)
            assert (await api.get("/v2/health/ready")).json() == {"ready": True}

            # The failure is reported on serving.events, once, and the registry records it.
            reports = await k.collect(
                catalog.SERVING_EVENTS.name,
                lambda e: e.project == a.name,
                1,
                decode=catalog.SERVING_EVENTS,
            )
            report = reports[0]
            assert (report.version, report.alias) == (2, "champion")
            assert report.sha256 == hashlib.sha256(GARBAGE).hexdigest()
            assert "INVALID_PROTOBUF" in report.reason and "/" in report.replica

            async def recorded() -> list:
                info = await registry.get(f"/projects/{a.name}/versions/2")
                return info.json()["load_failures"]

            assert (await until(recorded, 20, "the registry records it"))[0]["alias"] == "champion"
            move = {"version": 2, "actor": "test", "reason": "try as challenger"}
            r = await registry.put(f"/projects/{a.name}/aliases/challenger", json=move)
            assert r.status_code == 409 and "failed to load" in r.text


async def test_a_restart_with_a_broken_champion_serves_the_version_before(kafka, database_url):
    """A restarted serving is a new process replaying the changelog, nothing else: one started
    after the moves meets A's champion on the broken v2 as one restarted then would (and the
    test spares the broker a second consumer group join, which costs Tansu seconds)."""
    async with (
        Kafka(kafka.bootstrap_servers) as k,
        running(registry_bootstrap(_registry_settings(kafka, database_url))) as registry,
    ):
        a, b = await _a_broken_b_fine(registry)
        # Requests wait in Kafka while serving is down; the restarted one takes them only once
        # it serves its champions, and does not wait for A's v2 until its time limit.
        asked = [_request(s.name, s.feature_names(), 3.0) for s in (a, b)]
        for r in asked:
            await k.send(catalog.PREDICTIONS_ENRICHED, r, key=r.entity_id)
        patient = ServingSettings(
            kafka_bootstrap_servers=kafka.bootstrap_servers, serving_startup_load_timeout_s=60.0
        )
        async with running(bootstrap(patient, source=_through(registry))) as api:
            began = time.monotonic()  # started: the group joined, the changelog being read

            async def ready() -> bool:
                return (await api.get("/v2/health/ready")).json()["ready"]

            await until(ready, 30, "the restarted serving ready")
            assert time.monotonic() - began < 10
            models = (await api.get("/models")).json()
            assert models[a.name]["version"] == 1 and models[a.name]["failed"]["version"] == 2
            assert models[b.name]["version"] == 1
            assert (await api.get("/healthz")).json()["status"] == "ok"
            answers = await _answer(k, *asked)
            assert (answers[a.name].status, answers[a.name].model_version) == ("ok", 1)
            assert (answers[b.name].status, answers[b.name].model_version) == ("ok", 1)
