"""Every event and command that crosses a service boundary.

Commands are imperative (`StartTraining`), events past tense (`RecordAccepted`). Each model is the
payload of one topic (see `catalog.py`); a topic that carries several kinds of event uses a union
discriminated by `type`. Consumers ignore fields they do not know, so adding an optional field is a
compatible (minor) change; anything else needs a new topic version.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from hashlib import sha1
from typing import Annotated, Any, ClassVar, Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from .project import ModelProject


def new_id() -> str:
    """A random (version 4) UUID's hex, without building a UUID object: once an event."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


_DERIVED = uuid5(NAMESPACE_URL, "https://conveyor.dev/events").bytes


def derived_id(*parts: str) -> str:
    """An event id that is a function of what the event is about (a record's announcement has
    the same id however often it is rebuilt): `uuid5(namespace, parts).hex`, without building
    a UUID object (a third of the cost, on a path taken once a record)."""
    digest = bytearray(sha1(_DERIVED + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every payload: unknown fields are ignored so that minor versions stay readable."""

    model_config = ConfigDict(extra="ignore")
    type_name: ClassVar[str]


# Every id and name an event carries ends up in a database index or a log line: bounded here, at
# the edge, for every producer. (A check rather than a schema bound: a message beyond it was
# never storable, so readers of the published schemas lose nothing.)
MAX_ID_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bounded(value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


Id = Annotated[
    str,
    AfterValidator(_bounded),
    Field(description=f"At most {MAX_ID_LENGTH} characters, no control characters."),
]
COORDINATES = "coordinates"  # validation context: (topic, partition, offset) a message was read at


class DerivesId(Event):
    """An event whose producer may leave its id out: a consumer that passes where it read the
    message (`context={COORDINATES: (topic, partition, offset)}`) gets an id derived from that
    place, the same at every redelivery, so the message's effects are recognised as already
    applied. Built in code without that context, the id is random as before."""

    id_field: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _derive_id(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get(cls.id_field) is None and info.context:
            at = info.context.get(COORDINATES)
            if at is not None:
                return {**data, cls.id_field: derived_id(cls.type_name, *map(str, at))}
        return data


def _reason(value: str) -> str:
    if len(value) > MAX_REASON_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_REASON_LENGTH}")
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


MAX_REASON_LENGTH = 2000
Reason = Annotated[
    str,
    AfterValidator(_reason),
    Field(description=f"Free text: at most {MAX_REASON_LENGTH} characters, no NUL."),
]
ProjectName = Annotated[
    str,
    AfterValidator(_bounded),
    Field(description="Model project name.", examples=["fraud"]),
]
FeatureNames = Annotated[list[str], Field(description="Ordered model input names.")]
FeatureValues = Annotated[list[float], Field(description="Values, in `feature_names` order.")]


# --- ingest -------------------------------------------------------------------------------------


class RecordSubmitted(Event):
    """A raw record from an application, before validation."""

    type_name: ClassVar[str] = "conveyor.record.submitted"
    project: ProjectName
    record_id: str | None = Field(
        None, description="Producer's id; when absent, derived from the content and source."
    )
    source: str = Field("kafka", description="Where the record came from.")
    fields: dict[str, Any] = Field(examples=[{"customer": "c-17", "amount": 42.0}])


class RecordAccepted(Event):
    """A record that met its project's data contract and is stored in the raw log."""

    type_name: ClassVar[str] = "conveyor.record.accepted"
    project: ProjectName
    project_version: int
    record_id: Id
    entity_id: Id
    event_time: datetime
    ingested_at: datetime
    fields: dict[str, Any]
    flags: list[str] = Field(
        default_factory=list,
        description="Quality findings the record was accepted with (policy `flag`), each "
        "`field: check: why`.",
    )


class FieldQuality(BaseModel):
    """How often each check fired for one field."""

    nulls: int = 0
    out_of_range: int = 0
    unseen: int = 0
    outliers: int = 0


class QualityReported(Event):
    """The quality of a batch or a window of a project's records (those that met the contract)."""

    type_name: ClassVar[str] = "conveyor.quality.reported"
    project: ProjectName
    project_version: int
    scope: Literal["batch", "window"]
    records: int = Field(description="Records checked (duplicates are not counted).")
    flagged: int = Field(description="Records with at least one finding.")
    rejected: int = Field(description="Records rejected for their findings (policy `reject`).")
    fields: dict[str, FieldQuality] = Field(description="Counts per field with any finding.")
    breaches: list[str] = Field(
        description="Shares over the policy's limits, e.g. `amount: outliers 4.0% > 1.0%`."
    )
    profiled: bool = Field(description="Whether a profile existed (else no outlier/unseen check).")
    first_at: datetime = Field(description="When the first record of the batch or window arrived.")
    last_at: datetime


# --- feature ------------------------------------------------------------------------------------


class FeatureRowComputed(Event):
    """Features of one record as of its event time (offline store row), with its label if any."""

    type_name: ClassVar[str] = "conveyor.feature.row_computed"
    project: ProjectName
    project_version: int
    record_id: Id
    entity_id: Id
    event_time: datetime
    feature_names: FeatureNames
    values: FeatureValues
    label: str | None = None
    revision: int = Field(
        0,
        description="0 when first computed; higher when a late record (within the project's "
        "allowed lateness) changed the row: the highest revision of a record id holds.",
    )


class PredictionRequested(DerivesId):
    """An application asks for a prediction for one entity."""

    type_name: ClassVar[str] = "conveyor.prediction.requested"
    id_field: ClassVar[str] = "request_id"
    request_id: Id = Field(
        default_factory=new_id,
        description="The application's id; when absent, derived from where the request was read "
        "(topic, partition, offset), so a redelivery has the same one.",
    )
    project: ProjectName
    fields: dict[str, Any] = Field(description="The entity key and the current record's fields.")
    requested_at: datetime = Field(default_factory=utcnow)


class PredictionEnriched(Event):
    """A prediction request with its feature vector, computed by the feature service."""

    type_name: ClassVar[str] = "conveyor.prediction.enriched"
    request_id: Id
    project: ProjectName
    project_version: int
    entity_id: Id
    requested_at: datetime
    enriched_at: datetime
    feature_names: FeatureNames
    values: FeatureValues


# --- serving ------------------------------------------------------------------------------------


class PredictionServed(Event):
    """The answer to one prediction request, with the exact feature vector that was scored."""

    type_name: ClassVar[str] = "conveyor.prediction.served"
    request_id: Id
    project: ProjectName
    entity_id: Id
    status: Literal["ok", "error"]
    error: str | None = None
    model_version: int | None = None
    label: str | None = Field(None, description="Predicted class.")
    probabilities: dict[str, float] = Field(default_factory=dict)
    feature_names: FeatureNames = Field(default_factory=list)
    values: FeatureValues = Field(default_factory=list)
    requested_at: datetime
    served_at: datetime
    latency_ms: float = Field(description="Serving's own time from receipt to answer.")


class ModelLoadFailed(Event):
    """A serving replica could not load a version an alias points at (an artifact onnxruntime
    refuses, a sha256 mismatch, a missing or unusable signature): the alias keeps serving what
    it served before. Published once per replica process, version and alias."""

    type_name: ClassVar[str] = "conveyor.serving.model_load_failed"
    type: Literal["model_load_failed"] = "model_load_failed"
    project: ProjectName
    version: int
    alias: str = Field(examples=["champion"])
    sha256: str = Field(description="Digest the alias move announced for the version.")
    reason: str = Field(description="Why it did not load (the error, without artifact bytes).")
    replica: str = Field(description="The serving process: `hostname/pid`.")
    occurred_at: datetime = Field(default_factory=utcnow)


# --- feedback -----------------------------------------------------------------------------------


class FeedbackSubmitted(DerivesId):
    """An end user's verdict: the true label of an earlier prediction."""

    type_name: ClassVar[str] = "conveyor.feedback.submitted"
    id_field: ClassVar[str] = "feedback_id"
    feedback_id: Id = Field(
        default_factory=new_id,
        description="The product UI's id; when absent, derived from where the feedback was read "
        "(topic, partition, offset), so a redelivery has the same one.",
    )
    project: ProjectName
    request_id: Id = Field(description="The prediction this feedback judges.")
    label: Id
    submitted_at: datetime = Field(default_factory=utcnow)


class FeedbackRecorded(Event):
    """A label joined to the prediction it judges: the best training data there is."""

    type_name: ClassVar[str] = "conveyor.feedback.recorded"
    feedback_id: Id
    request_id: Id
    project: ProjectName
    entity_id: Id
    model_version: int | None
    feature_names: FeatureNames
    values: FeatureValues
    predicted_label: str | None
    label: str
    correct: bool
    predicted_at: datetime
    labeled_at: datetime


# --- registry -----------------------------------------------------------------------------------


class ProjectApplied(Event):
    type_name: ClassVar[str] = "conveyor.registry.project_applied"
    type: Literal["project_applied"] = "project_applied"
    project: ProjectName
    project_version: int
    spec: ModelProject
    occurred_at: datetime = Field(default_factory=utcnow)


class ModelVersionRegistered(Event):
    type_name: ClassVar[str] = "conveyor.registry.version_registered"
    type: Literal["version_registered"] = "version_registered"
    project: ProjectName
    version: int
    status: Literal["pending", "ready", "failed"] = Field(
        description="`pending` when a run claims the number as it starts training; the same "
        "version is announced again once `ready` or `failed`."
    )
    sha256: str | None
    metrics: dict[str, float] = Field(default_factory=dict)
    run_id: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)


class AliasMoved(Event):
    type_name: ClassVar[str] = "conveyor.registry.alias_moved"
    type: Literal["alias_moved"] = "alias_moved"
    project: ProjectName
    alias: str = Field(examples=["champion"])
    from_version: int | None
    to_version: int
    sha256: str = Field(description="Digest of the artifact the alias now points at.")
    actor: str
    reason: str
    occurred_at: datetime = Field(default_factory=utcnow)


class PromotionRequested(Event):
    """A move of an alias that the project's policy holds for approval."""

    type_name: ClassVar[str] = "conveyor.registry.promotion_requested"
    type: Literal["promotion_requested"] = "promotion_requested"
    project: ProjectName
    request_id: int
    alias: str = Field(examples=["champion"])
    version: int
    requested_by: str
    reason: str
    occurred_at: datetime = Field(default_factory=utcnow)


class PromotionDecided(Event):
    """An approver accepted or rejected a promotion request (an accepted one also moves the
    alias: an `alias_moved` follows in the same transaction)."""

    type_name: ClassVar[str] = "conveyor.registry.promotion_decided"
    type: Literal["promotion_decided"] = "promotion_decided"
    project: ProjectName
    request_id: int
    alias: str
    version: int
    decision: Literal["approved", "rejected"]
    decided_by: str
    reason: str
    occurred_at: datetime = Field(default_factory=utcnow)


RegistryEvent = Annotated[
    ProjectApplied | ModelVersionRegistered | AliasMoved | PromotionRequested | PromotionDecided,
    Field(discriminator="type"),
]


# --- monitor ------------------------------------------------------------------------------------


class FeatureDrift(BaseModel):
    """One test of a data window: a feature, the predicted classes or all features at once."""

    feature: str
    kind: Literal["numeric", "categorical", "prediction", "multivariate"] = "numeric"
    statistic: float = Field(
        description="Kolmogorov-Smirnov statistic (numeric), chi-squared (categorical, "
        "prediction), P(window error > reference error) (multivariate); for an alarm of the "
        "sequential detector, the test's accumulated evidence (log-likelihood ratio)."
    )
    p_value: float
    q_value: float = Field(1.0, description="Benjamini-Hochberg adjusted p-value.")
    effect: float = Field(
        description="Wasserstein distance over the reference's std (numeric), Jensen-Shannon "
        "distance net of what sampling alone reaches (categorical, prediction), error increase "
        "over its std (multivariate); for an alarm of the sequential detector, its evidence "
        "over the threshold."
    )
    psi: float = Field(0.0, description="Population stability index.")
    material: bool = Field(True, description="The effect reaches the policy's minimum.")
    drifted: bool


class DriftDetected(Event):
    """A drift episode opened: k of the last n windows drifted, or the evidence the sequential
    detector accumulated reached its threshold (then `windows` is 1, the window spans the run of
    that evidence and `features` are the tests with the most of it)."""

    type_name: ClassVar[str] = "conveyor.monitor.drift_detected"
    type: Literal["drift_detected"] = "drift_detected"
    episode_id: str
    project: ProjectName
    model_version: int
    kind: Literal["data", "performance", "data+performance"]
    opened_at: datetime
    onset_at: datetime = Field(description="Start of the first drifted window.")
    features: list[FeatureDrift] = Field(default_factory=list)
    accuracy: float | None = None
    reference_accuracy: float | None = None
    windows: int = Field(description="Windows in the episode's evidence.")
    window_ids: list[int] = Field(
        default_factory=list, description="The monitor's ids of the drifted windows."
    )
    alpha: float | None = Field(
        None, description="Calibrated FDR level the windows were tested at."
    )


class DriftResolved(Event):
    """A drift episode closed: a new version was promoted or the data recovered."""

    type_name: ClassVar[str] = "conveyor.monitor.drift_resolved"
    type: Literal["drift_resolved"] = "drift_resolved"
    episode_id: str
    project: ProjectName
    model_version: int
    closed_at: datetime
    reason: str


MonitorEvent = Annotated[DriftDetected | DriftResolved, Field(discriminator="type")]


# --- trainer ------------------------------------------------------------------------------------


class StartTraining(Event):
    """A command: train a candidate for a project now."""

    type_name: ClassVar[str] = "conveyor.trainer.start_training"
    request_id: Id = Field(default_factory=new_id)
    project: ProjectName
    requested_by: Id = "api"
    reason: Reason = ""


class TrainingRunFinished(Event):
    type_name: ClassVar[str] = "conveyor.trainer.run_finished"
    run_id: str
    project: ProjectName
    trigger: str = Field(description="What started it: a request id, a drift episode, ...")
    status: Literal["succeeded", "failed", "skipped"]
    reason: str = ""
    model_version: int | None = None
    promoted: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    training_rows: int = 0


# --- audit --------------------------------------------------------------------------------------


class AuditRecorded(Event):
    """One change and who made it: written by the service that made the change, in the same
    transaction (through its outbox), and kept by the registry's audit log."""

    type_name: ClassVar[str] = "conveyor.audit.recorded"
    at: datetime = Field(default_factory=utcnow)
    actor: Id = Field(
        description="The authenticated caller's name (a token's name, or the identity "
        "provider's `preferred_username`/`email`/`sub`), never a name a request claims; "
        "`kafka:<name>` for a command read from a topic, whose name nobody vouches for.",
        examples=["alice"],
    )
    role: str = Field(
        "", max_length=40, description="The caller's role that allowed the change (empty: none)."
    )
    via: Literal["token", "oidc", "kafka"] = Field(
        "token", description="How the caller was known: a token, a JWT, a Kafka command."
    )
    action: str = Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
        description="What was done: `project.apply`, `policy.change`, `run.start`, "
        "`alias.move`, `promotion.approve`, `alias.rollback`, `token.issue`, ...",
        examples=["promotion.approve"],
    )
    project: ProjectName | None = None
    target: Annotated[str, AfterValidator(_reason)] = Field(
        "",
        max_length=500,
        description="What the change was made to: a version, an alias, a run, a token's name.",
        examples=["champion → v3"],
    )
    reason: Reason = ""
    request_id: Id | None = Field(None, description="The HTTP request's X-Request-ID.")
    details: dict[str, Any] = Field(default_factory=dict)
