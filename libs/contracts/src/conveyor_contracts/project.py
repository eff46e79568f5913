"""Model projects: one ML use case, declared once and applied through the registry.

A project says what a record looks like (its data contract), which features are derived from it,
what the label is, which scikit-learn estimator learns it, and the policies that govern drift,
retraining and promotion. Every service reads the same spec from `registry.events`; nothing in the
services is specific to one project.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .addresses import IPAddress, non_global
from .patterns import full_matcher, pattern_problem

NAME_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldType(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"


class FieldSpec(_Spec):
    """One field of a record: its type and the constraints a valid value meets."""

    type: FieldType
    required: bool = True
    min: float | None = Field(None, description="Smallest allowed value (numbers).")
    max: float | None = Field(None, description="Largest allowed value (numbers).")
    allowed: list[str] | None = Field(None, description="Allowed values (strings).")
    pattern: str | None = Field(
        None,
        description="Regular expression a whole string must match, in RE2's syntax (matched in "
        "linear time: no backreferences, no lookarounds).",
    )
    expected_min: float | None = Field(
        None,
        description="Usual lower bound (numbers): below it is a quality finding, not a "
        "contract violation.",
    )
    expected_max: float | None = Field(None, description="Usual upper bound (numbers).")
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        # What every spec ever applied met: this also runs on specs read back from
        # registry.events. The registry holds a spec it applies to RE2 (`pattern_problems`).
        if value is not None:
            try:
                re.compile(value)
            # Python's parser says no in more ways than `re.error` (nesting past its recursion
            # limit, a repetition count past its range); each is the spec's fault, so each must
            # be a ValueError for pydantic to answer it as a validation error, not a crash.
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValueError(f"pattern {value[:80]!r} does not compile: {exc}") from None
        return value


class RecordSchema(_Spec):
    fields: dict[str, FieldSpec]
    max_bytes: int = Field(65_536, gt=0, description="Largest accepted record, JSON-encoded.")


class NumericFeature(_Spec):
    """A numeric field, optionally transformed; missing values are imputed with `default`."""

    kind: Literal["numeric"] = "numeric"
    name: str
    field: str
    transform: Literal["identity", "log1p", "sqrt", "abs"] = "identity"
    default: float = 0.0


class CategoricalFeature(_Spec):
    """A string field one-hot encoded over declared categories (unseen values: all zeros)."""

    kind: Literal["categorical"] = "categorical"
    name: str
    field: str
    categories: list[str] = Field(min_length=1)


class AggregateFeature(_Spec):
    """A per-entity aggregate of a numeric field over the entity's earlier records.

    The window is in event time and ends just before the record (or request) being featurized,
    so a training row sees exactly what a prediction at the same moment would have seen.
    """

    kind: Literal["aggregate"] = "aggregate"
    name: str
    field: str | None = Field(None, description="Numeric field; not needed for `count`.")
    agg: Literal["count", "sum", "mean", "min", "max"]
    window_s: float = Field(gt=0)
    default: float = 0.0

    @model_validator(mode="after")
    def _field_needed(self) -> AggregateFeature:
        if self.agg != "count" and self.field is None:
            raise ValueError(f"aggregate {self.name!r}: agg {self.agg!r} needs a field")
        return self


class SinceLastFeature(_Spec):
    """Seconds since the entity's previous record (`default` when there is none)."""

    kind: Literal["since_last"] = "since_last"
    name: str
    default: float = 0.0


Feature = Annotated[
    NumericFeature | CategoricalFeature | AggregateFeature | SinceLastFeature,
    Field(discriminator="kind"),
]


class LabelSpec(_Spec):
    field: str
    classes: list[str] = Field(min_length=2)


# Classifiers whose whole pipeline skl2onnx exports with outputs matching scikit-learn's: the
# one list the spec is checked against and the trainer's tests build, fit and export each of.
# HistGradientBoostingClassifier is left out: with the skl2onnx and onnx releases we lock, its
# converter writes numpy integers into the TreeEnsemble's attributes, which onnx refuses.
ALLOWED_ESTIMATORS = (
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.GradientBoostingClassifier",
    "sklearn.tree.DecisionTreeClassifier",
)


