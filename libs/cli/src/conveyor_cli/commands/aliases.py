"""Which version serves: `promote`, `rollback`, `history`, and promotion requests
(`approvals`, `approve`, `reject`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from .. import output
from ..api import call
from ..app import Alias, Json, Project, Reason, Version, app


class RequestState(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    superseded = "superseded"
    all = "all"


RequestId = Annotated[
    int,
    typer.Argument(help="The promotion request's number (`conveyor approvals`).", min=1),
]


def _moved(result: dict[str, Any], as_json: bool) -> None:
    """An alias move (200) or, in approval mode, the promotion request it became (202)."""
    if "to_version" not in result:
        _request(result, as_json)
        return
    was = "" if result["from_version"] is None else f"v{result['from_version']} "
    output.show(result, as_json, hint=f"{result['alias']}: {was}→ v{result['to_version']}")


def _request(result: dict[str, Any], as_json: bool) -> None:
    waits = f"request {result['id']} awaits an approver (`conveyor approvals`)"
    output.show(result, as_json, hint=waits if result["state"] == "pending" else None)


@app.command()
def promote(
    project: Project,
    version: Version,
    alias: Alias = "champion",
    reason: Reason = "promoted from the CLI",
    as_json: Json = False,
) -> None:
    """Point an alias (default champion) at a version.

    In a project that requires approval this asks for it (the request is printed) unless the
    caller is an approver.
    """
    body = {"version": version, "reason": reason}
    _moved(call("PUT", "registry", f"/projects/{project}/aliases/{alias}", json=body), as_json)


@app.command()
def rollback(
    project: Project,
    alias: Alias = "champion",
    reason: Reason = "rolled back from the CLI",
    as_json: Json = False,
) -> None:
    """Move an alias back to where it pointed before.

    Always allowed, and recorded in the alias's history like any move.
    """
    path = f"/projects/{project}/aliases/{alias}/rollback"
    _moved(call("POST", "registry", path, json={"reason": reason}), as_json)


@app.command()
def history(project: Project, alias: Alias = "champion", as_json: Json = False) -> None:
    """Every move of an alias: who, when, from, to, why."""
    output.listing(
        call("GET", "registry", f"/projects/{project}/aliases/{alias}/history"),
        ("at", "actor", "from", "to", "reason"),
        lambda m: (
            output.when(m["at"]),
            m["actor"],
            m["from_version"],
            m["to_version"],
            m["reason"],
        ),
        as_json=as_json,
        title=f"{project} {alias}",
        empty=f"{alias} of {project} has never moved",
    )


def _request_row(r: dict[str, Any]) -> tuple[Any, ...]:
    accuracy = (r["evidence"].get("metrics") or {}).get("accuracy")
    return (r["id"], r["alias"], r["version"], r["state"], r["requested_by"], r["reason"], accuracy)


@app.command()
def approvals(
    project: Project,
    state: Annotated[
        RequestState, typer.Option(help="Which requests: by state, or all of them.")
    ] = RequestState.pending,
    as_json: Json = False,
) -> None:
    """A project's promotion requests, with their evidence.

    The pending ones unless --state says otherwise.
    """
    params = {} if state is RequestState.all else {"state": state.value}
    which = "" if state is RequestState.all else f"{state.value} "
    output.listing(
        call("GET", "registry", f"/projects/{project}/promotions", params=params),
        ("id", "alias", "version", "state", "asked by", "reason", "accuracy"),
        _request_row,
        as_json=as_json,
        title=project,
        empty=f"no {which}requests for {project}",
    )


def _decision(verb: str, done: str, summary: str) -> None:
    """`approve` and `reject`: the same call, each its own command."""

    def decide(
        project: Project,
        request: RequestId,
        reason: Reason = f"{done} from the CLI",
        as_json: Json = False,
    ) -> None:
        path = f"/projects/{project}/promotions/{request}/{verb}"
        _request(call("POST", "registry", path, json={"reason": reason}), as_json)

    decide.__doc__ = f"{summary}\n\nNeeds an approver's token, and not the asker's."
    app.command(verb)(decide)


_decision("approve", "approved", "Accept a promotion request: the alias moves.")
_decision("reject", "rejected", "Refuse a promotion request.")
