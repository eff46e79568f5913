"""`conveyor`: the user's handle on the platform."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from conveyor_auth import Role, TokenFile
from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import PredictionRequested, PredictionServed, StartTraining
from conveyor_examples import load_project, project_names

from .demo import Demo, DemoConfig, DemoFailed, emit_json, print_summary, verdict
from .kafka_io import Producer, tail
from .stack import STATE_DIR, TOKENS_FILE, Stack, StackError, local_token, running_stack

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Conveyor: a Kafka-native MLOps platform."
)
console = Console(stderr=True)


def _stack_banner(stack: Stack) -> None:
    assert stack.broker is not None and stack.postgres is not None
    table = Table(title="Conveyor is running", show_header=True)
    table.add_column("component")
    table.add_column("where")
    table.add_row("broker", f"{stack.broker.bootstrap_servers}  [dim]{stack.broker.kind}[/dim]")
    table.add_row("database", f"[dim]{stack.postgres.kind}[/dim]")
    for name, url in stack.urls.items():
        docs = f"{url}/docs"
        table.add_row(name, f"{url}  [dim]{docs}[/dim]")
    console.print(table)
    console.print(f"logs: {stack.state_dir / 'logs'}")


@app.command()
def up() -> None:
    """Start the broker, Postgres and the seven services, and keep them running until Ctrl-C."""
    stack = Stack()
    try:
        stack.up()
    except StackError as exc:
        console.print(f"[red]could not start:[/red] {exc}")
        raise typer.Exit(1) from exc
    _stack_banner(stack)
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
                    console.print(
                        f"[yellow]{name} exited; restarting[/yellow] (restart {service.restarts})"
                    )
                    service.start()
            time.sleep(0.5)
    finally:
        console.print("stopping every process…")
        stack.down()
        console.print("stopped")


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="Prediction requests per second.")] = 100.0,
    history: Annotated[int, typer.Option(help="Labeled historical records.")] = 3000,
    pre_drift: Annotated[float, typer.Option(help="Seconds of live traffic before drift.")] = 15.0,
    attach: Annotated[bool, typer.Option(help="Use the stack `conveyor up` started.")] = False,
) -> None:
    """Play the demo project end to end; exit 0 only when the loop really closed."""
    config = DemoConfig(history=history, rate=rate, pre_drift_s=pre_drift)
    started = time.monotonic()
    stack: Stack | None = None
    try:
        if attach:
            state = running_stack()
            urls, bootstrap = state["services"], state["broker"]["bootstrap_servers"]
        else:
            console.rule("starting the stack")
            stack = Stack()
            stack.up()
            _stack_banner(stack)
            assert stack.broker is not None
            urls, bootstrap = stack.urls, stack.broker.bootstrap_servers
        console.rule("the loop")
        token = stack.admin_token if stack is not None else local_token()
        outcome = asyncio.run(Demo(urls, bootstrap, config, console, token=token).run())
        if stack is not None:
            stack.check_alive()
    except (DemoFailed, StackError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        if stack is not None:
            stack.down()
    figures = print_summary(outcome, console)
    figures["total_s"] = round(time.monotonic() - started, 1)
    emit_json(figures)
    reason = verdict(outcome)
    if reason:
        console.print(f"[red]the loop did not close:[/red] {reason}")
        raise typer.Exit(1)
    console.print(f"[green]the loop closed[/green] in {figures['total_s']} s")


# --- commands against a running stack -------------------------------------------------------------


def _url(service: str) -> str:
    try:
        return str(running_stack()["services"][service])
    except (StackError, KeyError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _call(method: str, service: str, path: str, **kwargs: Any) -> Any:
    """One API call, with the caller's bearer token (`CONVEYOR_TOKEN`, else the local stack's
    admin token)."""
    if token := local_token():
        kwargs["headers"] = {"Authorization": f"Bearer {token}"} | kwargs.get("headers", {})
    r = httpx.request(method, _url(service) + path, timeout=120.0, **kwargs)
    if r.status_code >= 400:
        console.print(f"[red]{r.status_code}[/red] {r.text}")
        raise typer.Exit(1)
    return r.json()


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@app.command()
def apply(
    project: Annotated[str, typer.Argument(help="A project.json path or an example name.")],
) -> None:
    """Apply (create or update) a model project through the registry."""
    path = Path(project)
    if path.exists():
        spec = ModelProject.model_validate_json(path.read_text())
    elif project in project_names():
        spec = load_project(project)
    else:
        console.print(
            f"[red]no file {project!r} and no example of that name[/red] "
            f"(examples: {', '.join(project_names())})"
        )
        raise typer.Exit(2)
    _print(_call("POST", "registry", "/projects", json=spec.model_dump(mode="json")))


@app.command()
def projects() -> None:
    """List the projects the registry knows."""
    _print(_call("GET", "registry", "/projects"))


@app.command()
def train(project: str, reason: str = "requested from the CLI") -> None:
    """Start a training run for a project."""
    _print(_call("POST", "trainer", f"/projects/{project}/runs", json={"reason": reason}))


@app.command()
def runs(project: str) -> None:
    """List a project's training runs."""
    _print(_call("GET", "trainer", f"/projects/{project}/runs"))