class EstimatorSpec(_Spec):
    """A scikit-learn classifier (one that exports to ONNX) and its parameters."""

    class_path: str
    params: dict[str, Any] = Field(default_factory=dict)
    standardize: bool = Field(True, description="Put a StandardScaler before the estimator.")
    seed: int = 0

    @field_validator("class_path")
    @classmethod
    def _allowed(cls, value: str) -> str:
        if value not in ALLOWED_ESTIMATORS:
            raise ValueError(
                f"estimator {value[:200]!r} is not allowed: use one of "
                f"{', '.join(ALLOWED_ESTIMATORS)} (the classifiers whose whole pipeline exports "
                "to ONNX with scikit-learn's probabilities)"
            )
        return value


MAX_WEBHOOK_URL = 2000


def _literal_address(host: str) -> IPAddress | None:
    """The IP address a URL's host is written as, if it is one: the standard notations, and the
    shorthand IPv4 ones (`127.1`, `0x7f000001`, `2130706433`) that resolvers accept as well."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _webhook_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook, as the end of a sentence; None when it can.

    Only what the URL itself shows is judged here: a host name resolves later, and the monitor
    checks its addresses before every delivery.
    """
    if not re.match(r"^https?://[^\s/]+", url):
        return "is not http(s)"
    if len(url) > MAX_WEBHOOK_URL:
        return f"is longer than {MAX_WEBHOOK_URL:,} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains whitespace or control characters"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - reading it is what checks it
    except ValueError:
        return "has an invalid port"
    if "@" in parts.netloc:
        return "carries credentials (user:pass@), which would be stored and logged with it"
    if not parts.hostname:
        return "has no host"
    address = _literal_address(parts.hostname)
    kind = non_global(address) if address is not None else None
    if kind is not None:
        return (
            f"points at {parts.hostname}, {kind}: webhooks go to public addresses (name an "
            "internal receiver by a host name the monitor allows with "
            "MONITOR_WEBHOOK_ALLOWED_HOSTS)"
        )
    return None


def pattern_problems(fields: dict[str, FieldSpec]) -> list[str]:
    """The record fields whose `pattern` RE2 cannot match (backreferences, lookarounds):
    patterns run in linear time, so such a spec is refused when applied."""
    out = []
    for name, spec in fields.items():
        if spec.pattern is not None and (problem := pattern_problem(spec.pattern)) is not None:
            out.append(
                f"{name}: pattern {spec.pattern[:100]!r} is not one RE2 can match ({problem}): "
                "patterns are matched in linear time, without backreferences or lookarounds"
            )
    return out


def notify_problems(urls: list[str]) -> list[str]:
    """What is wrong with a drift policy's webhook URLs, one sentence each (checked when a spec
    is applied; the monitor judges the addresses names resolve to at each delivery)."""
    out = []
    for url in urls:
        problem = _webhook_problem(url)
        if problem is not None:
            shown = url if len(url) <= 80 else url[:80] + "..."
            out.append(f"drift policy: notify URL {shown!r} {problem}")
    return out


class DriftPolicy(_Spec):
    """How the monitor decides that the data or the model's performance has drifted.

    A data window drifts when a test is significant (false discovery rate across the features at
    `alpha`, lowered by calibration until stationary windows drifting fits the false-alarm budget)
    and its effect is material (`min_effect` for numeric features and the multivariate detector,
    `min_distance` for categorical features and the predicted classes). An episode opens when `k`
    of the last `n` windows drifted (`window_rule`) or when the evidence accumulated across steps
    reaches its calibrated threshold (`sequential`), and closes after `recover` clean windows in a
    row with the accumulated evidence faded.
    """

    window: int | Literal["auto"] = Field(
        200,
        description="Observations (and labels) per test window; `auto`: the smallest window "
        "that finds a `min_effect` shift at the calibrated level.",
    )
    alpha: float = Field(
        0.001, gt=0, lt=1, description="Loosest false discovery rate across the tests."
    )
    false_alarms_per_million: float = Field(
        1.0,
        gt=0,
        description="Budget of drift episodes per million predictions of data that did not "
        "drift; the calibration lowers `alpha` to keep it.",
    )
    min_effect: float = Field(
        0.2,
        ge=0,
        description="Smallest normalized Wasserstein distance (numeric features) or "
        "reconstruction-error increase (multivariate) that counts as drift.",
    )
    min_distance: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Smallest Jensen-Shannon distance (categorical features, predicted "
        "classes) that counts as drift.",
    )
    min_accuracy_drop: float = Field(
        0.05, ge=0, description="Smallest drop a performance window shows to drift (window rule)."
    )
    k: int = Field(2, ge=1, description="Drifted windows out of the last n that open an episode.")
    n: int = Field(3, ge=1)
    recover: int = Field(3, ge=1, description="Clean windows in a row that close an episode.")
    window_rule: bool = Field(
        True,
        description="Open episodes on `k` of `n` drifted windows (each window tested alone, with "
        "the effect gates).",
    )
    sequential: bool = Field(
        True,
        description="Open episodes on evidence accumulated across steps of `step` observations "
        "and across labels (CUSUMs calibrated by bootstrap): a small lasting shift is found as "
        "data accrues. With `window_rule` too, each path has half of each budget.",
    )
    step: int = Field(
        50, ge=10, le=10_000, description="Observations per step of the sequential detector."
    )
    label_false_alarms_per_million: float = Field(
        1.0,
        gt=0,
        description="Budget of performance episodes per million labels of a model whose error "
        "rate did not change.",
    )
    notify: list[str] = Field(
        default_factory=list,
        description="Webhook URLs that receive every episode opened and closed (POST, JSON).",
    )

    @field_validator("window")
    @classmethod
    def _window_size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 20:
            raise ValueError("drift policy: a window holds at least 20 observations")
        return value

    @field_validator("notify")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        # Only what every spec ever applied met: this also runs on each project read back from
        # registry.events, where a spec applied before `notify_problems` existed must still
        # read. The registry refuses the rest when a spec is applied.
        for url in value:
            if not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"drift policy: notify URL {url[:80]!r} is not http(s)")
        return value

    @model_validator(mode="after")
    def _k_le_n(self) -> DriftPolicy:
        if self.k > self.n:
            raise ValueError("drift policy: k must not exceed n")
        return self


