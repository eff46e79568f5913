"""Traffic and what it shows: `predict`, `feedback`, `drift`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .. import output
from ..api import call
from ..app import CliError, ExitCode, Json, Project, app


def _fields(items: list[str]) -> dict[str, Any]:
    """`name=value` pairs; a value is read as JSON (numbers, true, quoted strings), else kept
    as the text it is."""
    fields: dict[str, Any] = {}
    for item in items:
        name, equals, raw = item.partition("=")
        if not equals or not name:
            raise CliError(f"--field {item!r} is not name=value", ExitCode.USAGE)
        try:
            fields[name] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name] = raw
    return fields


@app.command()
def predict(
    project: Project,
    field: Annotated[
        list[str],
        typer.Option(
            "--field",
            "-f",
            help="A field of the record, name=value (repeatable); values are read as JSON, "
            "e.g. -f amount=12.5 -f customer='\"c-1\"'.",
            show_default=False,
        ),
    ],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.", min=1)] = 30.0,
    as_json: Json = False,
) -> None:
    """Ask for one prediction over Kafka and print the answer."""
    import asyncio

    from conveyor_contracts import catalog
    from conveyor_contracts.events import PredictionRequested, PredictionServed

    from ..api import bootstrap_servers, build, on_broker
    from ..kafka_io import Producer, tail

    fields = _fields(field)
    request = build(PredictionRequested, "bad request", project=project, fields=fields)
    bootstrap = bootstrap_servers()

    async def go() -> PredictionServed | None:
        async with Producer(bootstrap) as producer:
            answers = tail(bootstrap, catalog.PREDICTIONS_RESPONSES)
            key = str(fields.get("customer", request.request_id))
            await (await producer.send(catalog.PREDICTIONS_REQUESTS, request, key=key))
            try:
                async with asyncio.timeout(timeout):
                    async for answer in answers:
                        if answer.request_id == request.request_id:
                            return answer
            except TimeoutError:
                return None
        return None

    answer = on_broker(bootstrap, go)
    if answer is None:
        raise CliError(
            f"no answer within {timeout:.0f} s (is {project} trained and served? "
            f"`conveyor versions {project}`)",
            ExitCode.TIMEOUT,
        )
    output.show(answer.model_dump(mode="json"), as_json)


@app.command()
def feedback(
    project: Project,
    request_id: Annotated[
        str, typer.Argument(help="The prediction's request id (as `predict` prints it).")
    ],
    label: Annotated[str, typer.Argument(help="What really happened: the true label.")],
    as_json: Json = False,
) -> None:
    """Give the true label of an earlier prediction."""
    body = {"project": project, "request_id": request_id, "label": label}
    outcome = call("POST", "feedback", "/feedback", json=body)
    waits = "the prediction is not known yet: the label waits for it"
    output.show(outcome, as_json, hint=waits if outcome.get("waiting") else None)


@app.command()
def drift(project: Project, as_json: Json = False) -> None:
    """The monitor's view: reference, windows, drift episodes."""
    view = call("GET", "monitor", f"/projects/{project}/drift")
    if as_json:
        output.emit_json(view)
        return
    reference = view.get("reference")
    if reference:
        output.fields(
            {
                "reference version": reference.get("model_version"),
                "holdout accuracy": reference.get("holdout_accuracy"),
                "reference rows": reference.get("rows"),
                "since": output.when(reference.get("activated_at")),
            },
            title=project,
        )
    else:
        output.note(f"{project} has no reference yet: no version has been promoted")
    if episode := view.get("open_episode"):
        output.note(
            f"[yellow]drifting[/yellow] since {output.when(episode['onset_at'])}: episode "
            f"{output.short(episode['episode_id'])} (v{episode['model_version']})"
        )
    output.table(
        ("window", "version", "kind", "started", "rows", "drifted", "signal"),
        (
            (
                w["id"],
                w["model_version"],
                w["kind"],
                output.when(w["started_at"]),
                w["size"],
                w["drifted"],
                _signal(w),
            )
            for w in view.get("windows", [])
        ),
        title="latest windows",
        empty="no windows yet: the monitor needs served predictions",
    )
    output.table(
        ("episode", "version", "state", "opened", "closed", "reason"),
        (
            (
                output.short(e["episode_id"]),
                e["model_version"],
                e["state"],
                output.when(e["opened_at"]),
                output.when(e["closed_at"]),
                e["reason"],
            )
            for e in view.get("episodes", [])
        ),
        title="drift episodes",
        empty="no drift episodes",
    )


def _signal(window: dict[str, Any]) -> str:
    """A window's headline: its accuracy, or the feature that moved most."""
    evidence = window.get("evidence") or {}
    if evidence.get("accuracy") is not None:
        return f"accuracy {evidence['accuracy']:.3f}"
    features = [f for f in evidence.get("features", []) if isinstance(f, dict) and "effect" in f]
    if not features:
        return ""
    top = max(features, key=lambda f: f["effect"])
    return f"{top['feature']} effect {top['effect']:.2f} (q {top.get('q_value', 1.0):.3g})"
