"""Bearer tokens, known by their sha256 only.

A token file is JSON, `{"tokens": [{"name": ..., "token_sha256": ..., "roles": [...]}]}`, as
`conveyor token issue` writes it (mode 0600, replaced atomically). An entry may also name the
only projects its caller may act on (`"projects": [...]`; absent: every project). A service
reads the file again when it changes, so a token issued or revoked takes effect without a
restart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from conveyor_contracts.project import NAME_PATTERN

from .errors import Forbidden, Unauthenticated
from .roles import Action, Principal, Role

TOKEN_PREFIX = "cvt_"  # a recognisable prefix: secret scanners and people can tell one apart
# A name is what changes are recorded under: printable, bounded.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# How often a service looks at the token file for changes (a stat call).
RELOAD_EVERY_S = 1.0
# Longest token read from a request: anything longer is no token of ours.
MAX_TOKEN_LENGTH = 4096
# Most projects one token may be limited to: a caller on more is not one to limit this way.
MAX_TOKEN_PROJECTS = 100
ProjectName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[Role] = Field(min_length=1)
    projects: list[ProjectName] | None = Field(
        None,
        min_length=1,
        max_length=MAX_TOKEN_PROJECTS,
        description="The only projects the caller may act on; absent: every project.",
    )

    def principal(self) -> Principal:
        projects = frozenset(self.projects) if self.projects is not None else None
        return Principal(self.name, frozenset(self.roles), projects)


class TokenFile(BaseModel):
    tokens: list[TokenEntry] = Field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TokenFile:
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_bytes())

    def write(self, path: Path) -> None:
        """Replace the file atomically, readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
        try:
            with os.fdopen(fd, "w") as f:
                # Unscoped entries without `"projects": null`: as they were before scopes.
                f.write(self.model_dump_json(indent=2, exclude_none=True))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def issue(
        self,
        name: str,
        roles: Iterable[Role | str],
        projects: Iterable[str] | None = None,
    ) -> tuple[TokenFile, str]:
        """A new token for `name` (replacing the one it had), limited to `projects` when given:
        the new file and the token."""
        token = new_token()
        entry = TokenEntry(
            name=name,
            token_sha256=token_digest(token),
            roles=list(roles),
            projects=sorted(set(projects)) if projects is not None else None,
        )
        return TokenFile(tokens=[*self.without(name).tokens, entry]), token

    def without(self, name: str) -> TokenFile:
        return TokenFile(tokens=[t for t in self.tokens if t.name != name])


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tokens a service accepts: a file's (read again when it changes) and fixed entries."""

    def __init__(self, path: Path | None = None, entries: Iterable[TokenEntry] = ()) -> None:
        self.path = path
        self._fixed = list(entries)
        self._by_digest: dict[str, TokenEntry] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        entries = list(self._fixed)
        if self.path is not None:
            try:
                stat = self.path.stat()
                self._stamp = (stat.st_mtime_ns, stat.st_size)
                entries += TokenFile.read(self.path).tokens
            except FileNotFoundError:
                self._stamp = None
        self._by_digest = {e.token_sha256: e for e in entries}

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._load()
            except (OSError, ValueError):
                pass  # half-written or unreadable: keep what was known until it reads

    @property
    def configured(self) -> bool:
        self._refresh()
        return bool(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        """The caller a token names, or None when no entry holds it."""
        self._refresh()
        entry = self._by_digest.get(token_digest(token))
        return None if entry is None else entry.principal()

    def authenticate(self, token: str | None) -> Principal:
        token = present(token)
        principal = self.lookup(token)
        if principal is None:
            if not self._by_digest:
                raise Unauthenticated(
                    "this service knows no tokens: give it CONVEYOR_TOKENS_FILE "
                    "(`conveyor token issue` writes one)"
                )
            raise Unauthenticated("the bearer token is not one this service knows")
        return principal

    def authorize(self, token: str | None, action: Action) -> Principal:
        return allowed(self.authenticate(token), action)


def present(token: str | None) -> str:
    """The bearer token, if there is one of a length worth looking at."""
    if not token:
        raise Unauthenticated("this needs a bearer token (Authorization: Bearer ...)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("the bearer token is not one this service knows")
    return token


def allowed(principal: Principal, action: Action) -> Principal:
    """`principal`, if their roles grant `action` (else Forbidden, saying so)."""
    if not principal.can(action):
        roles = ", ".join(sorted(principal.roles)) or "no Conveyor role"
        raise Forbidden(f"{principal.name} ({roles}) may not {action}")
    return principal
