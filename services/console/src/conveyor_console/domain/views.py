"""What a page shows, from what the services answered: pure functions, no HTTP.

Role-aware pages offer a control only to a person whose roles grant its action (the same table
the services enforce, `conveyor_auth.grants`); the services refuse it anyway, so hiding a control
is a courtesy, never the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor_auth import Action, Role, grants


@dataclass(frozen=True)
class Person:
    """Who is signed in: the name the services record, their roles, how they signed in."""

    name: str
    roles: frozenset[Role]
    via: str  # "token" or "oidc"

    def may(self, action: Action) -> bool:
        return grants(self.roles, action)

    @property
    def role_names(self) -> str:
        return ", ".join(sorted(r.value for r in self.roles)) or "no role"


def may_decide(person: Person, request: Mapping[str, Any]) -> bool:
    """Approve and reject are offered for an open request to an approver who did not ask for it
    (nobody decides their own request)."""
    return (
        person.may(Action.DECIDE)
        and request.get("state") == "pending"
        and request.get("requested_by") != person.name
    )


def aliases_by_name(aliases: Any) -> dict[str, int]:
    """`{"champion": 3, "challenger": 4}` from the registry's answer (its aliases by name)."""
    if not isinstance(aliases, Mapping):
        return {}
    return {str(k): int(v) for k, v in aliases.items() if isinstance(v, int)}


@dataclass(frozen=True)
class Series:
    """A chart's data: x as Unix seconds, one or more y series of the same length."""

    x: list[float]
    ys: dict[str, list[float | None]]

    def as_json(self) -> dict[str, Any]:
        return {"x": self.x, "series": [{"label": k, "values": v} for k, v in self.ys.items()]}

    def __len__(self) -> int:
        return len(self.x)


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def window_accuracy(drift: Mapping[str, Any]) -> Series:
    """The accuracy of each performance window the monitor judged (oldest first, by the window's
    end), beside the reference's holdout accuracy it is judged against."""
    windows = [w for w in drift.get("windows") or () if isinstance(w, Mapping)]
    reference = drift.get("reference") or {}
    baseline = reference.get("holdout_accuracy") if isinstance(reference, Mapping) else None
    points: list[tuple[float, float]] = []
    for w in windows:
        evidence = w.get("evidence") or {}
        at = _seconds(w.get("ended_at"))
        accuracy = evidence.get("accuracy") if isinstance(evidence, Mapping) else None
        if w.get("kind") == "performance" and at is not None and isinstance(accuracy, int | float):
            points.append((at, float(accuracy)))
    points.sort()
    x = [p[0] for p in points]
    ys: dict[str, list[float | None]] = {"window accuracy": [p[1] for p in points]}
    if isinstance(baseline, int | float):
        ys["reference (holdout)"] = [float(baseline)] * len(points)
    return Series(x, ys)


@dataclass(frozen=True)
class Comparison:
    """One dataset both models were measured on: each metric, the candidate's beside the
    champion's."""

    dataset: str
    identity: str
    rows: int | None
    champion_version: int | None
    metrics: list[tuple[str, float | None, float | None]]


def comparisons(evaluations: Mapping[str, Any]) -> list[Comparison]:
    """The registry's `evaluations` of a version (holdout, regression set, ...) as rows."""
    out = []
    for dataset, e in evaluations.items():
        if not isinstance(e, Mapping):
            continue
        mine = e.get("metrics") or {}
        theirs = e.get("champion_metrics") or {}
        names = sorted(set(mine) | set(theirs))
        out.append(
            Comparison(
                dataset=str(dataset),
                identity=str(e.get("identity") or ""),
                rows=e.get("rows") if isinstance(e.get("rows"), int) else None,
                champion_version=e.get("champion_version"),
                metrics=[(n, _number(mine.get(n)), _number(theirs.get(n))) for n in names],
            )
        )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def open_episode(drift: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    episode = (drift or {}).get("open_episode")
    return episode if isinstance(episode, Mapping) else None


def newest_first(items: Sequence[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    return sorted(items, key=lambda i: str(i.get(key) or ""), reverse=True)


# A run's log shown on a page: its end, where a failure is told; the whole log stays the
# trainer's (`GET /runs/{id}`).
MAX_LOG_CHARS = 20_000
# Runs listed on a project's page, newest first: a page, not an archive.
MAX_RUNS_LISTED = 200
# Metrics shown per run in the list; the comparison shows every one.
KEY_METRICS = 3


def log_tail(logs: Any, limit: int = MAX_LOG_CHARS) -> tuple[str, bool]:
    """The end of a run's log, at most `limit` characters, and whether some was left out."""
    text = logs if isinstance(logs, str) else ""
    if len(text) <= limit:
        return text, False
    return text[-limit:], True


def key_metrics(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics the run list shows: accuracy first when runs have it, then by name."""
    names = {str(m) for r in runs for m in (r.get("metrics") or {})}
    return sorted(names, key=lambda m: (m != "accuracy", m))[:KEY_METRICS]


def newest_runs(runs: Any, limit: int = MAX_RUNS_LISTED) -> tuple[list[Mapping[str, Any]], int]:
    """The trainer's runs newest first, at most `limit`, and how many there are in all."""
    found = [r for r in runs if isinstance(r, Mapping)] if isinstance(runs, list) else []
    return newest_first(found, "started_at")[:limit], len(found)


@dataclass(frozen=True)
class ParamRow:
    """One parameter across the compared runs (None where a run has none), and whether the
    runs differ in it."""

    name: str
    values: list[Any]
    differs: bool


def params_diff(runs: Sequence[Mapping[str, Any]]) -> list[ParamRow]:
    """Every parameter of any compared run, those that differ first."""
    params: list[Mapping[str, Any]] = []
    for r in runs:
        given = r.get("params")
        params.append(given if isinstance(given, Mapping) else {})
    names = sorted({str(k) for p in params for k in p})
    rows = []
    for name in names:
        values = [p.get(name) for p in params]
        shown = [json_text(v) for v in values]
        rows.append(ParamRow(name, values, len(set(shown)) > 1))
    return sorted(rows, key=lambda r: (not r.differs, r.name))


def json_text(value: Any) -> str:
    """A parameter as one comparable text (lists and mappings too)."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: which, from and to which version, by whom, when and why."""

    alias: str
    at: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str


def alias_moves(histories: Mapping[str, Any]) -> list[AliasMove]:
    """The registry's history of each alias as one timeline, newest first."""
    moves = []
    for alias, history in histories.items():
        for h in history if isinstance(history, list) else ():
            if not isinstance(h, Mapping):
                continue
            moves.append(
                AliasMove(
                    alias=str(alias),
                    at=str(h.get("at") or ""),
                    from_version=h.get("from_version")
                    if isinstance(h.get("from_version"), int)
                    else None,
                    to_version=h.get("to_version")
                    if isinstance(h.get("to_version"), int)
                    else None,
                    actor=str(h.get("actor") or ""),
                    reason=str(h.get("reason") or ""),
                )
            )
    return sorted(moves, key=lambda m: m.at, reverse=True)
