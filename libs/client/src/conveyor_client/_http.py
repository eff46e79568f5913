"""The services' HTTP answers as results or as the client's errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .errors import (
    Conflict,
    Forbidden,
    NotFound,
    Refused,
    ServiceError,
    Unauthorized,
    Unavailable,
    _problems,
)

_BY_STATUS: dict[int, type[ServiceError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}
MAX_REASON_CHARS = 500  # of a service's explanation kept in an error's message


def path(*segments: str) -> str:
    """A URL path of these segments, each quoted whole (an id may hold `/` or `?`)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def detail_of(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_REASON_CHARS] or None
    return body.get("detail", body) if isinstance(body, dict) else body


def error_for(response: httpx.Response, service: str) -> Exception:
    """The error an answer with an error status stands for: 401, 403, 404 and 409 each their
    own, any other 4xx `Refused`, 5xx `Unavailable`; each with the service's reason."""
    detail = detail_of(response)
    problems = _problems(detail)
    reason = "; ".join(problems)[:MAX_REASON_CHARS] or response.reason_phrase
    status = response.status_code
    if status >= 500:
        return Unavailable(reason, status=status, service=service, retry_after=_seconds(response))
    kind = _BY_STATUS.get(status, Refused)
    return kind(
        reason,
        status=status,
        detail=detail,
        service=service,
        method=response.request.method,
        url=str(response.request.url),
    )


def unreachable(exc: httpx.HTTPError, service: str, url: str) -> Unavailable:
    return Unavailable(f"{url}: {type(exc).__name__}: {exc}", service=service)


def _seconds(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (its HTTP-date form is not used by the services)."""
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