@app.command()
def versions(project: str) -> None:
    """List a project's model versions and its aliases."""
    table = Table(title=f"{project}")
    for column in ("version", "status", "accuracy", "sha256", "created"):
        table.add_column(column)
    aliases = _call("GET", "registry", f"/projects/{project}/aliases")
    for v in _call("GET", "registry", f"/projects/{project}/versions"):
        tags = [a for a, n in aliases.items() if n == v["version"]]
        table.add_row(
            f"{v['version']} {' '.join(tags)}",
            v["status"],
            f"{v['metrics'].get('accuracy', float('nan')):.3f}",
            (v.get("sha256") or "")[:12],
            str(v.get("created_at", ""))[:19],
        )
    console.print(table)


@app.command()
def promote(
    project: str,
    version: int,
    alias: str = "champion",
    reason: str = "promoted from the CLI",
) -> None:
    """Point an alias (default champion) at a version. In a project that requires approval,
    this asks for it (the request is printed) unless the caller is an approver."""
    _print(
        _call(
            "PUT",
            "registry",
            f"/projects/{project}/aliases/{alias}",
            json={"version": version, "reason": reason},
        )
    )


@app.command()
def rollback(
    project: str,
    alias: str = "champion",
    reason: str = "rolled back from the CLI",
) -> None:
    """Move an alias back to the version it pointed at before its last move."""
    _print(
        _call(
            "POST",
            "registry",
            f"/projects/{project}/aliases/{alias}/rollback",
            json={"reason": reason},
        )
    )


@app.command()
def approvals(project: str, state: str = "pending") -> None:
    """Promotion requests of a project (pending by default; `--state all` for every one)."""
    params = {} if state == "all" else {"state": state}
    _print(_call("GET", "registry", f"/projects/{project}/promotions", params=params))


@app.command()
def approve(project: str, request: int, reason: str = "approved from the CLI") -> None:
    """Accept a promotion request: the alias moves. Needs an approver's token."""
    path = f"/projects/{project}/promotions/{request}/approve"
    _print(_call("POST", "registry", path, json={"reason": reason}))


@app.command()
def reject(project: str, request: int, reason: str = "rejected from the CLI") -> None:
    """Refuse a promotion request. Needs an approver's token."""
    path = f"/projects/{project}/promotions/{request}/reject"
    _print(_call("POST", "registry", path, json={"reason": reason}))


