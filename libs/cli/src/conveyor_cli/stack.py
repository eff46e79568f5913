"""The running platform: broker, database, the seven services and the console as supervised
processes.

`Stack.up()` brings everything up on this machine (embedded broker and Postgres unless
`KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` say otherwise), waits until every service answers
`/healthz`, and records where everything listens in `.conveyor/stack.json` so that other
`conveyor` commands find it, with each service's process: its pid, when it started, how often
it was restarted and how its last process ended (`conveyor status` shows them).
`Stack.down()` stops every process it started, broker and embedded Postgres included, and
nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from conveyor_auth import Role, TokenFile, token_digest
from conveyor_bus import ensure_topics
from conveyor_contracts import CONSOLE, SERVICES

from . import infra
from .home import (
    ADMIN_TOKEN_FILE,
    STATE_DIR,
    STATE_FILE,
    TOKENS_FILE,
    StackError,
)

__all__ = ["STATE_DIR", "Stack", "StackError"]

LOCAL_ADMIN = "local-admin"
# Services that call others' write APIs, each with its own token and role: the trainer registers
# and promotes versions; serving has the feature service enrich the predictions asked of it over
# HTTP.
SERVICE_ROLES = {"trainer": Role.SCIENTIST, "serving": Role.APP}


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float | None = None  # time.time() of the process's start
    last_exit: int | None = None  # the exit code of the process before (-N: killed by signal N)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        code = f"from conveyor_{self.name}.entrypoints.main import main; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.time()
        log.close()

    def restart(self) -> None:
        """Start it again after its process ended, counting the restart."""
        self.last_exit = self.proc.returncode if self.proc is not None else None
        self.restarts += 1
        self.start()

    def state(self) -> dict[str, Any]:
        """What the state file records of the process."""
        return {
            "pid": self.proc.pid if self.proc is not None else None,
            "started_at": (
                datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds")
                if self.started_at is not None
                else None
            ),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Stack:
    state_dir: Path = STATE_DIR
    broker: infra.Broker | None = None
    postgres: infra.Postgres | None = None
    database_url: str = ""
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    replicas: list[ServiceProcess] = field(default_factory=list)  # beyond the first of each
    admin_token: str = ""

    @property
    def urls(self) -> dict[str, str]:
        return {name: s.url for name, s in self.services.items()}

    def up(self, *, timeout_s: float = 120.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        try:
            self.broker = infra.broker_from_env_or_start(log_path=logs / "broker.log")
            self.postgres = infra.postgres_from_env_or_start()
            self.database_url = self.postgres.url
            asyncio.run(ensure_topics(self.broker.bootstrap_servers))
            service_tokens = self._tokens()
            ports = {name: infra.free_port() for name in (*SERVICES, CONSOLE)}
            base = {k: v for k, v in os.environ.items() if not k.startswith("HTTP_")}
            for name in ports:
                env = (
                    base
                    | self.broker.client_env()
                    | {
                        "DATABASE_URL": self.database_url,
                        "REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}",
                        "FEATURE_URL": f"http://127.0.0.1:{ports['feature']}",
                        "MONITOR_URL": f"http://127.0.0.1:{ports['monitor']}",
                        "TRAINER_URL": f"http://127.0.0.1:{ports['trainer']}",
                        "HTTP_HOST": "127.0.0.1",
                        "HTTP_PORT": str(ports[name]),
                        "OTEL_SERVICE_NAME": f"conveyor-{name}",
                        "CONVEYOR_TOKENS_FILE": str((self.state_dir / TOKENS_FILE).resolve()),
                    }
                )
                env.pop("CONVEYOR_TOKEN", None)  # a service calls others as itself, or not
                if name in service_tokens:
                    env["CONVEYOR_TOKEN"] = service_tokens[name]
                self.services[name] = ServiceProcess(name, ports[name], logs / f"{name}.log", env)
            for service in self.services.values():
                service.start()
            self.write_state()
            self.wait_healthy(timeout_s)
        except BaseException:
            self.down()
            raise

    def _tokens(self) -> dict[str, str]:
        """The stack's token file: the local admin's token kept across runs (in
        `ADMIN_TOKEN_FILE`, readable by its owner only) and a fresh token for each service that
        calls another's write API. Returns those services' tokens."""
        path = self.state_dir / TOKENS_FILE
        tokens = TokenFile.read(path)
        admin_path = self.state_dir / ADMIN_TOKEN_FILE
        admin = admin_path.read_text().strip() if admin_path.exists() else ""
        if not admin or not any(t.token_sha256 == token_digest(admin) for t in tokens.tokens):
            tokens, admin = tokens.issue(LOCAL_ADMIN, [Role.ADMIN])
            admin_path.touch(mode=0o600)
            admin_path.write_text(admin + "\n")
        self.admin_token = admin
        issued = {}
        for service, role in SERVICE_ROLES.items():
            tokens, issued[service] = tokens.issue(f"service:{service}", [role])
        tokens.write(path)
        return issued

    def wait_healthy(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        health: dict[str, Any] = {}
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                for name, service in self.services.items():
                    if not service.alive():
                        raise StackError(
                            f"{name} exited with code {service.proc and service.proc.returncode}"
                            f"; see {service.log_path}:\n{tail(service.log_path)}"
                        )
                    try:
                        health[name] = client.get(service.url + "/healthz").json()
                    except (httpx.HTTPError, ValueError):
                        health.pop(name, None)
                if len(health) == len(self.services) and all(
                    h.get("status") == "ok" for h in health.values()
                ):
                    return health
                time.sleep(0.2)
        missing = [n for n in self.services if health.get(n, {}).get("status") != "ok"]
        raise StackError(f"services not healthy after {timeout_s:.0f}s: {', '.join(missing)}")

    def add_replica(self, name: str) -> ServiceProcess:
        """Start one more process of service `name` beside the running ones: the same settings,
        hence the same consumer groups (its group consumers share the topics' partitions with
        the others'), on an HTTP port of its own. Returned started, not yet ready; `down()`
        stops it with the rest."""
        first = self.services[name]
        port = infra.free_port()
        n = 2 + sum(1 for r in self.replicas if r.name == name)
        replica = ServiceProcess(
            name,
            port,
            first.log_path.with_name(f"{name}-{n}.log"),
            first.env | {"HTTP_PORT": str(port)},
        )
        replica.start()
        self.replicas.append(replica)
        return replica

    def check_alive(self) -> None:
        for name, service in self.services.items():
            if not service.alive():
                raise StackError(f"{name} died; see {service.log_path}:\n{tail(service.log_path)}")

    def down(self) -> None:
        for service in [*self.replicas, *self.services.values()]:
            service.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        state = self.state_dir / STATE_FILE
        if state.exists():
            state.unlink()

    def write_state(self) -> None:
        """Record the stack in its state file, replaced whole (a reader never sees half of it)."""
        assert self.broker is not None and self.postgres is not None
        state = {
            "pid": os.getpid(),
            "broker": {
                "bootstrap_servers": self.broker.bootstrap_servers,
                "kind": self.broker.kind,
                "pid": self.broker.pid,  # the embedded broker's process; None when configured
                # what the broker asks of its clients' fetches, for clients that find the
                # stack through this file (conveyor_client.config)
                **(
                    {"fetch_max_wait_ms": int(wait)}
                    if (wait := self.broker.client_env().get("KAFKA_FETCH_MAX_WAIT_MS"))
                    else {}
                ),
            },
            "database": {"kind": self.postgres.kind},
            "services": self.urls,
            "processes": {name: s.state() for name, s in self.services.items()},
        }
        path = self.state_dir / STATE_FILE
        fresh = path.with_name(f".{path.name}.{os.getpid()}")
        fresh.write_text(json.dumps(state, indent=2))
        fresh.replace(path)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
