"""`conveyor audit`: every change and who made it, from the registry's audit log."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import output
from ..api import call
from ..app import Json, app

PAGE = 500  # the registry's largest page


@app.command()
def audit(
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project's changes.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only the changes this person or service made.")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="Only this action, or its family: `promotion` is every `promotion.*`.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only changes at or after this time (ISO 8601)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many, newest first.", min=1)
    ] = 50,
    as_json: Json = False,
) -> None:
    """Who changed what, newest first: applies and policy changes, runs started, versions
    registered, promotions asked for and decided, alias moves and rollbacks, tokens issued and
    revoked. Needs a token with at least the viewer role."""
    base = {
        k: v
        for k, v in {"project": project, "actor": actor, "action": action, "since": since}.items()
        if v is not None
    }
    entries: list[dict[str, Any]] = []
    before: int | None = None
    while len(entries) < limit:
        params = base | {"limit": min(PAGE, limit - len(entries))}
        if before is not None:
            params["before"] = before
        page = call("GET", "registry", "/audit", params=params)
        entries += page["entries"]
        before = page["next"]
        if before is None:
            break
    output.listing(
        entries,
        ("at", "actor", "role", "action", "project", "target", "reason"),
        lambda e: (
            output.when(e["at"]),
            e["actor"] + (" (oidc)" if e["via"] == "oidc" else ""),
            e["role"],
            e["action"],
            e["project"],
            e["target"],
            e["reason"],
        ),
        as_json=as_json,
        empty="no changes recorded" + (" that match" if base else ""),
    )