class RetrainPolicy(_Spec):
    on_drift: bool = True
    min_new_rows: int = Field(
        300,
        ge=1,
        description="Labeled rows needed since drift onset (drift runs) or since the last run "
        "started (scheduled runs).",
    )
    train_rows: int = Field(2000, ge=50, description="Most recent labeled rows trained on.")
    holdout_fraction: float = Field(0.25, gt=0, lt=0.9)
    cooldown_s: float = Field(30.0, ge=0)
    every_s: float | None = Field(
        None,
        ge=1,
        description="Schedule: start a run once no run of the project has started for this "
        "many seconds (and min_new_rows labeled rows arrived since the last one). Unset: no "
        "scheduled runs.",
    )
    max_runs_per_day: int = Field(
        24,
        ge=1,
        description="Daily budget: once this many runs of the project started in the last 24 "
        "hours, no further run starts — drift and scheduled runs wait, requests and people are "
        "refused with the reason (an experiment needs room for all of its variants).",
    )


class PromotionPolicy(_Spec):
    mode: Literal["auto", "approval"] = "auto"
    metric: Literal["accuracy", "roc_auc", "f1"] = "accuracy"
    min_metric: float = Field(0.0, ge=0, le=1, description="Absolute floor for promotion.")
    min_improvement: float = Field(0.0, description="Candidate minus champion, on one holdout.")
    max_p_value: float = Field(
        0.05,
        gt=0,
        le=1,
        description="A candidate must also be right significantly more often than the champion "
        "on the same holdout rows: exact one-sided McNemar test on the rows where they disagree "
        "(1 turns the test off).",
    )
    max_regression: float | None = Field(
        None,
        ge=0,
        le=1,
        description="On the project's fixed regression set (the first model's holdout, never "
        "trained on), the candidate's metric may be at most this much below the champion's. "
        "Unset: both are measured and recorded, not gated (after a change of concept, old "
        "cases may rightly be answered differently).",
    )


class ServingPolicy(_Spec):
    """What serving does with the version the `challenger` alias points at."""

    challenger: Literal["off", "shadow", "canary"] = Field(
        "off",
        description="`shadow`: the challenger also scores every request, its answers go to "
        "predictions.shadow, never to applications; `canary`: it answers a sticky share of "
        "the entities (by a hash of the entity id); `off`: the champion answers everything.",
    )
    canary_share: float = Field(0.1, ge=0, le=1, description="Share of entities in the canary.")


