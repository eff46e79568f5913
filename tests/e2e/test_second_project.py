"""A second, different project through the same seven service processes: nothing in the services
is specific to the demo. Three classes, a random forest without scaling, and promotion by
approval: the trainer registers but must not promote; a person does, and serving follows."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from conveyor_cli import infra
from conveyor_cli.kafka_io import Producer, tail
from conveyor_cli.stack import Stack
from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionRequested, PredictionServed
from conveyor_examples import load_project
from conveyor_examples.wine.traffic import analyses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _until(probe, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_wine_with_approval(kafka, postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", asyncio.run(infra.create_database(postgres.url, "wine")))
    stack = Stack(state_dir=tmp_path / "conveyor")
    stack.up()
    try:
        _play(stack, kafka.bootstrap_servers)
    finally:
        stack.down()
    assert all(not s.alive() for s in stack.services.values())


def _play(stack: Stack, bootstrap: str) -> None:
    url = stack.urls
    http = httpx.Client(timeout=10)
    spec = load_project("wine")
    assert http.post(url["registry"] + "/projects", json=spec.model_dump(mode="json")).is_success
    _until(
        lambda: all(
            "wine" in http.get(u + "/healthz").json()["projects"]
            for n, u in url.items()
            if n != "registry"
        ),
        30,
        "every service",
    )
    rows = analyses(datetime(2026, 1, 1, tzinfo=UTC))
    records = [{"fields": fields | {"cultivar": truth}} for fields, truth in rows]
    r = http.post(url["ingest"] + "/projects/wine/records/batch", json={"records": records})
    assert r.status_code == 201 and len(r.json()["accepted"]) == 178, r.text
    _until(
        lambda: http.get(url["trainer"] + "/projects/wine/examples").json().get("count") == 178,
        60,
        "178 training examples",
    )

    run_id = http.post(url["trainer"] + "/projects/wine/runs", json={"reason": "e2e"}).json()[
        "run_id"
    ]
    run = _until(
        lambda: (
            (r := http.get(url["trainer"] + f"/runs/{run_id}").json())["status"] != "running" and r
        ),
        60,
        "the run",
    )
    assert run["status"] == "succeeded", run
    assert not run["promoted"] and "requires approval" in run["reason"]
    assert run["metrics"]["accuracy"] >= 0.8
    version = run["model_version"]
    assert http.get(url["registry"] + "/projects/wine/aliases").json() == {}

    # A person approves by promoting; serving follows the alias.
    move = {"version": version, "actor": "alice", "reason": "reviewed the holdout metrics"}
    assert http.put(url["registry"] + "/projects/wine/aliases/champion", json=move).is_success
    _until(
        lambda: (
            http.get(url["serving"] + "/models").json().get("wine", {}).get("version") == version
        ),
        30,
        "serving to load the approved version",
    )

    answers = asyncio.run(_predict(bootstrap, rows[:40]))
    assert all(a.status == "ok" and a.model_version == version for a in answers)
    assert all(set(a.probabilities) == {"class_0", "class_1", "class_2"} for a in answers)
    truth = {f["analysed_at"]: t for f, t in rows[:40]}
    correct = sum(a.label == truth[a.request_id] for a in answers)
    assert correct >= 32, f"{correct} of 40"  # rows it saw in training, among others


async def _predict(bootstrap: str, rows) -> list[PredictionServed]:
    async with Producer(bootstrap) as producer:
        for fields, _ in rows:
            request = PredictionRequested(
                project="wine", fields=fields, request_id=fields["analysed_at"]
            )
            await producer.send(catalog.PREDICTIONS_REQUESTS, request, key=fields["cellar"])
        await producer.flush()
    wanted = {f["analysed_at"] for f, _ in rows}
    found: dict[str, PredictionServed] = {}
    async with asyncio.timeout(60):
        async for answer in tail(bootstrap, catalog.PREDICTIONS_RESPONSES):
            if answer.project == "wine" and answer.request_id in wanted:
                found[answer.request_id] = answer
                if len(found) == len(wanted):
                    break
    return list(found.values())
