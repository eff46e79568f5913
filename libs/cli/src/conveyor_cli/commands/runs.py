"""Training: `train`, `experiment`, `runs`, `compare`, `reproduce`, `request-training`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .. import output
from ..api import call
from ..app import CliError, ExitCode, Json, Project, Reason, Timeout, Version, Wait, app

RUN_FIELDS = (
    "run_id",
    "project",
    "status",
    "model_version",
    "promoted",
    "reason",
    "metrics",
    "champion_metrics",
    "training_rows",
    "duration_s",
    "trigger",
    "started_at",
    "finished_at",
)


def _ended_badly(runs: list[dict[str, Any]]) -> None:
    """Exit 1 naming each run that did not succeed, its log's last lines on stderr."""
    bad = [r for r in runs if r["status"] != "succeeded"]
    if not bad:
        return
    from rich.markup import escape

    for run in bad:
        tail = "\n".join((run.get("logs") or "").splitlines()[-8:])
        if tail:
            output.note(f"[dim]run {run['run_id'][:8]}'s log ends:\n{escape(tail)}[/dim]")
    raise CliError(
        "; ".join(f"run {r['run_id'][:8]} {r['status']}: {r['reason']}" for r in bad)
        if len(bad) == 1
        else f"{len(bad)} of {len(runs)} runs did not succeed: "
        + "; ".join(f"{r['run_id'][:8]} {r['status']}" for r in bad)
    )


@app.command()
def train(
    project: Project,
    reason: Reason = "requested from the CLI",
    wait: Wait = False,
    timeout: Timeout = 900.0,
    as_json: Json = False,
) -> None:
    """Start a training run (--wait: follow it to its end).

    Prints the run's id. With --wait, follow it until it ends, then print the run: exit 0 if
    it succeeded, 1 if it failed or was skipped (with the reason), 4 if it had not ended
    within --timeout.
    """
    started = call("POST", "trainer", f"/projects/{project}/runs", json={"reason": reason})
    if not wait:
        output.show(started, as_json, hint=f"follow it: `conveyor runs {project}`, or --wait")
        return
    from ..follow import follow_run

    run = follow_run(started["run_id"], timeout)
    output.show(run if as_json else {k: run.get(k) for k in RUN_FIELDS if k in run}, as_json)
    _ended_badly([run])


@app.command()
def experiment(
    project: Project,
    variant: Annotated[
        list[str],
        typer.Option(
            "--variant",
            "-v",
            help='An estimator as JSON (repeatable), e.g. \'{"class_path": '
            '"sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 50}}\'',
            show_default=False,
        ),
    ],
    reason: Reason = "experiment from the CLI",
    wait: Wait = False,
    timeout: Timeout = 1800.0,
    as_json: Json = False,
) -> None:
    """Train estimator variants side by side, one run each.

    Every variant trains on one snapshot of the examples; none is promoted by its run.
    `conveyor compare RUN...` puts them side by side.

    With --wait, follow the runs until every one ended, then compare them: exit 0 if all
    succeeded. --json with --wait: {"experiment_id": ..., "runs": [...]}.
    """
    try:
        variants = [json.loads(v) for v in variant]
    except json.JSONDecodeError as exc:
        raise CliError(f"--variant is not JSON: {exc}", ExitCode.USAGE) from exc
    body = {"variants": variants, "reason": reason}
    started = call("POST", "trainer", f"/projects/{project}/experiments", json=body)
    if not wait:
        hint = f"follow it: `conveyor runs {project} --experiment EXPERIMENT_ID`, or --wait"
        output.show(started, as_json, hint=hint)
        return
    from ..follow import follow_experiment

    done = follow_experiment(project, started["experiment_id"], len(variants), timeout)
    if as_json:
        output.emit_json({"experiment_id": started["experiment_id"], "runs": done})
    else:
        _compare_table(call("GET", "trainer", "/runs/compare", params={"run_id": _ids(done)}))
    _ended_badly(done)


def _ids(runs: list[dict[str, Any]]) -> list[str]:
    return [r["run_id"] for r in runs]


