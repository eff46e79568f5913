"""The console's pages: projects, a project (its accuracy over time, versions, alias moves),
approvals, and the audit log; and the forms that ask for a promotion and decide one.

Every read and write goes to a service as the signed-in person (`Caller`), so each rule is the
service's: a control is offered only to a role that may use it, and a refusal the service still
gives is shown with its reason.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from conveyor_auth import Action

from ..adapters.services import ServiceError
from ..domain.views import (
    alias_moves,
    aliases_by_name,
    comparisons,
    key_metrics,
    log_tail,
    may_decide,
    newest_first,
    newest_runs,
    open_episode,
    params_diff,
    window_accuracy,
)

if TYPE_CHECKING:
    from .web import ConsoleApp

PROJECT = re.compile(r"^[a-z][a-z0-9-]{1,62}$")  # the contracts' project names
ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
FILTER = re.compile(r"^[A-Za-z0-9._:@ -]{0,200}$")  # what an audit filter may be
MAX_REASON = 1000
MAX_VERSION = 2**31 - 1
RUN_ID = re.compile(r"^[0-9a-f]{1,64}$")  # the trainer's run ids (uuid4 hex)
MAX_COMPARED = 8  # runs side by side: more would not fit a page's width
MAX_ALIASES = 20  # aliases whose history the versions page reads


class Refused(Exception):
    """A request the console itself refuses (bad input, a stale form): shown as a page."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _console(request: Request) -> ConsoleApp:
    from .web import console_of

    return console_of(request)


def _project(name: str) -> str:
    if not PROJECT.match(name):
        raise Refused(404, "No project has that name.")
    return name


def _names(listed: Any) -> list[str]:
    """The project names of the registry's list."""
    if not isinstance(listed, list):
        return []
    return sorted(str(p["project"]) for p in listed if isinstance(p, dict) and "project" in p)


async def _or_none(coro: Any) -> Any:
    """A part of a page that may be missing (its service down): None, and the page goes on."""
    try:
        return await coro
    except ServiceError:
        return None