class QualityPolicy(_Spec):
    """Checks beyond the contract, on records that meet it.

    Per record: a number outside its field's `expected_min`/`expected_max` (out of range), a
    string the project's profile never saw or a categorical feature does not declare (unseen),
    a number more than `outlier_z` standard deviations from the profile's mean (outlier). Per
    batch and per window of records: the share of each finding and of empty optional fields
    (nulls; the label is exempt), compared with the limits below. The profile is built from
    the project's first `profile_records` accepted records (and rebuilt on request).
    """

    on_finding: Literal["flag", "reject"] = Field(
        "flag",
        description="`flag`: a record with findings is stored and announced with them; "
        "`reject`: it is dead-lettered (HTTP: 422) with every finding.",
    )
    window: int = Field(1000, ge=10, description="Records per quality window.")
    min_batch: int = Field(
        50, ge=1, description="Smallest batch whose shares are compared with the limits."
    )
    max_null_rate: float = Field(0.05, ge=0, le=1)
    max_out_of_range: float = Field(0.01, ge=0, le=1)
    max_unseen: float = Field(0.01, ge=0, le=1)
    max_outliers: float = Field(0.01, ge=0, le=1)
    outlier_z: float = Field(4.0, gt=0)
    profile_records: int = Field(500, ge=20)
    max_categories: int = Field(
        100,
        ge=1,
        description="A string field with more distinct values in the profile is not treated "
        "as categorical (no unseen check), unless a categorical feature reads it.",
    )


class Policies(_Spec):
    drift: DriftPolicy = DriftPolicy()
    retrain: RetrainPolicy = RetrainPolicy()
    promotion: PromotionPolicy = PromotionPolicy()
    serving: ServingPolicy = ServingPolicy()
    quality: QualityPolicy = QualityPolicy()


MAX_ORIGINS = 50
MAX_ORIGIN_LENGTH = 300


def origin_problem(origin: str) -> str | None:
    """Why `origin` is not one a browser sends in its `Origin` header, as the end of a sentence
    (with the form it should take, where there is one); None when it is.

    Origins are compared as the exact strings browsers send (scheme and host in lower case, no
    default port, no path), so a spec must spell them that way to ever match.
    """
    if origin == "*":
        return "is a wildcard: list each origin a page is served from"
    if len(origin) > MAX_ORIGIN_LENGTH:
        return f"is longer than {MAX_ORIGIN_LENGTH} characters"
    if any(c.isspace() or not c.isprintable() for c in origin):
        return "contains whitespace or control characters"
    match = re.fullmatch(r"(?i)(https?)://([^/?#@\s]+)/?", origin)
    if match is None:
        return "is not scheme://host[:port] (http or https, no user, path, query or fragment)"
    scheme, netloc = match.groups()
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return "has an invalid port"
    if not parts.hostname:
        return "has no host"
    host = parts.hostname
    if not host.isascii():  # browsers send an international name in its ASCII form
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "has a host name that cannot be written in ASCII"
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[scheme.lower()]
    canonical = f"{scheme.lower()}://{host}" + (f":{port}" if port not in (None, default) else "")
    if origin != canonical:
        return f"is not written as browsers send it: {canonical!r}"
    return None


class FeedbackAccess(_Spec):
    """Who may send feedback to the project from a web page (CORS on
    `POST /projects/{project}/feedback` of the feedback service)."""

    allowed_origins: list[str] = Field(
        default_factory=list,
        max_length=MAX_ORIGINS,
        description="Origins (`scheme://host[:port]`, as browsers send them) of the pages that "
        "may send labels from a browser; none: no page may.",
        examples=[["https://app.example.com"]],
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            problem = origin_problem(origin)
            if problem is not None:
                shown = origin if len(origin) <= 80 else origin[:80] + "..."
                raise ValueError(f"feedback: allowed origin {shown!r} {problem}")
        if len(set(value)) != len(value):
            raise ValueError("feedback: allowed origins are listed once each")
        return value


class ModelProject(_Spec):
    """The declarative description of one ML use case."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    entity_key: str = Field(description="Field whose value identifies the entity.")
    event_time_field: str | None = Field(
        None, description="Field holding the record's event time (else the submission time)."
    )
    record_schema: RecordSchema
    features: list[Feature] = Field(min_length=1)
    allowed_lateness_s: float = Field(
        3600.0,
        ge=0,
        description="A record up to this much older than its entity's newest record revises "
        "the later rows it changes (they then equal an in-order stream's). An older one still "
        "gets its row and joins the online state, but rows already written stay as they are.",
    )
    feature_ttl_s: float | None = Field(
        None,
        gt=0,
        description="How long an entity's feature values stay valid: an online value from an "
        "older record reads as `expired`, a training label joins only rows at most this old. "
        "Unset: values never expire.",
    )
    label: LabelSpec
    estimator: EstimatorSpec
    policies: Policies = Policies()
    feedback: FeedbackAccess = Field(
        FeedbackAccess(), description="Labels sent from web pages: the origins allowed."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelProject:
        fields = self.record_schema.fields
        problems: list[str] = []
        if self.entity_key not in fields:
            problems.append(f"entity_key {self.entity_key!r} is not a record field")
        if self.event_time_field and self.event_time_field not in fields:
            problems.append(f"event_time_field {self.event_time_field!r} is not a record field")
        elif self.event_time_field and fields[self.event_time_field].type != FieldType.TIMESTAMP:
            problems.append(f"event_time_field {self.event_time_field!r} must be a timestamp")
        if self.label.field not in fields:
            problems.append(f"label field {self.label.field!r} is not a record field")
        elif fields[self.label.field].required:
            problems.append(f"label field {self.label.field!r} must not be required")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            problems.append("feature names must be unique")
        for feature in self.features:
            source = getattr(feature, "field", None)
            if source is not None and source not in fields:
                problems.append(f"feature {feature.name!r} reads unknown field {source!r}")
            if source == self.label.field:
                problems.append(f"feature {feature.name!r} reads the label")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def columns(self) -> list[tuple[Feature, str]]:
        """The model's inputs in order, each with the feature it comes from (categoricals expand
        one column per value)."""
        return [
            (feature, name)
            for feature in self.features
            for name in (
                [f"{feature.name}={c}" for c in feature.categories]
                if isinstance(feature, CategoricalFeature)
                else [feature.name]
            )
        ]

    def feature_names(self) -> list[str]:
        """The ordered names of the model's inputs."""
        return [name for _, name in self.columns()]


