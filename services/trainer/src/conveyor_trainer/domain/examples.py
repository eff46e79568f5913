"""Training examples materialized from topics, and the identity of a training set.

The same functions turn a `features.rows` or `feedback.recorded` event into an example when the
trainer consumes it and when `reproduce` reads the recorded offset ranges again; the training
set's identity (offset ranges, boundary, row count, content digest) is what lineage records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor_contracts.events import FeatureRowComputed, FeedbackRecorded


@dataclass(frozen=True)
class Example:
    project: str
    example_id: str
    source: str  # record | feedback
    observed_at: datetime
    feature_names: list[str]
    values: list[float]
    label: str
    topic: str
    partition: int
    offset: int
    revision: int = 0  # a feature row revised by late records: the highest one holds

    def row(self) -> tuple[Any, ...]:
        return (
            self.project,
            self.example_id,
            self.source,
            self.observed_at,
            self.feature_names,
            self.values,
            self.label,
            self.topic,
            self.partition,
            self.offset,
            self.revision,
        )


def materialize(
    event: FeatureRowComputed | FeedbackRecorded, topic: str, partition: int, offset: int
) -> Example | None:
    """A labeled feature row, or a feedback label on the exact vector the model scored; None
    for an unlabeled row."""
    if isinstance(event, FeedbackRecorded):
        return Example(
            event.project,
            f"feedback:{event.feedback_id}",
            "feedback",
            event.predicted_at,
            list(event.feature_names),
            list(event.values),
            event.label,
            topic,
            partition,
            offset,
        )
    if event.label is None:
        return None
    return Example(
        event.project,
        event.record_id,
        "record",
        event.event_time,
        list(event.feature_names),
        list(event.values),
        event.label,
        topic,
        partition,
        offset,
        event.revision,
    )


def order_key(example_id: str, observed_at: datetime) -> tuple[datetime, str]:
    """Training sets are ordered by observation time, then id: the time-based split's order."""
    return observed_at, example_id


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of the set's identity alone (every example id, sorted)."""
    h = hashlib.sha256()
    for example_id in sorted(ids):
        h.update(example_id.encode())
        h.update(b"\n")
    return h.hexdigest()


def content_digest(rows: Iterable[tuple[str, datetime, Sequence[float], str]]) -> str:
    """A digest of the whole set's content: every example's id, observation time, values and
    label, in id order (all rows, not a sample)."""
    h = hashlib.sha256()
    for example_id, observed_at, values, label in sorted(rows, key=lambda r: r[0]):
        line = [example_id, observed_at.astimezone(UTC).isoformat(), label, list(values)]
        h.update(json.dumps(line, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def offset_ranges(
    placed: Iterable[tuple[str | None, int | None, int | None]],
) -> list[dict[str, Any]]:
    """Per topic and partition, the first and last offset of the set's examples and how many
    came from there. Examples stored before offsets were recorded count as `unplaced`."""
    ranges: dict[tuple[str, int], dict[str, Any]] = {}
    unplaced = 0
    for topic, partition, offset in placed:
        if topic is None or partition is None or offset is None:
            unplaced += 1
            continue
        r = ranges.setdefault(
            (topic, partition),
            {"topic": topic, "partition": partition, "first_offset": offset, "last_offset": offset},
        )
        r["first_offset"] = min(r["first_offset"], offset)
        r["last_offset"] = max(r["last_offset"], offset)
        r["rows"] = r.get("rows", 0) + 1
    out = [ranges[k] for k in sorted(ranges)]
    if unplaced:
        out.append({"unplaced": unplaced})
    return out


def select(
    examples: Iterable[Example],
    project: str,
    feature_names: list[str],
    boundary: tuple[datetime, str],
) -> list[Example]:
    """The training set again from what the recorded ranges hold: each example id once (its
    first occurrence, or its highest revision — as the trainer stored it), the project's
    feature layout, at or after the boundary (the oldest example the run took), in training
    order."""
    seen: dict[str, Example] = {}
    for e in examples:
        if e.project != project or e.feature_names != feature_names:
            continue
        if e.example_id in seen and seen[e.example_id].revision >= e.revision:
            continue
        if order_key(e.example_id, e.observed_at) >= boundary:
            seen[e.example_id] = e
    return sorted(seen.values(), key=lambda e: order_key(e.example_id, e.observed_at))
