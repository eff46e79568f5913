"""What the client's calls return: small frozen dataclasses with the answer as sent in `raw`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Transport = Literal["http", "kafka"]


@dataclass(frozen=True)
class Record:
    """A record to submit with an id of its own (a plain mapping of fields gets one derived by
    ingest from its content and source, so the same record sent twice is stored once)."""

    fields: Mapping[str, Any]
    record_id: str | None = None


@dataclass(frozen=True)
class RefusedRecord:
    """A record the platform refused: its place in the records given and every reason."""

    index: int
    problems: list[str]
    record_id: str | None = None


@dataclass(frozen=True)
class Submitted:
    """What became of the records of one `submit_records` call.

    Over HTTP, ingest answers for every record: `accepted` (ids stored now), `duplicates`
    (already stored before), `refused` (failing their contract or quality checks, with the
    reasons) and `flagged` (stored with quality findings). Over Kafka the broker only takes the
    records: `queued` counts them, and ingest judges them later (its stats, or dead letters on
    `records.submitted.v1.dlq` for those it refuses)."""

    via: Transport
    sent: int
    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused: list[RefusedRecord] = field(default_factory=list)
    flagged: dict[str, list[str]] = field(default_factory=dict)
    queued: int = 0


@dataclass(frozen=True)
class Prediction:
    """An answer of the platform (a `PredictionServed`): `label` and `probabilities` from
    `model_version` for the entity `entity_id`, with the feature vector that was scored."""

    request_id: str
    project: str
    entity_id: str
    status: Literal["ok", "error"]
    label: str | None
    probabilities: dict[str, float]
    model_version: int | None
    error: str | None
    feature_names: list[str]
    values: list[float]
    requested_at: datetime | None
    served_at: datetime | None
    latency_ms: float | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Prediction:
        return cls(
            request_id=str(body.get("request_id", "")),
            project=str(body.get("project", "")),
            entity_id=str(body.get("entity_id", "")),
            status="ok" if body.get("status") == "ok" else "error",
            label=body.get("label"),
            probabilities={str(k): float(v) for k, v in (body.get("probabilities") or {}).items()},
            model_version=body.get("model_version"),
            error=body.get("error"),
            feature_names=list(body.get("feature_names") or []),
            values=[float(v) for v in body.get("values") or []],
            requested_at=_time(body.get("requested_at")),
            served_at=_time(body.get("served_at")),
            latency_ms=body.get("latency_ms"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class FeedbackOutcome:
    """What became of one label: `recorded` (joined to its prediction now), `waiting` (the
    prediction is not known yet; it is joined when it arrives) or `queued` (sent over Kafka:
    the feedback service joins it later)."""

    feedback_id: str
    status: Literal["recorded", "waiting", "queued"]


@dataclass(frozen=True)
class TrainingRun:
    """A trainer's run: `status` is `running`, `succeeded`, `failed` or `skipped`;
    `model_version` the version it registered, `promoted` whether it moved the champion."""

    run_id: str
    project: str
    status: str
    reason: str
    model_version: int | None
    promoted: bool
    metrics: dict[str, float]
    started_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TrainingRun:
        return cls(
            run_id=str(body.get("run_id", "")),
            project=str(body.get("project", "")),
            status=str(body.get("status", "")),
            reason=str(body.get("reason") or ""),
            model_version=body.get("model_version"),
            promoted=bool(body.get("promoted", False)),
            metrics={str(k): float(v) for k, v in (body.get("metrics") or {}).items()},
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            raw=dict(body),
        )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
