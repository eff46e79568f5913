"""The monitor on the real broker and Postgres: quiet on reference-like traffic, one episode on
shifted traffic (remembered across a restart), closed when the data recovers or a new version is
promoted, and every change posted to the project's webhook. The episode is a trace of its own
that links to sampled requests behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import asyncpg
import numpy as np
import pytest

from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import (
    AliasMoved,
    DriftDetected,
    DriftResolved,
    FeedbackRecorded,
    PredictionServed,
)
from conveyor_db import Database, DatabaseSettings, package_migrations
from conveyor_monitor.adapters.notifier import Notifier, notify
from conveyor_monitor.adapters.registry import Profiles
from conveyor_monitor.adapters.targets import Allowance
from conveyor_monitor.bootstrap import MonitorSettings, bootstrap
from tests.support import Kafka, Webhook, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration


# The monitor calibrates a new champion's thresholds (400 bootstrap pairs, in a thread) before
# judging anything; on a loaded two-core machine that took from a few seconds to over a minute.
CALIBRATION_S = 150


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


def _label(served: PredictionServed, feedback_id: str, label: str) -> FeedbackRecorded:
    """The true `label` of a prediction of v1, which answered "legit"."""
    return FeedbackRecorded(
        feedback_id=feedback_id,
        request_id=served.request_id,
        project=served.project,
        entity_id="e",
        model_version=1,
        feature_names=[],
        values=served.values,
        predicted_label="legit",
        label=label,
        correct=label == "legit",
        predicted_at=served.served_at,
        labeled_at=datetime.now(UTC),
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


def _with_webhook(spec: ModelProject, url: str, **policy: Any) -> ModelProject:
    """`spec` notifying `url` (with other drift `policy` settings), validated as applying it
    would."""
    drift = spec.policies.drift.model_copy(update={"notify": [url]} | policy)
    spec = spec.model_copy(update={"policies": spec.policies.model_copy(update={"drift": drift})})
    return ModelProject.model_validate(spec.model_dump(mode="json"))


# The tests' receivers listen on loopback, which a monitor refuses unless told otherwise.
LOOPBACK = ["127.0.0.1", "::1"]


async def test_one_episode_for_a_shift_it_survives_a_restart_recovers_and_resolves(
    kafka, database_url, spans
):
    settings = MonitorSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        notify_interval_s=0.2,
        monitor_webhook_allowed_hosts=LOOPBACK,
    )
    rng = np.random.default_rng(5)
    i = 0

    async def send(k: Kafka, windows: int, shift: float, traced: dict[str, str] | None = None):
        nonlocal i
        for _ in range(windows * window):
            values = rng.normal(size=len(names))
            values[0] += shift
            trace_id, span_id = f"{i + 1:032x}", f"{i + 1:016x}"
            if traced is not None:
                traced[trace_id] = span_id
            await k.send(
                catalog.PREDICTIONS_RESPONSES,
                _served(name, i, values.tolist()),
                key=str(i),
                traceparent=f"00-{trace_id}-{span_id}-01",
            )
            i += 1

    async with Webhook(fail_first=1) as hook, Kafka(kafka.bootstrap_servers) as k:
        # the window rule alone: k of n windows, each tested on its own
        spec = _with_webhook(unique_project("mon"), hook.url, sequential=False)
        name, names = spec.name, spec.feature_names()
        window = spec.policies.drift.window
        assert isinstance(window, int)
        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1), key=name)

        # First run: three quiet windows, then one of feature 0 shifted by 1.5 std. One drifted
        # window of the k=2 needed: no episode yet.
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            calibration = await _calibration(api, name)
            assert calibration["window"] == window and 0 < calibration["alpha"] <= 0.001
            await send(k, 3, 0.0)
            await until(lambda: _windows(api, name, 3), 30, "three windows")
            overview = (await api.get(f"/projects/{name}/drift")).json()
            assert overview["open_episode"] is None
            assert not any(w["drifted"] for w in overview["windows"])
            await send(k, 1, 1.5)
            await until(lambda: _windows(api, name, 4), 30, "the drifted window")
            assert (await api.get(f"/projects/{name}/drift")).json()["open_episode"] is None

        # A restarted monitor remembers that window: one more drifted window opens the episode.
        requests: dict[str, str] = {}  # trace id → span id of the span that served each request
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            await send(k, 1, 1.5, requests)
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
            assert len(episode.window_ids) == 2 and episode.alpha == calibration["alpha"]

            # The episode's span: a trace of its own, carried by the event, linked to requests of
            # the drifted windows (sampled ones: all of this window's are).
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
            await send(k, 1, 1.5)
            await until(lambda: _windows(api, name, 6), 30, "six windows")
            episodes = (await api.get(f"/projects/{name}/drift")).json()["episodes"]
            assert len(episodes) == 1  # one episode, however many drifted windows follow

            # The data comes back: `recover` clean windows close the episode.
            await send(k, spec.policies.drift.recover, 0.0)
            events = await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda e: e.project == name,
                2,
                decode=catalog.MONITOR_DRIFT,
            )
            assert isinstance(events[1], DriftResolved)
            assert events[1].episode_id == episode.episode_id
            assert events[1].reason.startswith("recovered")

            # The webhook heard both, though it refused the first attempt.
            await until(lambda: len(hook.received) == 2, 30, "both notifications")
            assert len(hook.attempts) == 3
            assert [body["type"] for _, body in hook.received] == [
                "drift_detected",
                "drift_resolved",
            ]
            assert [h["idempotency-key"] for h, _ in hook.received] == [
                f"{episode.episode_id}:drift_detected",
                f"{episode.episode_id}:drift_resolved",
            ]

            # Drift again, then a new version is promoted: its episode resolves with it.
            await send(k, 2, 1.5)
            events = await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda e: e.project == name,
                3,
                decode=catalog.MONITOR_DRIFT,
            )
            assert isinstance(events[2], DriftDetected)
            await k.send(catalog.REGISTRY_EVENTS, _move(name, 2), key=name)
            events = await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda e: e.project == name,
                4,
                decode=catalog.MONITOR_DRIFT,
            )
            assert isinstance(events[3], DriftResolved)
            assert events[3].episode_id == events[2].episode_id
            assert events[3].reason == "version 2 promoted"
            await until(lambda: len(hook.received) == 4, 30, "the promotion's notification")


async def test_sequential_evidence_accumulates_survives_a_restart_and_opens_one_episode(
    kafka, database_url
):
    # A 0.3 std shift of one feature: too small for a window of 200 tested alone, found by the
    # evidence the sequential detector accumulates over steps of 50.
    settings = MonitorSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )
    rng = np.random.default_rng(8)
    i = 0

    async def send(k: Kafka, rows: int, shift: float) -> None:
        nonlocal i
        for _ in range(rows):
            values = rng.normal(size=len(names))
            values[0] += shift
            await k.send(
                catalog.PREDICTIONS_RESPONSES, _served(name, i, values.tolist()), key=str(i)
            )
            i += 1

    async def sequence(api) -> dict[str, Any]:
        overview = (await api.get(f"/projects/{name}/drift")).json()
        return next((s["evidence"] for s in overview["sequential"] if s["kind"] == "data"), {})

    async with Kafka(kafka.bootstrap_servers) as k:
        spec = unique_project("seq")
        name, names = spec.name, spec.feature_names()
        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1), key=name)
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            calibration = await _calibration(api, name)
            threshold = calibration["sequential"]["threshold"]
            assert calibration["sequential"]["step"] == 50 and 8 < threshold < 30
            assert calibration["labels"]["threshold"] > 5
            await send(k, 1000, 0.0)
            await until(lambda: _steps(api, name, 20), 60, "twenty quiet steps")
            quiet = await sequence(api)
            assert quiet["statistic"] < threshold and not quiet["held"]
            await send(k, 100, 0.3)
            await until(lambda: _steps(api, name, 22), 60, "two shifted steps")
            before = await sequence(api)
            assert before["statistic"] < threshold
            assert (await api.get(f"/projects/{name}/drift")).json()["open_episode"] is None

        # A restarted monitor carries the evidence on: nothing is forgotten, nothing re-judged.
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            assert await sequence(api) == before
            await send(k, 3000, 0.3)
            events = await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda e: e.project == name,
                1,
                decode=catalog.MONITOR_DRIFT,
            )
            episode = events[0]
            assert isinstance(episode, DriftDetected) and episode.kind == "data"
            assert [f.feature for f in episode.features if f.drifted] == [names[0]]
            con = await asyncpg.connect(database_url)
            try:
                opened_by = await con.fetch(
                    "SELECT detector, drifted FROM monitor.windows WHERE id = ANY($1::bigint[])",
                    episode.window_ids,
                )
            finally:
                await con.close()
            assert [(w["detector"], w["drifted"]) for w in opened_by] == [("sequential", True)]
            leader = episode.features[0]
            assert leader.statistic >= threshold and leader.p_value == pytest.approx(
                np.exp(-leader.statistic)
            )
            await until(lambda: _steps(api, name, 22 + 60), 120, "every step judged")
            after = await sequence(api)
            assert after["held"]  # the episode holds the baseline: no second alarm
            episodes = (await api.get(f"/projects/{name}/drift")).json()["episodes"]
            assert len(episodes) == 1


async def _steps(api, name, n):
    overview = (await api.get(f"/projects/{name}/drift")).json()
    data = [s for s in overview["sequential"] if s["kind"] == "data"]
    return bool(data) and data[0]["evidence"].get("steps", 0) >= n


async def _calibration(api, name) -> dict[str, Any]:
    """The calibration of version 1's reference, once the monitor has made it."""
    await until(lambda: _reference(api, name, 1), CALIBRATION_S, "the reference")
    return (await api.get(f"/projects/{name}/drift")).json()["reference"]["calibration"]


