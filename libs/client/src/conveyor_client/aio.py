"""`AsyncClient`: the platform from asyncio code. `Client` (in `sync.py`) offers the same methods
to code without an event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Unpack

import httpx

from . import _wire
from ._http import error_for, path, unreachable
from ._kafka import Kafka
from .config import Config, Settings
from .errors import (
    DeadlineExceeded,
    InvalidArgument,
    PredictionFailed,
    TrainingFailed,
    Unavailable,
)
from .models import FeedbackOutcome, Prediction, Record, RefusedRecord, Submitted, TrainingRun

__version__ = "0.1.0"
Via = Literal["http", "kafka"]
PREDICT_TIMEOUT_S = 10.0
MAX_BATCH = 10_000  # ingest's largest batch over HTTP
DEFAULT_BATCH = 500
ENTITY_KEY_TTL_S = 60.0  # how long a project's entity key is trusted before it is read again
DEADLINE_EXCEEDED = "deadline exceeded"  # how the services begin such an answer's error


class AsyncClient:
    """One caller of one platform. Use it as `async with AsyncClient() as conveyor: ...`, or call
    `close()`: that deletes its reply topic and stops its Kafka clients.

    Without a `config`, it is discovered (`Config.discover`, see `conveyor_client.config`); the
    keyword settings (`services`, `bootstrap_servers`, `token`, `source`, `reply_prefix`,
    `timeout`, `fetch_max_wait_ms`, `kafka`) override what discovery or `config` says.
    `transport` is given to httpx (an `httpx.MockTransport` in tests, a proxy's transport, an
    in-process app)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Unpack[Settings],
    ) -> None:
        config = Config.discover(**settings) if config is None else config.overridden(**settings)
        self.config = config
        headers = {"User-Agent": f"conveyor-client/{__version__}"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._http = httpx.AsyncClient(
            headers=headers, timeout=config.timeout, transport=transport, follow_redirects=False
        )
        self._kafka = Kafka(config)
        self._entity_keys: dict[str, tuple[float, str]] = {}

    @property
    def reply_topic(self) -> str | None:
        """The topic this client's prediction requests name for their answers (created on the
        first prediction over Kafka, deleted by `close()`); None before."""
        return self._kafka.reply_topic

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Delete the reply topic, stop the Kafka clients, close the HTTP connections."""
        try:
            await self._kafka.close()
        finally:
            await self._http.aclose()

    # --- records --------------------------------------------------------------------------------

    async def submit_records(
        self,
        project: str,
        records: Iterable[Mapping[str, Any] | Record],
        *,
        via: Via = "http",
        batch_size: int = DEFAULT_BATCH,
    ) -> Submitted:
        """Submit raw records (each a mapping of fields, or a `Record` with an id of its own) in
        batches of `batch_size`.

        Over HTTP, ingest judges every batch at once and all or nothing; a record it refuses is
        reported in `refused` with its reasons and the rest of its batch is sent again without
        it, so every valid record is stored. Over Kafka, each record is a `RecordSubmitted` on
        `records.submitted.v1` keyed by its entity; ingest judges them later (`queued`), and a
        record without the project's entity key is refused here."""
        project = _wire.check_id(project, "project")
        _check_via(via)
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidArgument(f"batch_size must be 1 to {MAX_BATCH}, not {batch_size}")
        items = [_record(r, i) for i, r in enumerate(records)]
        if via == "kafka":
            return await self._submit_kafka(project, items, batch_size)
        accepted: list[str] = []
        refused: list[RefusedRecord] = []
        flagged: dict[str, list[str]] = {}
        duplicates = 0
        batch_path = path("projects", project, "records", "batch")
        for start in range(0, len(items), batch_size):
            batch = list(range(start, min(start + batch_size, len(items))))
            while batch:
                body = {"records": [_record_body(items[i]) for i in batch]}
                r = await self._send("ingest", "POST", batch_path, body)
                if r.is_success:
                    stored = r.json()
                    accepted += stored.get("accepted", [])
                    duplicates += int(stored.get("duplicates", 0))
                    flagged |= stored.get("flagged") or {}
                    break
                failing = _failing(r, len(batch))
                if failing is None:
                    raise error_for(r, "ingest")
                refused += [
                    RefusedRecord(batch[j], problems, items[batch[j]].record_id)
                    for j, problems in failing.items()
                ]
                batch = [i for j, i in enumerate(batch) if j not in failing]
        return Submitted(
            via="http",
            sent=len(items),
            accepted=accepted,
            duplicates=duplicates,
            refused=sorted(refused, key=lambda r: r.index),
            flagged=flagged,
        )

    async def _submit_kafka(self, project: str, items: list[Record], batch_size: int) -> Submitted:
        key_field = await self._entity_key(project)
        refused: list[RefusedRecord] = []
        messages: list[tuple[str | None, bytes, Mapping[str, str]]] = []
        for index, item in enumerate(items):
            try:
                key = _wire.entity_key(item.fields, key_field)
            except InvalidArgument as exc:
                refused.append(RefusedRecord(index, [str(exc)], item.record_id))
                continue
            payload: dict[str, Any] = {"project": project, "fields": dict(item.fields)}
            if item.record_id is not None:
                payload["record_id"] = item.record_id
            messages.append((key, _wire.encode(payload), self._headers(_wire.RECORDS_SUBMITTED)))
        for start in range(0, len(messages), batch_size):
            await self._kafka.send(_wire.RECORDS_SUBMITTED, messages[start : start + batch_size])
        return Submitted(via="kafka", sent=len(items), refused=refused, queued=len(messages))

    async def records_stats(self, project: str) -> dict[str, int]:
        """Ingest's counts of the project's records (accepted, rejected, ...)."""
        project = _wire.check_id(project, "project")
        return dict(await self._get("ingest", path("projects", project, "records", "stats")))

    # --- predictions ----------------------------------------------------------------------------

    async def predict(
        self,
        project: str,
        fields: Mapping[str, Any],
        *,
        via: Via = "kafka",
        # The platform's own deadline (ce_deadline) is made of it: not a cancellation only.
        timeout: float | None = None,  # noqa: ASYNC109
        deadline: datetime | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        """The platform's answer for one entity's raw fields (the entity key and the current
        record's fields). Give a `timeout` in seconds (10 by default) or an aware `deadline`;
        after it the answer is of no use: the platform answers "deadline exceeded" and the call
        raises `DeadlineExceeded`. An error answer raises `PredictionFailed` with its reason.

        Over Kafka the request is a `PredictionRequested` on `predictions.requests.v1`, keyed by
        the entity, carrying `ce_deadline` and `ce_replyto` (this client's reply topic, created
        on first use and shared by all its requests). Over HTTP it is
        `POST {serving}/projects/{project}/predict`: a request the data contract refuses is
        `Refused` (422), no model or features yet `Unavailable` (503, with `retry_after`)."""
        project = _wire.check_id(project, "project")
        fields = _wire.check_fields(fields)
        request_id = _wire.check_id(request_id or _wire.new_id(), "request_id")
        _check_via(via)
        at = _deadline(timeout, deadline)
        requested_at = _wire.utcnow()
        if via == "http":
            return await self._predict_http(project, fields, request_id, requested_at, at)
        key = _wire.entity_key(fields, await self._entity_key(project))
        replies = await self._kafka.replies()
        answer = replies.expect(request_id)
        payload = {
            "request_id": request_id,
            "project": project,
            "fields": fields,
            "requested_at": requested_at.isoformat(),
        }
        extra = {_wire.DEADLINE: at.isoformat(), _wire.REPLY_TO: replies.topic}
        message = (key, _wire.encode(payload), self._headers(_wire.PREDICTIONS_REQUESTS, extra))
        try:
            async with asyncio.timeout(_remaining(at)):
                await self._kafka.send(_wire.PREDICTIONS_REQUESTS, [message])
                body = await answer
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer to request {request_id} of {project} by {at.isoformat()}"
            ) from None
        finally:
            replies.forget(request_id)
        return _answered(body)

    async def _predict_http(
        self,
        project: str,
        fields: dict[str, Any],
        request_id: str,
        requested_at: datetime,
        at: datetime,
    ) -> Prediction:
        body = {
            "fields": fields,
            "request_id": request_id,
            "requested_at": requested_at.isoformat(),
        }
        remaining = _remaining(at)
        if remaining <= 0:
            raise DeadlineExceeded(f"the deadline {at.isoformat()} has passed")
        try:
            r = await self._send(
                "serving", "POST", path("projects", project, "predict"), body, limit_s=remaining
            )
        except DeadlineExceeded:
            raise DeadlineExceeded(
                f"no answer to request {request_id} of {project} by {at.isoformat()}"
            ) from None
        if r.status_code == 504:
            raise DeadlineExceeded(f"serving: {error_for(r, 'serving')}")
        if not r.is_success:
            raise error_for(r, "serving")
        return _answered(r.json())

    # --- feedback -------------------------------------------------------------------------------

    async def send_feedback(
        self,
        project: str,
        request_id: str,
        label: str,
        *,
        feedback_id: str | None = None,
        via: Via = "http",
    ) -> FeedbackOutcome:
        """The true `label` of the prediction `request_id`. The id (`feedback_id`, made here
        when not given) makes it safe to send again: the same feedback is taken once; the same
        id with another content is a `Conflict`. Over HTTP the feedback service answers whether
        it was joined to its prediction now (`recorded`) or waits for it (`waiting`); over Kafka
        (`feedback.submitted.v1`) it is `queued`."""
        feedback_id = _wire.check_id(feedback_id or _wire.new_id(), "feedback_id")
        body = {
            "feedback_id": feedback_id,
            "project": _wire.check_id(project, "project"),
            "request_id": _wire.check_id(request_id, "request_id"),
            "label": _wire.check_id(label, "label"),
            "submitted_at": _wire.utcnow().isoformat(),
        }
        _check_via(via)
        if via == "kafka":
            message = (request_id, _wire.encode(body), self._headers(_wire.FEEDBACK_SUBMITTED))
            await self._kafka.send(_wire.FEEDBACK_SUBMITTED, [message])
            return FeedbackOutcome(feedback_id, "queued")
        r = await self._send("feedback", "POST", "/feedback", body)
        if not r.is_success:
            raise error_for(r, "feedback")
        outcome = r.json()
        recorded = feedback_id in outcome.get("recorded", [])
        return FeedbackOutcome(feedback_id, "recorded" if recorded else "waiting")

    async def feedback_stats(self, project: str) -> dict[str, Any]:
        """The feedback service's figures for the project: labels, accuracy, label delay, ..."""
        project = _wire.check_id(project, "project")
        return dict(await self._get("feedback", path("projects", project, "feedback", "stats")))

    # --- training -------------------------------------------------------------------------------

    async def train(self, project: str, reason: str = "requested with the Python client") -> str:
        """Start a training run now; returns its id (follow it with `wait_until_trained`)."""
        project = _wire.check_id(project, "project")
        body = {"reason": _wire.check_reason(reason)}
        r = await self._send("trainer", "POST", path("projects", project, "runs"), body)
        if not r.is_success:
            raise error_for(r, "trainer")
        return str(r.json()["run_id"])

    async def run(self, run_id: str) -> TrainingRun:
        """One training run as the trainer has it now."""
        run_id = _wire.check_id(run_id, "run_id")
        return TrainingRun.from_json(await self._get("trainer", path("runs", run_id)))

    async def runs(self, project: str) -> list[TrainingRun]:
        """The project's training runs, oldest first."""
        project = _wire.check_id(project, "project")
        found = await self._get("trainer", path("projects", project, "runs"))
        return [TrainingRun.from_json(run) for run in found]

    async def wait_until_trained(
        self,
        project: str,
        *,
        run_id: str | None = None,
        timeout: float = 600.0,  # noqa: ASYNC109 (the loop's own end, checked between polls)
        poll_interval: float = 1.0,
    ) -> TrainingRun:
        """Wait for a training run to finish and return it (`model_version` is the version it
        registered). With `run_id`, that run; without, the project's newest run that trains
        (skipped ones left out): the one going now, else the next to start when none has run
        yet, else the newest finished. Raises `TrainingFailed` when the run failed or was
        skipped, `DeadlineExceeded` after `timeout` seconds, `NotFound` for an unknown
        project or run."""
        project = _wire.check_id(project, "project")
        if run_id is not None:
            run_id = _wire.check_id(run_id, "run_id")
        else:
            await self.project(project)  # an unknown project is NotFound, not a long wait
        if poll_interval <= 0 or timeout <= 0:
            raise InvalidArgument("timeout and poll_interval must be positive")
        until = time.monotonic() + timeout
        while True:
            if run_id is not None:
                run: TrainingRun | None = await self.run(run_id)
            else:
                run = _newest(await self.runs(project))
                if run is not None:
                    run_id = run.run_id  # followed by its id from now on
            if run is not None and run.finished:
                if run.status != "succeeded":
                    raise TrainingFailed(run)
                return run
            if time.monotonic() + poll_interval > until:
                what = f"run {run_id}" if run_id else "a training run"
                raise DeadlineExceeded(f"{what} of {project} did not finish within {timeout}s")
            await asyncio.sleep(poll_interval)

    # --- registry -------------------------------------------------------------------------------

    async def projects(self) -> list[dict[str, Any]]:
        """Every project with its latest version: `[{project, project_version}]`."""
        return list(await self._get("registry", "/projects"))

    async def project(self, project: str, *, version: int | None = None) -> dict[str, Any]:
        """`{project, project_version, spec}`: the latest spec, or the one it had at
        `version`."""
        project = _wire.check_id(project, "project")
        params = {"version": _positive(version, "version")} if version is not None else None
        found = dict(await self._get("registry", path("projects", project), params=params))
        if version is None and isinstance(found.get("spec"), dict):
            if key := found["spec"].get("entity_key"):
                self._entity_keys[project] = (time.monotonic(), str(key))
        return found

    async def versions(self, project: str) -> list[dict[str, Any]]:
        """The project's model versions with their metrics, status and lineage (no artifacts)."""
        project = _wire.check_id(project, "project")
        return list(await self._get("registry", path("projects", project, "versions")))

    async def version(self, project: str, version: int) -> dict[str, Any]:
        """One version: status, sha256, metrics, signature, lineage, evaluations, load
        failures, ..."""
        project = _wire.check_id(project, "project")
        number = str(_positive(version, "version"))
        return dict(await self._get("registry", path("projects", project, "versions", number)))

    async def aliases(self, project: str) -> dict[str, int]:
        """`{alias: version}`: which version `champion` (and `challenger`) point at."""
        project = _wire.check_id(project, "project")
        found = await self._get("registry", path("projects", project, "aliases"))
        return {str(alias): int(version) for alias, version in found.items()}

    async def alias_history(self, project: str, alias: str = "champion") -> list[dict[str, Any]]:
        """Every move of the alias: `[{alias, from_version, to_version, actor, reason, at}]`."""
        project = _wire.check_id(project, "project")
        alias = _wire.check_id(alias, "alias")
        return list(
            await self._get("registry", path("projects", project, "aliases", alias, "history"))
        )

    async def lineage(self, project: str, version: int) -> list[dict[str, Any]]:
        """The run that made the version as OpenLineage run events (START, then COMPLETE or
        FAIL): the Kafka offset ranges it read, its code and parameters, the model's sha256.
        The trainer's own record is `version(...)["lineage"]`."""
        project = _wire.check_id(project, "project")
        number = str(_positive(version, "version"))
        return list(
            await self._get(
                "registry", path("projects", project, "versions", number, "openlineage")
            )
        )

    # --- plumbing -------------------------------------------------------------------------------

    async def _entity_key(self, project: str) -> str:
        """The project's entity key field, from the registry, kept for a minute."""
        cached = self._entity_keys.get(project)
        if cached is not None and time.monotonic() - cached[0] < ENTITY_KEY_TTL_S:
            return cached[1]
        found = await self.project(project)
        key = (found.get("spec") or {}).get("entity_key")
        if not isinstance(key, str) or not key:
            raise Unavailable(f"the registry's spec of {project!r} names no entity key")
        return key

    def _headers(
        self, topic: _wire.Topic, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        return _wire.headers(
            topic, source=self.config.source, extra={**(extra or {}), **_wire.traceparent()}
        )

    async def _send(
        self,
        service: str,
        method: str,
        url_path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        limit_s: float | None = None,
    ) -> httpx.Response:
        """One request to a service; Unavailable when it cannot be reached, DeadlineExceeded
        when `limit_s` (for this request) passes first. The answer is the caller's to judge."""
        url = self.config.url(service) + url_path
        headers = _wire.traceparent()
        content = None
        if body is not None:
            content = _wire.encode(body)
            headers["Content-Type"] = "application/json"
        try:
            return await self._http.request(
                method,
                url,
                content=content,
                params=params,
                headers=headers,
                timeout=self.config.timeout if limit_s is None else limit_s,
            )
        except httpx.TimeoutException as exc:
            if limit_s is not None:
                raise DeadlineExceeded(f"{service}: no answer within {limit_s:.3f}s") from exc
            raise unreachable(exc, service, url) from exc
        except httpx.HTTPError as exc:
            raise unreachable(exc, service, url) from exc

    async def _get(self, service: str, url_path: str, **kwargs: Any) -> Any:
        r = await self._send(service, "GET", url_path, **kwargs)
        if not r.is_success:
            raise error_for(r, service)
        try:
            return r.json()
        except ValueError as exc:
            what = f"{url_path}: the answer is not JSON"
            raise Unavailable(what, status=r.status_code, service=service) from exc


def _check_via(via: str) -> None:
    if via not in ("http", "kafka"):
        raise InvalidArgument(f"via must be 'http' or 'kafka', not {via!r}")


def _record(item: Mapping[str, Any] | Record, index: int) -> Record:
    if isinstance(item, Record):
        fields = _wire.check_fields(item.fields, f"record #{index}")
        record_id = item.record_id
        if record_id is not None:
            _wire.check_id(record_id, f"record #{index}'s record_id")
        return Record(fields, record_id)
    return Record(_wire.check_fields(item, f"record #{index}"))


def _record_body(record: Record) -> dict[str, Any]:
    body: dict[str, Any] = {"fields": dict(record.fields)}
    if record.record_id is not None:
        body["record_id"] = record.record_id
    return body


def _failing(r: httpx.Response, size: int) -> dict[int, list[str]] | None:
    """The records ingest refused in a batch it refused whole (422 `{message, errors: [{index,
    problems}]}`), by their place in the batch; None for any other answer."""
    if r.status_code != 422:
        return None
    try:
        detail = r.json().get("detail")
        errors = detail["errors"]
        failing = {
            int(e["index"]): [str(p) for p in e["problems"]]
            for e in errors
            if 0 <= int(e["index"]) < size
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return failing or None


def _deadline(timeout: float | None, deadline: datetime | None) -> datetime:
    if timeout is not None and deadline is not None:
        raise InvalidArgument("give a timeout or a deadline, not both")
    if deadline is not None:
        if deadline.tzinfo is None:
            raise InvalidArgument("the deadline must be an aware datetime (with a time zone)")
        return deadline.astimezone(UTC)
    seconds = PREDICT_TIMEOUT_S if timeout is None else timeout
    if not 0 < seconds <= 86_400:
        raise InvalidArgument(f"timeout must be more than 0 and at most a day, not {seconds}")
    return _wire.utcnow() + timedelta(seconds=seconds)


def _remaining(at: datetime) -> float:
    return max((at - _wire.utcnow()).total_seconds(), 0.0)


def _answered(body: Any) -> Prediction:
    if not isinstance(body, Mapping):
        raise Unavailable(f"an answer that is not a prediction: {str(body)[:100]!r}")
    prediction = Prediction.from_json(body)
    if prediction.status == "ok":
        return prediction
    reason = prediction.error or "the platform answered with an error and no reason"
    if reason.startswith(DEADLINE_EXCEEDED):
        raise DeadlineExceeded(reason, prediction)
    raise PredictionFailed(reason, prediction)


def _newest(runs: list[TrainingRun]) -> TrainingRun | None:
    trained = [run for run in runs if run.status != "skipped"]
    return trained[-1] if trained else None


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise InvalidArgument(f"{what} must be an integer from 1 to {2**31 - 1}, not {value!r}")
    return value
