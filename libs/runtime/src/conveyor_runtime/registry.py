"""The registry's HTTP API, as every other service sees it.

RegistryError
├── NotInRegistry        the registry answered 404: no such project, version or alias. Permanent:
│                        an event that names it is skipped, never retried forever
├── ArtifactMismatch     the artifact's bytes do not hash to the sha256 announced or claimed
└── RegistryUnavailable  the registry could not be reached or failed (5xx): worth retrying
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from conveyor_bus import tracing


class RegistryError(Exception):
    pass


class NotInRegistry(RegistryError):
    pass


class ArtifactMismatch(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    pass


SHA256_HEADER = "X-Artifact-SHA256"
# A connection the server closed while idle can fail the next request sent on it before the
# server read a byte of it. A read is asked again once on a fresh connection; a write is not
# (the server may have applied it), and its caller's retry decides.
RESENT_ON_RESET = frozenset({"GET", "HEAD"})
RESET = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError)


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`token`: the calling service's own bearer token (its writes are recorded under its
        name). `transport`: httpx's (an `httpx.MockTransport` in tests)."""
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers=auth, transport=transport
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # The registry's changes (and the events they publish) continue the caller's trace.
        headers = tracing.context_headers()
        try:
            try:
                r = await self.client.request(method, path, headers=headers, **kwargs)
            except RESET:
                if method not in RESENT_ON_RESET:
                    raise
                r = await self.client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"{method} {path}: {exc!r}") from exc
        if r.status_code == 404:
            raise NotInRegistry(f"{method} {path}: {_detail(r)}")
        if r.status_code >= 500:
            raise RegistryUnavailable(f"{method} {path}: {r.status_code} {_detail(r)}")
        if r.is_error:
            # A 4xx other than 404 is a request this client got wrong: not worth a retry either.
            raise RegistryError(f"{method} {path}: {r.status_code} {_detail(r)}")
        return r

    async def project_spec(self, project: str, version: int) -> dict[str, Any]:
        """The project's spec as it was at `version`."""
        r = await self._request("GET", f"/projects/{project}", params={"version": version})
        return dict(r.json()["spec"])

    async def version(self, project: str, version: int) -> dict[str, Any]:
        r = await self._request("GET", f"/projects/{project}/versions/{version}")
        return dict(r.json())

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        """The version's ONNX bytes and the sha256 the registry claims for them. Check them with
        `verify_artifact` before use."""
        r = await self._request("GET", f"/projects/{project}/versions/{version}/artifact")
        return r.content, r.headers.get(SHA256_HEADER, "")

    async def aliases(self, project: str) -> dict[str, int]:
        r = await self._request("GET", f"/projects/{project}/aliases")
        return {str(k): int(v) for k, v in r.json().items()}

    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self._request("POST", f"/projects/{project}/versions", json=body)
        return dict(r.json())

    async def complete(self, project: str, version: int, body: dict[str, Any]) -> dict[str, Any]:
        r = await self._request(
            "POST", f"/projects/{project}/versions/{version}/complete", json=body
        )
        return dict(r.json())

    async def move_alias(
        self, project: str, alias: str, version: int, *, reason: str
    ) -> dict[str, Any]:
        r = await self._request(
            "PUT",
            f"/projects/{project}/aliases/{alias}",
            json={"version": version, "reason": reason},
        )
        return dict(r.json())

    async def request_promotion(
        self,
        project: str,
        version: int,
        *,
        reason: str,
        evidence: dict[str, Any],
        alias: str = "champion",
    ) -> dict[str, Any]:
        """Ask an approver to move `alias` to `version` (the same open request when asked
        again)."""
        r = await self._request(
            "POST",
            f"/projects/{project}/promotions",
            json={
                "alias": alias,
                "version": version,
                "reason": reason,
                "evidence": evidence,
            },
        )
        return dict(r.json())


def verify_artifact(data: bytes, what: str, *digests: str) -> str:
    """The sha256 of `data`; raises `ArtifactMismatch` unless every digest given equals it."""
    actual = hashlib.sha256(data).hexdigest()
    wrong = [d for d in digests if d != actual]
    if wrong:
        raise ArtifactMismatch(
            f"{what}: artifact sha256 {actual[:12]}… does not match "
            + ", ".join(f"{d[:12] or '(none)'}…" for d in wrong)
        )
    return actual


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]
