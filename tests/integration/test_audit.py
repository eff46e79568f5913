"""People signed in through an identity provider, and the audit log of what everyone changed:
the registry against real Postgres and the real broker, taking JWTs verified against a JWKS that
the test serves over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conveyor_registry.bootstrap import RegistrySettings, bootstrap
from tests.integration.test_registry import _version
from tests.support import bearer, in_approval_mode, running, unique_project, until

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test/realms/ml"
AUDIENCE = "conveyor-console"


class IdentityProvider:
    """Signs tokens with an RSA key and serves its JWKS over HTTP, counting the fetches."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = json.dumps({"keys": [jwk | {"kid": "idp-1", "alg": "RS256"}]}).encode()
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(provider.jwks)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"

    def token(self, user: str, *roles: str, aud: str = AUDIENCE) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": aud,
            "sub": f"id-{user}",
            "preferred_username": user,
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": list(roles)},
        }
        return jwt.encode(claims, self.key, "RS256", headers={"kid": "idp-1"})

    def bearer(self, user: str, *roles: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, *roles)}", **headers}


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


def _settings(kafka, database_url, idp: IdentityProvider) -> RegistrySettings:
    return RegistrySettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        conveyor_oidc_issuer=ISSUER,
        conveyor_oidc_audience=AUDIENCE,
        conveyor_oidc_jwks=idp.url,
        conveyor_oidc_roles_claim="realm_access.roles",
        conveyor_oidc_role_map={"ml-leads": ["approver"], "ml-team": ["scientist"]},
    )


