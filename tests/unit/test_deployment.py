"""What Docker would build, checked without a Docker engine: the compose stack and the images.

The compose file must run Kafka in KRaft mode, Postgres, and each service from its own Dockerfile
with the same variables as everywhere else; each Dockerfile must be able to resolve the locked
workspace and install only its own service; and a service image must not carry what it does not
import (serving ships onnxruntime, not scikit-learn).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from conveyor_contracts import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
LOCK = {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
MEMBERS = sorted(
    p.parent.relative_to(ROOT).as_posix()
    for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml", "examples/pyproject.toml")
    for p in ROOT.glob(pattern)
)


def test_compose_runs_kafka_in_kraft_mode_and_postgres():
    kafka = COMPOSE["services"]["kafka"]
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka["environment"]
    assert COMPOSE["services"]["postgres"]["image"].startswith("postgres:")


@pytest.mark.parametrize("name", SERVICES)
def test_compose_builds_each_service_from_its_dockerfile(name):
    service = COMPOSE["services"][name]
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    env = service["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert (
        env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env["REGISTRY_URL"] == "http://registry:8104"
    assert {"kafka", "postgres"} <= set(service["depends_on"])


@pytest.mark.parametrize("name", SERVICES)
def test_each_dockerfile_installs_its_service_from_the_lock(name):
    dockerfile = (ROOT / f"services/{name}/Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+)/pyproject\.toml ", dockerfile, re.M))
    assert copied == set(MEMBERS), "uv sync --frozen needs every workspace member's pyproject"
    assert f"--frozen --no-dev --no-install-workspace --package conveyor-{name}" in dockerfile
    assert f"--frozen --no-dev --package conveyor-{name}" in dockerfile
    scripts = tomllib.loads((ROOT / f"services/{name}/pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert f"conveyor-{name}" in scripts
    assert f'CMD ["/app/.venv/bin/conveyor-{name}"]' in dockerfile


def _closure(package: str) -> set[str]:
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(d["name"] for d in LOCK[name].get("dependencies", ()))
    return seen


def test_serving_image_ships_onnxruntime_not_scikit_learn():
    serving = _closure("conveyor-serving")
    assert "onnxruntime" in serving
    assert "scikit-learn" not in serving and "skl2onnx" not in serving
    assert {"scikit-learn", "skl2onnx"} <= _closure("conveyor-trainer")
