"""The demo: the whole MLOps loop on one project, with a drift at a known moment.

1. apply the `fraud` project through the registry; every service picks it up;
2. ingest labeled history; train, export, register and promote a first model;
3. stream prediction requests (and their records); answer feedback with the truth;
4. at a known moment the world changes (fraudsters switch tactics);
5. the monitor detects the drift, the trainer retrains on fresh labels, the better model is
   promoted and serving hot-swaps it.

It prints a timeline, the accuracy before the drift, during it and after retraining, and one JSON
line of figures; it succeeds only when the loop really closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console

from conveyor_client import Config
from conveyor_contracts import SERVICES, catalog
from conveyor_contracts.events import (
    AliasMoved,
    DriftDetected,
    FeedbackSubmitted,
    PredictionRequested,
    PredictionServed,
    RecordSubmitted,
    TrainingRunFinished,
    new_id,
)
from conveyor_examples import load_project
from conveyor_examples.fraud.traffic import FraudTraffic

from .kafka_io import Producer, tail


class DemoFailed(RuntimeError):
    pass


@dataclass
class DemoConfig:
    history: int = 3000
    rate: float = 100.0  # prediction requests per second
    pre_drift_s: float = 15.0  # live traffic before the drift begins
    after_requests: int = 400  # post-drift answers from the new version needed to judge it
    timeout_s: float = 150.0  # the drift must be healed within this long
    seed: int = 7
    sim_step_s: float = 7.2  # event time between payments (history and live alike)


@dataclass
class _Sent:
    truth: str
    drifted: bool


@dataclass
class Outcome:
    project: str
    timeline: list[tuple[float, str]] = field(default_factory=list)
    first_version: int | None = None
    new_version: int | None = None
    drift_at: float | None = None
    detected_at: float | None = None
    promoted_at: float | None = None
    new_version_serving_at: float | None = None
    correct: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    errors: int = 0

    def accuracy(self, phase: str) -> float | None:
        right, total = self.correct[phase]
        return round(right / total, 4) if total else None

    def figures(self) -> dict[str, Any]:
        def since_drift(t: float | None) -> float | None:
            return round(t - self.drift_at, 2) if t is not None and self.drift_at else None

        return {
            "project": self.project,
            "first_version": self.first_version,
            "new_version": self.new_version,
            "drift_to_detection_s": since_drift(self.detected_at),
            "drift_to_new_version_s": since_drift(self.new_version_serving_at),
            "accuracy_before": self.accuracy("before"),
            "accuracy_during": self.accuracy("during"),
            "accuracy_after": self.accuracy("after"),
            "answers": {k: v[1] for k, v in self.correct.items()},
            "error_answers": self.errors,
        }


class Demo:
    def __init__(
        self,
        urls: dict[str, str],
        kafka: Config | str,
        config: DemoConfig,
        console: Console,
        *,
        token: str | None = None,
    ) -> None:
        self.urls = urls
        self.bootstrap = kafka  # the broker, and TLS and SASL where it takes them
        self.config = config
        self.console = console
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(timeout=10.0, headers=auth)
        self.t0 = time.monotonic()
        self.traffic = FraudTraffic(seed=config.seed)
        self.sim_clock = datetime.now(UTC) - timedelta(
            seconds=config.sim_step_s * (config.history + config.rate * 200)
        )
        self.outcome = Outcome(project="")

    def note(self, text: str) -> None:
        t = time.monotonic() - self.t0
        self.outcome.timeline.append((t, text))
        self.console.print(f"[dim]{t:7.1f}s[/dim]  {text}")

    async def run(self) -> Outcome:
        try:
            await self._run()
        finally:
            await self.http.aclose()
        return self.outcome

    # --- the story ------------------------------------------------------------------------------

    async def _run(self) -> None:
        project = await self._apply_project()
        self.outcome.project = project
        async with Producer(self.bootstrap) as producer:
            await self._ingest_history(producer, project)
            first = await self._train_first_model(project)
            self.outcome.first_version = first
            await self._live(producer, project, first)

    async def _apply_project(self) -> str:
        spec = load_project("fraud")
        known = {p["project"] for p in (await self._get("registry", "/projects"))}
        name, n = spec.name, 1
        while name in known:  # a stack that already ran the demo: use a fresh project
            n += 1
            name = f"{spec.name}-{n}"
        spec = spec.model_copy(update={"name": name})
        r = await self.http.post(
            self.urls["registry"] + "/projects", json=spec.model_dump(mode="json")
        )
        r.raise_for_status()
        version = r.json()["project_version"]
        self.note(f"applied project [bold]{name}[/bold] v{version} through the registry")
        await self._until(lambda: self._all_know(name), 30, f"services to learn project {name}")
        self.note("all seven services know the project")
        return name

    async def _all_know(self, project: str) -> bool:
        for service in self.urls:
            if service not in SERVICES:
                continue  # the console holds no project of its own
            health = await self._get(service, "/healthz")
            if service != "registry" and project not in health.get("projects", {}):
                return False
        return True

    async def _ingest_history(self, producer: Producer, project: str) -> None:
        n = self.config.history
        for _ in range(n):
            payment = self._next_payment(drifted=False)
            fields = payment.fields | {"outcome": payment.truth}
            await producer.send(
                catalog.RECORDS_SUBMITTED,
                RecordSubmitted(project=project, source="demo-history", fields=fields),
                key=fields["customer"],
            )
        await producer.flush()
        self.note(f"sent {n} labeled historical payments to {catalog.RECORDS_SUBMITTED.name}")

        async def materialized() -> bool:
            stats = await self._get("trainer", f"/projects/{project}/examples")
            return int(stats.get("count", 0)) >= n

        await self._until(materialized, 60, "the trainer to materialize the history")
        self.note(f"ingest → feature → trainer: {n} training examples materialized")

    async def _train_first_model(self, project: str) -> int:
        r = await self.http.post(
            self.urls["trainer"] + f"/projects/{project}/runs",
            json={"reason": "first model"},
        )
        r.raise_for_status()
        self.note(f"training run {r.json()['run_id'][:8]} started")
        version = await self._until(lambda: self._champion(project), 60, "a first champion")
        info = await self._get("registry", f"/projects/{project}/versions/{version}")
        self.note(
            f"model v{version} registered (sha256 {info['sha256'][:12]}…, holdout accuracy "
            f"{info['metrics'].get('accuracy', float('nan')):.3f}) and promoted to champion"
        )
        await self._until(
            lambda: self._serving_version(project, version), 30, f"serving to load v{version}"
        )
        self.note(f"serving loaded v{version}")
        return version

    async def _champion(self, project: str) -> int | None:
        aliases = await self._get("registry", f"/projects/{project}/aliases")
        return aliases.get("champion")

    async def _serving_version(self, project: str, version: int) -> bool:
        models = await self._get("serving", "/models")
        return (models.get(project) or {}).get("version") == version

    async def _live(self, producer: Producer, project: str, first: int) -> None:
        cfg, out = self.config, self.outcome
        sent: dict[str, _Sent] = {}
        healed = asyncio.Event()
        drift_started = False
        after_answers = 0

        async def on_responses() -> None:
            nonlocal after_answers
            async for r in tail(self.bootstrap, catalog.PREDICTIONS_RESPONSES):
                if not isinstance(r, PredictionServed) or r.request_id not in sent:
                    continue
                s = sent.pop(r.request_id)
                if r.status != "ok":
                    out.errors += 1
                    continue
                phase = (
                    "before"
                    if not s.drifted
                    else ("during" if r.model_version == first else "after")
                )
                if phase == "after" and out.new_version_serving_at is None:
                    out.new_version_serving_at = time.monotonic() - self.t0
                    self.note(f"serving answers with v{r.model_version}")
                tally = out.correct[phase]
                tally[0] += int(r.label == s.truth)
                tally[1] += 1
                if phase == "after":
                    after_answers += 1
                    if after_answers >= cfg.after_requests:
                        healed.set()
                await producer.send(
                    catalog.FEEDBACK_SUBMITTED,
                    FeedbackSubmitted(project=project, request_id=r.request_id, label=s.truth),
                    key=r.request_id,
                )

        async def on_drift() -> None:
            async for e in tail(self.bootstrap, catalog.MONITOR_DRIFT):
                if (
                    isinstance(e, DriftDetected)
                    and e.project == project
                    and out.detected_at is None
                ):
                    out.detected_at = time.monotonic() - self.t0
                    shifted = ", ".join(f.feature for f in e.features if f.drifted)[:80] or "-"
                    acc = (
                        f"; accuracy {e.accuracy:.2f} vs {e.reference_accuracy:.2f}"
                        if (e.accuracy is not None and e.reference_accuracy is not None)
                        else ""
                    )
                    self.note(
                        f"monitor opened drift episode {e.episode_id[:8]} ({e.kind}: "
                        f"{shifted}{acc})"
                    )

        async def on_runs() -> None:
            async for e in tail(self.bootstrap, catalog.TRAINER_RUNS):
                if isinstance(e, TrainingRunFinished) and e.project == project and drift_started:
                    self.note(
                        f"trainer run {e.run_id[:8]} ({e.trigger[:24]}) {e.status}: "
                        f"v{e.model_version} accuracy {e.metrics.get('accuracy', 0):.3f} vs "
                        f"champion {e.champion_metrics.get('accuracy', 0):.3f}, "
                        f"promoted={e.promoted}"
                    )

        async def on_registry() -> None:
            async for e in tail(self.bootstrap, catalog.REGISTRY_EVENTS):
                if (
                    isinstance(e, AliasMoved)
                    and e.project == project
                    and e.alias == "champion"
                    and e.to_version != first
                    and out.promoted_at is None
                ):
                    out.promoted_at = time.monotonic() - self.t0
                    out.new_version = e.to_version
                    self.note(
                        f"registry: champion v{e.from_version} → v{e.to_version} "
                        f"by {e.actor} ({e.reason[:60]})"
                    )

        watchers = [
            asyncio.create_task(c()) for c in (on_responses, on_drift, on_runs, on_registry)
        ]
        try:
            self.note(f"streaming prediction requests at {cfg.rate:.0f}/s, feedback follows each")
            interval = 1.0 / cfg.rate
            start = time.monotonic()
            i = 0
            while not healed.is_set():
                now = time.monotonic()
                if not drift_started and now - start >= cfg.pre_drift_s:
                    drift_started = True
                    out.drift_at = now - self.t0
                    self.note(
                        "[bold red]drift begins[/bold red]: fraudsters switch to small "
                        "domestic grocery and fuel payments"
                    )
                if out.drift_at and now - self.t0 - out.drift_at > cfg.timeout_s:
                    raise DemoFailed(self._stuck_reason())
                for w in watchers:
                    if w.done() and w.exception():
                        raise DemoFailed(f"watcher failed: {w.exception()!r}")
                payment = self._next_payment(drifted=drift_started)
                request = PredictionRequested(
                    project=project, fields=payment.fields, request_id=new_id()
                )
                sent[request.request_id] = _Sent(payment.truth, drift_started)
                customer = payment.fields["customer"]
                await producer.send(catalog.PREDICTIONS_REQUESTS, request, key=customer)
                await producer.send(
                    catalog.RECORDS_SUBMITTED,
                    RecordSubmitted(
                        project=project,
                        source="demo-live",
                        record_id=request.request_id,
                        fields=payment.fields,
                    ),
                    key=customer,
                )
                i += 1
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the offered load, not waiting on a result
            await producer.flush()
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    def _stuck_reason(self) -> str:
        out = self.outcome
        if out.detected_at is None:
            return f"the monitor did not detect the drift within {self.config.timeout_s:.0f}s"
        if out.promoted_at is None:
            return "drift was detected but no new version was promoted"
        if out.new_version_serving_at is None:
            return f"v{out.new_version} was promoted but serving never answered with it"
        return f"too few answers from v{out.new_version} ({out.correct['after'][1]})"

    # --- helpers --------------------------------------------------------------------------------

    def _next_payment(self, *, drifted: bool) -> Any:
        self.sim_clock += timedelta(seconds=self.config.sim_step_s)
        return self.traffic.payment(self.sim_clock, drifted=drifted)

    async def _get(self, service: str, path: str) -> Any:
        r = await self.http.get(self.urls[service] + path)
        if r.status_code == 404:
            return {}
        r.raise_for_status()
        return r.json()

    async def _until(self, probe: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                value = await probe()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.2)
        raise DemoFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")


def verdict(outcome: Outcome) -> str | None:
    """Why the loop did not close, or None when it did."""
    before, during, after = (outcome.accuracy(p) for p in ("before", "during", "after"))
    if outcome.detected_at is None:
        return "no drift was detected"
    if outcome.new_version is None or outcome.new_version_serving_at is None:
        return "no new version was promoted and served"
    if before is None or during is None or after is None:
        return "not enough answers in every phase to judge the model"
    if after <= during:
        return f"retraining did not heal the model (accuracy {during:.3f} → {after:.3f})"
    return None


def print_summary(outcome: Outcome, console: Console) -> dict[str, Any]:
    figures = outcome.figures()
    console.rule("summary")
    for phase in ("before", "during", "after"):
        acc = outcome.accuracy(phase)
        version = outcome.first_version if phase != "after" else outcome.new_version
        label = {
            "before": "before the drift",
            "during": "during the drift",
            "after": "after retraining",
        }[phase]
        console.print(
            f"  accuracy {label:<18} v{version}: "
            f"{acc if acc is not None else 'n/a'} ({outcome.correct[phase][1]} answers)"
        )
    if figures["drift_to_new_version_s"] is not None:
        console.print(
            f"  drift onset → detection: {figures['drift_to_detection_s']} s; "
            f"→ new version serving: {figures['drift_to_new_version_s']} s"
        )
    return figures


def emit_json(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)