class SpecProblem(NamedTuple):
    """One way a spec's parts disagree: where, as a JSON path into the spec, and why (the
    message starts with the path as it reads in the project file: `features[2].field: ...`)."""

    path: tuple[str | int, ...]
    message: str


SpecPath = tuple[str | int, ...]


def _at(path: SpecPath, text: str) -> SpecProblem:
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return SpecProblem(path, f"{shown}: {text}")


_NUMERIC_TYPES = (FieldType.NUMBER, FieldType.INTEGER)
_READS_AS_NUMBER = (FieldType.NUMBER, FieldType.INTEGER, FieldType.BOOLEAN)


def consistency_problems(spec: ModelProject) -> list[SpecProblem]:
    """Where the parts of a spec disagree so that something would go wrong without an error: a
    feature that would always read its default or all zeros, a class no record could carry or
    no run would train on, a field constraint its type never checks. Checked when a spec is
    applied (the registry answers 422 with each problem): a spec already in the changelog still
    reads, as `ModelProject` itself holds only what every spec ever applied met."""
    fields = spec.record_schema.fields
    out: list[SpecProblem] = []
    for name, field in fields.items():
        out.extend(_field_problems(("record_schema", "fields", name), field))
    for i, feature in enumerate(spec.features):
        source = getattr(feature, "field", None)
        if source is None or source not in fields:
            continue  # no field, or an unknown one: the model's own validation says so
        if isinstance(feature, CategoricalFeature):
            out.extend(_category_problems(("features", i), feature, fields[source]))
        elif (declared := fields[source].type) not in _READS_AS_NUMBER:
            instead = (
                ", or one-hot encode it with a `categorical` feature"
                if declared == FieldType.STRING
                else ""
            )
            out.append(
                _at(
                    ("features", i, "field"),
                    f"{feature.kind} feature {feature.name!r} reads field {source!r}, which is "
                    f"declared {declared.value}: no {declared.value} reads as a number, so the "
                    f"feature would always be its default; read a `number`, `integer` or "
                    f"`boolean` field (booleans read as 0 and 1){instead}",
                )
            )
    if spec.label.field in fields:
        out.extend(_label_problems(spec.label, fields[spec.label.field]))
    return out


def _field_problems(path: SpecPath, field: FieldSpec) -> Iterator[SpecProblem]:
    """The constraints a field's type never checks, and bounds no value meets."""
    kind = field.type.value
    if field.type != FieldType.STRING:
        for key in ("allowed", "pattern"):
            if getattr(field, key) is not None:
                yield _at(
                    (*path, key),
                    f"`{key}` constrains strings, but the field is declared {kind}: it would "
                    "never be checked; remove it or declare the field `string`",
                )
    if field.type not in _NUMERIC_TYPES:
        for key in ("min", "max", "expected_min", "expected_max"):
            if getattr(field, key) is not None:
                yield _at(
                    (*path, key),
                    f"`{key}` bounds numbers, but the field is declared {kind}: it would never "
                    "be checked; remove it or declare the field `number` or `integer`",
                )
    for low, high in (("min", "max"), ("expected_min", "expected_max")):
        below, above = getattr(field, low), getattr(field, high)
        if below is not None and above is not None and below > above:
            yield _at((*path, low), f"{low} {below:g} is above {high} {above:g}")
    if field.type == FieldType.STRING and field.allowed == []:
        yield _at((*path, "allowed"), "no value is allowed, so every value would be refused")


