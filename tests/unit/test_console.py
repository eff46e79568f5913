"""The console's own rules, without a browser or services: sessions and their CSRF tokens,
controls offered by role, forms refused with a reason before any service is called, and every
call made with the signed-in person's credential. The services are a fake answering as the
registry and the monitor do."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from conveyor_auth import Role, TokenEntry, new_token, token_digest
from conveyor_console.bootstrap import ConsoleSettings
from conveyor_console.domain.views import Person, comparisons, may_decide, window_accuracy
from conveyor_console.entrypoints.web import ConsoleApp
from conveyor_console.sessions import COOKIE, Sessions

TOKENS = {name: new_token() for name in ("vera", "sam", "alice", "carol")}
ROLES = {"vera": Role.VIEWER, "sam": Role.SCIENTIST, "alice": Role.APPROVER, "carol": Role.APPROVER}


class FakeServices:
    """The registry and the monitor, as far as the console reads and writes them."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.refuse_with: tuple[int, str] | None = None
        self.promotions = [
            {
                "id": 7,
                "project": "wine",
                "alias": "champion",
                "version": 2,
                "requested_by": "carol",
                "reason": "better",
                "evidence": {},
                "state": "pending",
                "created_at": "2026-12-01T10:00:00Z",
            }
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.refuse_with is not None:
            status, reason = self.refuse_with
            return httpx.Response(status, json={"detail": reason})
        path = request.url.path
        if request.url.host == "monitor.test":
            return httpx.Response(
                200, json={"windows": [], "reference": None, "open_episode": None}
            )
        answers: dict[str, Any] = {
            "/projects": [{"project": "wine", "project_version": 1}],
            "/projects/wine": {"project": "wine", "spec": {"policies": {}}},
            "/projects/wine/aliases": {"champion": 1},
            "/projects/wine/aliases/champion/history": [],
            "/projects/wine/versions": [{"version": 1, "status": "ready", "metrics": {}}],
            "/projects/wine/versions/2": {"version": 2, "evaluations": {}},
            "/projects/wine/promotions": self.promotions,
        }
        if request.method == "POST" and path == "/projects/wine/promotions":
            body = json.loads(request.content)
            return httpx.Response(201, json=body | {"id": 8, "state": "pending"})
        if path in answers:
            return httpx.Response(200, json=answers[path])
        return httpx.Response(404, json={"detail": f"nothing at {path}"})


@pytest.fixture
def fake() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def console(fake: FakeServices):
    entries = [
        TokenEntry(name=name, token_sha256=token_digest(token), roles=[ROLES[name]])
        for name, token in TOKENS.items()
    ]
    settings = ConsoleSettings(
        registry_url="http://registry.test",
        monitor_url="http://monitor.test",
        conveyor_tokens=entries,
        conveyor_tokens_file=None,
    )
    app = ConsoleApp(settings, transport=httpx.MockTransport(fake))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.http), base_url="http://console.test"
    ) as client:
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, name: str) -> str:
    """Signs in with the person's token; the CSRF token of the session it opens."""
    page = await client.get("/signin")
    answer = await client.post("/signin", data={"token": TOKENS[name], "csrf": _csrf(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    return _csrf((await client.get("/")).text)


async def test_pages_ask_to_sign_in_and_carry_a_strict_content_security_policy(console):
    answer = await console.get("/")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    page = await console.get("/signin")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_a_token_nobody_holds_is_refused_with_the_reason(console, fake):
    page = await console.get("/signin")
    answer = await console.post("/signin", data={"token": "nope", "csrf": _csrf(page.text)})
    assert answer.status_code == 401
    assert "Not signed in: the bearer token is not one this service knows" in answer.text
    assert not fake.calls


async def test_a_form_without_the_session_s_csrf_token_is_refused(console, fake):
    await console.get("/signin")
    answer = await console.post("/signin", data={"token": TOKENS["sam"], "csrf": "forged"})
    assert answer.status_code == 403 and "did not come from the console" in answer.text
    csrf = await sign_in(console, "sam")
    forged = await console.post(
        "/projects/wine/promotions", data={"version": "2", "reason": "x", "csrf": csrf + "x"}
    )
    assert forged.status_code == 403
    assert not [c for c in fake.calls if c.method == "POST"]


async def test_signing_in_gives_a_new_session_and_signing_out_ends_it(console):
    await console.get("/signin")
    before = console.cookies[COOKIE]
    csrf = await sign_in(console, "vera")
    assert console.cookies[COOKIE] != before  # a session id fixed before sign-in is worthless
    out = await console.post("/signout", data={"csrf": csrf})
    assert out.status_code == 303
    again = await console.get("/", cookies={COOKIE: before})
    assert again.status_code == 303 and again.headers["location"] == "/signin"


async def test_services_are_called_with_the_person_s_credential(console, fake):
    await sign_in(console, "vera")
    await console.get("/projects/wine")
    assert fake.calls
    for call in fake.calls:
        assert call.headers["authorization"] == f"Bearer {TOKENS['vera']}"
        assert call.headers["x-request-id"].startswith("console-")


async def test_the_promotion_form_is_offered_to_a_scientist_not_a_viewer(console):
    await sign_in(console, "vera")
    assert 'id="ask-promotion"' not in (await console.get("/projects/wine")).text
    await sign_in(console, "sam")
    assert 'id="ask-promotion"' in (await console.get("/projects/wine")).text


async def test_decisions_are_offered_to_approvers_on_others_requests_only(console):
    await sign_in(console, "sam")
    assert 'class="approve"' not in (await console.get("/approvals")).text
    await sign_in(console, "carol")  # carol asked for request 7
    page = (await console.get("/approvals")).text
    assert 'class="approve"' not in page and "You asked for this" in page
    await sign_in(console, "alice")
    assert 'action="/approvals/wine/7/approve"' in (await console.get("/approvals")).text


async def test_bad_input_in_the_promotion_form_is_told_plainly_and_not_sent(console, fake):
    csrf = await sign_in(console, "sam")
    fake.calls.clear()
    answer = await console.post(
        "/projects/wine/promotions",
        data={"version": "two", "alias": "Champion!", "reason": "", "csrf": csrf},
    )
    assert answer.status_code == 400
    for said in ("Version: give a version number", "Alias: lowercase", "Reason: say why"):
        assert said in answer.text
    assert "Traceback" not in answer.text
    assert not [c for c in fake.calls if c.method == "POST"]


async def test_a_refusal_of_the_service_is_shown_with_its_reason(console, fake):
    csrf = await sign_in(console, "alice")
    fake.refuse_with = (409, "request 7 is approved already")
    answer = await console.post(
        "/approvals/wine/7/approve", data={"reason": "ok", "csrf": csrf}, follow_redirects=True
    )
    assert "Not approved: request 7 is approved already" in answer.text


async def test_a_credential_the_services_no_longer_take_signs_the_person_out(console, fake):
    await sign_in(console, "vera")
    fake.refuse_with = (401, "the token has expired: sign in again")
    answer = await console.get("/audit")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    page = await console.get("/signin")
    assert "Signed out: the token has expired" in page.text


async def test_an_unknown_project_name_is_refused_before_any_call(console, fake):
    await sign_in(console, "vera")
    fake.calls.clear()
    answer = await console.get("/projects/..%2Fetc")
    assert answer.status_code == 404 and not fake.calls


def test_sessions_expire_are_bounded_and_compare_csrf_tokens():
    now = [1000.0]
    sessions = Sessions(ttl_s=60, max_sessions=10, clock=lambda: now[0])
    first = sessions.open()
    assert sessions.get(first.id) is first and first.csrf_ok(first.csrf)
    assert not first.csrf_ok(None) and not first.csrf_ok(first.csrf[:-1])
    for _ in range(12):
        sessions.open()
    assert len(sessions) == 10 and sessions.get(first.id) is None  # the oldest went first
    kept = sessions.open()
    signed = sessions.sign_in(kept, Person("vera", frozenset({Role.VIEWER}), "token"), "t", 1030)
    assert sessions.get(kept.id) is None and signed.expires_at == 1030  # the credential's end
    for _ in range(50):  # a flood of visits does not sign anyone out
        sessions.open()
    assert sessions.get(signed.id) is signed
    now[0] = 1031
    assert sessions.get(signed.id) is None


def test_the_accuracy_chart_has_the_performance_windows_oldest_first():
    drift = {
        "reference": {"holdout_accuracy": 0.9},
        "windows": [
            {
                "kind": "performance",
                "ended_at": "2026-12-01T10:02:00+00:00",
                "evidence": {"accuracy": 0.7},
            },
            {"kind": "data", "ended_at": "2026-12-01T10:01:30+00:00", "evidence": {}},
            {
                "kind": "performance",
                "ended_at": "2026-12-01T10:01:00+00:00",
                "evidence": {"accuracy": 0.95},
            },
            {"kind": "performance", "ended_at": "not a time", "evidence": {"accuracy": 0.5}},
        ],
    }
    series = window_accuracy(drift)
    assert series.x == sorted(series.x) and len(series) == 2
    assert series.ys == {"window accuracy": [0.95, 0.7], "reference (holdout)": [0.9, 0.9]}


def test_evidence_rows_put_the_candidate_beside_the_champion():
    (row,) = comparisons(
        {
            "holdout": {
                "rows": 400,
                "metrics": {"accuracy": 0.95},
                "champion_metrics": {"accuracy": 0.9, "f1": 0.8},
            }
        }
    )
    assert row.metrics == [("accuracy", 0.95, 0.9), ("f1", None, 0.8)]


def test_nobody_decides_their_own_request():
    alice = Person("alice", frozenset({Role.APPROVER}), "oidc")
    assert may_decide(alice, {"state": "pending", "requested_by": "carol"})
    assert not may_decide(alice, {"state": "pending", "requested_by": "alice"})
    assert not may_decide(alice, {"state": "approved", "requested_by": "carol"})
    sam = Person("sam", frozenset({Role.SCIENTIST}), "token")
    assert not may_decide(sam, {"state": "pending", "requested_by": "carol"})
