"""The console as people use it, in a real browser (Debian's chromium, headless, through
Playwright): each signs in through an OpenID Connect provider (oidc-provider-mock, started by the
test), the console calls the real registry (on the real broker and Postgres) as that person, and
the monitor's own HTTP API over its own tables.

A viewer sees the accuracy chart with its points and no control to ask or decide; a scientist
gets a clear message for a bad form, then asks for a promotion; a viewer's forged decision is
refused by the registry; an approver approves, the champion moves in the registry, and the audit
page shows the approval under the approver's name. A screenshot of each page is saved under
`test-artifacts/console/` (or `$CONVEYOR_TEST_ARTIFACTS/console/`).

The monitor's windows are written into its tables here (what its consumers would write after
judging labeled traffic): calibrating a reference and judging windows takes minutes, and
tests/integration/test_monitor.py covers it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import oidc_provider_mock
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page

from conveyor_console.bootstrap import ConsoleSettings, bootstrap
from conveyor_db import Database, DatabaseSettings, package_migrations
from conveyor_monitor.adapters.repository import Repository
from conveyor_monitor.entrypoints.api import router as monitor_router
from conveyor_registry.bootstrap import RegistrySettings
from conveyor_registry.bootstrap import bootstrap as registry_bootstrap
from conveyor_trainer.adapters.repository import Repository as TrainerRepository
from conveyor_trainer.entrypoints.api import router as trainer_router
from tests.integration.test_browser_feedback import chromium
from tests.integration.test_registry import _version
from tests.support import Listener, in_approval_mode, running, unique_project, until

pytestmark = pytest.mark.integration

ARTIFACTS = Path(os.environ.get("CONVEYOR_TEST_ARTIFACTS") or "test-artifacts") / "console"
CLIENT_ID = "conveyor-console"
ROLE_MAP = {"ml-viewers": ["viewer"], "ml-team": ["scientist"], "ml-leads": ["approver"]}
PEOPLE = {"vera": "ml-viewers", "sam": "ml-team", "alice": "ml-leads"}
ACCURACY = [0.93, 0.91, 0.92, 0.84, 0.78, 0.8]  # the windows' accuracy, oldest first


@pytest.fixture
def provider() -> Iterator[dict[str, Any]]:
    """An OpenID Connect provider with three people, one click each on its sign-in form."""
    users = [
        oidc_provider_mock.User(
            sub=f"id-{name}", claims={"preferred_username": name, "groups": [g]}
        )
        for name, g in PEOPLE.items()
    ]
    with oidc_provider_mock.run_server_in_thread(user_claims=users) as server:
        base = f"http://localhost:{server.server_port}"
        found = httpx.get(base + "/.well-known/openid-configuration", timeout=10).json()
        yield {"issuer": found["issuer"], "jwks": found["jwks_uri"]}


def _oidc(provider: dict[str, Any]) -> dict[str, Any]:
    """The identity provider settings every service and the console are given alike."""
    return {
        "conveyor_oidc_issuer": provider["issuer"],
        "conveyor_oidc_audience": CLIENT_ID,
        "conveyor_oidc_jwks": provider["jwks"],
        "conveyor_oidc_roles_claim": "groups",
        "conveyor_oidc_role_map": ROLE_MAP,
    }


@asynccontextmanager
async def monitor_api(database_url: str, project: str) -> AsyncIterator[str]:
    """The monitor's HTTP API over its own schema, holding six judged performance windows."""
    db = Database(
        DatabaseSettings(database_url=database_url),
        "monitor",
        package_migrations("conveyor_monitor"),
    )
    await db.connect()
    try:
        end = datetime.now(UTC) - timedelta(minutes=len(ACCURACY))
        for i, accuracy in enumerate(ACCURACY):
            at = end + timedelta(minutes=i)
            await db.pool.execute(
                "INSERT INTO windows (project, model_version, kind, started_at, ended_at, size, "
                "drifted, evidence) VALUES ($1, 1, 'performance', $2, $3, 100, $4, $5)",
                project,
                at - timedelta(minutes=1),
                at,
                accuracy < 0.85,
                {"accuracy": accuracy, "label_coverage": 0.5},
            )
        app = FastAPI()
        app.include_router(monitor_router(Repository(db)))
        async with Listener(app) as server:
            yield server.url
    finally:
        await db.close()