async def test_people_signed_in_through_an_identity_provider_are_the_actors_of_the_audit_log(
    kafka, database_url, idp
):
    spec = in_approval_mode(unique_project("aud"))
    name = spec.name
    async with running(bootstrap(_settings(kafka, database_url, idp))) as api:
        r = await api.post(
            "/projects", json=spec.model_dump(mode="json"), headers=idp.bearer("erin", "ml-team")
        )
        assert r.status_code == 201, r.text
        for run in ("run-1", "run-2"):
            await api.post(f"/projects/{name}/versions", json=_version(run, run.encode()))

        # dave (a token, scientist) asks for the champion; alice (signed in, ml-leads) approves.
        held = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 1, "reason": "passed the gate"},
            headers=bearer("dave"),
        )
        assert held.status_code == 202, held.text
        asked = held.json()["id"]
        approved = await api.post(
            f"/projects/{name}/promotions/{asked}/approve",
            json={"reason": "holdout reviewed"},
            headers=idp.bearer("alice", "ml-leads", **{"X-Request-ID": "console-7"}),
        )
        assert approved.status_code == 200 and approved.json()["decided_by"] == "alice"

        # Nobody approves their own request: not with a token, not signed in under that name.
        mine = await api.post(
            f"/projects/{name}/promotions",
            json={"version": 2, "reason": "mine"},
            headers=idp.bearer("carol", "ml-leads"),
        )
        assert mine.status_code == 201 and mine.json()["requested_by"] == "carol"
        for headers in (idp.bearer("carol", "ml-leads"), bearer("carol")):
            r = await api.post(
                f"/projects/{name}/promotions/{mine.json()['id']}/approve",
                json={"reason": "self"},
                headers=headers,
            )
            assert r.status_code == 403 and "carol asked for this" in r.json()["detail"]

        # A rollback by erin (signed in, scientist).
        back = await api.post(
            f"/projects/{name}/aliases/champion/rollback",
            json={"reason": "v1 pages"},
            headers=idp.bearer("erin", "ml-team"),
        )
        assert back.status_code == 409 and "no version before" in back.text
        moved = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 2, "reason": "hotfix"},
            headers=idp.bearer("alice", "ml-leads"),
        )
        assert moved.status_code == 200 and moved.json()["to_version"] == 2
        back = await api.post(
            f"/projects/{name}/aliases/champion/rollback",
            json={"reason": "v2 pages"},
            headers=idp.bearer("erin", "ml-team"),
        )
        assert back.status_code == 200 and back.json()["to_version"] == 1

        # A token that does not verify is refused, saying why, without echoing it.
        wrong = idp.token("mallory", "ml-leads", aud="another-app")
        r = await api.put(
            f"/projects/{name}/aliases/champion",
            json={"version": 2, "reason": "x"},
            headers={"Authorization": f"Bearer {wrong}"},
        )
        assert r.status_code == 401 and "not for this audience" in r.text and wrong not in r.text
        # The key set was fetched once and kept.
        assert idp.fetches == 1

        async def trail() -> list[dict[str, Any]] | None:
            page = (await api.get("/audit", params={"project": name})).json()["entries"]
            return page if len(page) >= 8 else None

        entries = await until(trail, what="the project's audit trail")
        got = [
            (e["action"], e["actor"], e["role"], e["via"], e["target"]) for e in reversed(entries)
        ]
        assert got == [
            ("project.apply", "erin", "scientist", "oidc", "project v1"),
            ("version.register", "test-admin", "admin", "token", "v1"),
            ("version.register", "test-admin", "admin", "token", "v2"),
            ("promotion.request", "dave", "scientist", "token", f"request {asked}: champion → v1"),
            (
                "promotion.approve",
                "alice",
                "approver",
                "oidc",
                f"request {asked} of dave: champion → v1",
            ),
            (
                "promotion.request",
                "carol",
                "approver",
                "oidc",
                f"request {mine.json()['id']}: champion → v2",
            ),
            ("alias.move", "alice", "approver", "oidc", "champion: v1 → v2"),
            ("alias.rollback", "erin", "scientist", "oidc", "champion: v2 → v1"),
        ]
        approval = next(e for e in entries if e["action"] == "promotion.approve")
        assert approval["request_id"] == "console-7" and approval["reason"] == "holdout reviewed"
        assert approval["source"] == "conveyor/registry"

        # Filters and pages: by actor and action family, newest first, `next` pages on.
        r = await api.get("/audit", params={"project": name, "actor": "alice", "limit": 1})
        first = r.json()
        assert [e["action"] for e in first["entries"]] == ["alias.move"]
        r = await api.get(
            "/audit",
            params={"project": name, "actor": "alice", "limit": 1, "before": first["next"]},
        )
        assert [e["action"] for e in r.json()["entries"]] == ["promotion.approve"]
        assert r.json()["next"] is None
        r = await api.get("/audit", params={"project": name, "action": "promotion"})
        assert [e["action"] for e in r.json()["entries"]] == [
            "promotion.request",
            "promotion.approve",
            "promotion.request",
        ]
        # Reading needs a caller (the viewer role is enough); a page is bounded.
        assert (await api.get("/audit", headers={"Authorization": ""})).status_code == 401
        r = await api.get("/audit", params={"project": name}, headers=bearer("a-viewer"))
        assert r.status_code == 200 and r.json()["entries"]
        assert (await api.get("/audit", params={"limit": 501})).status_code == 422

        # Tokens issued or revoked (the CLI records them): admins only, the caller the actor.
        change = {"action": "token.issue", "name": f"ci-{name}", "roles": ["scientist"]}
        r = await api.post("/audit/tokens", json=change, headers=bearer("dave"))
        assert r.status_code == 403 and "may not administer" in r.text
        r = await api.post("/audit/tokens", json=change)
        assert r.status_code == 201

        async def token_entry() -> list[dict[str, Any]]:
            page = await api.get("/audit", params={"action": "token", "actor": "test-admin"})
            return [e for e in page.json()["entries"] if e["target"] == f"ci-{name}"]

        [issued] = await until(token_entry, what="the token's audit entry")
        assert (issued["action"], issued["role"], issued["details"]) == (
            "token.issue",
            "admin",
            {"roles": ["scientist"]},
        )