token_app = typer.Typer(
    no_args_is_help=True,
    help="Bearer tokens: who may call the services' write APIs, and with which roles.",
)
app.add_typer(token_app, name="token")
TokensPath = Annotated[
    Path,
    typer.Option(
        "--file",
        help="The token file the services read (CONVEYOR_TOKENS_FILE); default: the local stack's.",
    ),
]


@token_app.command("issue")
def token_issue(
    name: Annotated[str, typer.Argument(help="Who holds it: recorded as the actor of changes.")],
    role: Annotated[
        list[Role],
        typer.Option(
            "--role",
            help="viewer, feedback, app, scientist, approver or admin (repeatable).",
        ),
    ],
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="Limit the token to this project (repeatable); default: every project. A "
            "`feedback` token for a web page is public: limit it to the page's projects.",
        ),
    ] = None,
    file: TokensPath = STATE_DIR / TOKENS_FILE,
) -> None:
    """Issue a token (replacing NAME's): printed once, kept only as its sha256. Services that
    read the file accept it within a second, without a restart."""
    try:
        tokens, secret = TokenFile.read(file).issue(name, role, project or None)
    except ValidationError as exc:  # a name or project the file cannot hold, said plainly
        for e in exc.errors():
            where = ".".join(str(part) for part in e["loc"])
            console.print(f"{where}: {e['msg']}", style="red", markup=False)
        raise typer.Exit(2) from None
    tokens.write(file)
    scope = {"projects": sorted(set(project))} if project else {}
    _print(
        {"name": name, "roles": [str(r) for r in role], **scope, "token": secret, "file": str(file)}
    )


@token_app.command("revoke")
def token_revoke(name: str, file: TokensPath = STATE_DIR / TOKENS_FILE) -> None:
    """Revoke NAME's token: refused by every service within a second."""
    tokens = TokenFile.read(file)
    if not any(t.name == name for t in tokens.tokens):
        console.print(f"[red]no token named {name!r} in {file}[/red]")
        raise typer.Exit(1)
    tokens.without(name).write(file)
    _print({"revoked": name, "file": str(file)})


@token_app.command("list")
def token_list(file: TokensPath = STATE_DIR / TOKENS_FILE) -> None:
    """Who holds a token, with which roles (never the tokens themselves)."""
    _print(
        [
            {"name": t.name, "roles": [str(r) for r in t.roles]}
            | ({"projects": t.projects} if t.projects is not None else {})
            for t in TokenFile.read(file).tokens
        ]
    )


@app.command()
def lineage(
    project: str,
    version: int,
    openlineage: Annotated[bool, typer.Option(help="As OpenLineage run events.")] = False,
) -> None:
    """What a version was made from: training set, code, environment, trigger, parent."""
    if openlineage:
        _print(_call("GET", "registry", f"/projects/{project}/versions/{version}/openlineage"))
    else:
        _print(_call("GET", "registry", f"/projects/{project}/versions/{version}")["lineage"])


@app.command()
def reproduce(project: str, version: int) -> None:
    """Rebuild a version's training set from its recorded offsets, retrain, and compare the
    new model's predictions with the registered ones on the holdout (exit 1 if they differ)."""
    result = _call("POST", "trainer", f"/projects/{project}/versions/{version}/reproduce")
    _print(result)
    if not result["reproduced"]:
        raise typer.Exit(1)


@app.command()
def experiment(
    project: str,
    variant: Annotated[
        list[str],
        typer.Option(
            "--variant",
            "-v",
            help='An estimator as JSON, e.g. \'{"class_path": '
            '"sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 50}}\'',
        ),
    ],
    reason: str = "experiment from the CLI",
) -> None:
    """Train variants on one snapshot of the examples, one run each (never promoted by the
    run); `conveyor compare RUN...` puts them side by side."""
    variants = [json.loads(v) for v in variant]
    body = {"variants": variants, "reason": reason}
    _print(_call("POST", "trainer", f"/projects/{project}/experiments", json=body))


