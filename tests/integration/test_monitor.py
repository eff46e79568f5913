"""The monitor on the real broker and Postgres: quiet on reference-like traffic, one episode on
shifted traffic, resolved when a new version is promoted. The episode is a trace of its own that
links to sampled requests behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import AliasMoved, DriftDetected, DriftResolved, PredictionServed
from conveyor_monitor.adapters.registry import Profiles
from conveyor_monitor.bootstrap import MonitorSettings, bootstrap
from tests.support import Kafka, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration


class FakeProfiles(Profiles):
    def __init__(self, names: list[str]) -> None:
        rng = np.random.default_rng(0)
        self.sample = rng.normal(size=(1000, len(names))).tolist()
        self.names = names

    async def profile(self, project: str, version: int) -> dict[str, Any]:
        return {"feature_names": self.names, "sample": self.sample, "holdout_accuracy": 0.9}


def _served(project: str, i: int, values: list[float], version: int = 1) -> PredictionServed:
    now = datetime.now(UTC)
    return PredictionServed(
        request_id=f"{project}-{i}",
        project=project,
        entity_id="e",
        status="ok",
        model_version=version,
        label="legit",
        feature_names=[],
        values=values,
        requested_at=now,
        served_at=now,
        latency_ms=1.0,
    )


def _move(project: str, version: int) -> AliasMoved:
    return AliasMoved(
        project=project,
        alias="champion",
        from_version=version - 1 or None,
        to_version=version,
        sha256="x",
        actor="test",
        reason="test",
    )


async def test_one_episode_for_a_shift_and_it_resolves(kafka, database_url, spans):
    spec = unique_project("mon")
    name, names = spec.name, spec.feature_names()
    window = spec.policies.drift.window
    runtime = bootstrap(
        MonitorSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url),
        profiles=FakeProfiles(names),
    )
    rng = np.random.default_rng(5)
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1), key=name)
        await until(lambda: _reference(api, name, 1), 30, "the reference")
        i = 0
        for _ in range(3 * window):  # reference-like traffic: three quiet windows
            await k.send(
                catalog.PREDICTIONS_RESPONSES,
                _served(name, i, rng.normal(size=len(names)).tolist()),
                key=str(i),
            )
            i += 1
        await until(lambda: _windows(api, name, 3), 30, "three windows")
        overview = (await api.get(f"/projects/{name}/drift")).json()
        assert overview["open_episode"] is None
        assert not any(w["drifted"] for w in overview["windows"])
        requests = {}  # trace id → span id of the (sampled) span that served each request
        for _ in range(3 * window):  # feature 0 shifts by 1.5 standard deviations
            values = rng.normal(size=len(names))
            values[0] += 1.5
            trace_id, span_id = f"{i + 1:032x}", f"{i + 1:016x}"
            requests[trace_id] = span_id
            await k.send(
                catalog.PREDICTIONS_RESPONSES,
                _served(name, i, values.tolist()),
                key=str(i),
                traceparent=f"00-{trace_id}-{span_id}-01",
            )
            i += 1
        record = (
            await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda r: catalog.MONITOR_DRIFT.adapter.validate_json(r.value).project == name,
                1,
            )
        )[0]
        episode = catalog.MONITOR_DRIFT.adapter.validate_json(record.value)
        assert isinstance(episode, DriftDetected) and episode.kind == "data"
        assert [f.feature for f in episode.features if f.drifted] == [names[0]]

        # The episode's span: a trace of its own, carried by the event, linked to requests of
        # the drifted windows (and only to those).
        opened = [s for s in spans.get_finished_spans() if s.name == "drift episode"]
        assert len(opened) == 1 and opened[0].parent is None
        span = opened[0]
        assert span.attributes["conveyor.episode_id"] == episode.episode_id
        links = {
            format(x.context.trace_id, "032x"): format(x.context.span_id, "016x")
            for x in span.links
        }
        assert 0 < len(links) <= 16 and all(requests.get(t) == s for t, s in links.items())
        carried = headers_of(record)["traceparent"].split("-")
        assert carried[1:3] == [
            format(span.context.trace_id, "032x"),
            format(span.context.span_id, "016x"),
        ]
        await until(lambda: _windows(api, name, 6), 30, "six windows")
        episodes = (await api.get(f"/projects/{name}/drift")).json()["episodes"]
        assert len(episodes) == 1  # one episode, however many drifted windows follow

        await k.send(catalog.REGISTRY_EVENTS, _move(name, 2), key=name)
        events = await k.collect(
            catalog.MONITOR_DRIFT.name, lambda e: e.project == name, 2, decode=catalog.MONITOR_DRIFT
        )
        assert isinstance(events[1], DriftResolved)
        assert events[1].episode_id == episode.episode_id
        assert events[1].reason == "version 2 promoted"


async def _reference(api, name, version):
    ref = (await api.get(f"/projects/{name}/drift")).json()["reference"]
    return ref is not None and ref["model_version"] == version


async def _windows(api, name, n):
    return len((await api.get(f"/projects/{name}/drift")).json()["windows"]) >= n
