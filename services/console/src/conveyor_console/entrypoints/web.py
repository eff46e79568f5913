"""The console's web application: security headers, sessions, signing in and out; the pages
themselves are in `pages`.

Pages are rendered on the server (Jinja2, autoescaped); the little script there is (the chart)
is a file the console serves, as is the chart library (uPlot, vendored with its licence), so
the Content-Security-Policy allows scripts, styles and connections from the console's own
origin only, and nothing inline.
"""

from __future__ import annotations

import secrets
from importlib.resources import files
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from conveyor_auth import AuthError, Callers, OidcVerifier, TokenStore
from conveyor_runtime.http import BodyLimit

from ..adapters.oidc import OidcSignIn, SignInError
from ..adapters.services import Caller, ServiceError, Services
from ..domain.views import Person
from ..sessions import COOKIE, Session, Sessions
from ..settings import ConsoleSettings
from . import pages

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
MAX_BODY_BYTES = 64 * 1024  # the console's forms are a few short fields
MAX_TOKEN = 16 * 1024  # a JWT pasted in is a few kilobytes


class SignInNeeded(Exception):
    """The page needs a person signed in: the browser goes to the sign-in page."""


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"  # pages show live data and names
        return response


class ConsoleApp:
    def __init__(self, settings: ConsoleSettings, *, transport: Any = None) -> None:
        self.settings = settings
        self.sessions = Sessions(
            ttl_s=settings.console_session_ttl_s, max_sessions=settings.console_max_sessions
        )
        oidc = settings.oidc()
        verifier = OidcVerifier(oidc) if oidc is not None else None
        self.callers = Callers(
            TokenStore(settings.conveyor_tokens_file, settings.conveyor_tokens), verifier
        )
        self.oidc: OidcSignIn | None = None
        if oidc is not None and verifier is not None:
            secret = settings.console_oidc_client_secret
            self.oidc = OidcSignIn(
                issuer=oidc.issuer,
                client_id=settings.console_oidc_client_id or oidc.audience,
                client_secret=secret.get_secret_value() if secret else None,
                scopes=settings.console_oidc_scopes,
                verifier=verifier,
                timeout_s=settings.console_call_timeout_s,
                transport=transport,
            )
        self.services = Services(
            {
                "registry": settings.registry_url,
                "monitor": settings.monitor_url,
                "trainer": settings.trainer_url,
            },
            timeout_s=settings.console_call_timeout_s,
            transport=transport,
        )
        root = files("conveyor_console")
        self.templates = Jinja2Templates(directory=str(Path(str(root / "templates"))))
        self.http = FastAPI(
            title="Conveyor console", docs_url=None, redoc_url=None, openapi_url=None
        )
        self.http.add_middleware(SecurityHeaders)
        self.http.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
        self.http.state.console = self
        self.http.mount(
            "/static", StaticFiles(directory=str(Path(str(root / "static")))), name="static"
        )
        self.http.add_exception_handler(SignInNeeded, self._to_sign_in)
        self.http.add_exception_handler(pages.Refused, self._refused)
        self.http.add_exception_handler(ServiceError, self._refused)
        self.http.add_api_route("/healthz", self.health, methods=["GET"])
        self.http.add_api_route("/readyz", self.ready, methods=["GET"])
        self.http.add_api_route("/signin", self.sign_in_page, methods=["GET"])
        self.http.add_api_route("/signin", self.sign_in_with_token, methods=["POST"])
        self.http.add_api_route("/signin/oidc", self.sign_in_with_oidc, methods=["GET"])
        self.http.add_api_route("/signin/callback", self.oidc_callback, methods=["GET"])
        self.http.add_api_route("/signout", self.sign_out, methods=["POST"])
        self.http.include_router(pages.router())
        self.http.router.add_event_handler("shutdown", self.services.close)

    def serve(self) -> None:
        uvicorn.run(
            self.http,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
        )

    # --- sessions ------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def person(self, request: Request) -> tuple[Session, Person, Caller]:
        """The signed-in person of a page request, and how to call the services as them."""
        session = self.session(request)
        if session is None or session.person is None:
            raise SignInNeeded
        return (
            session,
            session.person,
            Caller(session.credential, f"console-{secrets.token_hex(8)}"),
        )

    def with_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="lax",
            secure=self.settings.console_secure_cookie,
            path="/",
        )
        return response

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session = context.pop("session", None) or self.session(request)
        context.setdefault("person", session.person if session else None)
        context["csrf"] = session.csrf if session else ""
        context["flashes"] = session.take_flashes() if session else []
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        if session is not None:
            self.with_cookie(response, session)
        return response

    async def _to_sign_in(self, request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/signin", status_code=303)

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, pages.Refused | ServiceError)
        session = self.session(request)
        if exc.status == 401 and session is not None:
            # The credential no longer holds (expired, revoked): sign in again.
            self.sessions.end(session.id)
            fresh = self.sessions.open()
            fresh.flash("error", f"Signed out: {exc.reason}")
            return self.with_cookie(RedirectResponse("/signin", status_code=303), fresh)
        status = exc.status if 400 <= exc.status < 600 else 502
        return self.render(request, "error.html", status, reason=exc.reason)

    # --- health --------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "sessions": len(self.sessions)}

    async def ready(self) -> dict[str, Any]:
        return {"ready": True, "problems": [], "version": "0.1.0"}

    # --- signing in and out --------------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        session = self.session(request) or self.sessions.open()
        return self.render(request, "signin.html", session=session, oidc=self.oidc)

    async def sign_in_with_token(self, request: Request) -> Response:
        session, form = await self.posted(request)
        token = str(form.get("token") or "").strip()
        if not token or len(token) > MAX_TOKEN:
            session.flash("error", "Paste a token (`conveyor token issue` prints one).")
            return self.render(request, "signin.html", 400, session=session, oidc=self.oidc)
        try:
            principal = self.callers.authenticate(token)
        except AuthError as exc:
            session.flash("error", f"Not signed in: {exc}")
            return self.render(request, "signin.html", 401, session=session, oidc=self.oidc)
        who = Person(principal.name, principal.roles, principal.via)
        fresh = self.sessions.sign_in(session, who, token, None)
        return self.with_cookie(RedirectResponse("/", status_code=303), fresh)

    async def sign_in_with_oidc(self, request: Request) -> Response:
        if self.oidc is None:
            return RedirectResponse("/signin", status_code=303)
        session = self.session(request) or self.sessions.open()
        try:
            url, pending = await self.oidc.start(self._callback_url(request))
        except SignInError as exc:
            session.flash("error", str(exc))
            return self.render(request, "signin.html", 502, session=session, oidc=self.oidc)
        session.pending = pending
        return self.with_cookie(RedirectResponse(url, status_code=303), session)

    async def oidc_callback(self, request: Request) -> Response:
        session = self.session(request)
        if self.oidc is None or session is None or session.pending is None:
            fresh = session or self.sessions.open()
            fresh.flash("error", "That sign-in was not started here (or has ended): try again.")
            return self.render(request, "signin.html", 400, session=fresh, oidc=self.oidc)
        pending, session.pending = session.pending, None
        params = request.query_params
        code, state = params.get("code", "")[:4096], params.get("state", "")[:512]
        try:
            if params.get("error"):
                refusal = params.get("error_description") or params["error"]
                raise SignInError(f"the identity provider said: {refusal[:300]}")
            done = await self.oidc.finish(pending, code, state)
        except SignInError as exc:
            session.flash("error", f"Not signed in: {exc}")
            return self.render(request, "signin.html", 401, session=session, oidc=self.oidc)
        p = done.principal
        fresh = self.sessions.sign_in(
            session, Person(p.name, p.roles, p.via), done.credential, done.expires_at
        )
        return self.with_cookie(RedirectResponse("/", status_code=303), fresh)

    async def sign_out(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        self.sessions.end(session.id)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def _callback_url(self, request: Request) -> str:
        base = self.settings.console_public_url or str(request.base_url)
        return base.rstrip("/") + "/signin/callback"

    async def posted(self, request: Request) -> tuple[Session, dict[str, str]]:
        """A form posted with this session's CSRF token, else 403 (no session: sign in)."""
        session = self.session(request)
        if session is None:
            raise SignInNeeded
        form = await request.form(max_files=0, max_fields=20)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not session.csrf_ok(values.get("csrf")):
            raise pages.Refused(
                403, "This form has expired or did not come from the console: reload the page."
            )
        return session, values


def console_of(request: Request) -> ConsoleApp:
    console: ConsoleApp = request.app.state.console
    return console
