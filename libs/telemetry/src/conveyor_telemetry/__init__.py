"""Logs, traces and metrics for Conveyor services.

Tracing is configured only through the standard `OTEL_*` variables: with no exporter endpoint and no
`OTEL_TRACES_EXPORTER`, nothing is exported. Metrics are recorded through the OpenTelemetry API;
a service process always offers them for Prometheus to scrape (`/metrics`), and also pushes them
over OTLP when an endpoint is configured. Logs are one JSON object per line and carry the active
trace and span ids.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "configure_metrics",
    "configure_tracing",
    "prometheus_scrape",
]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SECRET_HINTS = ("password", "secret", "token", "authorization")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            if any(h in key.lower() for h in _SECRET_HINTS):
                value = "***"
            out[key] = (
                value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(service: str, level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_tracing(service: str) -> bool:
    """Install an SDK tracer provider when the OTEL_* variables ask for export."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if exporter_name in ("", "none") and not endpoint:
        return False
    os.environ.setdefault("OTEL_SERVICE_NAME", f"conveyor-{service}")
    provider = TracerProvider(resource=Resource.create())  # sampler from OTEL_TRACES_SAMPLER
    if exporter_name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def configure_metrics(service: str) -> None:
    """Install an SDK meter provider: a Prometheus reader always (served at `/metrics`), and an
    OTLP exporter too when `OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT` is set, unless
    `OTEL_METRICS_EXPORTER=none` (Prometheus scrapes the services; pushing would count twice)."""
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    os.environ.setdefault("OTEL_SERVICE_NAME", f"conveyor-{service}")
    readers: list[MetricReader] = [PrometheusMetricReader()]
    push = os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none"
    if push and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(MeterProvider(resource=Resource.create(), metric_readers=readers))


def prometheus_scrape() -> tuple[bytes, str]:
    """This process's metrics in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(), CONTENT_TYPE_LATEST
