"""Sessions kept by the console, in memory; the browser holds only a random id.

The cookie carries 32 random bytes and nothing else (HttpOnly, SameSite=Lax, Secure behind
https): the person's credential never leaves the server, so a cookie read from a screen or a
log does not reveal a token, and signing out ends the session at once rather than when some
signed cookie expires. Sessions end after `ttl_s`, or when the credential they hold expires.
Anyone may open one by visiting the sign-in page, so their number is bounded, the oldest going
first, and the sessions not yet signed in are bounded apart from those that are: a flood of
visits evicts only other visits, never a person who signed in. The price: a restart of the
console signs everyone out, and replicas need sticky sessions (the console runs as one).

Every form carries the session's CSRF token, compared in constant time: another site's page can
make a browser post to the console with its cookie (SameSite=Lax still lets a top-level GET
through), never with the token, which only the console's own pages contain.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .domain.views import Person

COOKIE = "conveyor_console"
MAX_FLASHES = 5


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    person: Person | None = None
    credential: str = ""
    # An OpenID Connect sign-in under way: its state, PKCE verifier and nonce.
    pending: dict[str, Any] | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes = [*self.flashes, (kind, text)][-MAX_FLASHES:]

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf.encode(), given.encode())


class Sessions:
    def __init__(
        self,
        *,
        ttl_s: float,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._visiting: OrderedDict[str, Session] = OrderedDict()  # not signed in (yet)
        self._signed_in: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._visiting) + len(self._signed_in)

    def _new(self, kept: OrderedDict[str, Session]) -> Session:
        while len(kept) >= self.max_sessions:
            kept.popitem(last=False)
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=self.clock() + self.ttl_s,
        )
        kept[session.id] = session
        return session

    def open(self) -> Session:
        return self._new(self._visiting)

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._signed_in.get(session_id) or self._visiting.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self.clock():
            self.end(session_id)
            return None
        return session

    def sign_in(
        self, session: Session, person: Person, credential: str, expires_at: float | None
    ) -> Session:
        """A new session for `person` in place of `session` (a fresh id and CSRF token: an id
        fixed before signing in, by whoever could set it, is worth nothing after)."""
        self.end(session.id)
        fresh = self._new(self._signed_in)
        fresh.person, fresh.credential = person, credential
        if expires_at is not None:
            fresh.expires_at = min(fresh.expires_at, expires_at)
        return fresh

    def end(self, session_id: str) -> None:
        self._visiting.pop(session_id, None)
        self._signed_in.pop(session_id, None)
