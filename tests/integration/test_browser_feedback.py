"""A web page sends a label from a real browser (Debian's chromium, headless, through
Playwright): it imports the module the feedback service serves, calls from another origin with a
token that may send feedback for one project only, and the label is joined to the prediction.
An origin the project does not list is blocked by the browser; the token is refused for another
project and for any other write.

`make test` installs chromium (`make browser`) when it is missing; without it this test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from conveyor_auth import Role, TokenEntry, new_token, token_digest
from conveyor_contracts import catalog
from conveyor_contracts.events import new_id
from conveyor_contracts.project import FeedbackAccess
from conveyor_feedback.bootstrap import FeedbackSettings
from conveyor_feedback.bootstrap import bootstrap as feedback_bootstrap
from conveyor_registry.bootstrap import RegistrySettings
from conveyor_registry.bootstrap import bootstrap as registry_bootstrap
from tests.support import Kafka, Listener, bearer, running, served, unique_project, until

pytestmark = pytest.mark.integration

# Debian's, as `make browser` installs it.
CHROMIUM = Path(os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A product UI: shows a prediction, and sends the user's verdict with the platform's module.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Payment review</title></head>
<body>
<script type="application/json" id="config">{config}</script>
<p>Payment <code id="request"></code>: was it fraud?</p>
<button id="fraud">Fraud</button> <button id="legit">Legit</button>
<output id="result"></output>
<script type="module">
  const config = JSON.parse(document.getElementById("config").textContent);
  document.getElementById("request").textContent = config.requestId;
  const {{ sendFeedback, FeedbackError }} = await import(config.module);
  for (const label of ["fraud", "legit"]) {{
    document.getElementById(label).addEventListener("click", async () => {{
      const result = document.getElementById("result");
      try {{
        const outcome = await sendFeedback({{
          baseUrl: config.service, project: config.project, token: config.token,
          requestId: config.requestId, label, feedbackId: config.feedbackId,
          timeoutMs: config.timeoutMs,
        }});
        result.textContent = JSON.stringify(outcome);
        result.dataset.state = "sent";
      }} catch (error) {{
        result.textContent = JSON.stringify({{
          name: error.name, status: error.status, reason: error.reason, message: error.message,
        }});
        result.dataset.state = error instanceof FeedbackError ? "refused" : "failed";
      }}
    }});
  }}
  document.body.dataset.ready = "yes";
</script>
</body></html>
"""


@asynccontextmanager
async def pages() -> AsyncIterator[int]:
    """A web server of the product's own, on a port of its own: `/review?config=...` is the
    page with that configuration. Reached as 127.0.0.1 and as localhost, it is two origins."""

    async def review(request: Request) -> HTMLResponse:
        config = json.loads(request.query_params["config"])
        # As JSON inside a script element: nothing in it may close the element.
        embedded = json.dumps(config).replace("</", "<\\/")
        return HTMLResponse(PAGE.format(config=embedded))

    async with Listener(Starlette(routes=[Route("/review", review)])) as server:
        yield int(server.url.rsplit(":", 1)[1])