async def _reference(api, name, version):
    ref = (await api.get(f"/projects/{name}/drift")).json()["reference"]
    return ref is not None and ref["model_version"] == version


async def _windows(api, name, n):
    return len((await api.get(f"/projects/{name}/drift")).json()["windows"]) >= n


async def test_performance_windows_are_one_sided_and_report_label_coverage(kafka, database_url):
    # The window rule alone: this is about its windows, and the sequential label detector may
    # otherwise open the episode first (its events carry no window accuracy).
    base = unique_project("mon")
    drift = base.policies.drift.model_copy(update={"sequential": False})
    spec = ModelProject.model_validate(
        base.model_copy(
            update={"policies": base.policies.model_copy(update={"drift": drift})}
        ).model_dump(mode="json")
    )
    name, names = spec.name, spec.feature_names()
    window = spec.policies.drift.window
    assert isinstance(window, int)
    settings = MonitorSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )
    rng = np.random.default_rng(9)
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1), key=name)
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            await until(lambda: _reference(api, name, 1), CALIBRATION_S, "the reference")
            # Three windows of predictions, half of them labeled: first better than the
            # reference's 0.9 (nothing), then two windows at 0.7 (a performance episode).
            for i in range(3 * window * 2):
                served = _served(name, i, rng.normal(size=len(names)).tolist())
                await k.send(catalog.PREDICTIONS_RESPONSES, served, key=str(i))
                if i % 2:
                    continue
                share = 0.98 if i < window * 2 else 0.7
                truth = "legit" if rng.random() < share else "fraud"
                label = _label(served, f"{name}-f{i}", truth)
                await k.send(catalog.FEEDBACK_RECORDED, label, key=served.request_id)
            events = await k.collect(
                catalog.MONITOR_DRIFT.name,
                lambda e: e.project == name,
                1,
                decode=catalog.MONITOR_DRIFT,
            )
            assert isinstance(events[0], DriftDetected) and events[0].kind == "performance"
            assert events[0].accuracy is not None and events[0].accuracy < 0.8
            assert events[0].reference_accuracy == 0.9
            overview = (await api.get(f"/projects/{name}/drift")).json()
            perf = [w for w in overview["windows"] if w["kind"] == "performance"][::-1]
            assert [w["drifted"] for w in perf[:3]] == [False, True, True]
            assert perf[0]["evidence"]["accuracy"] > 0.9  # better than the reference: no alarm
            for w in perf[:3]:
                assert 0.3 < w["evidence"]["label_coverage"] <= 1.0  # half were labeled


