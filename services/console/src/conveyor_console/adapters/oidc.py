"""Signing a person in through the organisation's OpenID Connect provider: the authorization
code flow with PKCE (S256), by authlib's OAuth 2 client.

The provider is found from its issuer (`/.well-known/openid-configuration`). What comes back is
checked by the same code every service checks a JWT with (`conveyor_auth.OidcVerifier`:
signature, issuer, audience, expiry), and the ID token's nonce must be the one this sign-in
sent, so a token minted for another sign-in cannot be replayed into this one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2 import OAuth2Error

from conveyor_auth import OidcVerifier, Principal, Unauthenticated

DISCOVERY = "/.well-known/openid-configuration"
DISCOVERY_TTL_S = 300.0
PENDING_TTL_S = 600.0  # a sign-in not finished within ten minutes starts again


class SignInError(Exception):
    """The sign-in could not be completed: the reason is shown to the person."""


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    credential: str  # what the console forwards to the services
    expires_at: float | None


class OidcSignIn:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: str,
        verifier: OidcVerifier,
        timeout_s: float,
        transport: Any = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.verifier = verifier
        self.timeout_s = timeout_s
        self.transport = transport
        self._metadata: dict[str, Any] | None = None
        self._read_at = float("-inf")

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            timeout=self.timeout_s,
            transport=self.transport,
        )

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._read_at > DISCOVERY_TTL_S:
            try:
                async with httpx.AsyncClient(
                    timeout=self.timeout_s, transport=self.transport
                ) as http:
                    answer = await http.get(self.issuer + DISCOVERY)
                    answer.raise_for_status()
                    found = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInError(
                    f"the identity provider at {self.issuer} did not answer: {type(exc).__name__}"
                ) from exc
            if not isinstance(found, dict) or str(found.get("issuer", "")).rstrip("/") != (
                self.issuer
            ):
                raise SignInError("the identity provider's discovery names another issuer")
            self._metadata, self._read_at = found, time.monotonic()
        return self._metadata

    async def start(self, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """Where to send the browser, and what the callback needs to finish (kept server-side)."""
        endpoint = (await self.metadata()).get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise SignInError("the identity provider names no authorization endpoint")
        verifier, nonce, state = generate_token(48), generate_token(24), generate_token(24)
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=verifier, nonce=nonce
            )
        pending = {
            "state": state,
            "verifier": verifier,
            "nonce": nonce,
            "redirect_uri": redirect_uri,
            "until": time.time() + PENDING_TTL_S,
        }
        return url, pending

    async def finish(self, pending: dict[str, Any], code: str, state: str) -> SignedIn:
        if state != pending.get("state") or time.time() > float(pending.get("until", 0)):
            raise SignInError("this sign-in is not the one started here, or it is too old")
        endpoint = (await self.metadata()).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise SignInError("the identity provider names no token endpoint")
        try:
            async with self._client(pending["redirect_uri"]) as client:
                tokens = await client.fetch_token(
                    endpoint, code=code, code_verifier=pending["verifier"]
                )
        except (OAuthError, OAuth2Error, httpx.HTTPError, ValueError) as exc:
            raise SignInError(f"the identity provider refused the sign-in: {exc}") from exc
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("the identity provider sent no ID token")
        try:
            principal = self.verifier.verify(id_token)
        except Unauthenticated as exc:
            raise SignInError(f"the ID token was refused: {exc}") from exc
        # Verified just above: reading its claims again without the signature check is safe.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        if claims.get("nonce") != pending["nonce"]:
            raise SignInError("the ID token was not issued for this sign-in (nonce)")
        credential, expires = id_token, claims.get("exp")
        # The access token, when it is a JWT the services take for the same person, is what an
        # API is meant to receive; an opaque one (some providers') they could not verify.
        access = tokens.get("access_token")
        if isinstance(access, str) and access.count(".") == 2:
            try:
                if self.verifier.verify(access).name == principal.name:
                    credential = access
                    expires = jwt.decode(access, options={"verify_signature": False}).get("exp")
            except Unauthenticated:
                pass
        return SignedIn(
            principal, credential, float(expires) if isinstance(expires, int | float) else None
        )
