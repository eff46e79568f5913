"""The raw log: each record stored once, its announcement owed in the same transaction."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry import propagate
from pydantic_core import to_json

from conveyor_contracts import catalog, shared_headers
from conveyor_contracts.events import RecordAccepted, derived_id
from conveyor_contracts.records import Accepted, show
from conveyor_db import Announcer, Database, Message

SOURCE = "conveyor/ingest"
log = logging.getLogger(__name__)


class RawLog:
    """Stores records and owes their announcement in the same transaction (announcements by
    reference: conveyor_db.announce); the announcement goes out after the commit."""

    def __init__(self, db: Database, announcer: Announcer | None = None) -> None:
        self.db = db
        self.announcer = announcer

    async def store(
        self,
        project: str,
        project_version: int,
        records: list[Accepted],
        sources: list[str],
        *,
        after: Awaitable[object] | None = None,
    ) -> tuple[list[str], int]:
        """Store new records and announce RecordAccepted for them; returns (new ids, duplicates).
        With `after`, the announcement waits for it (an earlier store, whose records must be
        announced first) once the records are committed."""
        if not records:
            return [], 0
        now = datetime.now(UTC)
        unique, sources = _first_of_each(records, sources)
        messages = announcements(
            [(r.record_id, r.entity_id, r.event_time, r.fields, r.flags) for r in unique],
            project,
            project_version,
            now,
            _trace_context(),
        )
        async with self.db.pool.acquire() as con, con.transaction():
            # The rows go as the announcements' own JSON (RecordAccepted carries every column
            # but the source), which Postgres takes apart: each record is serialized once.
            inserted = await con.fetch(
                "INSERT INTO raw_records (record_id, project, project_version, entity_id, "
                "event_time, fields, source, ingested_at, flags) "
                "SELECT r.record_id, $1, $2, r.entity_id, r.event_time, r.fields, r.source, $4, "
                "r.flags FROM ROWS FROM (json_to_recordset($3::text::json) AS (record_id text, "
                "entity_id text, event_time timestamptz, fields jsonb, flags text[]), "
                "unnest($5::text[])) "
                "AS r(record_id, entity_id, event_time, fields, flags, source) "
                "ON CONFLICT (project, record_id) DO NOTHING RETURNING record_id",
                project,
                project_version,
                (b"[" + b",".join(m[1] for m in messages) + b"]").decode(),
                now,
                sources,
            )
            if len(inserted) < len(unique):
                new_ids = {row["record_id"] for row in inserted}
                kept = [
                    (r, m) for r, m in zip(unique, messages, strict=True) if r.record_id in new_ids
                ]
                unique, messages = [r for r, _ in kept], [m for _, m in kept]
            note = (
                await self._announcer().note(con, [r.record_id for r in unique], scope=project)
                if unique
                else None
            )
            duplicates = len(records) - len(unique)
            if duplicates:
                await con.execute(
                    "INSERT INTO duplicates (project, count) VALUES ($1, $2) ON CONFLICT (project)"
                    " DO UPDATE SET count = duplicates.count + EXCLUDED.count",
                    project,
                    duplicates,
                )
        if after is not None:
            await after  # should it fail, this note is left to the sweep, in order after it
        if note is not None:
            await self._announcer().announce(note, messages)
        return [r.record_id for r in unique], duplicates

    async def rebuild(self, con: asyncpg.Connection, keys: list[tuple[str, str]]) -> list[Message]:
        """The announcements of stored records, by (project, record id), as `store` made them
        (a sweep publishes what a stopped process owed)."""
        rows = await con.fetch(
            "SELECT r.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(project, id, i) "
            "JOIN raw_records r ON r.project = k.project AND r.record_id = k.id ORDER BY k.i",
            [project for project, _ in keys],
            [record_id for _, record_id in keys],
        )
        out: list[Message] = []
        for r in rows:
            out += announcements(
                [(r["record_id"], r["entity_id"], r["event_time"], r["fields"], r["flags"])],
                r["project"],
                r["project_version"],
                r["ingested_at"],
                {},
            )
        return out

    def _announcer(self) -> Announcer:
        if self.announcer is None:
            raise RuntimeError("the raw log has no announcer")
        return self.announcer

    async def reject(
        self, rows: list[tuple[str | None, str, str, object]], stage: str = "contract"
    ) -> None:
        """Keep rejected records (project, source, reason, payload) for the data team. A reject
        holds whatever a producer sent, so each part is made storable first (see `storable`):
        a reject that failed to insert would fail its whole batch, again on every redelivery."""
        if not rows:
            return
        args = [
            (
                None if p is None else _text(p, MAX_ID_TEXT),
                _text(s, MAX_ID_TEXT),
                _text(reason, MAX_REASON),
                storable(payload),
                stage,
            )
            for p, s, reason, payload in rows
        ]
        try:
            await self.db.pool.executemany(_INSERT_REJECT, args)
        except (asyncpg.DataError, ValueError, TypeError) as exc:
            # Not expected of a storable payload; should it happen, the rejects are kept
            # without their payloads rather than stall the stream.
            log.error("rejects not storable as they are (%r): kept without payloads", exc)
            await self.db.pool.executemany(
                _INSERT_REJECT,
                [
                    (p, s, f"{reason} [payload not storable]", None, st)
                    for p, s, reason, _, st in args
                ],
            )

    async def profile(self, project: str) -> dict[str, Any] | None:
        data = await self.db.pool.fetchval(
            "SELECT profile FROM profiles WHERE project = $1", project
        )
        return None if data is None else dict(data)

    async def save_profile(self, project: str, profile: dict[str, Any], *, replace: bool) -> bool:
        """Store a project's profile; unless `replace`, only when it has none. True if stored."""
        conflict = "DO UPDATE SET profile = EXCLUDED.profile, built_at = EXCLUDED.built_at"
        status = await self.db.pool.execute(
            "INSERT INTO profiles (project, profile, built_at) VALUES ($1, $2, $3) "
            f"ON CONFLICT (project) {conflict if replace else 'DO NOTHING'}",
            project,
            profile,
            datetime.fromisoformat(profile["built_at"]),
        )
        return status.endswith(" 1")

    async def sample(self, project: str, n: int, *, newest: bool) -> list[dict[str, Any]]:
        """The fields of a project's first (or newest) `n` records, by arrival."""
        order = "DESC" if newest else "ASC"
        rows = await self.db.pool.fetch(
            "SELECT fields FROM raw_records WHERE project = $1 "
            f"ORDER BY ingested_at {order}, record_id {order} LIMIT $2",
            project,
            n,
        )
        return [dict(r["fields"]) for r in rows]

    async def counts(self, project: str) -> dict[str, int]:
        row = await self.db.pool.fetchrow(
            "SELECT (SELECT count(*) FROM raw_records WHERE project = $1) AS accepted, "
            "(SELECT count(*) FROM raw_records WHERE project = $1 AND flags <> '{}') AS flagged, "
            "(SELECT count(*) FROM rejects WHERE project = $1 AND stage = 'contract') "
            "AS rejected, "
            "(SELECT count(*) FROM rejects WHERE project = $1 AND stage = 'quality') "
            "AS rejected_quality, "
            "(SELECT coalesce(max(count), 0) FROM duplicates WHERE project = $1) AS duplicates",
            project,
        )
        return {name: int(value) for name, value in row.items()}


