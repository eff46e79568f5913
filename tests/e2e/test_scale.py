"""Replicas of ingest, feature and serving join, die (SIGKILL) and leave (SIGTERM) their consumer
groups under a steady stream, and every request is still answered, every record accepted, none
twice: the short form of bench/scale.py, run as it is run by hand, against this test's broker and
a database of its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor_cli import infra
from conveyor_contracts import catalog

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
GROUPS = {
    f"conveyor-ingest.{catalog.RECORDS_SUBMITTED.name}",
    f"conveyor-feature.{catalog.RECORDS_ACCEPTED.name}",
    f"conveyor-feature.{catalog.PREDICTIONS_REQUESTS.name}",
    f"conveyor-serving.{catalog.PREDICTIONS_ENRICHED.name}",
}


def test_replicas_join_die_and_leave_and_every_request_is_answered_once(kafka, postgres):
    database_url = asyncio.run(infra.create_database(postgres.url, "conveyor_scale"))
    env = os.environ | kafka.client_env() | {"DATABASE_URL": database_url}
    run = subprocess.run(
        [sys.executable, str(BENCH), "--short"],
        env=env,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(run.stderr[-3000:])  # the run's own account and figures, shown with -s
    print({k: v for k, v in result.items() if k not in ("evidence", "phases")})

    assert result["sent"] > 100
    assert result["answered"] == result["sent"]
    assert result["records_sent"] > 100
    assert result["records_accepted"] == result["records_sent"]
    assert result["lost"] == 0, result["evidence"]
    assert result["duplicated_effects"] == 0, result["evidence"]
    assert result["stuck_partitions"] == 0
    assert [p["phase"] for p in result["phases"]] == ["join", "kill", "leave"]
    # Each group saw a rebalance at least for each replica that joined, died or left.
    assert GROUPS <= set(result["rebalances_by_group"])
    for group, count in result["rebalances_by_group"].items():
        assert count >= result["membership_changes_by_group"], (group, count)
    assert result["max_gap_ms"] > 0
