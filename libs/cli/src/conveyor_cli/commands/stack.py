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
    from ..home import ADMIN_TOKEN_FILE

    assert stack.broker is not None and stack.postgres is not None
    return {
        "broker": {"bootstrap_servers": stack.broker.bootstrap_servers, "kind": stack.broker.kind},
        "database": {"kind": stack.postgres.kind},
        "services": stack.urls,
        "logs": str(stack.state_dir / "logs"),
        "token": str(stack.state_dir / ADMIN_TOKEN_FILE),
    }


def _banner(where: dict[str, Any], *, as_json: bool = False, err: bool = False) -> None:
    from conveyor_contracts import CONSOLE

    if as_json:
        output.emit_json(where)
        return
    broker = where["broker"]
    rows = [
        ("broker", broker["bootstrap_servers"], broker["kind"]),
        ("database", "", where["database"]["kind"]),
        *(
            (name, url, "sign in here" if name == CONSOLE else f"{url}/docs")
            for name, url in where["services"].items()
        ),
    ]
    output.table(("component", "where", ""), rows, title="Conveyor is running", err=err)
    output.note(f"logs: {where['logs']}")
    if CONSOLE in where["services"]:
        output.note(
            f"console: {where['services'][CONSOLE]} (sign in with the local admin's token, "
            f"in {where['token']}, or `conveyor token issue NAME --role viewer`)"
        )


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
                    service.restart()
                    stack.write_state()  # for `conveyor status`, in another process
                    output.note(
                        f"[yellow]{name} exited ({service.last_exit}); restarted[/yellow] "
                        f"(restart {service.restarts})"
                    )
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
def status(
    as_json: Json = False,
    max_lag: Annotated[
        int | None,
        typer.Option(
            help="Also fail when a consumer group is more than this many records behind a topic.",
            min=0,
        ),
    ] = None,
) -> None:
    """Every service of the running stack: ready or not, restarts, version, models served, and
    the lag of its consumer groups per topic.

    Exit 0 when every service is ready (and, with --max-lag, no group is further behind); 1
    otherwise; 3 when none answers.
    """
    import asyncio

    from conveyor_client import ConfigurationError
    from conveyor_client.kafka_security import KafkaSecurityError, check_connection

    from ..api import async_client, config
    from ..kafka_io import CLIENT_ID
    from ..status import COLUMNS, LAG_TIMEOUT_S, READY, UNREACHABLE, gather, problems, table_row

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

    async def look() -> tuple[list[dict[str, Any]], str | None]:
        kafka: dict[str, Any] | None = None
        unknown: str | None = None
        try:
            kafka = found.kafka_options(CLIENT_ID)
            # Said once, with the setting to look at, rather than as a time-out below.
            await check_connection(kafka, found.kafka_security, timeout_s=LAG_TIMEOUT_S, wait=False)
        except (ConfigurationError, KafkaSecurityError) as exc:
            kafka, unknown = None, str(exc)
        async with async_client() as http:
            rows, why = await gather(found, http, kafka)
        return rows, unknown or why

    rows, lag_unknown = asyncio.run(look())
    if lag_unknown:
        output.note(f"[yellow]lag unknown[/yellow]: {lag_unknown}")
    if as_json:
        output.emit_json(rows)
    else:
        output.table(COLUMNS, map(table_row, rows))
    if all(r["status"] == UNREACHABLE for r in rows):
        raise CliError(
            "no service answers: the stack is not running; start one with `conveyor up`",
            ExitCode.UNREACHABLE,
        )
    if found_problems := problems(rows, max_lag, lag_unknown):
        ready = sum(r["status"] == READY for r in rows)
        raise CliError(f"{ready} of {len(rows)} services ready; " + "; ".join(found_problems))
