"""The console's own rules, without a browser or services: sessions and their CSRF tokens,
controls offered by role, forms refused with a reason before any service is called, and every
call made with the signed-in person's credential. The services are a fake answering as the
registry, the monitor and the trainer do."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from conveyor_auth import Role, TokenEntry, new_token, token_digest
from conveyor_console.bootstrap import ConsoleSettings
from conveyor_console.domain.views import (
    MAX_LOG_CHARS,
    Person,
    alias_moves,
    comparisons,
    log_tail,
    may_decide,
    params_diff,
    window_accuracy,
)
from conveyor_console.entrypoints.pages import MAX_COMPARED
from conveyor_console.entrypoints.web import ConsoleApp
from conveyor_console.sessions import COOKIE, Sessions
from conveyor_trainer.entrypoints.api import RunInfo

TOKENS = {name: new_token() for name in ("vera", "sam", "alice", "carol")}
ROLES = {"vera": Role.VIEWER, "sam": Role.SCIENTIST, "alice": Role.APPROVER, "carol": Role.APPROVER}


RUN_A, RUN_B, RUN_OTHER = "a" * 32, "b" * 32, "c" * 32


def _run(run_id: str, project: str, **kw: Any) -> dict[str, Any]:
    """A run as the trainer answers it: through its own response model, so the fake cannot
    drift from the real shape."""
    return RunInfo.model_validate(_run_fields(run_id, project) | kw).model_dump(mode="json")


def _run_fields(run_id: str, project: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "project": project,
        "trigger": "person",
        "trigger_info": {},
        "experiment_id": None,
        "variant": None,
        "status": "succeeded",
        "reason": "requested over HTTP",
        "params": {"C": 1.0, "max_iter": 100},
        "metrics": {"accuracy": 0.9, "f1": 0.8},
        "champion_metrics": {},
        "model_version": 1,
        "promoted": False,
        "training_rows": 400,
        "started_at": "2026-12-01T10:00:00Z",
        "finished_at": "2026-12-01T10:01:00Z",
        "duration_s": 60.0,
        "logs": "fit\n",
    }


class FakeServices:
    """The registry, the monitor and the trainer, as far as the console reads and writes them."""

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
        self.runs = {
            RUN_A: _run(RUN_A, "wine", logs="<script>alert(1)</script> done"),
            RUN_B: _run(
                RUN_B,
                "wine",
                status="failed",
                reason="the holdout is too small",
                params={"C": 10.0, "max_iter": 100},
                metrics={"accuracy": 0.95, "f1": 0.7},
                model_version=None,
                started_at="2026-12-02T10:00:00Z",
            ),
            RUN_OTHER: _run(RUN_OTHER, "beer"),
        }
        self.history = {
            "champion": [
                {
                    "alias": "champion",
                    "from_version": None,
                    "to_version": 1,
                    "actor": "trainer",
                    "reason": "passed the gate",
                    "at": "2026-12-01T10:02:00Z",
                }
            ],
            "challenger": [
                {
                    "alias": "challenger",
                    "from_version": None,
                    "to_version": 2,
                    "actor": "sam",
                    "reason": "<b>try</b> it",
                    "at": "2026-12-02T09:00:00Z",
                }
            ],
        }

    def trainer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/projects/wine/runs":
            return httpx.Response(
                200, json=[r for r in self.runs.values() if r["project"] == "wine"]
            )
        if path == "/runs/compare":
            ids = request.url.params.get_list("run_id")
            found = [self.runs[i] for i in ids if i in self.runs]
            metrics = sorted({m for r in found for m in r["metrics"]})
            return httpx.Response(
                200,
                json={
                    "metrics": metrics,
                    "runs": [
                        r | {"estimator": "sklearn.linear_model.LogisticRegression"} for r in found
                    ],
                    "best": {
                        m: max(found, key=lambda r, m=m: r["metrics"].get(m, 0))["run_id"]
                        for m in metrics
                    },
                },
            )
        if path.startswith("/runs/") and path[len("/runs/") :] in self.runs:
            return httpx.Response(200, json=self.runs[path[len("/runs/") :]])
        return httpx.Response(404, json={"detail": f"nothing at {path}"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.refuse_with is not None:
            status, reason = self.refuse_with
            return httpx.Response(status, json={"detail": reason})
        path = request.url.path
        if request.url.host == "trainer.test":
            return self.trainer(request)
        if request.url.host == "monitor.test":
            return httpx.Response(
                200, json={"windows": [], "reference": None, "open_episode": None}
            )
        answers: dict[str, Any] = {
            "/projects": [{"project": "wine", "project_version": 1}],
            "/projects/wine": {"project": "wine", "spec": {"policies": {}}},
            "/projects/wine/aliases": {"champion": 1},
            "/projects/wine/aliases/champion/history": self.history["champion"],
            "/projects/wine/aliases/challenger/history": self.history["challenger"],
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
        trainer_url="http://trainer.test",
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


async def test_the_runs_page_lists_runs_newest_first_with_their_key_metrics(console, fake):
    await sign_in(console, "vera")
    project = (await console.get("/projects/wine")).text
    assert 'href="/projects/wine/runs"' in project and 'href="/projects/wine/versions"' in project
    page = await console.get("/projects/wine/runs")
    assert page.status_code == 200
    assert page.text.index(f'data-run="{RUN_B}"') < page.text.index(f'data-run="{RUN_A}"')
    assert "the holdout is too small" in page.text and "60.0 s" in page.text
    assert "<th>accuracy</th>" in page.text and "0.950" in page.text
    assert RUN_OTHER not in page.text
    trainer_calls = [c for c in fake.calls if c.url.host == "trainer.test"]
    assert trainer_calls and all(
        c.headers["authorization"] == f"Bearer {TOKENS['vera']}" for c in trainer_calls
    )


async def test_a_run_s_log_is_escaped_and_another_project_s_run_is_not_shown(console, fake):
    await sign_in(console, "vera")
    page = await console.get(f"/projects/wine/runs/{RUN_A}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; done" in page.text
    assert 'id="promote-version"' not in page.text  # a viewer asks for no promotion
    other = await console.get(f"/projects/wine/runs/{RUN_OTHER}")
    assert other.status_code == 404 and "No run" in other.text
    fake.calls.clear()
    bad = await console.get("/projects/wine/runs/not-a-run")
    assert bad.status_code == 404 and not fake.calls


async def test_a_scientist_is_offered_to_ask_for_the_promotion_of_a_run_s_version(console):
    await sign_in(console, "sam")
    page = await console.get(f"/projects/wine/runs/{RUN_A}")
    assert 'href="/projects/wine?version=1#ask-promotion"' in page.text
    project = await console.get("/projects/wine?version=1")
    assert 'id="version" name="version" value="1"' in project.text


def test_a_long_log_is_cut_to_its_end():
    text, cut = log_tail("x" * 10 + "y" * MAX_LOG_CHARS)
    assert cut and text == "y" * MAX_LOG_CHARS
    assert log_tail("short") == ("short", False) and log_tail(None) == ("", False)


async def test_runs_compared_side_by_side_mark_the_best_and_the_differing_parameters(console):
    await sign_in(console, "vera")
    page = await console.get(f"/projects/wine/compare?run={RUN_A}&run={RUN_B}")
    assert page.status_code == 200
    accuracy = re.search(r'<tr data-metric="accuracy">(.*?)</tr>', page.text, re.S)
    f1 = re.search(r'<tr data-metric="f1">(.*?)</tr>', page.text, re.S)
    assert accuracy and f1
    assert re.search(r'class="best">0\.9500', accuracy.group(1))  # run B
    assert re.search(r'class="best">0\.8000', f1.group(1))  # run A
    assert '<tr data-param="C" class="differs">' in page.text
    assert '<tr data-param="max_iter">' in page.text


async def test_a_comparison_takes_two_to_a_bounded_number_of_the_project_s_runs(console, fake):
    await sign_in(console, "vera")
    fake.calls.clear()
    one = await console.get(f"/projects/wine/compare?run={RUN_A}")
    assert one.status_code == 400 and "Choose from 2" in one.text
    many = "&".join(f"run={i:032x}" for i in range(MAX_COMPARED + 1))
    assert (await console.get(f"/projects/wine/compare?{many}")).status_code == 400
    bad = await console.get(f"/projects/wine/compare?run={RUN_A}&run=<x>")
    assert bad.status_code == 400
    assert not fake.calls
    other = await console.get(f"/projects/wine/compare?run={RUN_A}&run={RUN_OTHER}")
    assert other.status_code == 404 and RUN_OTHER in other.text


def test_parameters_that_differ_come_first():
    rows = params_diff(
        [{"params": {"a": 1, "b": [1, 2]}}, {"params": {"a": 1, "b": [1, 3], "c": "x"}}]
    )
    assert [(r.name, r.differs) for r in rows] == [("b", True), ("c", True), ("a", False)]
    assert rows[1].values == [None, "x"]


async def test_the_versions_page_shows_every_alias_s_moves_newest_first(console):
    await sign_in(console, "vera")
    page = await console.get("/projects/wine/versions")
    assert page.status_code == 200
    assert page.text.index('data-alias="challenger"') < page.text.index('data-alias="champion"')
    assert "&lt;b&gt;try&lt;/b&gt; it" in page.text and "<b>try</b>" not in page.text
    assert 'by <span class="actor">sam</span>' in page.text
    assert '<tr data-version="1">' in page.text


def test_alias_moves_merge_into_one_timeline():
    moves = alias_moves(
        {
            "champion": [{"to_version": 1, "at": "2026-12-01T00:00:00Z", "actor": "a"}],
            "challenger": [{"to_version": 2, "at": "2026-12-02T00:00:00Z", "actor": "b"}],
            "broken": "not a list",
        }
    )
    assert [(m.alias, m.to_version) for m in moves] == [("challenger", 2), ("champion", 1)]