@asynccontextmanager
async def trainer_api(database_url: str, project: str) -> AsyncIterator[tuple[str, list[str]]]:
    """The trainer's HTTP API over its own schema, holding two finished runs of the project
    (their ids): the second better on accuracy, with another `C`, and a log with markup."""
    db = Database(
        DatabaseSettings(database_url=database_url),
        "trainer",
        package_migrations("conveyor_trainer"),
    )
    await db.connect()
    ids = [uuid.uuid4().hex for _ in range(2)]  # as the trainer makes them
    try:
        start = datetime.now(UTC) - timedelta(hours=2)
        for i, (run_id, c, accuracy, logs) in enumerate(
            ((ids[0], 1.0, 0.9, "fit 400 rows"), (ids[1], 10.0, 0.95, "<script>x()</script>"))
        ):
            at = start + timedelta(hours=i)
            await db.pool.execute(
                "INSERT INTO runs (run_id, project, trigger, status, reason, params, metrics, "
                "model_version, training_rows, started_at, finished_at, duration_s, logs) "
                "VALUES ($1, $2, 'person', 'succeeded', 'requested over HTTP', $3, $4, $5, 400, "
                "$6, $7, 60.0, $8)",
                run_id,
                project,
                {"C": c, "max_iter": 100},
                {"accuracy": accuracy, "f1": 0.8 - i / 10},
                i + 1,
                at,
                at + timedelta(minutes=1),
                logs,
            )
        app = FastAPI()
        # Only the reads are used here: they need the repository alone.
        app.include_router(trainer_router(None, TrainerRepository(db), None))  # type: ignore[arg-type]
        async with Listener(app) as server:
            yield server.url, ids
    finally:
        await db.close()