@app.command()
def runs(
    project: Project,
    experiment_id: Annotated[
        str | None,
        typer.Option("--experiment", help="Only the runs of this experiment (its id)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """A project's training runs and how they ended."""
    params = {"experiment": experiment_id} if experiment_id else {}
    output.listing(
        call("GET", "trainer", f"/projects/{project}/runs", params=params),
        ("run", "started", "status", "version", "promoted", "rows", "s", "accuracy", "reason"),
        _run_row,
        as_json=as_json,
        title=project,
        empty=f"no runs of {project} yet: `conveyor train {project}` starts one",
    )


def _run_row(r: dict[str, Any]) -> tuple[Any, ...]:
    seconds = None if r["duration_s"] is None else round(r["duration_s"], 1)
    outcome = (r["model_version"], r["promoted"], r["training_rows"], seconds)
    return (
        output.short(r["run_id"]),
        output.when(r["started_at"]),
        r["status"],
        *outcome,
        r["metrics"].get("accuracy"),
        r["reason"],
    )


@app.command()
def compare(
    run_ids: Annotated[
        list[str], typer.Argument(help="Run ids (as `conveyor runs` prints them, in full).")
    ],
    as_json: Json = False,
) -> None:
    """Runs side by side, the best per metric starred.

    Estimator, every metric, training rows, duration, version and status.
    """
    data = call("GET", "trainer", "/runs/compare", params={"run_id": run_ids})
    if as_json:
        output.emit_json(data)
    else:
        _compare_table(data)


def _compare_table(data: dict[str, Any]) -> None:
    def metric(run: dict[str, Any], name: str) -> str:
        value = run["metrics"][name]
        best = " *" if data["best"].get(name) == run["run_id"] else ""
        return "" if value is None else f"{value:.4f}{best}"

    output.table(
        ("run", "estimator", *data["metrics"], "rows", "s", "version", "status"),
        (
            (
                output.short(r["run_id"]),
                (r["estimator"] or "project's").rsplit(".", 1)[-1],
                *(metric(r, m) for m in data["metrics"]),
                r["training_rows"],
                None if r["duration_s"] is None else round(r["duration_s"], 1),
                r["model_version"],
                r["status"],
            )
            for r in data["runs"]
        ),
        title="runs",
    )


@app.command()
def reproduce(
    project: Project,
    version: Version,
    timeout: Annotated[
        float, typer.Option(help="Seconds to allow for reading and retraining.", min=1)
    ] = 600.0,
    as_json: Json = False,
) -> None:
    """Rebuild a version and check it matches (exit 1 if not).

    Reads the version's training set again from its recorded offsets, retrains, and compares
    the new model's predictions with the registered ones on the holdout.
    """
    path = f"/projects/{project}/versions/{version}/reproduce"
    result = call("POST", "trainer", path, timeout_s=timeout)
    output.show(result, as_json)
    if not result["reproduced"]:
        raise CliError(
            f"v{version} of {project} was not reproduced "
            f"(largest difference {result.get('max_abs_diff')})"
        )


@app.command("request-training")
def request_training(
    project: Project, reason: Reason = "requested over Kafka", as_json: Json = False
) -> None:
    """Ask for a training run over Kafka (trainer.requests).

    Sends a StartTraining command, the way other systems ask the trainer.
    """
    from conveyor_contracts import catalog
    from conveyor_contracts.events import StartTraining

    from ..api import bootstrap_servers, build, on_broker
    from ..api import config as platform
    from ..kafka_io import Producer

    command = build(
        StartTraining, "bad request", project=project, reason=reason, requested_by="cli"
    )
    bootstrap = bootstrap_servers()
    kafka = platform()

    async def send() -> None:
        async with Producer(kafka) as producer:
            await (await producer.send(catalog.TRAINER_REQUESTS, command, key=project))

    on_broker(bootstrap, send)
    output.show({"topic": catalog.TRAINER_REQUESTS.name} | command.model_dump(mode="json"), as_json)
