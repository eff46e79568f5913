"""An identity provider's JWTs, verified against its JWKS (libs/auth `oidc`, `Callers`): keys are
made here with `cryptography`, tokens signed with PyJWT as a provider would sign them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from conveyor_auth import (
    Action,
    Callers,
    Forbidden,
    OidcConfig,
    OidcError,
    OidcVerifier,
    Principal,
    Role,
    TokenFile,
    TokenStore,
    Unauthenticated,
    acting,
    caller,
    install,
)
from conveyor_auth.oidc import KeySet

ISSUER = "https://idp.example/realms/ml"
AUDIENCE = "conveyor"


class Provider:
    """An identity provider: its keys (RSA `k1`, EC `k2`), its JWKS file, the tokens it signs."""

    def __init__(self, tmp_path: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.jwks = tmp_path / "jwks.json"
        self.publish(self.rsa, "k1", "RS256")

    def publish(self, *keys: Any) -> None:
        """Write the JWKS with (private key, kid, alg) triples' public halves."""
        triples = [keys[i : i + 3] for i in range(0, len(keys), 3)]
        entries = []
        for key, kid, alg in triples:
            to_jwk = RSAAlgorithm.to_jwk if alg.startswith(("RS", "PS")) else ECAlgorithm.to_jwk
            entry = json.loads(to_jwk(key.public_key()))
            entries.append(entry | {"kid": kid, "alg": alg, "use": "sig"})
        self.jwks.write_text(json.dumps({"keys": entries}))

    def token(
        self,
        key: Any = None,
        kid: str | None = "k1",
        alg: str = "RS256",
        expires_in: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "0f3c-user-id",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + expires_in,
            "realm_access": {"roles": ["ml-team", "offline_access"]},
        } | claims
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(body, key if key is not None else self.rsa, alg, headers=headers)


@pytest.fixture
def idp(tmp_path: Path) -> Provider:
    return Provider(tmp_path)


def _verifier(idp: Provider, **overrides: Any) -> OidcVerifier:
    config: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": str(idp.jwks),
        "roles_claim": "realm_access.roles",
        "role_map": {"ml-team": [Role.SCIENTIST], "ml-leads": [Role.APPROVER]},
        "refetch_after_s": 0,
    } | overrides
    return OidcVerifier(OidcConfig(**config))


def test_a_providers_token_names_the_person_and_maps_their_roles(idp):
    who = _verifier(idp).verify(idp.token())
    assert who == Principal("alice", frozenset({Role.SCIENTIST}), via="oidc")
    assert who.can(Action.PROMOTE) and not who.can(Action.DECIDE)
    # The audit log records the role that allowed the action, and how they signed in.
    actor = acting(who, Action.PROMOTE)
    assert (actor.name, actor.role, actor.via) == ("alice", "scientist", "oidc")

    lead = _verifier(idp).verify(idp.token(realm_access={"roles": ["ml-leads", "ml-team"]}))
    assert lead.roles == {Role.APPROVER, Role.SCIENTIST}
    assert acting(lead, Action.DECIDE).role == "approver"


def test_the_name_is_the_first_claim_present_and_roles_may_be_named_directly(idp):
    verifier = _verifier(idp, roles_claim="groups", role_map={})
    who = verifier.verify(
        idp.token(preferred_username=None, email="bo@example.org", groups="viewer")
    )
    assert who == Principal("bo@example.org", frozenset({Role.VIEWER}), via="oidc")
    who = verifier.verify(idp.token(preferred_username=None, groups=["admin", "not-a-role"]))
    assert who.name == "0f3c-user-id" and who.roles == {Role.ADMIN}
    # No role claimed: known, and allowed nothing.
    nobody = verifier.verify(idp.token(groups=None))
    assert nobody.roles == frozenset()
    with pytest.raises(Forbidden, match=r"alice \(no Conveyor role\) may not read"):
        Callers(TokenStore(), verifier).authorize(idp.token(groups=None), Action.READ)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"expires_in": -120}, "the token has expired"),
        ({"iss": "https://evil.example"}, f"not from the issuer {ISSUER}"),
        ({"aud": "another-app"}, "not for this audience"),
        ({"exp": None}, "lacks the 'exp' claim"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"preferred_username": "service:trainer"}, "services', given by tokens only"),
        ({"preferred_username": "a\nb"}, "not a usable name"),
        ({"preferred_username": None, "email": None, "sub": None}, "the token names nobody"),
    ],
)
def test_a_token_whose_claims_do_not_hold_is_refused_saying_why(idp, claims, reason):
    token = idp.token(**claims)
    with pytest.raises(Unauthenticated, match=reason) as refused:
        _verifier(idp).verify(token)
    assert token not in str(refused.value)


def test_an_expired_token_passes_within_the_clock_skew_allowed(idp):
    token = idp.token(expires_in=-30)
    assert _verifier(idp, leeway_s=60).verify(token).name == "alice"
    with pytest.raises(Unauthenticated, match="expired"):
        _verifier(idp, leeway_s=0).verify(token)