def announcements(
    records: list[tuple[str, str, datetime, dict[str, Any], Sequence[str]]],
    project: str,
    project_version: int,
    ingested_at: datetime,
    trace: dict[str, str],
) -> list[Message]:
    """RecordAccepted for (record id, entity, event time, fields, flags), keyed by entity, each
    with an id derived from its project and record id."""
    shared = [
        (k, v.encode())
        for k, v in (
            shared_headers(
                RecordAccepted.type_name,
                SOURCE,
                datetime.now(UTC),
                catalog.RECORDS_ACCEPTED.dataschema,
            )
            | trace
        ).items()
    ]
    out: list[Message] = []
    for record_id, entity_id, event_time, fields, flags in records:
        # RecordAccepted's JSON, serialized by pydantic-core from a dict in the model's field
        # order: the same bytes as the model's own dump (a unit test holds them equal) at a
        # quarter of the cost, on a path taken once a record. Every value was checked already.
        value = to_json(
            {
                "project": project,
                "project_version": project_version,
                "record_id": record_id,
                "entity_id": entity_id,
                "event_time": event_time,
                "ingested_at": ingested_at,
                "fields": fields,
                "flags": list(flags),
            }
        )
        event_id = derived_id(SOURCE, project, record_id)
        out.append((entity_id, value, [*shared, ("ce_id", event_id.encode())]))
    return out


def _trace_context() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _first_of_each(records: list[Accepted], sources: list[str]) -> tuple[list[Accepted], list[str]]:
    """The first record of each id, with its source."""
    seen: set[str] = set()
    out, out_sources = [], []
    for r, source in zip(records, sources, strict=True):
        if r.record_id not in seen:
            seen.add(r.record_id)
            out.append(r)
            out_sources.append(source)
    return out, out_sources


_INSERT_REJECT = (
    "INSERT INTO rejects (project, source, reason, payload, stage) VALUES ($1, $2, $3, $4, $5)"
)

# Bounds of what a reject keeps: its payload's JSON (a larger one is kept as the start of its
# text), its reason, and its project and source.
MAX_PAYLOAD_BYTES = 65_536
MAX_REASON = 4_000
MAX_ID_TEXT = 400
_MAX_DEPTH = 64
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def _text(value: object, limit: int) -> str:
    """`value` as text Postgres takes (NUL and lone surrogates replaced by U+FFFD), at most
    `limit` characters (a longer one ends with a marker)."""
    text = value if isinstance(value, str) else show(value)
    if len(text) > limit:
        text = text[: limit - 40] + f"… [{len(text) - limit + 40} more characters]"
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def _clean(value: object, depth: int = 0) -> object:
    """`value` as strict JSON that jsonb takes: strings (and keys) without NUL or lone
    surrogates, NaN and infinities as their names, integers JSON can carry."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, int):
        # beyond 4,300 digits an integer has no text (json.dumps raises): its size is kept
        return value if value.bit_length() <= 14_000 else show(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if depth >= _MAX_DEPTH:
        return _text(show(value), 1_000)
    if isinstance(value, dict):
        return {_text(str(k), MAX_REASON): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return _text(show(value), 1_000)


def storable(payload: object) -> object:
    """A rejected payload as a reject keeps it: made strict JSON (`_clean`) and, over
    MAX_PAYLOAD_BYTES encoded, the start of its JSON text, marked as such."""
    clean = _clean(payload)
    text = json.dumps(clean, ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    if size <= MAX_PAYLOAD_BYTES:
        return clean
    head = text.encode()[: MAX_PAYLOAD_BYTES - 1_024].decode(errors="ignore")
    return {"truncated": True, "bytes": size, "text": head}
