"""`conveyor train --wait` against a real trainer (real broker and Postgres, the registry faked
at the trainer's adapter): the command a person types, in a process of its own, finds the trainer
through the stack's state file and follows the run to its end. `conveyor status` against a real
feedback service, whose consumer group's lag it reads from the broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from conveyor_cli.app import ExitCode
from conveyor_contracts import catalog
from conveyor_examples.fraud.traffic import FraudTraffic
from conveyor_feedback.bootstrap import FeedbackSettings
from conveyor_feedback.bootstrap import bootstrap as feedback
from conveyor_runtime import Runtime
from tests.integration.test_trainer import _labeled_rows, _trainer
from tests.support import TOKENS, Kafka, Listener, running, unique_project, until

pytestmark = pytest.mark.integration


async def _conveyor(home: Path, token: str, *argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not re.fullmatch(r"CONVEYOR_[A-Z]+_URL", k)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_cli.main",
        *argv,
        env=env | {"CONVEYOR_HOME": str(home), "CONVEYOR_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_train_wait_follows_a_real_run(kafka, database_url, tmp_path):
    spec, registry, runtime = _trainer(kafka, database_url, "cli")
    empty = unique_project("cli-empty")  # a project with no examples: its run is skipped
    name = spec.name
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await k.apply(empty)
        await until(lambda: runtime.projects.get(name) and runtime.projects.get(empty.name))
        await _labeled_rows(
            k, spec, FraudTraffic(seed=5), datetime(2026, 4, 1, tzinfo=UTC), range(400)
        )

        async def examples() -> bool:
            return (await api.get(f"/projects/{name}/examples")).json().get("count") == 400

        await until(examples, 30, "400 examples")
        async with Listener(runtime.http) as trainer:
            trainer_url = trainer.url
            home = tmp_path / "conveyor"
            home.mkdir()
            state = {"services": {"trainer": trainer_url}, "broker": {}}
            (home / "stack.json").write_text(json.dumps(state))

            # A scientist trains and follows the run: JSON of the finished run on stdout,
            # its states on stderr, exit 0.
            code, out, err = await _conveyor(
                home, TOKENS["dave"], "train", name, "--wait", "--json", "-r", "from the CLI test"
            )
            assert code == 0, err
            run = json.loads(out)
            assert run["status"] == "succeeded" and run["model_version"] == 1, run
            assert run["promoted"] and registry.champion_version == 1
            assert run["trigger"] == "dave: from the CLI test"
            assert run["metrics"]["accuracy"] > 0.8
            states = [re.sub(r"^\s*\d+\.\ds  ", "", line) for line in err.splitlines()]
            assert states[-1].startswith(f"run {run['run_id'][:8]} succeeded: v1 and promoted")

            # A run that ends without a model: exit 1 with the trainer's reason.
            code, out, err = await _conveyor(home, TOKENS["dave"], "train", empty.name, "--wait")
            assert code == 1
            assert re.search(r"^status\s+skipped$", out, re.M)
            assert re.search(r"^error: run \w{8} skipped: 0 labeled rows; at least 50", err, re.M)
            assert "Traceback" not in err

            # The trainer's refusals, as one line each.
            code, out, err = await _conveyor(home, TOKENS["a-viewer"], "train", name, "--wait")
            assert (code, out) == (1, "")
            assert err.startswith("error: 403 forbidden: a-viewer (viewer) may not train")
            code, _, err = await _conveyor(home, TOKENS["dave"], "train", "no-such-project")
            assert code == 1 and err == "error: 404 not found: unknown project 'no-such-project'\n"

        # The trainer gone: nothing answers where the state file says.
        code, _, err = await _conveyor(home, TOKENS["dave"], "runs", name)
        assert code == 3
        assert err.startswith("error: no stack at 127.0.0.1:") and "conveyor up" in err


async def test_ingest_loads_a_file_and_says_what_became_of_each_record(
    kafka, database_url, tmp_path
):
    """`conveyor ingest` against a real registry and ingest: a CSV typed by the project's
    schema, JSON Lines, a progress bar on stderr and a summary of accepted, duplicate and
    refused records with the reasons and lines; exit 1 when any was refused."""
    from conveyor_ingest.bootstrap import IngestSettings
    from conveyor_ingest.bootstrap import bootstrap as ingest_bootstrap
    from conveyor_registry.bootstrap import RegistrySettings
    from conveyor_registry.bootstrap import bootstrap as registry_bootstrap

    common = {"kafka_bootstrap_servers": kafka.bootstrap_servers, "database_url": database_url}
    spec = unique_project("cli-ingest")
    name = spec.name
    registry = registry_bootstrap(RegistrySettings(**common))
    ingest = ingest_bootstrap(IngestSettings(**common))
    async with (
        running(registry) as api,
        running(ingest) as ingest_api,
        Listener(registry.http) as registry_at,
        Listener(ingest.http) as ingest_at,
    ):
        r = await api.post("/projects", json=spec.model_dump(mode="json"))
        assert r.status_code == 201, r.text
        await until(lambda: ingest.projects.get(name), 30, "ingest to know the project")
        home = tmp_path / "conveyor"
        home.mkdir()
        services = {"registry": registry_at.url, "ingest": ingest_at.url}
        (home / "stack.json").write_text(json.dumps({"services": services, "broker": {}}))

        csv = tmp_path / "payments.csv"
        csv.write_text(
            "record_id,customer,ts,amount,merchant,hour,foreign,outcome\n"
            "p-1,c-1,2026-12-01T10:00:00+00:00,12.5,fuel,10,false,legit\n"
            "p-2,c-2,2026-12-01T11:00:00+00:00,900,online,23,true,fraud\n"
            "p-3,c-3,2026-12-01T12:00:00+00:00,-5,fuel,12,no,\n"  # below the minimum
            "p-4,c-4,2026-12-01T13:00:00+00:00,7,fuel,noon,false,legit\n"  # not an integer
            "p-5,c-5,2026-12-01T14:00:00+00:00,8,casino,14,false,legit\n"  # not allowed
        )
        code, out, err = await _conveyor(home, TOKENS["an-app"], "ingest", name, str(csv))
        assert code == 1, err
        assert re.search(r"^accepted\s+2$", out, re.M) and re.search(r"^refused\s+3$", out, re.M)
        assert re.search(r"amount: -5(\.0)? is below the minimum 0", out), out
        assert "hour: 'noon' is not an integer" in out
        assert "merchant" in out and "casino" in out
        assert err.rstrip().endswith("error: 3 of 5 records refused")
        assert "Traceback" not in err

        # The same file again: its ids were taken, nothing is stored twice.
        code, out, _ = await _conveyor(home, TOKENS["an-app"], "ingest", name, str(csv), "--json")
        summary = json.loads(out)
        assert (summary["accepted"], summary["duplicates"], summary["refused"]) == (0, 2, 3)
        assert sorted(r["line"] for r in summary["refusals"]) == [4, 5, 6]

        # JSON Lines from standard input, typed as they are.
        lines = (
            '{"customer": "c-6", "ts": "2026-12-01T15:00:00+00:00", "amount": 3.5, '
            '"merchant": "travel", "hour": 15, "foreign": false, "outcome": "legit"}\n'
            "not json\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_cli.main",
            "ingest",
            name,
            "-",
            "--format",
            "jsonl",
            "--json",
            env=os.environ | {"CONVEYOR_HOME": str(home), "CONVEYOR_TOKEN": TOKENS["an-app"]},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(lines.encode()), 120)
        assert proc.returncode == 1, err_b
        summary = json.loads(out_b)
        assert (summary["read"], summary["accepted"], summary["refused"]) == (2, 1, 1)
        assert summary["refusals"][0]["line"] == 2
        assert summary["refusals"][0]["problems"][0].startswith("not JSON")

        r = await ingest_api.get(f"/projects/{name}/records/stats")
        assert r.json()["accepted"] == 3, r.json()

        # A viewer may not load data: one line, exit 1.
        code, _, err = await _conveyor(home, TOKENS["a-viewer"], "ingest", name, str(csv))
        assert code == 1 and err.startswith("error: 403 forbidden:")


async def test_status_shows_a_stopped_consumers_backlog_until_it_drains(
    kafka, database_url, tmp_path
):
    """`conveyor status` against a real feedback service: ready with no lag; stopped, out of
    reach (exit 1) with its group's backlog on feedback.submitted counted from the broker;
    started again, ready once it has read the backlog (lag 0, exit 0 even with --max-lag 0)."""

    def service() -> Runtime:
        options = {key.lower(): value for key, value in kafka.client_env().items()}
        return feedback(FeedbackSettings(**options, database_url=database_url, http_port=0))

    home = tmp_path / "conveyor"
    home.mkdir()

    def stack_file(url: str) -> None:
        broker = {"bootstrap_servers": kafka.bootstrap_servers, "kind": kafka.kind}
        state = {"services": {"feedback": url}, "broker": broker}
        (home / "stack.json").write_text(json.dumps(state))

    async def status(*options: str) -> tuple[int, dict[str, Any], str]:
        code, out, err = await _conveyor(home, TOKENS["a-viewer"], "status", "--json", *options)
        assert "Traceback" not in err, err
        (row,) = json.loads(out)
        return code, row, err

    def lag(row: dict[str, Any]) -> dict[str, int]:
        return {entry["topic"]: entry["lag"] for entry in row["lag"]}

    async def ready(api: httpx.AsyncClient) -> bool:
        return (await api.get("/readyz")).status_code == 200

    submitted = catalog.FEEDBACK_SUBMITTED.name
    runtime = service()
    async with running(runtime) as api, Listener(runtime.http) as first:
        await until(lambda: ready(api), 60, "feedback ready")
        stack_file(first.url)
        code, row, err = await status()
        assert code == 0, err
        assert (row["status"], row["version"], row["restarts"]) == ("ready", "0.1.0", None)
        assert lag(row) == {submitted: 0, catalog.PREDICTIONS_RESPONSES.name: 0}
        assert row["lag"][0]["group"].startswith("conveyor-feedback.")

    # Stopped: five messages wait for its group, sent as one batch (whose end Tansu reports
    # short: the lag is still five).
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=50)
    await producer.start()
    try:
        for i in range(5):
            await producer.send(submitted, b"not feedback %d" % i, key=b"k", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    code, row, err = await status()
    assert code == ExitCode.UNREACHABLE and "no service answers" in err
    assert row["status"] == "unreachable" and lag(row)[submitted] == 5

    runtime = service()
    async with running(runtime), Listener(runtime.http) as second:
        stack_file(second.url)

        async def drained() -> bool:
            code, row, _ = await status("--max-lag", "0")
            return code == 0 and row["status"] == "ready" and lag(row)[submitted] == 0

        await until(drained, 90, "the backlog read and status at 0")
