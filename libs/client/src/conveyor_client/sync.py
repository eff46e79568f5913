"""`Client`: the same methods as `AsyncClient`, for code without an event loop (scripts,
notebooks, web frameworks' sync views). It runs an `AsyncClient` on an event loop of its own in
a background thread, so it works the same whether or not the calling thread runs a loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, Unpack

import httpx

from .aio import DEFAULT_BATCH, AsyncClient, Via
from .config import Config, Settings
from .errors import ConveyorError
from .models import FeedbackOutcome, Prediction, Record, Submitted, TrainingRun

T = TypeVar("T")


class Client:
    """One caller of one platform, from synchronous code. Use it as `with Client() as
    conveyor: ...`, or call `close()`. Safe to call from several threads at once (their calls
    run concurrently on the client's loop). See `AsyncClient` for the arguments."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Unpack[Settings],
    ) -> None:
        self._client = AsyncClient(config, transport=transport, **settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def config(self) -> Config:
        return self._client.config

    @property
    def reply_topic(self) -> str | None:
        """See `AsyncClient.reply_topic`."""
        return self._client.reply_topic

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the reply topic, stop the Kafka clients and the client's thread."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            call.close()
            raise ConveyorError("the client is closed")
        if threading.current_thread() is self._thread:
            call.close()
            raise RuntimeError("a Client's method called from its own loop: use AsyncClient")
        future = asyncio.run_coroutine_threadsafe(call, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): the call does not go on unseen
            raise

    def submit_records(
        self,
        project: str,
        records: Iterable[Mapping[str, Any] | Record],
        *,
        via: Via = "http",
        batch_size: int = DEFAULT_BATCH,
    ) -> Submitted:
        """See `AsyncClient.submit_records`."""
        # Read here: an iterable may be a generator of the calling thread's.
        items = list(records)
        return self._run(
            self._client.submit_records(project, items, via=via, batch_size=batch_size)
        )

    def records_stats(self, project: str) -> dict[str, int]:
        return self._run(self._client.records_stats(project))

    def predict(
        self,
        project: str,
        fields: Mapping[str, Any],
        *,
        via: Via = "kafka",
        timeout: float | None = None,
        deadline: datetime | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        """See `AsyncClient.predict`."""
        return self._run(
            self._client.predict(
                project,
                fields,
                via=via,
                timeout=timeout,
                deadline=deadline,
                request_id=request_id,
            )
        )

    def send_feedback(
        self,
        project: str,
        request_id: str,
        label: str,
        *,
        feedback_id: str | None = None,
        via: Via = "http",
    ) -> FeedbackOutcome:
        """See `AsyncClient.send_feedback`."""
        return self._run(
            self._client.send_feedback(project, request_id, label, feedback_id=feedback_id, via=via)
        )

    def feedback_stats(self, project: str) -> dict[str, Any]:
        return self._run(self._client.feedback_stats(project))

    def train(self, project: str, reason: str = "requested with the Python client") -> str:
        return self._run(self._client.train(project, reason))

    def run(self, run_id: str) -> TrainingRun:
        return self._run(self._client.run(run_id))

    def runs(self, project: str) -> list[TrainingRun]:
        return self._run(self._client.runs(project))

    def wait_until_trained(
        self,
        project: str,
        *,
        run_id: str | None = None,
        timeout: float = 600.0,
        poll_interval: float = 1.0,
    ) -> TrainingRun:
        """See `AsyncClient.wait_until_trained`."""
        return self._run(
            self._client.wait_until_trained(
                project, run_id=run_id, timeout=timeout, poll_interval=poll_interval
            )
        )

    def projects(self) -> list[dict[str, Any]]:
        return self._run(self._client.projects())

    def project(self, project: str, *, version: int | None = None) -> dict[str, Any]:
        return self._run(self._client.project(project, version=version))

    def versions(self, project: str) -> list[dict[str, Any]]:
        return self._run(self._client.versions(project))

    def version(self, project: str, version: int) -> dict[str, Any]:
        return self._run(self._client.version(project, version))

    def aliases(self, project: str) -> dict[str, int]:
        return self._run(self._client.aliases(project))

    def alias_history(self, project: str, alias: str = "champion") -> list[dict[str, Any]]:
        return self._run(self._client.alias_history(project, alias))

    def lineage(self, project: str, version: int) -> list[dict[str, Any]]:
        return self._run(self._client.lineage(project, version))