def router() -> APIRouter:
    api = APIRouter()

    @api.get("/")
    async def projects(request: Request) -> Response:
        console = _console(request)
        _session, person, caller = console.person(request)
        services = console.services
        try:
            listed = await services.get(caller, "registry", "/projects")
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        names = _names(listed)

        async def row(name: str) -> dict[str, Any]:
            aliases, spec, drift = await asyncio.gather(
                _or_none(services.get(caller, "registry", f"/projects/{name}/aliases")),
                _or_none(services.get(caller, "registry", f"/projects/{name}")),
                _or_none(services.get(caller, "monitor", f"/projects/{name}/drift")),
            )
            policies = ((spec or {}).get("spec") or {}).get("policies") or {}
            return {
                "name": name,
                "aliases": aliases_by_name(aliases),
                "serving": (policies.get("serving") or {}).get("challenger", "off"),
                "promotion": (policies.get("promotion") or {}).get("mode", "?"),
                "episode": open_episode(drift),
                "monitor_known": drift is not None,
            }

        rows = await asyncio.gather(*(row(n) for n in names))
        return console.render(request, "projects.html", projects=rows, person=person)

    @api.get("/projects/{project}")
    async def project(request: Request, project: str) -> Response:
        # A version to ask about may come from a run's page (`?version=`): only digits are kept.
        version = request.query_params.get("version", "")
        form = {"version": version} if version.isdigit() and len(version) <= 10 else None
        return await _project_page(request, _project(project), form=form)

    @api.get("/projects/{project}/runs")
    async def runs(request: Request, project: str) -> Response:
        console = _console(request)
        name = _project(project)
        _session, _person, caller = console.person(request)
        try:
            found = await console.services.get(caller, "trainer", f"/projects/{name}/runs")
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        listed, total = newest_runs(found)
        return console.render(
            request,
            "runs.html",
            project=name,
            runs=listed,
            total=total,
            metrics=key_metrics(listed),
            max_compared=MAX_COMPARED,
        )

    @api.get("/projects/{project}/runs/{run_id}")
    async def run(request: Request, project: str, run_id: str) -> Response:
        console = _console(request)
        name = _project(project)
        if not RUN_ID.match(run_id):
            raise Refused(404, "No run has that id.")
        _session, person, caller = console.person(request)
        try:
            found = await console.services.get(caller, "trainer", f"/runs/{run_id}")
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        if not isinstance(found, dict) or found.get("project") != name:
            raise Refused(404, f"No run {run_id} in {name}.")
        logs, cut = log_tail(found.get("logs"))
        return console.render(
            request,
            "run.html",
            project=name,
            run=found,
            logs=logs,
            logs_cut=cut,
            may_promote=person.may(Action.PROMOTE),
        )

    @api.get("/projects/{project}/compare")
    async def compare(request: Request, project: str) -> Response:
        console = _console(request)
        name = _project(project)
        _session, _person, caller = console.person(request)
        chosen = list(dict.fromkeys(request.query_params.getlist("run")))
        if len(chosen) < 2 or len(chosen) > MAX_COMPARED:
            raise Refused(400, f"Choose from 2 to {MAX_COMPARED} runs to compare.")
        if not all(RUN_ID.match(r) for r in chosen):
            raise Refused(400, "A run id is a trainer's run id (hexadecimal).")
        try:
            found = await console.services.get(caller, "trainer", "/runs/compare", run_id=chosen)
            # The comparison does not name projects: each run's own record says whose it is.
            owners = await asyncio.gather(
                *(console.services.get(caller, "trainer", f"/runs/{r}") for r in chosen)
            )
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        strangers = [
            r
            for r, o in zip(chosen, owners, strict=True)
            if not isinstance(o, dict) or o.get("project") != name
        ]
        if strangers:
            raise Refused(404, f"Not runs of {name}: {', '.join(strangers)}.")
        if not isinstance(found, dict):
            raise Refused(502, "The trainer answered the comparison with something unexpected.")
        compared = found.get("runs") or []
        return console.render(
            request,
            "compare.html",
            project=name,
            runs=compared,
            params=params_diff(compared),
            metrics=found.get("metrics") or [],
            best=found.get("best") or {},
        )

    @api.get("/projects/{project}/versions")
    async def versions(request: Request, project: str) -> Response:
        console = _console(request)
        name = _project(project)
        _session, _person, caller = console.person(request)
        services = console.services
        try:
            listed, aliases = await asyncio.gather(
                services.get(caller, "registry", f"/projects/{name}/versions"),
                services.get(caller, "registry", f"/projects/{name}/aliases"),
            )
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        current = aliases_by_name(aliases)
        names = sorted(set(current) | {"champion", "challenger"})[:MAX_ALIASES]
        histories = await asyncio.gather(
            *(
                _or_none(services.get(caller, "registry", f"/projects/{name}/aliases/{a}/history"))
                for a in names
            )
        )
        return console.render(
            request,
            "versions.html",
            project=name,
            versions=sorted(listed, key=lambda v: -int(v.get("version", 0))),
            aliases=current,
            moves=alias_moves(dict(zip(names, histories, strict=True))),
        )

    @api.post("/projects/{project}/promotions")
    async def ask(request: Request, project: str) -> Response:
        console = _console(request)
        name = _project(project)
        session, form = await console.posted(request)
        _session, _person, caller = console.person(request)
        problems = []
        version_text = form.get("version", "").strip()
        if not version_text.isdigit() or not 1 <= int(version_text) <= MAX_VERSION:
            problems.append("Version: give a version number (1, 2, ...).")
        alias = form.get("alias", "champion").strip()
        if not ALIAS.match(alias):
            problems.append("Alias: lowercase letters, digits and dashes (champion, challenger).")
        reason = form.get("reason", "").strip()
        if not reason or len(reason) > MAX_REASON:
            problems.append(f"Reason: say why, in at most {MAX_REASON} characters.")
        if problems:
            return await _project_page(request, name, problems=problems, form=form, status=400)
        body = {"alias": alias, "version": int(version_text), "reason": reason}
        try:
            asked = await console.services.post(
                caller, "registry", f"/projects/{name}/promotions", body
            )
        except ServiceError as exc:
            return await _project_page(
                request, name, problems=[f"Not asked: {exc.reason}"], form=form, status=exc.status
            )
        session.flash(
            "ok", f"Asked for v{asked['version']} as {asked['alias']} (request {asked['id']})."
        )
        return RedirectResponse("/approvals", status_code=303)

    @api.get("/approvals")
    async def approvals(request: Request) -> Response:
        console = _console(request)
        _session, person, caller = console.person(request)
        services = console.services
        listed = await services.get(caller, "registry", "/projects")
        names = _names(listed)

        async def pending(name: str) -> list[dict[str, Any]]:
            found = await services.get(
                caller, "registry", f"/projects/{name}/promotions", state="pending"
            )
            out = []
            for request_ in found:
                version = await _or_none(
                    services.get(
                        caller, "registry", f"/projects/{name}/versions/{request_['version']}"
                    )
                )
                out.append(
                    request_
                    | {
                        "comparisons": comparisons((version or {}).get("evaluations") or {}),
                        "decidable": may_decide(person, request_),
                        "own": request_.get("requested_by") == person.name,
                    }
                )
            return out

        queue = [r for rs in await asyncio.gather(*(pending(n) for n in names)) for r in rs]
        return console.render(
            request,
            "approvals.html",
            queue=newest_first(queue, "created_at"),
            may_decide=person.may(Action.DECIDE),
        )

    @api.post("/approvals/{project}/{request_id}/{decision}")
    async def decide(request: Request, project: str, request_id: str, decision: str) -> Response:
        console = _console(request)
        name = _project(project)
        if (
            decision not in ("approve", "reject")
            or not request_id.isdigit()
            or len(request_id) > 12
        ):
            raise Refused(404, "No such request or decision.")
        session, form = await console.posted(request)
        _session, _person, caller = console.person(request)
        reason = form.get("reason", "").strip()
        if not reason or len(reason) > MAX_REASON:
            session.flash(
                "error", f"Give the reason for your decision (at most {MAX_REASON} characters)."
            )
            return RedirectResponse("/approvals", status_code=303)
        try:
            decided = await console.services.post(
                caller,
                "registry",
                f"/projects/{name}/promotions/{request_id}/{decision}",
                {"reason": reason},
            )
        except ServiceError as exc:
            session.flash("error", f"Not {decision}d: {exc.reason}")
            return RedirectResponse("/approvals", status_code=303)
        session.flash(
            "ok",
            f"Request {decided['id']} {decided['state']}: {name} {decided['alias']} "
            f"{'is now' if decided['state'] == 'approved' else 'stays where it was, not'} "
            f"v{decided['version']}.",
        )
        return RedirectResponse("/approvals", status_code=303)

    @api.get("/audit")
    async def audit(request: Request) -> Response:
        console = _console(request)
        _session, _person, caller = console.person(request)
        params = request.query_params
        filters = {k: params.get(k, "").strip() for k in ("project", "actor", "action")}
        before = params.get("before", "")
        if any(not FILTER.match(v) for v in filters.values()) or not (
            before == "" or (before.isdigit() and len(before) <= 18)
        ):
            raise Refused(400, "Filters are short names: a project, a person, an action.")
        try:
            found = await console.services.get(
                caller, "registry", "/audit", **filters, before=before or None, limit=100
            )
        except ServiceError as exc:
            raise Refused(exc.status, exc.reason) from exc
        return console.render(
            request, "audit.html", entries=found["entries"], next=found["next"], filters=filters
        )

    return api


async def _project_page(
    request: Request,
    name: str,
    *,
    problems: list[str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    console = _console(request)
    _session, person, caller = console.person(request)
    services = console.services
    try:
        versions = await services.get(caller, "registry", f"/projects/{name}/versions")
    except ServiceError as exc:
        raise Refused(exc.status, exc.reason) from exc
    aliases, history, drift = await asyncio.gather(
        _or_none(services.get(caller, "registry", f"/projects/{name}/aliases")),
        _or_none(services.get(caller, "registry", f"/projects/{name}/aliases/champion/history")),
        _or_none(services.get(caller, "monitor", f"/projects/{name}/drift")),
    )
    series = window_accuracy(drift or {})
    return console.render(
        request,
        "project.html",
        status,
        project=name,
        versions=sorted(versions, key=lambda v: -int(v.get("version", 0))),
        aliases=aliases_by_name(aliases),
        history=history or [],
        drift=drift,
        episode=open_episode(drift),
        chart=series.as_json(),
        points=len(series),
        may_promote=person.may(Action.PROMOTE),
        problems=problems or [],
        form=form or {},
    )