@asynccontextmanager
async def silent() -> AsyncIterator[str]:
    """An address that accepts connections and never answers: what a client's time-out is for."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


def chromium_path() -> str:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    return str(CHROMIUM)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def click(
    browser: Browser, page_url: str, config: dict[str, Any], label: str, console: list[str]
) -> Any:
    """Open the page with `config`, click `label`, and give what the page showed: its state
    (`sent`, `refused`) and the outcome or the error. What the browser logged on the page's
    console goes to `console`."""
    page = await browser.new_page()
    page.on("console", lambda message: console.append(message.text))
    try:
        await page.goto(f"{page_url}/review?{urlencode({'config': json.dumps(config)})}")
        await page.wait_for_selector("body[data-ready=yes]", timeout=15_000)
        await page.click(f"#{label}")
        result = await page.wait_for_selector("#result[data-state]", timeout=15_000)
        assert result is not None
        return await result.get_attribute("data-state"), json.loads(await result.inner_text())
    finally:
        await page.close()


async def test_a_page_sends_a_label_from_the_browser(kafka, database_url):
    spec, other = unique_project("page"), unique_project("page")
    page_token = new_token()
    # The page's token: public, so it may send feedback for the page's project and nothing else.
    entry = TokenEntry(
        name="review-page",
        token_sha256=token_digest(page_token),
        roles=[Role.FEEDBACK],
        projects=[spec.name],
    )
    common = {
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "database_url": database_url,
        "conveyor_tokens": [entry],
    }
    q1, q2, q3 = new_id(), new_id(), new_id()
    async with (
        pages() as port,
        silent() as nowhere,
        Kafka(kafka.bootstrap_servers) as k,
        running(registry_bootstrap(RegistrySettings(**common))) as registry,
        Listener(feedback_bootstrap(FeedbackSettings(**common)).http, lifespan="on") as service,
        chromium() as browser,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        allowed, blocked = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
        for project in (spec, other):  # both let the product's page send labels
            access = FeedbackAccess(allowed_origins=[allowed])
            body = project.model_copy(update={"feedback": access})
            r = await registry.post("/projects", json=body.model_dump(mode="json"))
            assert r.status_code == 201, r.text
        for q in (q1, q2, q3):
            await k.send(catalog.PREDICTIONS_RESPONSES, served(spec.name, q), key=q)
        await k.send(catalog.PREDICTIONS_RESPONSES, served(other.name, q3), key=q3)

        async def knows_both() -> bool:
            health = (await http.get("/healthz")).json()["projects"]
            return spec.name in health and other.name in health

        await until(knows_both, what="the feedback service to know both projects")

        # The module, served by the platform for pages of any origin to import.
        module = await http.get("/client/conveyor-feedback.js")
        assert module.status_code == 200
        assert module.headers["content-type"] == "text/javascript; charset=utf-8"
        assert module.headers["cache-control"] == "public, max-age=300"
        assert module.headers["access-control-allow-origin"] == "*"
        assert "export async function sendFeedback" in module.text
        again = await http.get(
            "/client/conveyor-feedback.js", headers={"If-None-Match": module.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""

        config = {
            "module": f"{service.url}/client/conveyor-feedback.js",
            "service": service.url,
            "project": spec.name,
            "token": page_token,
            "requestId": q1,
            "feedbackId": f"page-{q1}",
        }
        console: list[str] = []
        # The page's origin is allowed: the label is taken and joined to its prediction.
        state, outcome = await click(browser, allowed, config, "legit", console)
        assert state == "sent", outcome
        assert outcome["feedbackId"] == f"page-{q1}"
        assert f"page-{q1}" in outcome["recorded"] + outcome["waiting"]

        async def joined() -> list[dict[str, Any]]:
            r = await http.get(f"/projects/{spec.name}/predictions/{q1}/labels")
            return r.json() if r.status_code == 200 else []

        history = await until(joined, what="the page's label joined")
        assert [(h["feedback_id"], h["label"], h["sent_by"]) for h in history] == [
            (f"page-{q1}", "legit", "review-page")
        ]
        recorded = await k.collect(
            catalog.FEEDBACK_RECORDED.name,
            lambda e: e.request_id == q1,
            1,
            decode=catalog.FEEDBACK_RECORDED,
        )
        assert (recorded[0].label, recorded[0].predicted_label, recorded[0].correct) == (
            "legit",
            "fraud",
            False,
        )

        assert not [line for line in console if "CORS" in line], console
        # Another origin: the browser's preflight is refused, so nothing is sent at all.
        state, error = await click(browser, blocked, config | {"requestId": q2}, "fraud", console)
        assert (state, error["name"], error["status"], error["reason"]) == (
            "refused",
            "FeedbackError",
            0,
            "network",
        )
        assert any(
            "has been blocked by CORS policy" in line and blocked in line for line in console
        ), console
        preflight = await http.options(
            f"/projects/{spec.name}/feedback",
            headers={"Origin": blocked, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 403
        assert "access-control-allow-origin" not in preflight.headers

        # The allowed page, but another project: the token is refused, and the page reads why.
        wrong = config | {"project": other.name, "requestId": q3, "feedbackId": None}
        state, error = await click(browser, allowed, wrong, "fraud", console)
        assert (state, error["status"]) == ("refused", 403), error
        assert f"review-page may act on {spec.name} only" in error["reason"]

        # A service that does not answer: the module gives up at its time-out.
        state, error = await click(
            browser, allowed, config | {"service": nowhere, "timeoutMs": 500}, "fraud", console
        )
        assert (state, error["status"], error["reason"]) == ("refused", 0, "timeout"), error

        # Neither refused label was taken.
        for project, q in ((spec.name, q2), (other.name, q3)):
            r = await http.get(f"/projects/{project}/predictions/{q}/labels")
            assert r.status_code == 404

        # Outside the browser, the token still sends labels and nothing else.
        page = {"Authorization": f"Bearer {page_token}"}
        r = await http.post(
            "/feedback", json={"project": other.name, "request_id": q3, "label": "fraud"}
        )
        assert r.status_code == 401  # no token at all
        r = await http.post(
            "/feedback",
            json={"project": other.name, "request_id": q3, "label": "fraud"},
            headers=page,
        )
        assert r.status_code == 403 and "may act on" in r.json()["detail"]
        r = await registry.post("/projects", json=spec.model_dump(mode="json"), headers=page)
        assert r.status_code == 403 and "review-page (feedback) may not apply" in r.text
        # The body may name the path's project, and no other.
        r = await http.post(
            f"/projects/{spec.name}/feedback",
            json={"project": other.name, "request_id": q2, "label": "fraud"},
            headers=page,
        )
        assert r.status_code == 422 and "is not the path's" in r.text
        r = await http.post(
            f"/projects/{spec.name}/feedback",
            json={"project": spec.name, "request_id": q2, "label": "fraud"},
            headers=bearer("an-app"),
        )
        assert r.status_code == 202
