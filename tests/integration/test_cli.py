"""`conveyor train --wait` against a real trainer (real broker and Postgres, the registry faked
at the trainer's adapter): the command a person types, in a process of its own, finds the trainer
through the stack's state file and follows the run to its end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor_examples.fraud.traffic import FraudTraffic
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
