"""Roles, project limits and the `caller` dependency (libs/auth)."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from conveyor_auth import (
    Action,
    Forbidden,
    Principal,
    Role,
    TokenFile,
    TokenStore,
    caller,
    grants,
    install,
)


def test_the_feedback_role_sends_feedback_and_nothing_else():
    assert [a for a in Action if grants({Role.FEEDBACK}, a)] == [Action.FEEDBACK]
    for role in (Role.APP, Role.SCIENTIST, Role.APPROVER, Role.ADMIN):
        assert grants({role}, Action.FEEDBACK), role
    assert not grants({Role.VIEWER}, Action.FEEDBACK)


def test_a_principal_limited_to_projects_acts_on_those_only():
    everywhere = Principal("app", frozenset({Role.APP}))
    page = Principal("page", frozenset({Role.FEEDBACK}), frozenset({"fraud", "wine"}))
    assert everywhere.may_act_on("anything")
    assert page.may_act_on("fraud") and page.may_act_on("wine")
    assert not page.may_act_on("loans")
    page.require_project("wine")
    with pytest.raises(Forbidden, match=r"page may act on fraud, wine only, not on 'loans'"):
        page.require_project("loans")


def test_a_token_file_keeps_a_tokens_projects(tmp_path):
    path = tmp_path / "tokens.json"
    tokens, app_token = TokenFile().issue("an-app", [Role.APP])
    tokens, page_token = tokens.issue("a-page", ["feedback"], ["wine", "fraud", "wine"])
    tokens.write(path)
    entries = json.loads(path.read_text())["tokens"]
    # An unlimited entry is written as before limits existed; a limited one lists its projects.
    assert entries[0].keys() == {"name", "token_sha256", "roles"}
    assert entries[1]["projects"] == ["fraud", "wine"]
    store = TokenStore(path)
    assert store.authenticate(app_token).projects is None
    page = store.authenticate(page_token)
    assert page == Principal("a-page", frozenset({Role.FEEDBACK}), frozenset({"fraud", "wine"}))


@pytest.mark.parametrize("projects", [[], ["Fraud"], ["x" * 64], [f"p-{i}" for i in range(101)]])
def test_a_token_is_limited_to_real_project_names(projects):
    with pytest.raises(ValidationError):
        TokenFile().issue("a-page", [Role.FEEDBACK], projects)


def _app(tmp_path) -> tuple[FastAPI, dict[str, str]]:
    tokens, app_token = TokenFile().issue("an-app", [Role.APP])
    tokens, page_token = tokens.issue("a-page", [Role.FEEDBACK], ["fraud"])
    tokens, scoped_app = tokens.issue("an-app-for-fraud", [Role.APP], ["fraud"])
    tokens.write(tmp_path / "tokens.json")
    app = FastAPI()
    install(app, TokenStore(tmp_path / "tokens.json"))

    @app.post("/projects/{project}/feedback")
    async def by_path(project: str, who: Annotated[Principal, caller(Action.FEEDBACK)]) -> str:
        return who.name

    @app.post("/feedback")
    async def by_body(
        body: dict[str, str],
        who: Annotated[Principal, caller(Action.FEEDBACK, checks_project=True)],
    ) -> str:
        who.require_project(body["project"])
        return who.name

    @app.post("/records")
    async def unchecked(who: Annotated[Principal, caller(Action.SUBMIT)]) -> str:
        return who.name

    @app.post("/projects/{project}/records")
    async def records(project: str, who: Annotated[Principal, caller(Action.SUBMIT)]) -> str:
        return who.name

    return app, {"app": app_token, "page": page_token, "scoped-app": scoped_app}


async def test_caller_holds_a_limited_token_to_its_projects(tmp_path):
    app, tokens = _app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

        async def post(path: str, who: str, **body: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            return await http.post(path, json=body, headers=headers)

        # Its own project, by the path or by the body.
        assert (await post("/projects/fraud/feedback", "page")).json() == "a-page"
        assert (await post("/feedback", "page", project="fraud")).json() == "a-page"
        # Another project, either way.
        r = await post("/projects/wine/feedback", "page")
        assert r.status_code == 403 and "not on 'wine'" in r.json()["detail"]
        r = await post("/feedback", "page", project="wine")
        assert r.status_code == 403 and "not on 'wine'" in r.json()["detail"]
        # Any other write: the role does not grant it, on its own project too.
        r = await post("/projects/fraud/records", "page")
        assert r.status_code == 403 and "a-page (feedback) may not submit" in r.json()["detail"]
        # A limited role that may submit still meets its limit where the endpoint cannot tell
        # the project, and on other projects' paths.
        assert (await post("/projects/fraud/records", "scoped-app")).status_code == 200
        assert (await post("/projects/wine/records", "scoped-app")).status_code == 403
        r = await post("/records", "scoped-app")
        assert r.status_code == 403 and "does not say which project" in r.json()["detail"]
        # An unlimited caller is not affected.
        assert (await post("/records", "app")).json() == "an-app"
        assert (await post("/projects/wine/feedback", "app")).json() == "an-app"
