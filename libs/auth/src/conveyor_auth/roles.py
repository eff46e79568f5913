"""Roles and the actions they grant: one table, read by every service."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import Forbidden


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    # A product UI in a browser: sends labels and nothing else. Its token is public (anyone
    # viewing the page can read it), so it grants the least that is still useful.
    FEEDBACK = "feedback"
    APP = "app"  # an application: submits records, prediction requests and feedback
    SCIENTIST = "scientist"  # runs models: projects, training, versions, promotion requests
    APPROVER = "approver"  # a scientist who also decides others' requests
    ADMIN = "admin"  # everything


ROLES = tuple(Role)


class Action(StrEnum):
    READ = "read"
    SUBMIT = "submit"  # records, prediction requests
    FEEDBACK = "feedback"  # labels for predictions served
    APPLY = "apply"  # apply a project, rebuild its quality profile
    TRAIN = "train"  # start runs and experiments, reproduce a version
    REGISTER = "register"  # register and complete model versions
    PROMOTE = "promote"  # move an alias (held for approval where the project says so), ask
    ROLLBACK = "rollback"  # move an alias back: the way out of a bad release needs no approval
    DECIDE = "decide"  # approve or reject someone else's request
    DEPLOY = "deploy"  # move a gated alias without a request (the approver's own judgement)
    ADMINISTER = "administer"  # record token changes in the audit log


_SCIENTIST = frozenset(
    {
        Action.READ,
        Action.SUBMIT,
        Action.FEEDBACK,
        Action.APPLY,
        Action.TRAIN,
        Action.REGISTER,
        Action.PROMOTE,
        Action.ROLLBACK,
    }
)
GRANTS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.FEEDBACK: frozenset({Action.FEEDBACK}),
    Role.APP: frozenset({Action.READ, Action.SUBMIT, Action.FEEDBACK}),
    Role.SCIENTIST: _SCIENTIST,
    Role.APPROVER: _SCIENTIST | {Action.DECIDE, Action.DEPLOY},
    Role.ADMIN: frozenset(Action),
}


def grants(roles: frozenset[Role] | set[Role], action: Action) -> bool:
    return any(action in GRANTS[role] for role in roles)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the name recorded as the actor of what they change, the
    projects they may act on (None: every project), and how they signed in (`token`: a bearer
    token of the token file; `oidc`: an identity provider's JWT), in the request whose id
    the audit log records."""

    name: str
    roles: frozenset[Role]
    projects: frozenset[str] | None = None
    via: str = "token"
    request_id: str | None = None

    def role_for(self, action: Action) -> Role | None:
        """The least of the caller's roles that grants `action`: the role the audit log says
        they acted as."""
        return next((r for r in ROLES if r in self.roles and action in GRANTS[r]), None)

    def can(self, action: Action) -> bool:
        return grants(self.roles, action)

    def may_act_on(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def require_project(self, project: str) -> None:
        """Forbidden unless this caller may act on `project`."""
        if not self.may_act_on(project):
            allowed = ", ".join(sorted(self.projects or ()))
            shown = project if len(project) <= 80 else project[:80] + "..."
            raise Forbidden(f"{self.name} may act on {allowed} only, not on {shown!r}")
