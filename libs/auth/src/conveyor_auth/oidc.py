"""People signed in through an OpenID Connect identity provider: its JWTs, verified with PyJWT.

A token is taken when its signature verifies with a key of the provider's JWKS (a file, or a URL
fetched with a deadline and a size bound), its `alg` is one of an allow-list of asymmetric
algorithms (never `none`, never an HMAC whose "secret" would be a public key), its `iss` and `aud`
are the configured ones, and it has not expired (within a bounded clock skew). The caller's name
is the first of `preferred_username`, `email`, `sub` the token has; their roles are the names at
a claim (a dotted path such as `realm_access.roles`), mapped to Conveyor roles.

Keys are cached; a token signed with a key id the cache does not hold makes the set be read again
(at most once every `refetch_after_s`, so a stream of made-up key ids cannot turn every request
into a fetch), and the set is read again anyway once it is `ttl_s` old. A fetch that fails keeps
the keys known until then.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from .errors import Unauthenticated
from .roles import Principal, Role

# Signatures with a public key only: an HMAC (HS*) would verify with whatever the key bytes are,
# and a JWKS is public.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_LEEWAY_S = 300.0  # clock skew beyond five minutes is a clock to fix, not to tolerate
MAX_JWKS_BYTES = 1 << 20  # a provider's key set is a few kilobytes
ACTOR_CLAIMS = ("preferred_username", "email", "sub")
# Service identities (`service:trainer`) are given by tokens only: a person's IdP name that
# looked like one would be recorded as that service.
RESERVED_PREFIX = "service:"
MAX_NAME = 200
ROLE_NAMES = frozenset(r.value for r in Role)


class OidcError(ValueError):
    """A configuration that cannot work (raised at start-up, not per request)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks: str  # a path, or an http(s) URL
    roles_claim: str = "roles"
    role_map: Mapping[str, Sequence[Role]] = field(default_factory=dict)
    actor_claims: Sequence[str] = ACTOR_CLAIMS
    algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS
    leeway_s: float = 60.0
    fetch_timeout_s: float = 5.0
    ttl_s: float = 300.0
    refetch_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience or not self.jwks:
            raise OidcError("OpenID Connect needs an issuer, an audience and a JWKS")
        refused = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if refused or not self.algorithms:
            raise OidcError(
                f"algorithms {refused or '[]'} are not allowed: only "
                f"{', '.join(ASYMMETRIC_ALGORITHMS)}"
            )
        if not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise OidcError(f"the clock skew allowed is 0 to {MAX_LEEWAY_S:g} s")
        if not 0 < self.fetch_timeout_s <= 60:
            raise OidcError("the JWKS fetch timeout is more than 0 and at most 60 s")
        if not self.actor_claims:
            raise OidcError("name at least one claim to take the caller's name from")


class KeySet:
    """The provider's signing keys, by key id, from a file or a URL."""

    def __init__(self, source: str, *, timeout_s: float, ttl_s: float, refetch_after_s: float):
        self.source = source
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.refetch_after_s = refetch_after_s
        self._keys: list[PyJWK] = []
        self._read_at = float("-inf")  # monotonic time of the last attempt
        self._lock = threading.Lock()  # requests are verified on worker threads

    def _fetch(self) -> bytes:
        if self.source.startswith(("http://", "https://")):
            with urllib.request.urlopen(self.source, timeout=self.timeout_s) as answer:
                data: bytes = answer.read(MAX_JWKS_BYTES + 1)
        else:
            with Path(self.source).open("rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError(f"the key set is over {MAX_JWKS_BYTES} bytes")
        return data

    def _read(self) -> None:
        self._read_at = time.monotonic()
        try:
            keys = PyJWKSet.from_dict(json.loads(self._fetch())).keys
        except (OSError, ValueError, jwt.PyJWTError):
            return  # unreachable or unreadable: the keys known until now still verify
        self._keys = [k for k in keys if k.public_key_use in (None, "sig")]

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return next((k for k in self._keys if k.key_id == kid), None)

    def key(self, kid: str | None) -> PyJWK:
        with self._lock:
            age = time.monotonic() - self._read_at
            if age > self.ttl_s:
                self._read()
            found = self._find(kid)
            if found is None and time.monotonic() - self._read_at > self.refetch_after_s:
                self._read()  # the provider may have rotated its keys
                found = self._find(kid)
        if found is None:
            if not self._keys:
                raise Unauthenticated("the identity provider's keys could not be read")
            raise Unauthenticated(
                "the token names no signing key of the identity provider"
                if kid is None
                else "the token's signing key is not one the identity provider publishes"
            )
        return found


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class OidcVerifier:
    """Turns an identity provider's JWT into a `Principal`, or refuses it (`Unauthenticated`)."""

    def __init__(self, config: OidcConfig, keys: KeySet | None = None) -> None:
        self.config = config
        self.keys = keys or KeySet(
            config.jwks,
            timeout_s=config.fetch_timeout_s,
            ttl_s=config.ttl_s,
            refetch_after_s=config.refetch_after_s,
        )

    def verify(self, token: str) -> Principal:
        c = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the bearer token is neither a known token nor a JWT") from exc
        alg = header.get("alg")
        if alg not in c.algorithms:
            shown = alg if isinstance(alg, str) and len(alg) <= 20 else "?"
            raise Unauthenticated(f"the token's algorithm {shown!r} is not allowed")
        kid = header.get("kid")
        key = self.keys.key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(c.algorithms),
                audience=c.audience,
                issuer=c.issuer,
                leeway=c.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired: sign in again") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"the token is not for this audience ({c.audience})") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(f"the token is not from the issuer {c.issuer}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the token is not valid yet") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise Unauthenticated("the token's algorithm does not match its key") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token's signature or claims do not verify") from exc
        return Principal(self._name(claims), self._roles(claims), via="oidc")

    def _name(self, claims: Mapping[str, Any]) -> str:
        for claim in self.config.actor_claims:
            value = claims.get(claim)
            if isinstance(value, str) and value.strip():
                if len(value) > MAX_NAME or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                    raise Unauthenticated(f"the token's {claim!r} is not a usable name")
                if value.startswith(RESERVED_PREFIX):
                    raise Unauthenticated(
                        f"names starting {RESERVED_PREFIX!r} are services', given by tokens only"
                    )
                return value
        raise Unauthenticated(
            f"the token names nobody (none of {', '.join(self.config.actor_claims)})"
        )

    def _roles(self, claims: Mapping[str, Any]) -> frozenset[Role]:
        found = claim_at(claims, self.config.roles_claim)
        names = [found] if isinstance(found, str) else found if isinstance(found, list) else []
        roles: set[Role] = set()
        for name in names:
            if not isinstance(name, str):
                continue
            if self.config.role_map:
                roles.update(self.config.role_map.get(name, ()))
            elif name in ROLE_NAMES:
                roles.add(Role(name))
        return frozenset(roles)


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: worth verifying as a JWT rather than looking up as a token."""
    return token.count(".") == 2
