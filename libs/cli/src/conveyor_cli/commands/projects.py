"""Model projects and their versions: `apply`, `projects`, `versions`, `lineage`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import output
from ..api import call, problems
from ..app import CliError, ExitCode, Json, Project, Version, app


def _project_spec(project: str) -> dict[str, Any]:
    """The project document: a file's, else the bundled example of that name, validated here
    so that a mistake is reported before anything is sent."""
    from pydantic import ValidationError

    from conveyor_contracts import ModelProject
    from conveyor_examples import load_project, project_names

    path = Path(project)
    if path.exists():
        try:
            spec = ModelProject.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}", ExitCode.USAGE) from exc
        except ValidationError as exc:
            raise CliError(
                f"{path} is not a valid project: {problems(exc)}", ExitCode.USAGE
            ) from exc
    elif project in project_names():
        spec = load_project(project)
    else:
        raise CliError(
            f"no file {project!r} and no example of that name "
            f"(examples: {', '.join(project_names())})",
            ExitCode.USAGE,
        )
    return spec.model_dump(mode="json")


@app.command()
def apply(
    project: Annotated[
        str, typer.Argument(help="A project.json path, or a bundled example's name (fraud, wine).")
    ],
    as_json: Json = False,
) -> None:
    """Create or update a model project (a file or an example).

    The registry validates and versions it; every service picks it up. In approval mode a
    change that leaves it is held for an approver (the request is printed).
    """
    result = call("POST", "registry", "/projects", json=_project_spec(project))
    if as_json:
        output.emit_json(result)
    elif "project_version" in result:
        output.fields(result)
        if not result["created"]:
            output.note("unchanged: the registry has this document already")
    else:
        output.note(f"held for an approver: change request {result['id']}")
        output.fields({k: v for k, v in result.items() if k != "spec"})


@app.command()
def projects(as_json: Json = False) -> None:
    """The projects the registry knows, and their versions."""
    output.listing(
        call("GET", "registry", "/projects"),
        ("project", "version"),
        lambda p: (p["project"], p["project_version"]),
        as_json=as_json,
        empty="no projects yet: `conveyor apply fraud` declares one",
    )


@app.command()
def versions(project: Project, as_json: Json = False) -> None:
    """A project's model versions and the aliases on them.

    --json: {"versions": [...], "aliases": {alias: version}}.
    """
    aliases = call("GET", "registry", f"/projects/{project}/aliases")
    found = call("GET", "registry", f"/projects/{project}/versions")

    def row(v: dict[str, Any]) -> tuple[Any, ...]:
        named = sorted(a for a, n in aliases.items() if n == v["version"])
        accuracy = v["metrics"].get("accuracy")
        created = output.when(v.get("created_at"))
        return (v["version"], named, v["status"], accuracy, output.short(v.get("run_id")), created)

    output.listing(
        found,
        ("version", "aliases", "status", "accuracy", "run", "created", "why failed"),
        lambda v: (*row(v), v.get("failure_reason")),
        as_json=as_json,
        raw={"versions": found, "aliases": aliases},
        title=project,
        empty=f"no versions of {project} yet: `conveyor train {project}` makes one",
    )


def _lineage_event(e: dict[str, Any]) -> tuple[Any, ...]:
    job, run = e.get("job") or {}, e.get("run") or {}
    inputs = [i.get("name") for i in e.get("inputs", [])]
    outputs = [o.get("name") for o in e.get("outputs", [])]
    return (
        e.get("eventType"),
        output.when(e.get("eventTime")),
        job.get("name"),
        run.get("runId"),
        inputs,
        outputs,
    )


@app.command()
def lineage(
    project: Project,
    version: Version,
    openlineage: Annotated[bool, typer.Option(help="As OpenLineage run events.")] = False,
    as_json: Json = False,
) -> None:
    """What a version was made from.

    Its training set (topic offsets and digest), code, environment, trigger and parent.
    """
    path = f"/projects/{project}/versions/{version}"
    if openlineage:
        events = call("GET", "registry", path + "/openlineage")
        columns = ("event", "time", "job", "run", "inputs", "outputs")
        output.listing(events, columns, _lineage_event, as_json=as_json)
    else:
        output.show(call("GET", "registry", path)["lineage"], as_json)