async def sign_in(
    browser: Browser, console: str, name: str, seen: list[str]
) -> tuple[BrowserContext, Page]:
    """A browser of `name`'s own, signed in through the identity provider's form."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.on("console", lambda m: seen.append(f"{name}: {m.text}"))
    await page.goto(console + "/signin")
    await page.click("#signin-oidc")
    await page.click(f"button[name=sub][value=id-{name}]")  # the provider's one-click sign-in
    await page.wait_for_selector(f"#who[data-name={name}]", timeout=15_000)
    return context, page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_people_sign_in_see_the_project_ask_and_approve_a_promotion(
    kafka, database_url, provider
):
    spec = in_approval_mode(unique_project("con"))
    name = spec.name
    registry = registry_bootstrap(
        RegistrySettings(
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            database_url=database_url,
            **_oidc(provider),
        )
    )
    seen: list[str] = []
    async with (
        running(registry) as admin,
        Listener(registry.http) as registry_server,
        monitor_api(database_url, name) as monitor_url,
        trainer_api(database_url, name) as (trainer_url, run_ids),
    ):
        assert (await admin.post("/projects", json=spec.model_dump(mode="json"))).status_code == 201
        evaluations = {
            "holdout": {
                "rows": 400,
                "identity": "the newest rows of the training set",
                "metrics": {"accuracy": 0.95},
                "champion_metrics": {"accuracy": 0.9},
                "champion_version": 1,
            }
        }
        for run, extra in (("run-1", {}), ("run-2", {"evaluations": evaluations})):
            r = await admin.post(
                f"/projects/{name}/versions", json=_version(run, run.encode(), **extra)
            )
            assert r.status_code == 201, r.text
        r = await admin.put(
            f"/projects/{name}/aliases/champion", json={"version": 1, "reason": "first"}
        )
        assert r.status_code == 200, r.text

        console = bootstrap(
            ConsoleSettings(
                registry_url=registry_server.url,
                monitor_url=monitor_url,
                trainer_url=trainer_url,
                console_oidc_client_secret="a-confidential-client",
                **_oidc(provider),
            )
        )
        async with Listener(console.http, lifespan="on") as served, chromium() as browser:
            url = served.url

            # A viewer: the projects, the chart with its six points, nothing to ask or decide.
            vera, page = await sign_in(browser, url, "vera", seen)
            row = page.locator(f"#projects tr[data-project={name}]")
            assert await row.locator(".champion").inner_text() == "v1"
            await shot(page, "projects-viewer")
            await page.goto(f"{url}/projects/{name}")
            await page.wait_for_selector("#accuracy[data-drawn]", timeout=15_000)
            assert await page.get_attribute("#accuracy", "data-drawn") == str(len(ACCURACY))
            assert await page.locator("#accuracy canvas").count() >= 1
            assert await page.locator("#ask-promotion").count() == 0
            await shot(page, "project-viewer")

            # A scientist: a bad form is told plainly what is wrong; a good one asks.
            sam, page = await sign_in(browser, url, "sam", seen)
            await page.goto(f"{url}/projects/{name}")
            await page.fill("#version", "two")
            await page.fill("#reason", "")
            answer_waiter = page.expect_response(re.compile(r"/promotions$"))
            async with answer_waiter as answer:
                await page.click("#ask-promotion button[type=submit]")
            assert (await answer.value).status == 400
            text = await page.inner_text("main")
            assert "Version: give a version number" in text and "Reason: say why" in text
            assert "Traceback" not in text
            await shot(page, "project-bad-input")
            await page.fill("#version", "2")
            await page.fill("#reason", "better on the holdout")
            await page.click("#ask-promotion button[type=submit]")
            await page.wait_for_url(f"{url}/approvals")
            section = page.locator(f"section[data-project={name}]")
            assert "asked by sam" in await section.inner_text()
            assert await section.locator("button.approve").count() == 0  # not an approver
            request_id = await section.get_attribute("data-request")
            pending = (
                await admin.get(f"/projects/{name}/promotions", params={"state": "pending"})
            ).json()
            assert [(p["id"], p["requested_by"], p["version"]) for p in pending] == [
                (int(request_id or 0), "sam", 2)
            ]
            await shot(page, "approvals-scientist")

            # The viewer sees the request with its evidence, is offered no decision, and a
            # decision forged with the viewer's own session is refused by the registry.
            await vera.pages[0].goto(f"{url}/approvals")
            section = vera.pages[0].locator(f"section[data-project={name}]")
            assert "0.9500" in await section.locator("table.evidence").inner_text()
            assert await section.locator("button.approve").count() == 0
            csrf = await vera.pages[0].get_attribute(
                "form[action='/signout'] input[name=csrf]", "value"
            )
            forged = await vera.request.post(
                f"{url}/approvals/{name}/{request_id}/approve",
                form={"csrf": csrf or "", "reason": "me"},
            )
            assert "may not decide" in await forged.text()
            assert (await admin.get(f"/projects/{name}/aliases")).json()["champion"] == 1
            await shot(vera.pages[0], "approvals-viewer")

            # The approver approves: the champion moves in the registry.
            alice, page = await sign_in(browser, url, "alice", seen)
            await page.goto(f"{url}/approvals")
            section = page.locator(f"section[data-project={name}]")
            await shot(page, "approvals-approver")
            await section.locator("input.reason").fill("holdout and regression set reviewed")
            await section.locator("button.approve").click()
            await page.wait_for_selector(".flash.ok", timeout=15_000)
            assert "approved" in await page.inner_text(".flash.ok")
            assert (await admin.get(f"/projects/{name}/aliases")).json()["champion"] == 2
            decided = (await admin.get(f"/projects/{name}/promotions/{request_id}")).json()
            assert decided["state"] == "approved" and decided["decided_by"] == "alice"

            # The audit page shows the approval under alice's name (once the log has it).
            async def approval_shown() -> bool:
                await page.goto(f"{url}/audit?project={name}&action=promotion")
                rows = page.locator("#audit tr[data-action='promotion.approve']")
                return await rows.count() == 1 and "alice" in await rows.first.inner_text()

            await until(approval_shown, 30, "the approval on the audit page")
            row_text = await page.locator("#audit tr[data-action='promotion.approve']").inner_text()
            assert "oidc" in row_text and "approver" in row_text
            await shot(page, "audit")
            await page.goto(f"{url}/projects/{name}")
            assert "alice" in await page.inner_text("#timeline")
            await shot(page, "project-after-approval")

            # The versions page: every alias move, the approval's under alice's name.
            await page.click("#project-pages a[href$='/versions']")
            moves = page.locator("#moves li[data-alias=champion]")
            assert await moves.count() == 2
            assert "alice" in await moves.first.inner_text()
            await shot(page, "versions")

            # The runs, from the trainer: two compared side by side, then one with its log.
            await page.goto(f"{url}/projects/{name}/runs")
            assert await page.locator("#runs tr[data-run]").count() == 2
            for run_id in run_ids:
                await page.check(f"#runs input[value='{run_id}']")
            await shot(page, "runs")
            await page.click("#compare-runs button[type=submit]")
            await page.wait_for_selector("#compare")
            best = page.locator("#compare tr[data-metric=accuracy] td.best")
            assert (await best.inner_text()).startswith("0.9500")
            assert await page.locator("#compare tr.differs[data-param=C]").count() == 1
            assert await page.locator("#compare tr.differs[data-param=max_iter]").count() == 0
            await shot(page, "runs-compared")
            await page.goto(f"{url}/projects/{name}/runs/{run_ids[1]}")
            assert await page.inner_text("#logs") == "<script>x()</script>"  # shown, not run
            await shot(page, "run")

            # Signing out ends the session: the pages ask to sign in again.
            await page.click("#signout")
            await page.wait_for_url(f"{url}/signin")
            await page.goto(f"{url}/approvals")
            assert page.url == f"{url}/signin"
            for context in (vera, sam, alice):
                await context.close()
    blocked = [s for s in seen if "Content Security Policy" in s or "Refused to" in s]
    assert not blocked, blocked
