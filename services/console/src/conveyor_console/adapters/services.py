"""The platform's HTTP APIs, called on behalf of the person signed in.

Every call carries that person's credential (`Authorization: Bearer ...`) and the request's id
(`X-Request-ID`), so the services decide what the person may do and record them as the actor:
the console holds no power of its own. A refusal or failure comes back as a `ServiceError` with
the service's own reason, which the page shows as it is.

ServiceError
└── Unreachable   the service did not answer (down, or slower than the console waits)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from conveyor_auth import REQUEST_ID_HEADER

# What a reason quoted on a page may be at most: a service's detail is one sentence.
MAX_REASON = 500


class ServiceError(Exception):
    """A service refused or failed a call: its HTTP status and its reason."""

    def __init__(self, service: str, status: int, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.status = status
        self.reason = reason


class Unreachable(ServiceError):
    """The service did not answer."""


@dataclass(frozen=True)
class Caller:
    """Who the console calls as: the person's credential, and the page request's id."""

    credential: str
    request_id: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}", REQUEST_ID_HEADER: self.request_id}


def _reason(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # a validation error: each problem's message
        detail = "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict))
    text = str(detail) if detail else f"HTTP {answer.status_code}"
    return text[:MAX_REASON]


class Services:
    """One HTTP client for the services the console reads and writes through."""

    def __init__(self, urls: dict[str, str], *, timeout_s: float, transport: Any = None) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.http = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        caller: Caller,
        service: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        url = self.urls[service] + path
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            answer = await self.http.request(
                method, url, params=query, json=json, headers=caller.headers()
            )
        except httpx.HTTPError as exc:
            raise Unreachable(
                service, 503, f"{service} did not answer ({type(exc).__name__})"
            ) from exc
        if answer.status_code >= 400:
            raise ServiceError(service, answer.status_code, _reason(answer))
        try:
            return answer.json()
        except ValueError as exc:
            raise ServiceError(service, 502, f"{service} answered something not JSON") from exc

    async def get(self, caller: Caller, service: str, path: str, **params: Any) -> Any:
        return await self.call(caller, service, "GET", path, params=params)

    async def post(self, caller: Caller, service: str, path: str, body: Any) -> Any:
        return await self.call(caller, service, "POST", path, json=body)
