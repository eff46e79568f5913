"""The whole loop: the seven services as processes on the real broker and Postgres.

Runs `conveyor demo` (what `make run` runs) and asserts its outcome: the drift was detected, a new
version was promoted after it, serving answered with that version, and retraining healed accuracy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from conveyor_cli import infra
from tests.e2e.support import processes_with_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


async def test_the_loop_closes_after_drift(kafka: infra.Broker, postgres: infra.Postgres, tmp_path):
    database_url = await infra.create_database(postgres.url, "conveyor_e2e")
    env = os.environ | {
        **kafka.client_env(),
        "DATABASE_URL": database_url,
        "CONVEYOR_HOME": str(tmp_path / "conveyor"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_cli.main",
        "demo",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=360)
    stdout, stderr = out.decode(), err.decode()
    print(stderr[-6000:])
    assert proc.returncode == 0, stderr[-4000:]
    figures = json.loads(stdout.strip().splitlines()[-1])
    assert figures["new_version"] > figures["first_version"]
    assert figures["drift_to_detection_s"] > 0
    assert figures["drift_to_new_version_s"] > figures["drift_to_detection_s"]
    assert figures["answers"]["after"] >= 400
    assert figures["accuracy_before"] > 0.8
    assert figures["accuracy_after"] > figures["accuracy_during"] + 0.1
    assert figures["error_answers"] == 0
    # Every process the demo started is gone: none still carries its CONVEYOR_HOME.
    assert processes_with_env(str(tmp_path)) == []
