"""`conveyor token issue|revoke|list`: who may call the services' write APIs, and with which roles.

These edit the token file the services read (they pick a change up within a second). Issuing
and revoking are recorded in the audit log first, by the registry, with the caller's own token as
the actor (an admin's): a refusal leaves the file as it was. With no stack to reach (a file
written before the services run) the change is made and said to be unrecorded; `--no-audit`
says so up front.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import output
from ..app import CliError, ExitCode, Json, Reason, app

if TYPE_CHECKING:
    from conveyor_auth import TokenFile

token_app = typer.Typer(
    no_args_is_help=True,
    help="Bearer tokens: who may call the write APIs, as what.\n\nThese edit the token file "
    "the services read (they pick a change up within a second); no stack needs to be running.",
)
app.add_typer(token_app, name="token")


class RoleName(StrEnum):
    """conveyor_auth.Role's values, here so that `--help` need not import the auth library
    (a unit test keeps the two equal)."""

    viewer = "viewer"
    feedback = "feedback"
    app = "app"
    scientist = "scientist"
    approver = "approver"
    admin = "admin"


TokensPath = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The token file the services read (CONVEYOR_TOKENS_FILE); "
        "default: the local stack's, CONVEYOR_HOME/tokens.json.",
        dir_okay=False,
        show_default=False,
    ),
]
Name = Annotated[
    str, typer.Argument(help="Who holds it: recorded as the actor of what they change.")
]
NoAudit = Annotated[
    bool,
    typer.Option(
        "--no-audit",
        help="Change the file without recording it in the audit log (before any stack runs).",
    ),
]
# A token change waits this long for the registry to record it: no stack answers at once.
AUDIT_TIMEOUT_S = 10.0


def _record(change: dict[str, Any], skip: bool) -> None:
    """Record a token change in the audit log before making it. Refused (not an admin, say):
    the change is not made. No registry to reach: said on stderr, and the change goes ahead,
    since whoever may write the token file decides who holds tokens."""
    from ..api import call

    if skip:
        output.note("[yellow]not recorded in the audit log (--no-audit)[/yellow]")
        return
    try:
        call("POST", "registry", "/audit/tokens", json=change, timeout_s=AUDIT_TIMEOUT_S)
    except CliError as exc:
        if exc.code == ExitCode.FAILED:  # the registry answered, and refused
            raise CliError(f"the audit log refused the change, which was not made: {exc}") from exc
        output.note(f"[yellow]not recorded in the audit log: {exc}[/yellow]")


def _path(file: Path | None) -> Path:
    from ..home import TOKENS_FILE, home

    return file if file is not None else home() / TOKENS_FILE


def _read(path: Path) -> TokenFile:
    from pydantic import ValidationError

    from conveyor_auth import TokenFile

    from ..api import problems

    try:
        return TokenFile.read(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except ValidationError as exc:
        raise CliError(f"{path} is not a token file: {problems(exc)}") from exc


@token_app.command("issue")
def token_issue(
    name: Name,
    role: Annotated[
        list[RoleName],
        typer.Option("--role", help="A role to grant (repeatable).", show_default=False),
    ],
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="Limit the token to this project (repeatable); default: every project. A "
            "`feedback` token for a web page is public: limit it to the page's projects.",
            show_default=False,
        ),
    ] = None,
    file: TokensPath = None,
    reason: Reason = "issued from the CLI",
    no_audit: NoAudit = False,
    as_json: Json = False,
) -> None:
    """Issue a token for a name (replacing its token), printed once.

    The file keeps only its sha256; services that read the file accept the token within a
    second, without a restart.
    """
    from conveyor_auth import Role

    from ..api import build

    path = _path(file)
    roles = [Role(r.value) for r in role]
    tokens, secret = build(
        _read(path).issue, "cannot issue a token", name=name, roles=roles, projects=project or None
    )
    scope = {"projects": sorted(set(project))} if project else {}
    change = {"action": "token.issue", "name": name, "roles": [str(r) for r in roles]}
    _record(change | scope | {"reason": reason}, no_audit)
    tokens.write(path)
    issued = {"name": name, "roles": [str(r) for r in roles], **scope}
    issued |= {"token": secret, "file": str(path)}
    output.show(issued, as_json, hint="the token is shown once: the file keeps only its sha256")


@token_app.command("revoke")
def token_revoke(
    name: Name,
    file: TokensPath = None,
    reason: Reason = "revoked from the CLI",
    no_audit: NoAudit = False,
    as_json: Json = False,
) -> None:
    """Revoke a name's token: refused within a second."""
    path = _path(file)
    tokens = _read(path)
    held = next((t for t in tokens.tokens if t.name == name), None)
    if held is None:
        raise CliError(f"no token named {name!r} in {path}", ExitCode.FAILED)
    change = {"action": "token.revoke", "name": name, "roles": [str(r) for r in held.roles]}
    _record(change | {"reason": reason}, no_audit)
    tokens.without(name).write(path)
    output.show({"revoked": name, "file": str(path)}, as_json)


@token_app.command("list")
def token_list(file: TokensPath = None, as_json: Json = False) -> None:
    """Who holds a token, with which roles, for which projects (not the tokens)."""
    path = _path(file)
    holders = [
        {"name": t.name, "roles": [str(r) for r in t.roles]}
        | ({"projects": t.projects} if t.projects is not None else {})
        for t in _read(path).tokens
    ]
    output.listing(
        holders,
        ("name", "roles", "projects"),
        lambda h: (h["name"], h["roles"], h.get("projects", "every project")),
        as_json=as_json,
        empty=f"no tokens in {path}",
    )
