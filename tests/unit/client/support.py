"""Services faked at the HTTP transport (httpx.MockTransport): each answer given by a function
of the request, and every request kept for the test to inspect."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from conveyor_client import AsyncClient, Config

SERVICES = {
    name: f"http://{name}.test"
    for name in ("ingest", "feature", "trainer", "registry", "serving", "monitor", "feedback")
}
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Services:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], Answer] = {}
        self.requests: list[httpx.Request] = []

    def on(self, service: str, method: str, path: str, answer: Answer) -> None:
        self.routes[(service, method, path)] = answer

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        service = request.url.host.removesuffix(".test")
        answer = self.routes.get((service, request.method, request.url.raw_path.decode()))
        if answer is None:
            answer = self.routes.get((service, request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": f"no route {request.url}"})
        return answer(request) if callable(answer) else answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, token: str | None = "secret", **config: Any) -> AsyncClient:
        return AsyncClient(
            Config(services=SERVICES, token=token, **config), transport=self.transport()
        )


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def detail(status: int, detail: Any) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail})
