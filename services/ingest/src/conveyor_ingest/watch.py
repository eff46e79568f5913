"""Quality over time: each project's checker (its profile included), its current window, the
quality metrics and the reports on `quality.reports`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opentelemetry import metrics

from conveyor_bus import Bus
from conveyor_contracts import catalog
from conveyor_contracts.events import QualityReported
from conveyor_runtime import KnownProject

from .adapters.repository import RawLog
from .domain.quality import Checker, Finding, Profile, Tally, build_profile

log = logging.getLogger(__name__)

_meter = metrics.get_meter("conveyor.ingest")
FINDINGS = _meter.create_counter(
    "conveyor.quality.findings",
    description="Quality findings on records that met their contract, by project, field and "
    "check (`out_of_range`, `unseen`, `outliers`).",
)
SHARE = _meter.create_gauge(
    "conveyor.quality.share",
    description="Share of the last window's records with a finding (or an empty optional "
    "field: `nulls`), by project, field and check; only checks that fired are listed.",
)
PROFILE_RELOAD_S = 30.0  # another replica may have built or rebuilt the profile


class Checked(NamedTuple):
    record_fields: dict[str, Any]
    findings: list[Finding]
    rejected: bool


class QualityWatch:
    def __init__(self, log: RawLog, bus: Bus) -> None:
        self.log = log
        self.bus = bus
        self._checkers: dict[str, tuple[int, float, Checker]] = {}
        self._windows: dict[str, Tally] = {}
        self._since_try: dict[str, int] = {}  # records seen since a profile was last tried
        self._exported: dict[str, set[tuple[str, str]]] = {}

    async def checker(self, known: KnownProject) -> Checker:
        name = known.spec.name
        cached = self._checkers.get(name)
        if (
            cached
            and cached[0] == known.version
            and time.monotonic() - cached[1] < PROFILE_RELOAD_S
        ):
            return cached[2]
        data = await self.log.profile(name)
        checker = Checker(known.spec, None if data is None else Profile.from_json(data))
        self._checkers[name] = (known.version, time.monotonic(), checker)
        return checker

    async def observe(
        self, known: KnownProject, checker: Checker, checked: Sequence[Checked]
    ) -> QualityReported | None:
        """Count a batch into the project's window; publish the window's report when it is full,
        and the batch's when it is large enough and over a limit. Returns the batch's report."""
        if not checked:
            return None
        name, policy, now = known.spec.name, known.spec.policies.quality, datetime.now(UTC)
        batch = Tally()
        window = self._windows.setdefault(name, Tally())
        reports: list[QualityReported] = []
        for item in checked:
            for tally in (batch, window):
                tally.add(checker, item.record_fields, item.findings, now, rejected=item.rejected)
            for f in item.findings:
                FINDINGS.add(1, {"project": name, "field": f.field, "check": f.check})
            if window.records >= policy.window:
                report = window.report(checker, known.version, "window")
                self._export_shares(name, window)
                reports.append(report)
                window = self._windows[name] = Tally()
        batch_report = batch.report(checker, known.version, "batch")
        if batch.records >= policy.min_batch and batch_report.breaches:
            reports.insert(0, batch_report)
        for report in reports:
            if report.breaches:
                log.warning(
                    "quality of %s (%s) over its limits: %s",
                    name,
                    report.scope,
                    "; ".join(report.breaches),
                )
            await self.bus.publish(catalog.QUALITY_REPORTS, report, key=name)
        if checker.profile is None:
            await self._maybe_profile(known, len(checked))
        return batch_report

    def window(self, project: str) -> Tally | None:
        return self._windows.get(project)

    async def rebuild(self, known: KnownProject, records: int) -> Profile | None:
        """Profile the project's newest `records` records, replacing its profile."""
        sample = await self.log.sample(known.spec.name, records, newest=True)
        if len(sample) < 2:
            return None
        profile, _ = await self._save_profile(known, sample, replace=True)
        return profile

    async def _maybe_profile(self, known: KnownProject, seen: int) -> None:
        """Once the project has `profile_records` records, its first ones become its profile
        (tried at start and then every hundred records, not on every batch)."""
        name, n = known.spec.name, known.spec.policies.quality.profile_records
        if name in self._since_try:
            self._since_try[name] += seen
            if self._since_try[name] < min(n, 100):
                return
        self._since_try[name] = 0
        sample = await self.log.sample(name, n, newest=False)
        if len(sample) < n:
            return
        if (await self._save_profile(known, sample, replace=False))[1]:
            log.info("profiled %s from its first %d records", name, n)

    async def _save_profile(
        self, known: KnownProject, sample: list[dict[str, Any]], *, replace: bool
    ) -> tuple[Profile, bool]:
        """Profile `sample` and store it (unless `replace`, only when the project has none);
        the project's checker is built again on its next use. True if stored."""
        profile = build_profile(known.spec, sample, datetime.now(UTC))
        stored = await self.log.save_profile(known.spec.name, profile.to_json(), replace=replace)
        self._checkers.pop(known.spec.name, None)
        return profile, stored

    def _export_shares(self, project: str, window: Tally) -> None:
        shares = {key: n / window.records for key, n in window.counts.items()}
        for key in self._exported.get(project, set()) - set(shares):
            shares[key] = 0.0  # fired in an earlier window, not in this one
        for (name, check), share in shares.items():
            SHARE.set(share, {"project": project, "field": name, "check": check})
        self._exported[project] = set(shares)
