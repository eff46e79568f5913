"""When to train, and whether a candidate deserves promotion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from scipy.stats import binomtest

from conveyor_contracts.project import PromotionPolicy, RetrainPolicy


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    needs_approval: bool = False  # it passed the gate; an approver decides


@dataclass(frozen=True)
class Paired:
    """Which holdout rows each model got right, row for row."""

    candidate_right: Sequence[bool]
    champion_right: Sequence[bool]

    def mcnemar(self) -> tuple[int, int, float]:
        """Rows only the candidate got right, rows only the champion got right, and the exact
        one-sided p-value that the candidate is not more often right (binomial on the rows
        where they disagree)."""
        only_candidate = sum(
            a and not b for a, b in zip(self.candidate_right, self.champion_right, strict=True)
        )
        only_champion = sum(
            b and not a for a, b in zip(self.candidate_right, self.champion_right, strict=True)
        )
        n = only_candidate + only_champion
        p = binomtest(only_candidate, n, 0.5, alternative="greater").pvalue if n else 1.0
        return only_candidate, only_champion, float(p)


def promotion(
    policy: PromotionPolicy,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: int | None,
    paired: Paired | None = None,
    regression: tuple[dict[str, float], dict[str, float]] | None = None,
) -> Decision:
    """Judge a candidate against the policy and, when there is one, the champion — both measured
    on the same holdout, row for row when `paired` is given, and on the project's fixed
    regression set when `regression` (candidate's metrics, champion's) is given."""
    metric = policy.metric
    score = candidate.get(metric)
    if score is None:
        return Decision(False, f"the candidate has no {metric}")
    if score < policy.min_metric:
        return Decision(False, f"{metric} {score:.4f} is below the floor {policy.min_metric:.4f}")
    if champion is not None and champion_version is not None:
        theirs = champion.get(metric, 0.0)
        gain = score - theirs
        if gain < policy.min_improvement or (policy.min_improvement <= 0 and gain <= 0):
            return Decision(
                False,
                f"{metric} {score:.4f} vs champion v{champion_version} "
                f"{theirs:.4f} on the same holdout: not better",
            )
        verdict = f"{metric} {score:.4f} vs champion v{champion_version} {theirs:.4f}"
        if paired is not None and policy.max_p_value < 1:
            wins, losses, p = paired.mcnemar()
            evidence = (
                f"McNemar p={p:.2g} ({wins} rows only it got right, {losses} only the champion)"
            )
            if p > policy.max_p_value:
                return Decision(
                    False,
                    f"{verdict}, but not significantly better: {evidence} > {policy.max_p_value}",
                )
            verdict = f"{verdict}; {evidence}"
        if regression is not None:
            ours, theirs = regression[0].get(metric, 0.0), regression[1].get(metric, 0.0)
            on_set = f"{metric} {ours:.4f} vs {theirs:.4f} on the regression set"
            if policy.max_regression is not None and theirs - ours > policy.max_regression:
                return Decision(
                    False,
                    f"{verdict}, but it regresses: {on_set} "
                    f"(more than {policy.max_regression} below the champion)",
                )
            verdict = f"{verdict}; {on_set}"
    else:
        verdict = f"{metric} {score:.4f}, no champion yet"
    if policy.mode == "approval":
        return Decision(
            False, f"{verdict}; the project requires approval to promote", needs_approval=True
        )
    return Decision(True, verdict)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


def may_start(
    policy: RetrainPolicy,
    new_rows: int,
    last_run_finished: datetime | None,
    now: datetime,
    running: bool,
    runs_last_day: int = 0,
    rows_since: str = "onset",
) -> Readiness:
    """Whether an automatic run (a drift episode's single run, or a scheduled one) may start
    now: nothing running, budget left, cool-down over, enough new labeled rows."""
    if running:
        return Readiness(False, "a run of this project is in progress")
    if runs_last_day >= policy.max_runs_per_day:
        return Readiness(
            False, f"daily budget: {runs_last_day} of {policy.max_runs_per_day} runs in 24 hours"
        )
    if last_run_finished is not None:
        waited = (now - last_run_finished).total_seconds()
        if waited < policy.cooldown_s:
            return Readiness(False, f"cool-down: {policy.cooldown_s - waited:.0f}s left")
    if new_rows < policy.min_new_rows:
        return Readiness(
            False, f"{new_rows} of {policy.min_new_rows} labeled rows since {rows_since}"
        )
    return Readiness(True, f"{new_rows} labeled rows since {rows_since}")


def schedule_due(policy: RetrainPolicy, last_run_started: datetime | None, now: datetime) -> bool:
    """A scheduled run is due once no run has started for `every_s` (at once for a project
    that never trained)."""
    if policy.every_s is None:
        return False
    return last_run_started is None or (now - last_run_started).total_seconds() >= policy.every_s
