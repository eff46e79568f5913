"""Who calls a Conveyor service, and whether they may do what they ask.

Callers present a bearer token; a service knows tokens only by their sha256 (a token file that
an admin writes with `conveyor token`, and/or entries in the environment), each with a name and
roles. Every write endpoint of every service names the action it performs (`Action`), and a
caller whose roles do not grant it is refused. The name is what the service records as the
actor of the change.

A token may also be limited to named projects (a browser's feedback token is): such a caller
acts on those projects only, wherever the project is known — in the path, checked by `caller`
itself, or in the body, checked by the endpoint (`Principal.require_project`).

A caller may also be a person signed in through an OpenID Connect provider: a JWT verified
against the provider's JWKS (`oidc`), with their roles mapped from a claim.

Each change is recorded with its `Actor` (`audit.acting(who, action)`): the authenticated name,
the role used, how they signed in, and the request's id.

AuthError
├── Unauthenticated   no bearer token, one no entry holds, or a JWT that does not verify
│                     (HTTP 401)
└── Forbidden         a known caller whose roles do not grant the action, or who may not act
                      on the project (HTTP 403)
"""

from .audit import REQUEST_ID_HEADER, Actor, acting, from_kafka
from .callers import Callers
from .errors import AuthError, Forbidden, Unauthenticated
from .http import caller, install
from .oidc import OidcConfig, OidcError, OidcVerifier
from .roles import ROLES, Action, Principal, Role, grants
from .tokens import (
    TokenEntry,
    TokenFile,
    TokenStore,
    new_token,
    token_digest,
)

__all__ = [
    "REQUEST_ID_HEADER",
    "ROLES",
    "Action",
    "Actor",
    "AuthError",
    "Callers",
    "Forbidden",
    "OidcConfig",
    "OidcError",
    "OidcVerifier",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenFile",
    "TokenStore",
    "Unauthenticated",
    "acting",
    "caller",
    "from_kafka",
    "grants",
    "install",
    "new_token",
    "token_digest",
]
