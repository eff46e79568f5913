"""The Python client against the platform's services: in this process, each serving its HTTP API
on a loopback port, on the real broker and Postgres. What an application does with it: submit
records over HTTP and Kafka, train and wait, ask for predictions over Kafka on a reply topic of
its own (many at once), send feedback; and the errors it gets for what the platform refuses.

(Predictions over HTTP are tested against a faked serving in tests/unit/client.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor_cli import infra
from conveyor_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    Forbidden,
    NotFound,
    PredictionFailed,
    Refused,
    Unauthorized,
    Unavailable,
)
from conveyor_examples.fraud.traffic import FraudTraffic
from conveyor_feature.bootstrap import FeatureSettings
from conveyor_feature.bootstrap import bootstrap as feature
from conveyor_feedback.bootstrap import FeedbackSettings
from conveyor_feedback.bootstrap import bootstrap as feedback
from conveyor_ingest.bootstrap import IngestSettings
from conveyor_ingest.bootstrap import bootstrap as ingest
from conveyor_registry.bootstrap import RegistrySettings
from conveyor_registry.bootstrap import bootstrap as registry
from conveyor_runtime import Runtime
from conveyor_serving.bootstrap import ServingSettings
from conveyor_serving.bootstrap import bootstrap as serving
from conveyor_trainer.bootstrap import TrainerSettings
from conveyor_trainer.bootstrap import bootstrap as trainer
from tests.support import TOKENS, bearer, broker_topics, unique_project, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Platform:
    """Services started in this process, each serving its API on a free loopback port."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.urls: dict[str, str] = {}
        self.runtimes: dict[str, Runtime] = {}
        self._servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    def client(self, token: str = TOKENS["an-app"]) -> AsyncClient:
        return AsyncClient(
            services=self.urls, bootstrap_servers=self.bootstrap_servers, token=token
        )

    async def add(self, runtime: Runtime) -> None:
        self.runtimes[runtime.name] = runtime
        await runtime.start()
        config = uvicorn.Config(
            runtime.http, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._servers.append((server, asyncio.create_task(server.serve())))
        await until(lambda: server.started, 10, f"{runtime.name}'s HTTP server")
        port = server.servers[0].sockets[0].getsockname()[1]
        self.urls[runtime.name] = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self._servers))
        for runtime in reversed(self.runtimes.values()):
            await runtime.stop()


