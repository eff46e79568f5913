"""Who calls a Conveyor service, and whether they may do what they ask.

Callers present a bearer token; a service knows tokens only by their sha256 (a token file that
an admin writes with `conveyor token`, and/or entries in the environment), each with a name and
roles. Every write endpoint of every service names the action it performs (`Action`), and a
caller whose roles do not grant it is refused. The name is what the service records as the
actor of the change.

A token may also be limited to named projects (a browser's feedback token is): such a caller
acts on those projects only, wherever the project is known — in the path, checked by `caller`
itself, or in the body, checked by the endpoint (`Principal.require_project`).

AuthError
├── Unauthenticated   no bearer token, or one no entry holds (HTTP 401)
└── Forbidden         a known caller whose roles do not grant the action, or who may not act
                      on the project (HTTP 403)
"""

from .errors import AuthError, Forbidden, Unauthenticated
from .http import caller, install
from .roles import ROLES, Action, Principal, Role, grants
from .tokens import (
    TokenEntry,
    TokenFile,
    TokenStore,
    new_token,
    token_digest,
)

__all__ = [
    "ROLES",
    "Action",
    "AuthError",
    "Forbidden",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenFile",
    "TokenStore",
    "Unauthenticated",
    "caller",
    "grants",
    "install",
    "new_token",
    "token_digest",
]
