"""A second, different project through the same seven service processes, driven the way a user
drives it: `conveyor up` in one terminal, `conveyor …` commands in another, Ctrl-C at the end.

Nothing in the services is specific to the demo: three classes, a random forest without scaling,
and promotion by approval. The trainer registers but must not promote; a person does, serving
follows, a rollback is recorded; and stopping `conveyor up` leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from conveyor_cli import infra
from conveyor_cli.kafka_io import Producer, tail
from conveyor_contracts import CONSOLE, catalog
from conveyor_contracts.events import PredictionRequested, PredictionServed
from conveyor_examples.wine.traffic import analyses
from tests.e2e.support import processes_with_env, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class Cli:
    """`conveyor` as a user runs it, against the stack `conveyor up` recorded in CONVEYOR_HOME."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor_cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        return json.loads(done.stdout)

    def as_user(self, token: str) -> Cli:
        return Cli(self.env | {"CONVEYOR_TOKEN": token})


def test_wine_with_approval_through_the_cli(kafka, postgres, tmp_path: Path):
    home = tmp_path / "conveyor"
    env = os.environ | {
        **kafka.client_env(),
        "DATABASE_URL": asyncio.run(infra.create_database(postgres.url, "wine")),
        "CONVEYOR_HOME": str(home),
    }
    # Three people's tokens made with `conveyor token issue` in the stack's token file before it
    # starts (`conveyor up` adds its own admin's and keeps them): two approvers, one scientist.
    env.pop("CONVEYOR_TOKEN", None)
    made = {
        name: Cli(env).json(
            "token", "issue", name, "--role", "scientist" if name == "dave" else "approver"
        )
        for name in ("alice", "carol", "dave")
    }
    tokens = {name: m["token"] for name, m in made.items()}
    up = subprocess.Popen(
        [sys.executable, "-m", "conveyor_cli.main", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        until(lambda: (home / "stack.json").exists() or up.poll() is not None, 120, "the stack")
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        # As long as `conveyor up` itself waits (Stack.up): seven processes importing their
        # libraries at once take a while on two busy cores.
        urls = until(lambda: _healthy(home), 120, "every service healthy")
        tokens["admin"] = (home / "token").read_text().strip()
        _play(Cli(env), urls, kafka.bootstrap_servers, tokens)
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            output, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # The test fails; what the stack left running goes too, not to load the machine
            # under the tests after this one.
            for pid in processes_with_env(str(home)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
    print(output)
    assert up.returncode == 0, output
    # It printed where each API and the broker listen, and stopped everything it started.
    assert kafka.bootstrap_servers in output
    assert all(f"{url}/docs" in output for name, url in urls.items() if name != CONSOLE)
    assert urls[CONSOLE] in output  # the console's own address, to open in a browser
    assert "stopped" in output
    assert processes_with_env(str(home)) == []
    assert not (home / "stack.json").exists()


def _healthy(home: Path) -> dict[str, str] | None:
    urls = json.loads((home / "stack.json").read_text())["services"]
    try:
        ok = all(httpx.get(u + "/healthz").json()["status"] == "ok" for u in urls.values())
    except httpx.HTTPError:
        return None
    return urls if ok else None


def _play(cli: Cli, url: dict[str, str], bootstrap: str, tokens: dict[str, str]) -> None:
    # The CLI calls as the stack's admin unless CONVEYOR_TOKEN names someone else.
    http = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert cli.json("apply", "wine")["project_version"] == 1
    until(
        lambda: all(
            "wine" in http.get(u + "/healthz").json()["projects"]
            for n, u in url.items()
            if n not in ("registry", CONSOLE)  # the console holds no project
        ),
        30,
        "every service to know the project",
    )
    rows = analyses(datetime(2026, 1, 1, tzinfo=UTC))
    records = [{"fields": fields | {"cultivar": truth}} for fields, truth in rows]
    r = http.post(url["ingest"] + "/projects/wine/records/batch", json={"records": records})
    assert r.status_code == 201 and len(r.json()["accepted"]) == 178, r.text
    until(
        lambda: http.get(url["trainer"] + "/projects/wine/examples").json().get("count") == 178,
        60,
        "178 training examples",
    )

    run = _train(cli, http, url["trainer"], "e2e")
    assert run["status"] == "succeeded", run
    assert not run["promoted"] and "awaits an approver" in run["reason"], run
    assert run["metrics"]["accuracy"] >= 0.8
    version = run["model_version"]
    assert http.get(url["registry"] + "/projects/wine/aliases").json() == {}
    listing = cli("versions", "wine")  # a table, for people
    assert listing.returncode == 0 and "ready" in listing.stdout and listing.stderr == ""

    # The trainer asked for approval; only an approver's token decides it.
    (request,) = cli.json("approvals", "wine")
    assert (request["requested_by"], request["version"]) == ("service:trainer", version)
    assert request["evidence"]["metrics"]["accuracy"] == run["metrics"]["accuracy"]
    nobody = cli.as_user("cvt_not-a-token")("approve", "wine", str(request["id"]))
    assert nobody.returncode == 1 and nobody.stderr.startswith("error: 401 unauthorized")
    no_role = cli.as_user(tokens["dave"])("approve", "wine", str(request["id"]))
    assert no_role.returncode == 1 and no_role.stderr.startswith("error: 403 forbidden")
    assert "may not decide" in no_role.stderr and no_role.stdout == ""
    decided = cli.as_user(tokens["alice"]).json(
        "approve", "wine", str(request["id"]), "--reason", "reviewed the holdout"
    )
    assert (decided["state"], decided["decided_by"]) == ("approved", "alice")
    assert http.get(url["registry"] + "/projects/wine/aliases").json() == {"champion": version}

    # The version can be rebuilt from what its lineage records, exactly.
    lineage = cli.json("lineage", "wine", str(version))
    assert lineage["training_set"]["rows"] == lineage["training_rows"] == 178
    again = cli.json("reproduce", "wine", str(version))
    assert again["reproduced"] and again["max_abs_diff"] <= 1e-6, again
    start, complete = cli.json("lineage", "wine", str(version), "--openlineage")
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert [i["name"] for i in complete["inputs"]] == [catalog.FEATURES_ROWS.name]
    until(
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

    _open_inference_protocol(url["serving"], version, answers, tokens["admin"])
    _metrics_per_version(http, url["serving"], version, len(answers))

    # Nothing to roll back to yet: a clear refusal, not a crash.
    refused = cli("rollback", "wine")
    assert refused.returncode == 1 and refused.stderr.startswith("error: 409 conflict"), refused

    # A second candidate, approved by another person, then rolled back: every move is recorded
    # with who and why, and serving follows the alias back.
    run = _train(cli, http, url["trainer"], "e2e again")
    newer = run["model_version"]
    assert run["status"] == "succeeded" and newer == version + 1, run
    # A scientist's promotion asks for approval; an approver's own moves at once.
    dave = cli.as_user(tokens["dave"])
    held = dave.json("promote", "wine", str(newer), "--reason", "second look")
    assert held["state"] == "pending" and held["requested_by"] == "dave"
    carol = cli.as_user(tokens["carol"])
    carol.json("promote", "wine", str(newer), "--reason", "second look")
    rolled = dave.json("rollback", "wine", "--reason", "paging at night")
    assert (rolled["from_version"], rolled["to_version"]) == (newer, version)
    history = cli.json("history", "wine")
    assert [(h["actor"], h["from_version"], h["to_version"]) for h in history] == [
        ("alice", None, version),
        ("carol", version, newer),
        ("dave", newer, version),
    ]
    assert history[0]["reason"] == (
        f"approved request {request['id']} of service:trainer: reviewed the holdout"
    )
    until(
        lambda: http.get(url["serving"] + "/models").json()["wine"]["version"] == version,
        30,
        "serving to follow the rollback",
    )


def _metrics_per_version(http: httpx.Client, base: str, version: int, answered: int) -> None:
    """Serving's Prometheus endpoint counts answers per project, version, role and status, and
    says which version each alias serves; the bus counts what it consumed."""
    text = http.get(base + "/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        found = [
            v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)
        ]
        assert found, f"no {name} {labels} in:\n{text[:3000]}"
        return sum(found)

    ok = {"project": "wine", "version": str(version), "role": "champion", "status": "ok"}
    assert value("conveyor_predictions_total", **ok) >= answered
    assert value("conveyor_model_version", project="wine", alias="champion") == version
    assert value("conveyor_messages_consumed_total", topic="predictions.enriched.v1") >= answered
    assert value("conveyor_batch_size_count", topic="predictions.enriched.v1") >= 1
    assert value("conveyor_consumer_lag", topic="predictions.enriched.v1") >= 0


def _train(cli: Cli, http: httpx.Client, trainer: str, reason: str) -> dict:
    """Start a run with `conveyor train` and wait until it finished."""
    run_id = cli.json("train", "wine", "--reason", reason)["run_id"]

    def finished() -> dict | None:
        run = http.get(f"{trainer}/runs/{run_id}").json()
        return run if run["status"] != "running" else None

    return until(finished, 60, f"run {run_id}")


def _open_inference_protocol(
    base: str, version: int, answers: list[PredictionServed], token: str
) -> None:
    """The HTTP edge, through a v2 client library written elsewhere (Triton's), answers the
    vectors the Kafka edge scored exactly as the Kafka edge did."""
    auth = {"Authorization": f"Bearer {token}"}
    client = InferenceServerClient(url=base.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("wine") and client.is_model_ready("wine", str(version))
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("wine")
    n = len(answers[0].values)
    assert meta["versions"] == [str(version)] and meta["inputs"][0]["shape"] == [-1, n]
    x = np.asarray([a.values for a in answers], dtype=np.float32)
    tensor = InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    packed = InferInput("input", list(x.shape), "FP32")
    packed.set_data_from_numpy(x)  # the binary tensor data extension
    outputs = [
        InferRequestedOutput("label", binary_data=False),
        InferRequestedOutput("probabilities", binary_data=False),
    ]
    for pinned, sent in ((None, tensor), (str(version), tensor), (None, packed)):
        kwargs = {"model_version": pinned} if pinned else {}
        # (a dict of its own each call: the client adds its binary-data header into it)
        result = client.infer("wine", [sent], outputs=outputs, headers=dict(auth), **kwargs)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [a.label for a in answers]
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (len(answers), 3)
        expected = np.asarray(
            [[a.probabilities[c] for c in ("class_0", "class_1", "class_2")] for a in answers]
        )
        assert np.abs(probabilities - expected).max() < 1e-6
    with pytest.raises(InferenceServerException, match="version 99 is not loaded"):
        client.infer("wine", [tensor], model_version="99", headers=dict(auth))
    wrong = InferInput("input", [1, n - 1], "FP32")
    wrong.set_data_from_numpy(x[:1, 1:], binary_data=False)
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("wine", [wrong], headers=dict(auth))


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
