"""What every service's HTTP API shares at its edge: a bounded request body, validation errors
that never echo what was sent, and data the database refuses answered as the caller's fault."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    return JSONResponse(
        {"detail": f"a value of the request cannot be stored ({type(exc).__name__})"},
        status_code=422,
    )


def harden(app: FastAPI, max_body_bytes: int) -> None:
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(asyncpg.DataError, unstorable)
    app.add_exception_handler(asyncpg.ProgramLimitExceededError, unstorable)
