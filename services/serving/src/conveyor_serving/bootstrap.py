from __future__ import annotations

from pydantic import Field

from conveyor_contracts import catalog
from conveyor_runtime import Runtime, ServiceSettings

from .adapters.features import FeatureSource, HttpFeatures
from .adapters.registry import HttpModelSource, ModelSource
from .domain.predictor import Predictor
from .entrypoints import predict
from .entrypoints.api import router
from .handlers import Serving


class ServingSettings(ServiceSettings):
    http_port: int = 8105
    # Kafka's own default for a poll (max.poll.records): under a backlog, each batch's fixed
    # costs (the fetch, one onnxruntime call, the produce, the commit) spread over twice the
    # requests of the bus's 256 (drains of 60,000: 28,500-28,900 → 32,600-34,800 a second). A
    # trickle of requests still goes out as it comes: a batch is whatever the fetch brought.
    kafka_max_batch: int = 500
    kafka_overlap: int = Field(
        2,
        ge=1,
        le=8,
        description="Request batches handled at once: the next is scored while the answers to "
        "the one before are acknowledged (each is committed in order, once answered).",
    )
    serving_startup_load_timeout_s: float = Field(
        30.0,
        ge=0,
        description="At start-up, how long serving waits for the models the changelog names "
        "before it takes requests (a version that does not load ends its alias's wait at once).",
    )
    feature_url: str = Field(
        "http://127.0.0.1:8102",
        description="Base URL of the feature service's API, which enriches the requests of "
        "`POST /projects/{project}/predict` (as serving: `CONVEYOR_TOKEN`, a role with submit).",
    )
    serving_feature_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How long a prediction over HTTP waits for the feature service before it "
        "answers 503.",
    )


def bootstrap(
    settings: ServingSettings | None = None,
    *,
    source: ModelSource | None = None,
    features: FeatureSource | None = None,
) -> Runtime:
    settings = settings or ServingSettings()
    runtime = Runtime("serving", settings, uses_database=False)
    predictor = Predictor()
    serving = Serving(
        predictor,
        source or HttpModelSource(settings.registry_url),
        runtime.bus,
        runtime.projects,
        reply_prefix=settings.reply_topic_prefix,
    )
    runtime.on_registry_events(serving.on_registry_events)
    runtime.before_work(lambda: serving.loader.settle(settings.serving_startup_load_timeout_s))
    runtime.on_stop(serving.loader.close)
    runtime.report("models", serving.summary)
    runtime.bus.consume(
        catalog.PREDICTIONS_ENRICHED, serving.on_enriched, overlap=settings.kafka_overlap
    )
    runtime.http.include_router(
        router(predictor, lambda: runtime.started and runtime.taking_work, serving.loader.failed)
    )
    token = settings.conveyor_token.get_secret_value() if settings.conveyor_token else None
    features = features or HttpFeatures(
        settings.feature_url, token=token, timeout_s=settings.serving_feature_timeout_s
    )
    runtime.on_stop(features.close)
    runtime.http.include_router(predict.router(serving, features, runtime.projects))
    return runtime