def _category_problems(
    path: SpecPath, feature: CategoricalFeature, field: FieldSpec
) -> Iterator[SpecProblem]:
    if field.type != FieldType.STRING:
        kind = field.type.value
        yield _at(
            (*path, "field"),
            f"categorical feature {feature.name!r} reads field {feature.field!r}, which is "
            f"declared {kind}: categories are strings and a {kind} value never equals one, so "
            "every one-hot column would be 0 for every record; declare the field `string` "
            "(with its values in `allowed`), or read it with a `numeric` feature",
        )
        return
    yield from _values_problems(
        (*path, "categories"),
        feature.categories,
        field,
        f"field {feature.field!r}",
        "no record could carry it, so its one-hot column would always be 0",
    )


def _label_problems(label: LabelSpec, field: FieldSpec) -> Iterator[SpecProblem]:
    path: SpecPath = ("label", "classes")
    if field.type == FieldType.INTEGER:
        # A record's integer label is compared with the classes as its decimal text (3 as "3").
        for j, c in enumerate(label.classes):
            if not re.fullmatch(r"-?[0-9]{1,18}", c) or str(int(c)) != c:
                yield _at(
                    (*path, j),
                    f"class {c[:100]!r} is not an integer as a record's label reads (field "
                    f"{label.field!r} is declared integer: its values read as '0', '1', "
                    "'-2'), so no record would carry it",
                )
            elif (field.min is not None and int(c) < field.min) or (
                field.max is not None and int(c) > field.max
            ):
                yield _at(
                    (*path, j),
                    f"class {c!r} is outside the min/max of field {label.field!r}, so no "
                    "record would carry it",
                )
        yield from _duplicates(path, label.classes, "class")
        return
    if field.type != FieldType.STRING:
        kind = field.type.value
        yield _at(
            ("record_schema", "fields", label.field, "type"),
            f"the label field is declared {kind}: labels are compared with the classes as "
            f"text, which a {kind} value does not read as; declare it `string` with the "
            "classes in `allowed` (or `integer`, with classes such as '0' and '1')",
        )
        return
    yield from _values_problems(
        path,
        label.classes,
        field,
        f"label field {label.field!r}",
        "no record could be labeled with it, so it could never be learned",
    )
    for value in field.allowed or []:
        if value not in label.classes:
            yield _at(
                ("record_schema", "fields", label.field, "allowed"),
                f"label value {value[:100]!r} is allowed but is not one of label.classes: "
                "records labeled with it would be stored and never trained on; add it to the "
                "classes or remove it from `allowed` (a record without a label leaves the "
                "field out)",
            )


def _values_problems(
    path: SpecPath, values: list[str], field: FieldSpec, what: str, consequence: str
) -> Iterator[SpecProblem]:
    """The values (categories, classes) a string field's `allowed` or `pattern` refuses, and
    those listed twice."""
    matches = (
        full_matcher(field.pattern)
        if field.pattern is not None and pattern_problem(field.pattern) is None
        else None
    )
    for j, value in enumerate(values):
        if field.allowed is not None and value not in field.allowed:
            allowed = ", ".join(repr(a) for a in field.allowed)
            shown = allowed if len(allowed) <= 300 else allowed[:300] + "..."
            yield _at(
                (*path, j),
                f"{value[:100]!r} is not an allowed value of {what} ({shown}): {consequence}",
            )
        elif matches is not None and not matches(value):
            yield _at(
                (*path, j), f"{value[:100]!r} does not match the pattern of {what}: {consequence}"
            )
    yield from _duplicates(path, values, "value")


def _duplicates(path: SpecPath, values: list[str], what: str) -> Iterator[SpecProblem]:
    seen: set[str] = set()
    for j, value in enumerate(values):
        if value in seen:
            yield _at((*path, j), f"{what} {value[:100]!r} is listed twice")
        seen.add(value)
