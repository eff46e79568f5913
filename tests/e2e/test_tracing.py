"""One prediction is one trace across the services, exported through the standard OTEL_* variables
to a real OTLP/HTTP endpoint (this test's, decoding the protobuf it receives).

The request carries a W3C traceparent; feature enriches it, serving answers it, and the monitor
and feedback both read the answer: their spans share the request's trace id and hang from one
another as one tree, with the stages of each hop under it. The label given later, in a trace of
its own, links back to the span that served the prediction.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conveyor_cli import infra
from conveyor_cli.kafka_io import Producer
from conveyor_cli.stack import Stack
from conveyor_contracts import CONSOLE, catalog
from conveyor_contracts.events import PredictionRequested
from conveyor_examples import load_project
from tests.e2e.support import until
from tests.models import make_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_SPAN = "00f067aa0ba902b7"
RELEASE_TRACE = "5c1f0e2d3b4a69788796a5b4c3d2e1f0"
FEEDBACK_TRACE = "0af7651916cd43dd8448eb211c80319c"
FEEDBACK_ROOT = "b7ad6b7169203331"
PREDICT_TRACE = "7d3b2a190f8e6d5c4b3a29180f7e6d5c"
STAGES = {"queue wait", "decode", "batch wait", "infer", "encode", "produce"}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.server.spans.append(
                            {
                                "service": attrs.get("service.name", ""),
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "links": [
                                    (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                                ],
                            }
                        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_one_prediction_is_one_trace_across_services(kafka, postgres, tmp_path, monkeypatch):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    for name, value in {
        **kafka.client_env(),
        "DATABASE_URL": asyncio.run(infra.create_database(postgres.url, "traces")),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }.items():
        monkeypatch.setenv(name, value)
    stack = Stack(state_dir=tmp_path / "conveyor")
    stack.up()
    try:
        spec = load_project("fraud").model_copy(update={"name": "traced"})
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        r = httpx.post(
            stack.urls["registry"] + "/projects", json=spec.model_dump(mode="json"), headers=admin
        )
        assert r.status_code == 201, r.text
        until(
            lambda: all(
                "traced" in httpx.get(u + "/healthz").json()["projects"]
                for n, u in stack.urls.items()
                if n not in ("registry", CONSOLE)  # the console holds no project
            ),
            30,
            "every service to know the project",
        )
        # A release in a trace of its own: registering and promoting continue the caller's trace
        # into the registry and, through registry.events, into serving's hot-swap.
        release = {"traceparent": f"00-{RELEASE_TRACE}-{FEEDBACK_ROOT}-01"} | admin
        registry = stack.urls["registry"] + "/projects/traced"
        r = httpx.post(
            registry + "/versions", json=make_model(spec).registration("r1"), headers=release
        )
        assert r.status_code == 201, r.text
        r = httpx.put(
            registry + "/aliases/champion",
            json={"version": 1, "reason": "first"},
            headers=release,
        )
        assert r.is_success, r.text
        until(
            lambda: httpx.get(stack.urls["serving"] + "/v2/models/traced/ready").is_success,
            30,
            "serving to load v1",
        )
        # A prediction from raw fields over HTTP: serving has the feature service (FEATURE_URL,
        # serving's own token) enrich it, and publishes the answer, in the HTTP request's trace.
        r = httpx.post(
            stack.urls["serving"] + "/projects/traced/predict",
            json={"fields": {"customer": "c-2", "amount": 40.0, "merchant": "online"}},
            headers={"traceparent": f"00-{PREDICT_TRACE}-{ROOT_SPAN}-01"} | admin,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["model_version"]) == ("ok", 1)
        over_http = until(
            lambda: _spans_of(receiver, PREDICT_TRACE, "conveyor-monitor"), 60, "the HTTP trace"
        )
        request_id = asyncio.run(_send_traced_request(kafka.bootstrap_servers))
        ours = until(lambda: _spans_of_every_hop(receiver), 60, "the spans of every hop")
        r = httpx.post(
            stack.urls["feedback"] + "/feedback",
            json={"project": "traced", "request_id": request_id, "label": spec.label.classes[0]},
            headers={"traceparent": f"00-{FEEDBACK_TRACE}-{FEEDBACK_ROOT}-01"} | admin,
        )
        assert r.status_code == 202 and r.json()["recorded"], r.text
        labeled = until(
            lambda: _spans_of(receiver, FEEDBACK_TRACE, "conveyor-monitor"), 60, "the label's trace"
        )
        released = until(
            lambda: _spans_of(receiver, RELEASE_TRACE, "conveyor-serving"),
            30,
            "the release's trace",
        )
    finally:
        stack.down()
        receiver.shutdown()

    # Over HTTP: the feature service's enrichment hangs from serving's request, and the
    # monitor read the answer in the same trace.
    http_by_id = {s["span_id"]: s for s in over_http}
    enrich = next(s for s in over_http if s["service"] == "conveyor-feature")
    while http_by_id.get(enrich["parent"], {}).get("service") == "conveyor-feature":
        enrich = http_by_id[enrich["parent"]]
    assert http_by_id[enrich["parent"]]["service"] == "conveyor-serving", over_http

    by_id = {s["span_id"]: s for s in ours}
    services = {s["service"] for s in ours}
    assert {"conveyor-feature", "conveyor-serving", "conveyor-monitor", "conveyor-feedback"} <= (
        services
    ), services
    # One tree: every span's parent is another span of the trace, or the application's root.
    assert all(s["parent"] in by_id or s["parent"] == ROOT_SPAN for s in ours), ours

    def chain(span: dict[str, str]) -> list[str]:
        out = []
        while span["parent"] in by_id:
            span = by_id[span["parent"]]
            out.append(span["service"])
        return out

    hops = [s for s in ours if s["name"].endswith(" process")]
    monitor = next(s for s in hops if s["service"] == "conveyor-monitor")
    assert chain(monitor) == ["conveyor-serving", "conveyor-feature"]
    assert by_id[_last(monitor, by_id)]["parent"] == ROOT_SPAN

    # Where the time went: each hop's stages hang under its span.
    serving = by_id[monitor["parent"]]
    stages = {s["name"] for s in ours if s["parent"] == serving["span_id"]}
    assert stages >= STAGES, stages
    feature = by_id[serving["parent"]]
    assert {s["name"] for s in ours if s["parent"] == feature["span_id"]} >= STAGES - {"infer"}

    # The label: its own trace (the HTTP request's), a join span linking to the span that served
    # the prediction, and the monitor reading feedback.recorded under that join.
    labeled_by_id = {s["span_id"]: s for s in labeled}
    join = next(s for s in labeled if s["name"] == "feedback join")
    assert (TRACE_ID, serving["span_id"]) in join["links"], join
    monitor_label = next(
        s for s in labeled if s["service"] == "conveyor-monitor" and s["name"].endswith("process")
    )
    walk = monitor_label
    while walk["span_id"] != join["span_id"] and walk["parent"] in labeled_by_id:
        walk = labeled_by_id[walk["parent"]]
    assert walk is join, "the monitor's span of the label does not descend from the join"

    # The release: serving took the alias move in the trace of the request that moved it.
    released_by_id = {s["span_id"]: s for s in released}
    swap = next(
        s for s in released if s["service"] == "conveyor-serving" and s["name"].endswith("process")
    )
    assert released_by_id[swap["parent"]]["service"] == "conveyor-registry", released


def _last(span: dict[str, str], by_id: dict[str, dict[str, str]]) -> str:
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
    return span["span_id"]


async def _send_traced_request(bootstrap: str) -> str:
    request = PredictionRequested(
        project="traced",
        fields={
            "customer": "c-1",
            "ts": "2026-11-22T10:00:00+00:00",
            "amount": 12.5,
            "merchant": "fuel",
            "hour": 9,
            "foreign": False,
        },
    )
    async with Producer(bootstrap) as producer:
        await (
            await producer.send(
                catalog.PREDICTIONS_REQUESTS,
                request,
                key="c-1",
                headers={"traceparent": f"00-{TRACE_ID}-{ROOT_SPAN}-01"},
            )
        )
    return request.request_id


def _spans_of(receiver: Receiver, trace_id: str, service: str) -> list[dict[str, Any]] | None:
    """The trace's spans, once `service` has one in it."""
    with receiver.lock:
        spans = [s for s in receiver.spans if s["trace_id"] == trace_id]
    return spans if any(s["service"] == service for s in spans) else None


def _spans_of_every_hop(receiver: Receiver) -> list[dict[str, Any]] | None:
    with receiver.lock:
        ours = [s for s in receiver.spans if s["trace_id"] == TRACE_ID]
    per_service: dict[str, int] = defaultdict(int)
    for s in ours:
        per_service[s["service"]] += 1
    wanted = ("conveyor-feature", "conveyor-serving", "conveyor-monitor", "conveyor-feedback")
    return ours if all(per_service[w] for w in wanted) else None
