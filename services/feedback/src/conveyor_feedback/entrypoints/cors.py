"""CORS for one path whose allowed origins depend on the project it names.

Starlette's CORSMiddleware takes one fixed list for the whole app. Here each project lists the
origins of its own pages (`ModelProject.feedback.allowed_origins`), read when each request comes,
so a project applied or changed takes effect at once, and no other path answers any origin.

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here: 204
with the allowance when the project allows the origin, the method is POST and every requested
header is one of ALLOWED_HEADERS; otherwise 403 with the reason and no allowance, so the browser
sends nothing. Other requests on the path reach the app; their answer allows the origin when the
project does. `Access-Control-Allow-Origin` is only ever the request's own origin, never `*`, and
credentials (cookies) are never allowed: the token travels in `Authorization`. Every answer on
the path varies by `Origin`, so no cache hands one origin's answer to another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_METHODS = ("POST",)
ALLOWED_HEADERS = ("Authorization", "Content-Type", "traceparent")
# How long a browser may reuse a preflight's answer: a removed origin is refused within this.
MAX_AGE_S = 600

Origins = Callable[[str], Collection[str]]


class ProjectCors:
    """`path`: a pattern whose group `project` is the project a request is for; `origins`: the
    origins a project allows (none for a project not known)."""

    def __init__(self, app: ASGIApp, *, path: str, origins: Origins) -> None:
        self.app = app
        self.path = re.compile(path)
        self.origins = origins
        self._allowed_headers = {h.lower() for h in ALLOWED_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.path.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        project = match.group("project")
        allowed = origin is not None and origin in self.origins(project)
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self._preflight(send, headers, project, origin, allowed)
            return

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                if allowed:
                    assert origin is not None
                    out["Access-Control-Allow-Origin"] = origin
            await send(message)

        await self.app(scope, receive, answer)

    async def _preflight(
        self, send: Send, headers: Headers, project: str, origin: str, allowed: bool
    ) -> None:
        method = headers["access-control-request-method"]
        asked = {
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        }
        shown = origin if len(origin) <= 100 else origin[:100] + "..."
        problem = None
        if not allowed:
            problem = (
                f"origin {shown!r} may not send feedback to project {project!r}: "
                "add it to the project's feedback.allowed_origins"
            )
        elif method not in ALLOWED_METHODS:
            problem = f"method {method[:20]!r} is not allowed here (only POST)"
        elif not asked <= self._allowed_headers:
            extra = ", ".join(sorted(asked - self._allowed_headers))[:200]
            problem = f"headers not allowed here: {extra} (only {', '.join(ALLOWED_HEADERS)})"
        response: list[tuple[bytes, bytes]] = [(b"vary", b"Origin")]
        if problem is None:
            status, body = 204, b""
            response += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ", ".join(ALLOWED_METHODS).encode()),
                (b"access-control-allow-headers", ", ".join(ALLOWED_HEADERS).encode()),
                (b"access-control-max-age", str(MAX_AGE_S).encode()),
            ]
        else:
            status, body = 403, json.dumps({"detail": problem}).encode()
            response += [(b"content-type", b"application/json")]
        response.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response})
        await send({"type": "http.response.body", "body": body})
