"""What every service's HTTP API shares at its edge: a bounded request body, validation errors
that never echo what was sent, data the database refuses answered as the caller's fault, and the
refusals the OpenAPI document declares."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# What a validation error may quote of the offending value, and how many errors are listed.
QUOTED_CHARS = 80
MAX_ERRORS = 50


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413: at once by its Content-Length, or as
    soon as the bytes received pass the limit (a chunked body says no length)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await JSONResponse(
                        {"detail": f"the body of {declared} bytes is over {self.limit}"},
                        status_code=413,
                    )(scope, receive, send)
                    return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException: FastAPI passes it on from its body reading, where any
                    # other error would become a 400.
                    raise HTTPException(413, detail=f"the body is over {self.limit} bytes")
            return message

        await self.app(scope, bounded, send)


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…"


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each failing place and why, quoting at most a few characters of a value:
    a body of megabytes is not sent back, nor are whole values stored in a client's logs."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", ""))[:300],
            "type": e.get("type", ""),
            **({"input": _quoted(e["input"])} if "input" in e else {}),
        }
        for e in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        detail.append({"loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more", "type": ""})
    return JSONResponse({"detail": detail}, status_code=422)


async def unstorable(_request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (out of its type's range, a NUL character, too large for an
    index): the request's fault, answered 422. The edge's own checks should have caught it
    first; this keeps a value they missed from becoming a 500."""
    log.warning("a request carried a value the database refused: %s", type(exc).__name__)
    # In the shape of a validation error (which the document declares for every 422): which
    # value it was, the database does not say.
    reason = f"a value of the request cannot be stored ({type(exc).__name__})"
    return JSONResponse(
        {"detail": [{"loc": [], "msg": reason, "type": "unstorable"}]}, status_code=422
    )


class Refusal(BaseModel):
    """A request refused, and why."""

    detail: str


class InvalidValue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """A 422 as `validation_error` answers it (FastAPI's own document calls it
    HTTPValidationError): for a route that declares a 422 of its own beside it."""

    detail: list[InvalidValue]


_REASONS = {
    400: "The body cannot be parsed (JSON is UTF-8 text).",
    404: "Not found: the reason names what.",
    409: "Conflicts with the present state: the reason says how.",
    413: "The request body is over the service's limit (`HTTP_MAX_BODY_BYTES`).",
    429: "Over a budget: the reason names it.",
    503: "Not available now: the reason says what is missing.",
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that may refuse with these statuses, each with a `Refusal`."""
    return {code: {"model": Refusal, "description": _REASONS[code]} for code in codes}


def _declare_body_refusals(app: FastAPI) -> None:
    """Every operation that takes a body says it may be refused with 413 (the limit is the
    middleware's, which no route sees) and 400 (FastAPI's answer to a body it cannot decode,
    before any route sees it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:  # built once, kept by FastAPI
            return app.openapi_schema
        document = build()
        refusal = Refusal.model_json_schema()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if not (isinstance(operation, dict) and "requestBody" in operation):
                    continue
                for status in (400, 413):
                    operation["responses"].setdefault(
                        str(status),
                        {
                            "description": _REASONS[status],
                            "content": {"application/json": {"schema": refusal}},
                        },
                    )
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def harden(app: FastAPI, max_body_bytes: int) -> None:
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    _declare_body_refusals(app)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(asyncpg.DataError, unstorable)
    app.add_exception_handler(asyncpg.ProgramLimitExceededError, unstorable)
