"""Prediction requests → feature vectors: the one use case behind both ways a request reaches the
feature service, `predictions.requests` on Kafka (`Features.on_requests`) and
`POST /projects/{project}/enrich` over HTTP. Both call `enrich`, so a request gets the same
vector, or the same refusal, whichever way it came."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from conveyor_contracts import ModelProject
from conveyor_contracts.records import ContractViolation, Request, contract_of

from .adapters.store import State
from .domain.features import PastRecord, featurize, state_fields, status

NO_TIME_ZONE = "requested_at: a timestamp needs a time zone"


class Asked(NamedTuple):
    """One prediction request as it came in."""

    fields: Any  # unchecked: whatever the application sent
    requested_at: datetime  # its event time when the project's event-time field is left out
    size: int | None = None  # its size in bytes as received, when known (else measured)


class Vector(NamedTuple):
    """A request's entity and its features, in `spec.feature_names()` order."""

    entity_id: str
    values: list[float]


class OnlineState(Protocol):
    """What enrichment reads of the feature store."""

    async def histories(self, project: str, entities: list[str]) -> dict[str, list[PastRecord]]: ...

    async def states(self, project: str, entities: list[str]) -> dict[str, State]: ...


async def enrich(
    spec: ModelProject, store: OnlineState, asked: Sequence[Asked]
) -> list[Vector | str]:
    """For each request, in order, its feature vector, or why its project refuses it.

    A request must meet the project's data contract in its request mode (as ingest checks
    records); its event time is its event-time field's, else `requested_at`, which must say its
    time zone. Per-entity features come from the entity's records strictly before that time; a
    plain feature's field the request leaves out comes from the entity's newest record while that
    is within the project's TTL. Nothing here changes the store."""
    contract = contract_of(spec)
    out: list[Vector | str] = []
    ready: list[tuple[int, Request, datetime]] = []
    for a in asked:
        try:
            request = contract.check_request(a.fields, size_at_most=a.size)
        except ContractViolation as exc:
            out.append(str(exc))
            continue
        at = request.event_time or a.requested_at
        if at.tzinfo is None:
            out.append(NO_TIME_ZONE)
            continue
        ready.append((len(out), request, at))
        out.append("")  # its vector, below
    if not ready:
        return out
    project = spec.name
    histories = await store.histories(project, sorted({r.entity_id for _, r, _ in ready}))
    plain = state_fields(spec)
    lacking = sorted({r.entity_id for _, r, _ in ready if any(f not in r.fields for f in plain)})
    states = await store.states(project, lacking) if lacking else {}
    for i, request, at in ready:
        entity, fields = request.entity_id, request.fields
        state = states.get(entity)
        if state and status(at, state.event_time, spec.feature_ttl_s) == "present":
            fields = state.fields | fields
        out[i] = Vector(entity, featurize(spec, fields, at, histories.get(entity, [])))
    return out
