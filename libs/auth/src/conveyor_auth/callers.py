"""Who a bearer credential names: a token of the token file, else (where a service is given an
identity provider) a JWT that provider signed. One object per service, behind `caller`."""

from __future__ import annotations

from .errors import Unauthenticated
from .oidc import OidcVerifier, looks_like_jwt
from .roles import Action, Principal
from .tokens import TokenStore, allowed, present


class Callers:
    def __init__(self, tokens: TokenStore, oidc: OidcVerifier | None = None) -> None:
        self.tokens = tokens
        self.oidc = oidc

    def authenticate(self, token: str | None) -> Principal:
        token = present(token)
        principal = self.tokens.lookup(token)
        if principal is not None:
            return principal
        if self.oidc is not None and looks_like_jwt(token):
            return self.oidc.verify(token)
        if self.oidc is None and not self.tokens.configured:
            raise Unauthenticated(
                "this service knows no tokens: give it CONVEYOR_TOKENS_FILE "
                "(`conveyor token issue` writes one)"
            )
        raise Unauthenticated("the bearer token is not one this service knows")

    def authorize(self, token: str | None, action: Action) -> Principal:
        return allowed(self.authenticate(token), action)