@asynccontextmanager
async def _judging_v1(kafka, database_url) -> AsyncIterator[tuple[Kafka, Any, str, list[str]]]:
    """A monitor judging v1 of a fresh project: (kafka client, monitor's API, name, features)."""
    spec = unique_project("mon")
    name, names = spec.name, spec.feature_names()
    settings = MonitorSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        await k.send(catalog.REGISTRY_EVENTS, _move(name, 1), key=name)
        async with running(bootstrap(settings, profiles=FakeProfiles(names))) as api:
            await until(lambda: _reference(api, name, 1), CALIBRATION_S, "the reference")
            yield k, api, name, names


async def test_a_shadow_challenger_is_compared_with_the_champion_on_the_same_requests(
    kafka, database_url
):
    async with _judging_v1(kafka, database_url) as (k, api, name, names):
        for i in range(100):
            values = [0.0] * len(names)
            champion = _served(name, i, values)  # answers "legit"
            challenger = champion.model_copy(
                update={"model_version": 2, "label": "fraud" if i % 2 == 0 else "legit"}
            )
            await k.send(catalog.PREDICTIONS_RESPONSES, champion, key=champion.request_id)
            await k.send(catalog.PREDICTIONS_SHADOW, challenger, key=champion.request_id)
            if i < 50:  # half are labeled; the truth is what the challenger said
                truth = challenger.label
                assert truth is not None
                label = _label(champion, f"{name}-f{i}", truth)
                await k.send(catalog.FEEDBACK_RECORDED, label, key=champion.request_id)

        async def compared() -> dict | None:
            rows = (await api.get(f"/projects/{name}/compare")).json()
            done = rows and rows[0]["requests"] == 100 and rows[0]["labeled"] == 50
            return rows[0] if done else None

        row = await until(compared, 30, "all requests compared")
        assert (row["challenger"], row["champion"]) == (2, 1)
        assert row["agreement"] == pytest.approx(0.5)
        assert row["challenger_accuracy"] == pytest.approx(1.0)
        assert row["champion_accuracy"] == pytest.approx(0.5)


