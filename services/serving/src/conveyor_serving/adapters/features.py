"""Where serving's HTTP predictions get their features: the feature service's API, which computes
them with the same code as the Kafka path."""

from __future__ import annotations

import abc
import json
from datetime import datetime
from typing import Any

import httpx

from conveyor_bus import tracing
from conveyor_contracts.events import PredictionEnriched


class FeaturesUnavailable(Exception):
    """The feature service cannot enrich the request now: unreachable, too slow, failing, not
    (yet) knowing the project, or refusing serving's own token. Worth a retry later."""


class FeatureSource(abc.ABC):
    @abc.abstractmethod
    async def enrich(
        self, project: str, request_id: str, fields: dict[str, Any], requested_at: datetime
    ) -> PredictionEnriched | str:
        """The request's feature vector, or why the project refuses the request (its data
        contract's reasons). Raises FeaturesUnavailable."""

    async def close(self) -> None:
        return None


class HttpFeatures(FeatureSource):
    """`POST {FEATURE_URL}/projects/{project}/enrich`, as serving (its own bearer token), on one
    client kept for the process's life."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers=auth, transport=transport
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def enrich(
        self, project: str, request_id: str, fields: dict[str, Any], requested_at: datetime
    ) -> PredictionEnriched | str:
        path = f"/projects/{project}/enrich"
        asked = {"request_id": request_id, "fields": fields, "requested_at": requested_at}
        # Encoded as it came, NaN included (which strict encoders refuse, and pydantic's would
        # make a null): the data contract names such a value as it does on Kafka.
        body = json.dumps({"requests": [asked]}, default=datetime.isoformat).encode()
        headers = {"Content-Type": "application/json", **tracing.context_headers()}
        try:
            # The enrichment continues the prediction's trace.
            r = await self.client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise FeaturesUnavailable(f"the feature service cannot be reached: {exc!r}") from exc
        if r.status_code == 404:
            raise FeaturesUnavailable(
                f"the feature service does not know project {project!r} yet: {_detail(r)}"
            )
        if r.status_code in (401, 403) or r.status_code >= 500:
            raise FeaturesUnavailable(f"the feature service answered {r.status_code}: {_detail(r)}")
        if r.is_error:  # a 4xx about the request itself (over a limit, say)
            return _detail(r)
        try:
            (result,) = r.json()["results"]
            if result["status"] == "refused":
                return str(result["reason"])
            return PredictionEnriched.model_validate(result)
        except (ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
            raise FeaturesUnavailable(
                f"the feature service answered what serving cannot read: {exc!r}"[:500]
            ) from exc


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:500]
