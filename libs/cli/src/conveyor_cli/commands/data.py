"""Traffic and what it shows: `predict`, `feedback`, `drift`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import output
from ..api import call
from ..app import CliError, ExitCode, Json, Project, app


@app.command()
def predict(
    project: Project,
    entity: Annotated[
        str,
        typer.Argument(
            help="The entity to score: its value of the project's entity key (the fraud "
            "project's customer, say: c-17).",
            show_default=False,
        ),
    ],
    fields: Annotated[
        list[str] | None,
        typer.Argument(
            help="The record's other fields as name=value, typed as the project declares them "
            "(amount=12.5 foreign=false merchant=fuel); a field left out comes from the "
            "entity's newest record.",
            show_default=False,
        ),
    ] = None,
    http: Annotated[
        bool, typer.Option("--http", help="Ask serving over HTTP instead of over Kafka.")
    ] = False,
    request_id: Annotated[
        str | None,
        typer.Option(help="Your id for the request (feedback names it); default: a new one."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.", min=1)] = 30.0,
    as_json: Json = False,
) -> None:
    """Ask for one prediction from raw fields and print the answer.

    Over Kafka (the default) the request goes to predictions.requests and the answer comes back
    on a reply topic of the CLI's own; with --http, serving answers the call itself. Either way
    the request is enriched with the entity's history and answered with its request id, which
    `conveyor feedback` names later.
    """
    from dataclasses import asdict

    from ..api import platform
    from ..values import field_types, pairs, typed

    given = pairs(fields or [])
    with platform() as conveyor:
        spec = conveyor.project(project)["spec"]
        types, key = field_types(spec), str(spec["entity_key"])
        values = {name: typed(types.get(name), name, raw) for name, raw in given}
        if key in values:
            raise CliError(
                f"{key} is the entity: give it as the first value, not as {key}=...",
                ExitCode.USAGE,
            )
        values = {key: typed(types.get(key), key, entity), **values}
        answer = conveyor.predict(
            project,
            values,
            via="http" if http else "kafka",
            timeout=timeout,
            request_id=request_id,
        )
    if as_json:
        output.emit_json(answer.raw)
        return
    shown = asdict(answer)
    for internal in ("raw", "feature_names", "values", "error", "status"):
        shown.pop(internal)
    later = f"the true label later: conveyor feedback {project} {answer.request_id} LABEL"
    output.show(shown, False, hint=later)


@app.command()
def feedback(
    project: Project,
    request_id: Annotated[
        str, typer.Argument(help="The prediction's request id (as `predict` prints it).")
    ],
    label: Annotated[str, typer.Argument(help="What really happened: the true label.")],
    feedback_id: Annotated[
        str | None,
        typer.Option(help="Your id for this label: sent again, it is taken once."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Give the true label of an earlier prediction."""
    from dataclasses import asdict

    from ..api import platform

    with platform() as conveyor:
        outcome = conveyor.send_feedback(project, request_id, label, feedback_id=feedback_id)
    waits = "the prediction is not known yet: the label waits for it"
    output.show(asdict(outcome), as_json, hint=waits if outcome.status == "waiting" else None)


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
