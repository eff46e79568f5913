"""The FastAPI side: a dependency per action, and the answers to auth errors.

    @api.post("/things")
    async def make(thing: Thing, who: Annotated[Principal, caller(Action.APPLY)]) -> ...

`install(app, callers)` puts who may call (a `Callers`: the token file, and an identity
provider's JWTs where one is configured) on the app and answers `Unauthenticated` with 401
(and `WWW-Authenticate: Bearer`) and `Forbidden` with 403, each with the reason.

A caller limited to some projects is checked against the path's `{project}` here. An endpoint
whose path names no project takes such a caller only when it says it checks the projects of its
body itself (`caller(action, checks_project=True)`, then `who.require_project(...)`): any other
refuses them, so a limit is never silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .audit import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from .callers import Callers
from .errors import AuthError, Forbidden
from .roles import Action, Principal
from .tokens import TokenStore

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `conveyor token issue` (the local stack writes one for you), or "
    "a JWT of the identity provider the service is configured for (OpenID Connect).",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def caller(action: Action, *, checks_project: bool = False) -> Any:
    """A dependency: the caller, authenticated and allowed `action` (else 401 or 403), and
    allowed the path's `{project}` when they are limited to some. `checks_project`: the endpoint
    checks the projects its body names itself, so a limited caller may reach it."""

    def authorized(request: Request, credentials: Credentials) -> Principal:
        callers: Callers = request.app.state.callers
        token = credentials.credentials if credentials is not None else None
        principal = callers.authorize(token, action)
        if principal.projects is not None:
            project = request.path_params.get("project")
            if project is not None:
                principal.require_project(project)
            elif not checks_project:
                raise Forbidden(
                    f"{principal.name} may act on some projects only, and this endpoint "
                    "does not say which project it acts on"
                )
        given = request.headers.get(REQUEST_ID_HEADER)
        if given is not None and REQUEST_ID_PATTERN.match(given):
            return dataclasses.replace(principal, request_id=given)
        return principal  # the audit log gives the change an id of its own

    return Depends(authorized)


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, Forbidden):
        return JSONResponse({"detail": str(exc)}, status_code=403)
    return JSONResponse(
        {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


# What a refusal's body looks like, and when each is given.
_REFUSAL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_REFUSALS = {
    "401": "No bearer token, or one this service does not accept.",
    "403": "The token's roles do not allow this action, or its projects do not include this one.",
}


def _declare_refusals(app: FastAPI) -> None:
    """Every operation that takes a token says it may be refused with 401 and 403: the
    dependency that refuses cannot declare them itself, while the document knows which
    operations need a token (their `security`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:  # built once, kept by FastAPI
            return app.openapi_schema
        document = build()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and operation.get("security"):
                    for status, description in _REFUSALS.items():
                        operation["responses"].setdefault(
                            status,
                            {
                                "description": description,
                                "content": {"application/json": {"schema": _REFUSAL}},
                            },
                        )
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, callers: Callers | TokenStore) -> None:
    app.state.callers = callers if isinstance(callers, Callers) else Callers(callers)
    app.add_exception_handler(AuthError, _refused)
    _declare_refusals(app)
