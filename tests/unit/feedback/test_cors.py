"""CORS per project on the page feedback path (conveyor_feedback.entrypoints.cors)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conveyor_feedback.entrypoints.cors import ProjectCors

PAGE = "https://app.example.com"
ORIGINS = {"fraud": [PAGE, "http://localhost:3000"]}
PREFLIGHT = {
    "Origin": PAGE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def _client() -> httpx.AsyncClient:
    async def handler(request: Request) -> JSONResponse:
        return JSONResponse({"method": request.method}, status_code=202)

    app = Starlette(
        routes=[
            Route("/projects/{project}/feedback", handler, methods=["POST"]),
            Route("/feedback", handler, methods=["POST", "OPTIONS"]),
        ]
    )
    wrapped = ProjectCors(
        app, path=r"/projects/(?P<project>[^/]+)/feedback", origins=lambda p: ORIGINS.get(p, [])
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


async def test_a_preflight_from_an_allowed_origin_is_allowed_for_post_and_its_headers():
    async with _client() as http:
        r = await http.options("/projects/fraud/feedback", headers=PREFLIGHT)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == PAGE
        assert r.headers["access-control-allow-methods"] == "POST"
        allowed = r.headers["access-control-allow-headers"]
        assert allowed == "Authorization, Content-Type, traceparent"
        assert r.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in r.headers
        r = await http.options(
            "/projects/fraud/feedback",
            headers={**PREFLIGHT, "Access-Control-Request-Headers": "Traceparent"},
        )
        assert r.status_code == 204


async def test_a_preflight_the_project_does_not_allow_is_refused_with_the_reason():
    cases = [
        ({**PREFLIGHT, "Origin": "https://evil.example.com"}, "fraud", "may not send feedback"),
        (PREFLIGHT, "wine", "to project 'wine'"),  # a project that allows no page
        (PREFLIGHT, "nope", "to project 'nope'"),  # a project not known
        ({**PREFLIGHT, "Access-Control-Request-Method": "PUT"}, "fraud", "'PUT' is not allowed"),
        (
            {**PREFLIGHT, "Access-Control-Request-Headers": "authorization,x-api-key"},
            "fraud",
            "headers not allowed here: x-api-key",
        ),
    ]
    async with _client() as http:
        for headers, project, reason in cases:
            r = await http.options(f"/projects/{project}/feedback", headers=headers)
            assert r.status_code == 403, (headers, project)
            assert reason in r.json()["detail"]
            assert "access-control-allow-origin" not in r.headers
            assert r.headers["vary"] == "Origin"


async def test_an_answer_allows_only_the_requests_own_allowed_origin():
    async with _client() as http:
        r = await http.post("/projects/fraud/feedback", headers={"Origin": PAGE})
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == PAGE
        assert r.headers["vary"] == "Origin"
        # Not allowed: the request still reaches the app (the token decides what it may do),
        # but the browser is not let to read the answer.
        r = await http.post("/projects/fraud/feedback", headers={"Origin": "https://evil.test"})
        assert r.status_code == 202
        assert "access-control-allow-origin" not in r.headers
        assert r.headers["vary"] == "Origin"
        # Without an origin (a server, curl): untouched but for Vary.
        r = await http.post("/projects/fraud/feedback")
        assert r.status_code == 202 and "access-control-allow-origin" not in r.headers


async def test_other_paths_answer_no_origin():
    async with _client() as http:
        r = await http.options("/feedback", headers=PREFLIGHT)
        assert r.status_code == 202 and r.json() == {"method": "OPTIONS"}  # the app's own
        r = await http.post("/feedback", headers={"Origin": PAGE})
        assert "access-control-allow-origin" not in r.headers and "vary" not in r.headers
        r = await http.options("/projects/fraud/feedback/more", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in r.headers