def test_algorithms_are_an_allow_list_of_asymmetric_ones(idp):
    verifier = _verifier(idp)
    # `none`: no signature at all.
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**31}, None, "none")
    with pytest.raises(Unauthenticated, match="algorithm 'none' is not allowed"):
        verifier.verify(unsigned)

    # HS256 "signed" with the public key the JWKS publishes: the classic confusion.
    # (Made by hand: PyJWT itself refuses to sign with a key that looks like a JWK.)
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = (
        part({"alg": "HS256", "kid": "k1"})
        + "."
        + part({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**31})
    )
    mac = hmac.new(idp.jwks.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="algorithm 'HS256' is not allowed"):
        verifier.verify(forged)
    # An allowed algorithm that is not the key's.
    with pytest.raises(Unauthenticated, match="does not match its key"):
        verifier.verify(idp.token(alg="PS256"))
    # Signed by someone else's key under the provider's key id.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="signature or claims do not verify"):
        verifier.verify(idp.token(key=stranger))
    # A configuration cannot allow an HMAC or `none`.
    for algorithms in (["HS256"], ["none"], []):
        with pytest.raises(OidcError, match="not allowed"):
            OidcConfig(ISSUER, AUDIENCE, str(idp.jwks), algorithms=algorithms)
    with pytest.raises(OidcError, match="clock skew"):
        OidcConfig(ISSUER, AUDIENCE, str(idp.jwks), leeway_s=3600)


def test_an_unknown_key_id_reads_the_key_set_again_once_it_may(idp):
    verifier = _verifier(idp, refetch_after_s=3600)
    assert verifier.verify(idp.token()).name == "alice"
    # The provider rotates to an EC key: its tokens name a kid the cache does not hold.
    idp.publish(idp.rsa, "k1", "RS256", idp.ec, "k2", "ES256")
    rotated = idp.token(key=idp.ec, kid="k2", alg="ES256")
    # Read again at most once every refetch_after_s: not yet.
    with pytest.raises(Unauthenticated, match="signing key is not one the identity provider"):
        verifier.verify(rotated)
    verifier.keys.refetch_after_s = 0
    assert verifier.verify(rotated).name == "alice"
    with pytest.raises(Unauthenticated, match="signing key is not one"):
        verifier.verify(idp.token(kid="k9"))
    # No kid: taken only when the set holds a single key.
    with pytest.raises(Unauthenticated, match="names no signing key"):
        verifier.verify(idp.token(kid=None))
    idp.publish(idp.rsa, "k1", "RS256")
    assert _verifier(idp).verify(idp.token(kid=None)).name == "alice"


def test_a_key_set_that_cannot_be_read_keeps_the_keys_known(idp, tmp_path):
    keys = KeySet(str(idp.jwks), timeout_s=1, ttl_s=0, refetch_after_s=0)
    verifier = OidcVerifier(_verifier(idp).config, keys)
    assert verifier.verify(idp.token()).name == "alice"
    idp.jwks.write_text("{not json")
    assert verifier.verify(idp.token()).name == "alice"
    missing = KeySet(str(tmp_path / "absent.json"), timeout_s=1, ttl_s=0, refetch_after_s=0)
    with pytest.raises(Unauthenticated, match="keys could not be read"):
        OidcVerifier(_verifier(idp).config, missing).verify(idp.token())
    unreachable = KeySet("http://127.0.0.1:9/jwks", timeout_s=0.5, ttl_s=0, refetch_after_s=0)
    with pytest.raises(Unauthenticated, match="keys could not be read"):
        OidcVerifier(_verifier(idp).config, unreachable).verify(idp.token())


async def test_a_service_takes_tokens_and_jwts_through_the_same_dependency(idp, tmp_path):
    tokens, secret = TokenFile().issue("ci", [Role.SCIENTIST])
    tokens.write(tmp_path / "tokens.json")
    app = FastAPI()
    install(app, Callers(TokenStore(tmp_path / "tokens.json"), _verifier(idp)))

    @app.post("/projects/{project}/things")
    async def change(project: str, who: Annotated[Principal, caller(Action.APPLY)]) -> Any:
        actor = acting(who, Action.APPLY)
        return {"name": who.name, "via": who.via, "request_id": actor.request_id}

    @app.post("/decide")
    async def decide(who: Annotated[Principal, caller(Action.DECIDE)]) -> str:
        return who.name

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:

        async def post(path: str, token: str, **headers: str) -> httpx.Response:
            return await api.post(path, headers={"Authorization": f"Bearer {token}", **headers})

        r = await post("/projects/p/things", idp.token(), **{"X-Request-ID": "req-42"})
        assert r.json() == {"name": "alice", "via": "oidc", "request_id": "req-42"}
        r = await post("/projects/p/things", secret, **{"X-Request-ID": "bad id;drop"})
        assert r.json()["name"] == "ci" and r.json()["via"] == "token"
        assert r.json()["request_id"] != "bad id;drop" and len(r.json()["request_id"]) == 24
        expired = idp.token(expires_in=-600)
        r = await post("/projects/p/things", expired)
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        assert r.headers["WWW-Authenticate"] == "Bearer" and expired not in r.text
        r = await post("/projects/p/things", "cvt_not-a-token")
        assert r.status_code == 401 and "not one this service knows" in r.text
        r = await post("/decide", idp.token())
        assert r.status_code == 403 and "alice (scientist) may not decide" in r.text
