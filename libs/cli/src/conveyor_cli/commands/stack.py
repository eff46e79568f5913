"""The stack itself: start it (`up`), play the demo on it (`demo`), ask how it is (`status`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import output
from ..app import CliError, ExitCode, Json, app

if TYPE_CHECKING:
    from ..stack import Stack


def _could_not(what: str, exc: Exception) -> CliError:
    """A start-up failure: its first line as the error, the rest (a service's log) as context."""
    from rich.markup import escape

    first, _, rest = str(exc).partition("\n")
    if rest:
        output.note(f"[dim]{escape(rest)}[/dim]")
    return CliError(f"{what}: {first}")


def _where(stack: Stack) -> dict[str, Any]:
    assert stack.broker is not None and stack.postgres is not None
    return {
        "broker": {"bootstrap_servers": stack.broker.bootstrap_servers, "kind": stack.broker.kind},
        "database": {"kind": stack.postgres.kind},
        "services": stack.urls,
        "logs": str(stack.state_dir / "logs"),
    }


def _banner(where: dict[str, Any], *, as_json: bool = False, err: bool = False) -> None:
    if as_json:
        output.emit_json(where)
        return
    broker = where["broker"]
    rows = [
        ("broker", broker["bootstrap_servers"], broker["kind"]),
        ("database", "", where["database"]["kind"]),
        *((name, url, f"{url}/docs") for name, url in where["services"].items()),
    ]
    output.table(("component", "where", ""), rows, title="Conveyor is running", err=err)
    output.note(f"logs: {where['logs']}")


@app.command()
def up(as_json: Json = False) -> None:
    """Start the stack and keep it running until Ctrl-C.

    The broker, Postgres and the seven services: prints where each listens (--json: as one
    object); a service that exits is restarted.
    """
    import signal

    from ..infra import InfraError
    from ..stack import Stack, StackError

    stack = Stack()
    output.note("starting the broker, the database and the services…")
    try:
        stack.up()
    except (StackError, InfraError) as exc:
        raise _could_not("could not start", exc) from exc
    _banner(_where(stack), as_json=as_json)
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            for name, service in stack.services.items():
                if not service.alive():
                    service.restarts += 1
                    output.note(
                        f"[yellow]{name} exited; restarting[/yellow] (restart {service.restarts})"
                    )
                    service.start()
            time.sleep(0.5)
    finally:
        output.note("stopping every process…")
        stack.down()
        output.note("stopped")


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="Prediction requests per second.", min=1)] = 100.0,
    history: Annotated[int, typer.Option(help="Labeled historical records.", min=100)] = 3000,
    pre_drift: Annotated[
        float, typer.Option(help="Seconds of live traffic before drift.", min=1)
    ] = 15.0,
    attach: Annotated[bool, typer.Option(help="Use the stack `conveyor up` started.")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the figures as one JSON line on stdout (no summary)."),
    ] = False,
) -> None:
    """Play the demo loop end to end (what `make run` runs).

    Exit 0 only when the loop really closed. The timeline goes to stderr; the summary
    (--json: the figures) to stdout.
    """
    import asyncio

    from rich.console import Console

    from conveyor_client import Config, ConfigurationError
    from conveyor_client.kafka_security import KafkaSecurityError

    from ..api import bootstrap_servers
    from ..api import config as platform
    from ..demo import Demo, DemoConfig, DemoFailed, emit_json, print_summary, verdict
    from ..infra import InfraError
    from ..stack import Stack, StackError

    config = DemoConfig(history=history, rate=rate, pre_drift_s=pre_drift)
    started = time.monotonic()
    stack: Stack | None = None
    console = output.stderr()
    try:
        if attach:
            bootstrap_servers()  # said plainly when no source gives the broker
            urls, kafka = dict(platform().services), platform()
        else:
            console.rule("starting the stack")
            stack = Stack()
            stack.up()
            _banner(_where(stack), err=True)  # progress: stdout carries the outcome
            assert stack.broker is not None
            urls, kafka = stack.urls, Config(bootstrap_servers=stack.broker.bootstrap_servers)
        console.rule("the loop")
        token = stack.admin_token if stack is not None else platform().token
        outcome = asyncio.run(Demo(urls, kafka, config, console, token=token).run())
        if stack is not None:
            stack.check_alive()
    except (DemoFailed, StackError, InfraError, KafkaSecurityError, ConfigurationError) as exc:
        raise _could_not("demo failed", exc) from exc
    finally:
        if stack is not None:
            stack.down()
    # The summary is the outcome (stdout) unless the figures are; its rules as wide as a terminal.
    figures = print_summary(outcome, console if as_json else Console())
    figures["total_s"] = round(time.monotonic() - started, 1)
    if as_json:
        emit_json(figures)
    if reason := verdict(outcome):
        raise CliError(f"the loop did not close: {reason}")
    output.note(f"[green]the loop closed[/green] in {figures['total_s']} s")


@app.command()
def status(as_json: Json = False) -> None:
    """Health of every service of the running stack.

    Exit 1 unless every one is ok, 3 when none answers.
    """
    import httpx

    from ..api import client, config

    found = config()
    if not found.services:
        raise CliError(
            "no stack known here: start one with `conveyor up`, or say where one runs "
            "(CONVEYOR_STACK, CONVEYOR_<SERVICE>_URL or ~/.config/conveyor/config.toml)",
            ExitCode.UNREACHABLE,
        )
    where = sorted({found.origins.get(name, "") for name in found.services} - {""})
    if where:
        output.note(f"where the services are: {', '.join(where)}")
    rows: list[dict[str, Any]] = []
    with client(timeout_s=3.0) as http:
        for name, url in found.services.items():
            try:
                health = http.get(url + "/healthz").json()
                row = {"service": name, "url": url, "status": health.get("status")}
                row["projects"] = health.get("projects")
            except (httpx.HTTPError, ValueError) as exc:
                row = {"service": name, "url": url, "status": "unreachable", "error": str(exc)}
            rows.append(row)
    output.listing(
        rows,
        ("service", "url", "status", "projects"),
        lambda r: (r["service"], r["url"], r["status"], r.get("projects") or r.get("error")),
        as_json=as_json,
    )
    down = [r["service"] for r in rows if r["status"] != "ok"]
    if len(down) == len(rows):
        raise CliError(
            "no service answers: the stack is not running; start one with `conveyor up`",
            ExitCode.UNREACHABLE,
        )
    if down:
        raise CliError(f"{len(down)} of {len(rows)} services not ok: {', '.join(down)}")