@pytest.fixture(scope="module")
async def platform(module_kafka, postgres) -> AsyncIterator[Platform]:
    """Registry, ingest, feature, trainer, serving and feedback on one database, as a stack
    runs them (the trainer calls the registry with a scientist's token, serving the feature
    service with an application's). Started side by side where one does not need another's
    address: most of a start is waiting on the broker's group joins."""
    kafka = module_kafka
    database_url = await infra.create_database(postgres.url, "conveyor_client")
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "database_url": database_url,
    }
    found = Platform(kafka.bootstrap_servers)
    try:
        await found.add(registry(RegistrySettings(**common)))
        common["registry_url"] = found.urls["registry"]
        trainer_settings = TrainerSettings(
            **common, trainer_poll_s=0.2, conveyor_token=TOKENS["dave"]
        )
        # Serving enriches HTTP requests through the feature service, as an application.
        await found.add(feature(FeatureSettings(**common)))
        serving_settings = ServingSettings(
            **common, feature_url=found.urls["feature"], conveyor_token=TOKENS["an-app"]
        )
        others = [
            ingest(IngestSettings(**common)),
            trainer(trainer_settings),
            serving(serving_settings),
            feedback(FeedbackSettings(**common)),
        ]
        started = await asyncio.gather(*map(found.add, others), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield found
    finally:
        await found.stop()


async def _applied(platform: Platform, prefix: str) -> str:
    """A fresh fraud project, applied through the registry and known to every service."""
    spec = unique_project(prefix)
    async with httpx.AsyncClient(base_url=platform.urls["registry"], headers=bearer("dave")) as r:
        answer = await r.post("/projects", json=spec.model_dump(mode="json"))
        assert answer.status_code == 201, answer.text
    for runtime in platform.runtimes.values():
        await until(lambda r=runtime: r.projects.get(spec.name), 30, f"{runtime.name} knows it")
    return spec.name


def _payments(n: int, customers: int = 400, seed: int = 1) -> list[tuple[dict[str, Any], str]]:
    history = FraudTraffic(seed, customers).history(
        n, datetime.now(UTC) - timedelta(minutes=1), timedelta(hours=6)
    )
    return [(p.fields, p.truth) for p in history]


async def test_an_application_submits_trains_predicts_and_labels(platform):
    name = await _applied(platform, "cli")
    labeled = [fields | {"outcome": truth} for fields, truth in _payments(400)]
    async with platform.client() as app, platform.client(TOKENS["dave"]) as scientist:
        # Records: half over HTTP (ingest judges each), half over Kafka (judged later); one
        # record that fails its contract is refused with the reason, the rest of its batch stored.
        broken = labeled[7] | {"amount": -5}
        over_http = await app.submit_records(
            name, [*labeled[:7], broken, *labeled[8:200]], batch_size=64
        )
        assert len(over_http.accepted) == 199 and over_http.duplicates == 0
        assert [(r.index, r.problems) for r in over_http.refused] == [
            (7, ["amount: -5 is below the minimum 0"])
        ]
        over_kafka = await app.submit_records(name, labeled[200:], via="kafka", batch_size=64)
        assert (over_kafka.queued, over_kafka.refused) == (200, [])
        stats = await until(
            lambda: _at_least(app.records_stats(name), "accepted", 399), 60, "399 records stored"
        )
        assert stats["rejected"] == 1
        again = await app.submit_records(name, labeled[:7])  # the same records again
        assert (again.accepted, again.duplicates) == ([], 7)

        # Training: started by a scientist, waited for; the auto-promoted version is served.
        async with httpx.AsyncClient(base_url=platform.urls["trainer"]) as t:
            await until(
                lambda: _at_least(_json(t.get(f"/projects/{name}/examples")), "count", 399),
                60,
                "the trainer has every example",
            )
        run_id = await scientist.train(name, "first model")
        run = await scientist.wait_until_trained(
            name, run_id=run_id, timeout=120, poll_interval=0.2
        )
        assert (run.run_id, run.status, run.model_version, run.promoted) == (
            run_id,
            "succeeded",
            1,
            True,
        )
        assert run.metrics["accuracy"] >= 0.6
        assert (await app.wait_until_trained(name, timeout=5)).run_id == run_id  # the newest
        assert await app.aliases(name) == {"champion": 1}
        assert (await app.version(name, 1))["lineage"]["trigger"]["reason"] == "first model"
        assert [h["to_version"] for h in await app.alias_history(name)] == [1]
        assert [e["eventType"] for e in await app.lineage(name, 1)] == ["START", "COMPLETE"]

        # Predictions over Kafka, answered on the client's own reply topic: once serving has
        # loaded the version, twenty at once, each answer the one to its own request.
        asking = [fields for fields, _ in _payments(20, customers=20, seed=2)]
        probe = asking[0]
        first = await until(lambda: _served(app.predict(name, probe, timeout=5)), 60, "an answer")
        assert first.model_version == 1 and first.label in ("legit", "fraud")
        reply_topic = app.reply_topic
        assert reply_topic is not None and reply_topic.startswith("replies.")
        ids = [f"q-{n}-{name}" for n in range(20)]
        answers = await asyncio.gather(
            *(
                app.predict(name, f, timeout=20, request_id=i)
                for f, i in zip(asking, ids, strict=True)
            )
        )
        assert [a.request_id for a in answers] == ids
        assert [a.entity_id for a in answers] == [f["customer"] for f in asking]
        assert all(a.status == "ok" and a.model_version == 1 for a in answers)
        assert all(abs(sum(a.probabilities.values()) - 1) < 1e-4 for a in answers)
        # Over HTTP: answered by the same model.
        over_http = await app.predict(name, asking[2], via="http", request_id=f"h-{name}")
        assert (over_http.request_id, over_http.entity_id) == (f"h-{name}", asking[2]["customer"])
        assert over_http.model_version == 1
        assert set(over_http.probabilities) == {"legit", "fraud"}
        with pytest.raises(Refused, match="amount") as refused:
            await app.predict(name, asking[2] | {"amount": "lots"}, via="http")
        assert refused.value.status == 422  # the data contract's refusal
        # The same from synchronous code (its own loop in its own thread, its own reply topic).
        with Client(
            services=platform.urls,
            bootstrap_servers=platform.bootstrap_servers,
            token=TOKENS["an-app"],
        ) as sync:
            answer = await asyncio.to_thread(sync.predict, name, asking[1], timeout=20)
            assert answer.entity_id == asking[1]["customer"] and answer.model_version == 1
            sync_topic = sync.reply_topic
            assert sync_topic not in (None, reply_topic)

        # Feedback: over HTTP (joined now or once feedback sees the prediction), then Kafka.
        truth = "fraud" if answers[0].label == "legit" else "legit"
        outcome = await app.send_feedback(name, answers[0].request_id, truth)
        assert outcome.status in ("recorded", "waiting")
        queued = await app.send_feedback(name, answers[1].request_id, "legit", via="kafka")
        assert queued.status == "queued"
        figures = await until(
            lambda: _at_least(app.feedback_stats(name), "labels", 2), 60, "both labels joined"
        )
        assert figures["labels"] == 2 and figures["waiting"] == 0
        async with httpx.AsyncClient(base_url=platform.urls["feedback"]) as f:
            history = (
                await f.get(f"/projects/{name}/predictions/{answers[0].request_id}/labels")
            ).json()
        assert [(h["label"], h["feedback_id"]) for h in history] == [(truth, outcome.feedback_id)]

    # Closing deleted both reply topics.
    topics = await broker_topics(platform.bootstrap_servers)
    assert reply_topic not in topics and sync_topic not in topics


async def test_what_the_platform_refuses_raises_a_documented_error(platform):
    name = await _applied(platform, "cliref")
    async with platform.client() as app:
        with pytest.raises(NotFound, match="ghost"):
            await app.project("ghost")
        with pytest.raises(NotFound, match="ghost"):
            await app.submit_records("ghost", [{"customer": "c-1"}])
        with pytest.raises(NotFound, match="ghost"):
            await app.predict("ghost", {"customer": "c-1"})  # its entity key is not known
        with pytest.raises(NotFound):
            await app.wait_until_trained("ghost", timeout=5)
        # A request the feature service refuses is answered with the reason, on the reply topic.
        fields = _payments(1)[0][0] | {"amount": "lots"}
        with pytest.raises(PredictionFailed, match="amount") as caught:
            await app.predict(name, fields, timeout=20)
        assert caught.value.prediction is not None and caught.value.prediction.project == name
        # No model yet: the answer says so.
        with pytest.raises(PredictionFailed, match="no model"):
            await app.predict(name, _payments(1)[0][0], timeout=20)
        with pytest.raises(DeadlineExceeded):
            await app.predict(name, _payments(1)[0][0], timeout=0.001)
        # Over HTTP, no model yet is a 503: worth retrying.
        with pytest.raises(Unavailable, match="no model") as unavailable:
            await app.predict(name, _payments(1)[0][0], via="http")
        assert unavailable.value.status == 503 and unavailable.value.retry_after == 2
        with pytest.raises(Forbidden, match="train"):
            await app.train(name)  # an application may not
    async with platform.client(token="not-a-token") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.submit_records(name, [{"customer": "c-1"}])
        with pytest.raises(Unauthorized):
            await stranger.send_feedback(name, "q-1", "legit")


async def _at_least(call: Any, key: str, n: int) -> dict[str, Any] | None:
    figures = await call
    return figures if figures.get(key, 0) >= n else None


async def _json(call: Any) -> Any:
    return (await call).json()


async def _served(call: Any) -> Any:
    """The answer, or None while no model is loaded yet."""
    try:
        return await call
    except PredictionFailed as exc:
        if "no model" in exc.reason:
            return None
        raise
