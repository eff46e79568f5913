"""Every service's OpenAPI document, fuzzed with schemathesis: no request the fuzzer makes gets a
5xx, and every answer is one the document declares (status, content type, body schema).

Each service runs in-process against the session's broker and Postgres, with a project applied
(and, where it means something, a version or a loaded model) so the project-scoped operations
reach real state, not only the 404 of an unknown project. The fuzzer's cases go to the service's
ASGI app through httpx on the test's own event loop: the service's database pool and Kafka
clients live on that loop, so the cases are drawn by Hypothesis in a worker thread and each
request is handed back to the loop.

Nothing is excluded: runs and experiments the fuzzer starts end at once (the project has no
examples), and `/metrics` is not in the document. Two passes per service:
- as `test-admin`, positive and negative cases for every operation: the handlers are reached;
- without a token, positive cases for the operations the document says need one: 401, always.
"""

from __future__ import annotations

import asyncio
import base64
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import AliasMoved
from conveyor_runtime import NotInRegistry, Runtime
from tests.models import make_model
from tests.support import TOKENS, Kafka, running, unique_project, until

pytestmark = [
    pytest.mark.integration,
    # schemathesis' own strategies draw from `random` (a deprecation Hypothesis warns about in
    # them, not in this file).
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# At most, per operation and pass (Hypothesis stops sooner where the inputs allow few cases):
# ~600 requests over the seven services, a few seconds of fuzzing each; most of each test is
# starting and stopping its service. Seeded (derandomize): CI sees the same cases each run.
ADMIN_EXAMPLES = 8
NEGATIVE_EXAMPLES = 4
ANONYMOUS_EXAMPLES = 2
REQUEST_TIMEOUT_S = 60.0


# --- the services, each with enough state for its project-scoped operations -------------------


@dataclass
class Target:
    runtime: Runtime
    # Path parameters worth drawing now and then instead of the fuzzer's own values: they name
    # what exists (the applied project, its version), so the handlers go past their 404.
    known: dict[str, Any] = field(default_factory=dict)


class NoRegistry:
    """The trainer's registry, for a trainer whose runs never get as far as registering."""

    async def register(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"version": 1, "status": body.get("status", "pending")}

    async def complete(self, project: str, version: int, body: dict[str, Any]) -> None:
        return None

    async def champion(self, project: str) -> tuple[int, bytes] | None:
        return None

    async def promote(self, project: str, version: int, reason: str) -> None:
        return None

    async def version(self, project: str, version: int) -> tuple[dict[str, Any], bytes | None]:
        raise NotInRegistry(f"{project} v{version}")

    async def project_spec(self, project: str, project_version: int) -> dict[str, Any]:
        raise NotInRegistry(f"{project} spec v{project_version}")

    async def request_approval(
        self, project: str, version: int, reason: str, evidence: dict[str, Any]
    ) -> int:
        return 1


async def _announced(kafka: Any, spec: ModelProject, runtime: Runtime) -> None:
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
    await until(lambda: runtime.projects.get(spec.name), 30, f"{spec.name} known")


@asynccontextmanager
async def _ingest(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_ingest.bootstrap import IngestSettings, bootstrap

    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with running(runtime):
        await _announced(kafka, spec, runtime)
        yield Target(runtime, {"project": spec.name})


@asynccontextmanager
async def _feature(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_feature.bootstrap import FeatureSettings, bootstrap

    runtime = bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with running(runtime):
        await _announced(kafka, spec, runtime)
        yield Target(runtime, {"project": spec.name})


@asynccontextmanager
async def _trainer(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_trainer.bootstrap import TrainerSettings, bootstrap

    settings = TrainerSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )
    # Runs and experiments the fuzzer starts are included: the project has no examples, so each
    # ends at once without training anything.
    runtime = bootstrap(settings, registry=NoRegistry())  # type: ignore[arg-type]
    async with running(runtime):
        await _announced(kafka, spec, runtime)
        yield Target(runtime, {"project": spec.name, "version": 1})


@asynccontextmanager
async def _registry(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_registry.bootstrap import RegistrySettings, bootstrap

    runtime = bootstrap(
        RegistrySettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with running(runtime) as api:
        r = await api.post("/projects", json=spec.model_dump(mode="json"))
        assert r.status_code == 201, r.text
        onnx = b"not really onnx"
        r = await api.post(
            f"/projects/{spec.name}/versions",
            json={
                "run_id": "fuzz-1",
                "project_version": 1,
                "status": "ready",
                "metrics": {"accuracy": 0.9},
                "signature": {"feature_names": spec.feature_names()},
                "profile": {"rows": 10},
                "lineage": {"training_rows": 10},
                "onnx_base64": base64.b64encode(onnx).decode(),
            },
        )
        assert r.status_code == 201, r.text
        r = await api.post(
            f"/projects/{spec.name}/promotions",
            json={"alias": "champion", "version": 1, "reason": "fuzz"},
        )
        known = {"project": spec.name, "version": 1, "alias": "champion"}
        if r.status_code == 201:
            known["request_id"] = r.json()["id"]
        yield Target(runtime, known)


class OneModel:
    """Serving's registry, holding one real model as version 1 of one project."""

    def __init__(self, spec: ModelProject) -> None:
        self.spec = spec
        self.model = make_model(spec)

    async def version(self, project: str, version: int) -> dict[str, Any]:
        if (project, version) != (self.spec.name, 1):
            raise NotInRegistry(f"{project} v{version}")
        return {"signature": self.model.signature}

    async def artifact(self, project: str, version: int) -> tuple[bytes, str]:
        return self.model.onnx, self.model.sha256


@asynccontextmanager
async def _serving(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_feature.bootstrap import FeatureSettings
    from conveyor_feature.bootstrap import bootstrap as feature_bootstrap
    from conveyor_serving.adapters.features import HttpFeatures
    from conveyor_serving.bootstrap import ServingSettings, bootstrap

    # Predictions from raw fields reach a real feature service (in-process, over its app).
    feature = feature_bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    features = HttpFeatures(
        "http://feature",
        token=TOKENS["an-app"],
        timeout_s=REQUEST_TIMEOUT_S,
        transport=httpx.ASGITransport(app=feature.http),
    )
    source = OneModel(spec)
    runtime = bootstrap(
        ServingSettings(kafka_bootstrap_servers=kafka.bootstrap_servers),
        source=source,  # type: ignore[arg-type]
        features=features,
    )
    async with (
        running(feature),
        running(runtime) as api,
        Kafka(kafka.bootstrap_servers) as k,
    ):
        await k.apply(spec)
        move = AliasMoved(
            project=spec.name,
            alias="champion",
            from_version=None,
            to_version=1,
            sha256=source.model.sha256,
            actor="test",
            reason="test",
        )
        await k.send(catalog.REGISTRY_EVENTS, move, key=spec.name)

        async def loaded() -> bool:
            got = (await api.get("/models")).json().get(spec.name, {})
            return bool(got.get("version") == 1)

        await until(loaded, 30, "the model loaded")
        await until(lambda: feature.projects.get(spec.name), 30, f"{spec.name} known to feature")
        yield Target(runtime, {"name": spec.name, "project": spec.name, "version": "1"})


class NoProfiles:
    async def profile(self, project: str, version: int) -> dict[str, Any]:
        raise NotInRegistry(f"{project} v{version}")


@asynccontextmanager
async def _monitor(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_monitor.bootstrap import MonitorSettings, bootstrap

    settings = MonitorSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
    )
    # The project without a champion: a champion would start the monitor's calibration, seconds
    # to a minute of both cores, which the fuzz budget has no room for.
    runtime = bootstrap(settings, profiles=NoProfiles())  # type: ignore[arg-type]
    async with running(runtime):
        await _announced(kafka, spec, runtime)
        yield Target(runtime, {"project": spec.name})


@asynccontextmanager
async def _feedback(kafka: Any, database_url: str, spec: ModelProject) -> AsyncIterator[Target]:
    from conveyor_feedback.bootstrap import FeedbackSettings, bootstrap

    runtime = bootstrap(
        FeedbackSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with running(runtime):
        await _announced(kafka, spec, runtime)
        yield Target(runtime, {"project": spec.name})


SERVICES: dict[str, Callable[[Any, str, ModelProject], Any]] = {
    "ingest": _ingest,
    "feature": _feature,
    "trainer": _trainer,
    "registry": _registry,
    "serving": _serving,
    "monitor": _monitor,
    "feedback": _feedback,
}


# --- the fuzzer ------------------------------------------------------------------------------

# What `requests.Request` takes of schemathesis' transport arguments (the body in whichever form
# the case's media type serialized it); `requests` prepares the URL, query and body bytes.
REQUEST_ARGS = ("method", "url", "headers", "params", "cookies", "json", "data", "files")


@dataclass
class Found:
    """What failed, once per operation and kind of failure (a report, not a flood)."""

    problems: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: int = 0

    def add(self, label: str, kind: str, text: str) -> None:
        self.problems.setdefault((label, kind), text)


def _fuzz(
    schema: Any,
    send: Callable[[requests.PreparedRequest], httpx.Response],
    found: Found,
    *,
    headers: dict[str, str],
    modes: list[tuple[GenerationMode, int]],
    known: dict[str, Any],
    only: Callable[[Any], bool] = lambda _op: True,
    expect: Callable[[httpx.Response], str | None] = lambda _r: None,
) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()
        if not only(operation):
            continue
        names = {p.name for p in operation.path_parameters}
        fixed = {name: value for name, value in known.items() if name in names}
        for mode, examples in modes:
            if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
                continue  # nothing to make invalid (Hypothesis would search a while to tell)
            strategy = operation.as_strategy(generation_mode=mode)
            if fixed:
                strategy = st.one_of(
                    strategy, operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                )
            check = _checker(f"{operation.label} [{mode.value}]", send, found, headers, expect)
            # Failures are recorded, not raised: nothing to shrink (each request costs the
            # database a round trip), and one run reports every operation's problems.
            run = settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=strategy)(check))
            try:
                run()
            except Unsatisfiable:
                # No invalid request to make: every input takes any value (a free string).
                if mode is not GenerationMode.NEGATIVE:
                    raise


def _takes_input(operation: Any) -> bool:
    parts = ("path_parameters", "query", "headers", "cookies", "body")
    return any(len(getattr(operation, part)) for part in parts)


def _checker(
    where: str,
    send: Callable[[requests.PreparedRequest], httpx.Response],
    found: Found,
    headers: dict[str, str],
    expect: Callable[[httpx.Response], str | None],
) -> Callable[[Any], None]:
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://service", headers=headers)
        prepared = requests.Request(
            **{k: v for k, v in kwargs.items() if k in REQUEST_ARGS}
        ).prepare()
        response = send(prepared)
        found.requests += 1
        curl = f"{prepared.method} {prepared.url} body={(prepared.body or b'')[:300]!r}"
        if (unexpected := expect(response)) is not None:
            found.add(where, unexpected, f"{unexpected}: {response.text[:300]}\n  {curl}")
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                found.add(where, failure.title, _told(failure, response, curl))
        except AssertionError as failure:
            title = getattr(failure, "title", type(failure).__name__)
            found.add(where, title, _told(failure, response, curl))

    return check


def _told(failure: AssertionError, response: httpx.Response, curl: str) -> str:
    said = " ".join(str(failure).split())[:400]
    return f"{said}\n    got {response.status_code} {response.text[:200]!r}\n    after {curl}"


def _needs_token(document: dict[str, Any]) -> Callable[[Any], bool]:
    def needs(operation: Any) -> bool:
        entry = document["paths"][operation.path][operation.method.lower()]
        return bool(entry.get("security"))

    return needs


def _unauthorized(response: httpx.Response) -> str | None:
    if response.status_code != 401:
        return f"{response.status_code} without a token (401 expected)"
    return None


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("http://service/readyz")).status_code == 200


@pytest.mark.parametrize("service", list(SERVICES))
async def test_openapi_document_holds_under_fuzzing(service, kafka, database_url):
    spec = unique_project(f"fz{service[:3]}")
    async with SERVICES[service](kafka, database_url, spec) as target:
        loop = asyncio.get_running_loop()
        transport = httpx.ASGITransport(app=target.runtime.http)
        async with httpx.AsyncClient(transport=transport, timeout=REQUEST_TIMEOUT_S) as client:
            # Fuzz a service that takes work: /readyz answers 503 while it catches up with
            # the changelog, as it should, and the fuzzer counts any 5xx.
            await until(lambda: _ready(client), 120, f"{service} to be ready (GET /readyz 200)")
            document = (await client.get("http://service/openapi.json")).json()
            schema = schemathesis.openapi.from_dict(document)

            def send(prepared: requests.PreparedRequest) -> httpx.Response:
                call = client.request(
                    prepared.method or "GET",
                    prepared.url or "",
                    headers=dict(prepared.headers),
                    content=prepared.body,
                )
                future = asyncio.run_coroutine_threadsafe(call, loop)
                try:
                    return future.result(REQUEST_TIMEOUT_S)
                except Exception as exc:
                    # What a server would answer with 500 (the in-process transport raises it
                    # instead): reported with where it was raised.
                    where = "".join(traceback.format_exception(exc)[-3:])
                    request = httpx.Request(prepared.method or "GET", prepared.url or "")
                    return httpx.Response(500, text=where, request=request)

            found = Found()
            admin = {"Authorization": f"Bearer {TOKENS['test-admin']}"}
            started = time.monotonic()

            def fuzz() -> None:
                _fuzz(
                    schema,
                    send,
                    found,
                    headers=admin,
                    modes=[
                        (GenerationMode.POSITIVE, ADMIN_EXAMPLES),
                        (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
                    ],
                    known=target.known,
                )
                _fuzz(
                    schema,
                    send,
                    found,
                    headers={},
                    modes=[(GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES)],
                    known=target.known,
                    only=_needs_token(document),
                    expect=_unauthorized,
                )

            await asyncio.to_thread(fuzz)
            took = time.monotonic() - started
    report = "\n".join(f"- {where}: {text}" for (where, _), text in sorted(found.problems.items()))
    print(f"{service}: {found.requests} requests in {took:.1f}s")
    if found.problems:
        pytest.fail(f"{service}: {len(found.problems)} problems\n{report}", pytrace=False)