async def test_a_canary_is_compared_with_the_champion_version_by_version(kafka, database_url):
    """In canary mode both versions answer (different entities): the monitor keeps requests,
    labels and accuracy per version."""
    async with _judging_v1(kafka, database_url) as (k, api, name, names):
        for i in range(80):
            answer = _served(name, i, [0.0] * len(names))  # answers "legit"
            if i % 4 == 0:  # a quarter of the entities go to the canary, v2
                answer = answer.model_copy(update={"model_version": 2, "label": "fraud"})
            await k.send(catalog.PREDICTIONS_RESPONSES, answer, key=answer.request_id)
            truth = "fraud" if i % 8 == 0 else "legit"  # v2 right half the time, v1 always
            label = _label(answer, f"{name}-f{i}", truth)
            await k.send(catalog.FEEDBACK_RECORDED, label, key=answer.request_id)

        async def versions() -> list[dict] | None:
            rows = (await api.get(f"/projects/{name}/versions")).json()
            done = sum(r["labeled"] for r in rows) == 80
            return rows if done else None

        rows = await until(versions, 30, "every answer labeled")
        assert [(r["version"], r["requests"], r["labeled"]) for r in rows] == [
            (1, 60, 60),
            (2, 20, 20),
        ]
        assert rows[0]["accuracy"] == pytest.approx(1.0)
        assert rows[1]["accuracy"] == pytest.approx(0.5)
        recent = (await api.get(f"/projects/{name}/versions", params={"minutes": 5})).json()
        assert [r["requests"] for r in recent] == [60, 20]
        assert (await api.get(f"/projects/{name}/versions?minutes=0")).status_code == 422


# --- webhook targets ------------------------------------------------------------------------------


def _opened(project: str) -> DriftDetected:
    now = datetime.now(UTC)
    return DriftDetected(
        episode_id=f"{project}-e1",
        project=project,
        model_version=1,
        kind="data",
        opened_at=now,
        onset_at=now,
        windows=2,
    )


@asynccontextmanager
async def _queued(database_url: str, url: str) -> AsyncIterator[tuple[Database, DriftDetected]]:
    """The monitor's database holding one opened episode of a project that notifies `url`, queued
    as the monitor queues it (the episode itself is the business of the tests above)."""
    spec = _with_webhook(unique_project("hook"), url)
    db = Database(
        DatabaseSettings(database_url=database_url),
        "monitor",
        package_migrations("conveyor_monitor"),
        outbox=True,
    )
    await db.connect()
    try:
        event = _opened(spec.name)
        async with db.pool.acquire() as con:
            await notify(con, spec.policies.drift.notify, event)
        yield db, event
    finally:
        await db.close()


