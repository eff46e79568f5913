"""The one list of every topic: name, key, schema, partitions, retention, producers, consumers.

Topic creation, the topic tables (schemas/topics.md, docs/reference/topics.md), the exported JSON
Schemas and the AsyncAPI document are all generated from `CATALOG`; nothing else names a topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter

from . import events as ev

DLQ_SUFFIX = ".dlq"
FOREVER = -1


@dataclass(frozen=True)
class TopicSpec:
    subject: str
    major: int
    minor: int
    schema: Any = field(repr=False)
    key: str
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str
    retention_ms: int = 7 * 24 * 3600 * 1000

    @property
    def name(self) -> str:
        return f"{self.subject}.v{self.major}"

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def dataschema(self) -> str:
        """The `ce_dataschema` header: where the payload's JSON Schema lives in the repo."""
        return f"schemas/{self.subject}/v{self.version}.json"

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.schema)

    def json_schema(self) -> dict[str, Any]:
        return self.adapter.json_schema(mode="serialization")


_services = ("ingest", "feature", "trainer", "registry", "serving", "monitor", "feedback")


def _t(**kwargs: Any) -> TopicSpec:
    return TopicSpec(**kwargs)


RECORDS_SUBMITTED = _t(
    subject="records.submitted",
    major=1,
    minor=0,
    schema=ev.RecordSubmitted,
    key="entity id",
    partitions=3,
    producers=("apps",),
    consumers=("ingest",),
    description="Raw records from applications, not yet validated.",
)
RECORDS_ACCEPTED = _t(
    subject="records.accepted",
    major=1,
    minor=1,
    schema=ev.RecordAccepted,
    key="entity id",
    partitions=3,
    producers=("ingest",),
    consumers=("feature",),
    description="Records that met their project's data contract, stored in the raw log.",
)
QUALITY_REPORTS = _t(
    subject="quality.reports",
    major=1,
    minor=0,
    schema=ev.QualityReported,
    key="project",
    partitions=1,
    producers=("ingest",),
    consumers=("apps",),
    description="Data quality per batch (when over a limit) and per window of records.",
)
FEATURES_ROWS = _t(
    subject="features.rows",
    major=1,
    minor=1,
    schema=ev.FeatureRowComputed,
    key="entity id",
    partitions=3,
    producers=("feature",),
    consumers=("trainer",),
    description="Point-in-time feature rows of records, with labels when known.",
)
PREDICTIONS_REQUESTS = _t(
    subject="predictions.requests",
    major=1,
    minor=0,
    schema=ev.PredictionRequested,
    key="entity id",
    partitions=3,
    producers=("apps",),
    consumers=("feature",),
    description="Prediction requests from applications.",
)
PREDICTIONS_ENRICHED = _t(
    subject="predictions.enriched",
    major=1,
    minor=0,
    schema=ev.PredictionEnriched,
    key="entity id",
    partitions=3,
    producers=("feature",),
    consumers=("serving",),
    description="Prediction requests with their feature vectors.",
)
PREDICTIONS_RESPONSES = _t(
    subject="predictions.responses",
    major=1,
    minor=0,
    schema=ev.PredictionServed,
    key="request id",
    partitions=3,
    producers=("serving", "feature"),
    consumers=("apps", "feedback", "monitor"),
    description="Answers, with the model version and the exact feature vector scored.",
)
PREDICTIONS_SHADOW = _t(
    subject="predictions.shadow",
    major=1,
    minor=0,
    schema=ev.PredictionServed,
    key="request id",
    partitions=3,
    producers=("serving",),
    consumers=("monitor",),
    description="What a challenger in shadow mode would have answered; never sent to "
    "applications as an answer.",
)
FEEDBACK_SUBMITTED = _t(
    subject="feedback.submitted",
    major=1,
    minor=0,
    schema=ev.FeedbackSubmitted,
    key="request id",
    partitions=3,
    producers=("product UIs",),
    consumers=("feedback",),
    description="End users' labels for earlier predictions.",
)
FEEDBACK_RECORDED = _t(
    subject="feedback.recorded",
    major=1,
    minor=0,
    schema=ev.FeedbackRecorded,
    key="request id",
    partitions=3,
    producers=("feedback",),
    consumers=("trainer", "monitor"),
    description="Labels joined to the predictions they judge.",
)
REGISTRY_EVENTS = _t(
    subject="registry.events",
    major=1,
    minor=6,
    schema=ev.RegistryEvent,
    key="project",
    partitions=1,
    producers=("registry",),
    consumers=("ingest", "feature", "trainer", "serving", "monitor", "feedback"),
    description="Projects applied, versions registered, aliases moved, promotions requested "
    "and decided (from the outbox).",
    retention_ms=FOREVER,
)
SERVING_EVENTS = _t(
    subject="serving.events",
    major=1,
    minor=0,
    schema=ev.ModelLoadFailed,
    key="project",
    partitions=1,
    producers=("serving",),
    consumers=("registry",),
    description="Versions serving could not load (the registry refuses to move an alias to one).",
)
MONITOR_DRIFT = _t(
    subject="monitor.drift",
    major=1,
    minor=1,
    schema=ev.MonitorEvent,
    key="project",
    partitions=1,
    producers=("monitor",),
    consumers=("trainer",),
    description="Drift episodes opened and closed, with their evidence.",
    retention_ms=FOREVER,
)
TRAINER_REQUESTS = _t(
    subject="trainer.requests",
    major=1,
    minor=0,
    schema=ev.StartTraining,
    key="project",
    partitions=1,
    producers=("cli", "apps"),
    consumers=("trainer",),
    description="Commands to train a candidate now.",
)
TRAINER_RUNS = _t(
    subject="trainer.runs",
    major=1,
    minor=0,
    schema=ev.TrainingRunFinished,
    key="project",
    partitions=1,
    producers=("trainer",),
    consumers=("apps",),
    description="Finished training runs and their outcome.",
    retention_ms=FOREVER,
)
AUDIT_EVENTS = _t(
    subject="audit.events",
    major=1,
    minor=0,
    schema=ev.AuditRecorded,
    key="project",
    partitions=1,
    producers=("registry", "trainer"),
    consumers=("registry",),
    description="Every change and who made it (from each service's outbox); the registry keeps "
    "the audit log.",
    retention_ms=FOREVER,
)

CATALOG: tuple[TopicSpec, ...] = (
    RECORDS_SUBMITTED,
    RECORDS_ACCEPTED,
    QUALITY_REPORTS,
    FEATURES_ROWS,
    PREDICTIONS_REQUESTS,
    PREDICTIONS_ENRICHED,
    PREDICTIONS_RESPONSES,
    PREDICTIONS_SHADOW,
    FEEDBACK_SUBMITTED,
    FEEDBACK_RECORDED,
    REGISTRY_EVENTS,
    SERVING_EVENTS,
    MONITOR_DRIFT,
    TRAINER_REQUESTS,
    TRAINER_RUNS,
    AUDIT_EVENTS,
)

SERVICES = _services
# The web application for people (services/console): built from the same Dockerfile and started
# by `conveyor up` like a service, but it calls the services' HTTP APIs only: no topic, no
# consumer group, no database of its own.
CONSOLE = "console"


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(name)