@app.command()
def compare(run_ids: Annotated[list[str], typer.Argument(help="Run ids.")]) -> None:
    """Runs side by side: estimator, metrics, rows, duration, version."""
    data = _call("GET", "trainer", "/runs/compare", params={"run_id": run_ids})
    table = Table(title="runs")
    for column in ("run", "estimator", *data["metrics"], "rows", "seconds", "version", "status"):
        table.add_column(column)
    for r in data["runs"]:
        best = {m for m, run in data["best"].items() if run == r["run_id"]}
        table.add_row(
            r["run_id"][:8],
            (r["estimator"] or "project's").rsplit(".", 1)[-1],
            *(
                ""
                if r["metrics"][m] is None
                else f"{r['metrics'][m]:.4f}" + (" *" if m in best else "")
                for m in data["metrics"]
            ),
            str(r["training_rows"]),
            "" if r["duration_s"] is None else f"{r['duration_s']:.1f}",
            str(r["model_version"] or ""),
            r["status"],
        )
    console.print(table)


@app.command()
def history(project: str, alias: str = "champion") -> None:
    """Every move of an alias: who, when, from, to, why."""
    _print(_call("GET", "registry", f"/projects/{project}/aliases/{alias}/history"))


@app.command()
def predict(
    project: str,
    field: Annotated[list[str], typer.Option("--field", "-f", help="name=value")],
    timeout: float = 30.0,
) -> None:
    """Send one prediction request over Kafka and print the answer."""
    fields: dict[str, Any] = {}
    for item in field:
        name, _, raw = item.partition("=")
        try:
            fields[name] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name] = raw
    bootstrap = running_stack()["broker"]["bootstrap_servers"]

    async def go() -> PredictionServed:
        request = PredictionRequested(project=project, fields=fields)
        async with Producer(bootstrap) as producer:
            answers = tail(bootstrap, catalog.PREDICTIONS_RESPONSES)
            await (
                await producer.send(
                    catalog.PREDICTIONS_REQUESTS,
                    request,
                    key=str(fields.get("customer", request.request_id)),
                )
            )
            async with asyncio.timeout(timeout):
                async for answer in answers:
                    if answer.request_id == request.request_id:
                        return answer
        raise DemoFailed("no answer")

    try:
        _print(asyncio.run(go()).model_dump(mode="json"))
    except TimeoutError as exc:
        console.print(f"[red]no answer within {timeout:.0f}s[/red] (is the project trained?)")
        raise typer.Exit(1) from exc


@app.command()
def feedback(project: str, request_id: str, label: str) -> None:
    """Tell the platform the true label of an earlier prediction."""
    _print(
        _call(
            "POST",
            "feedback",
            "/feedback",
            json={"project": project, "request_id": request_id, "label": label},
        )
    )


@app.command()
def drift(project: str) -> None:
    """Show the monitor's view of a project: reference, windows, episodes."""
    _print(_call("GET", "monitor", f"/projects/{project}/drift"))


@app.command()
def status() -> None:
    """Health of every service of the running stack."""
    state = running_stack()
    for name, url in state["services"].items():
        try:
            health = httpx.get(url + "/healthz", timeout=3).json()
            console.print(f"{name:<9} {health.get('status')}  projects={health.get('projects')}")
        except httpx.HTTPError as exc:
            console.print(f"{name:<9} [red]unreachable[/red] {exc}")


@app.command("request-training")
def request_training(project: str, reason: str = "requested over Kafka") -> None:
    """Send a StartTraining command on trainer.requests (the Kafka way to train)."""
    bootstrap = running_stack()["broker"]["bootstrap_servers"]

    async def go() -> None:
        async with Producer(bootstrap) as producer:
            await (
                await producer.send(
                    catalog.TRAINER_REQUESTS,
                    StartTraining(project=project, reason=reason, requested_by="cli"),
                    key=project,
                )
            )

    asyncio.run(go())
    console.print("sent")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":
    main()