async def _notification(db: Database) -> dict[str, Any]:
    row = await db.pool.fetchrow(
        "SELECT attempts, delivered_at, failed_at, last_error, next_at > now() AS waits "
        "FROM notifications"
    )
    assert row is not None
    return dict(row)


async def test_a_webhook_on_loopback_is_refused_without_an_allowance_and_not_retried(
    database_url,
):
    async with Webhook() as hook, _queued(database_url, hook.url) as (db, _):
        notifier = Notifier(db)
        try:
            assert await notifier.deliver() == 0
            n = await _notification(db)
            assert n["failed_at"] is not None and n["delivered_at"] is None
            assert n["attempts"] == 1
            assert n["last_error"] in {
                f"refused: {a} is a loopback address; allow it with MONITOR_WEBHOOK_ALLOWED_HOSTS"
                for a in LOOPBACK
            }
            assert await notifier.deliver() == 0  # failed for good: not tried again
            assert (await _notification(db))["attempts"] == 1
        finally:
            await notifier.close()
        assert hook.attempts == []  # the receiver heard nothing


async def test_a_webhook_on_an_allowed_address_is_delivered_and_its_reply_is_not_kept(
    database_url,
):
    async with Webhook(fail_first=1) as hook, _queued(database_url, hook.url) as (db, event):
        notifier = Notifier(db, allowance=Allowance.parse(LOOPBACK))
        try:
            # The receiver's first answer is a 503 with a body: only the status is kept.
            assert await notifier.deliver() == 0
            n = await _notification(db)
            assert n["last_error"] == "HTTP 503"
            assert n["failed_at"] is None and n["waits"]
            await db.pool.execute("UPDATE notifications SET next_at = now()")
            assert await notifier.deliver() == 1
            n = await _notification(db)
            assert n["delivered_at"] is not None and n["last_error"] is None
        finally:
            await notifier.close()
        assert len(hook.attempts) == 2 and len(hook.received) == 1
        headers, body = hook.received[0]
        assert body["episode_id"] == event.episode_id
        assert headers["idempotency-key"] == f"{event.episode_id}:drift_detected"
        assert headers["host"] == f"localhost:{hook.port}"  # by address, for the name


async def test_a_webhook_goes_to_the_address_that_was_checked(database_url):
    """The POST goes to the address the check saw, never to a second resolution: a name that
    only the monitor's resolver knows reaches the receiver, and the same answer for a name that
    is not allowed stops it, however the name would resolve later."""
    loopback = ip_address("127.0.0.1")

    async def resolver(host: str, port: int) -> list[IPv4Address | IPv6Address]:
        assert host == "receiver.invalid"  # a name no DNS answers for
        return [loopback]

    async with Webhook() as hook:
        url = f"http://receiver.invalid:{hook.port}/hook"
        async with _queued(database_url, url) as (db, _):
            notifier = Notifier(db, allowance=Allowance.parse([]), resolver=resolver)
            try:
                assert await notifier.deliver() == 0
                assert (await _notification(db))["last_error"] == (
                    "refused: 127.0.0.1 is a loopback address; "
                    "allow it with MONITOR_WEBHOOK_ALLOWED_HOSTS"
                )
            finally:
                await notifier.close()
            assert hook.attempts == []
        async with _queued(database_url, url) as (db, _):
            await db.pool.execute("DELETE FROM notifications WHERE failed_at IS NOT NULL")
            allowed = Allowance.parse(["receiver.invalid"])
            notifier = Notifier(db, allowance=allowed, resolver=resolver)
            try:
                assert await notifier.deliver() == 1
            finally:
                await notifier.close()
        assert [h["host"] for h, _ in hook.received] == [f"receiver.invalid:{hook.port}"]


async def test_a_receiver_that_cannot_be_reached_is_retried_with_the_error_in_short(
    database_url,
):
    async with Webhook() as closed:
        url = closed.url  # a port nobody listens on once the receiver has stopped
    async with _queued(database_url, url) as (db, _):
        notifier = Notifier(db, allowance=Allowance.parse(LOOPBACK))
        try:
            assert await notifier.deliver() == 0
        finally:
            await notifier.close()
        n = await _notification(db)
        assert n["failed_at"] is None and n["waits"] and n["attempts"] == 1
        assert n["last_error"].startswith("ConnectError: ") and len(n["last_error"]) <= 200
