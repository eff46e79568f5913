"""Model loading off the changelog's path: each (project, alias) converges, in a task of its own,
on the newest version of its alias history that loads.

Loading in the changelog's handler made one unloadable artifact everyone's problem: its error
failed the batch, the batch was handed again forever, and a restarted replica, which takes work
only once it has read the changelog, never did. Here the handler only records the moves; a
version that cannot load is marked failed (and reported once) while the alias keeps serving the
version before it, and other aliases never wait on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from conveyor_bus import Backoff
from conveyor_contracts.events import AliasMoved, ModelLoadFailed
from conveyor_runtime import RegistryUnavailable

from .domain.aliases import AliasHistory
from .domain.predictor import LoadedModel, Predictor

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (project, alias)
Fetch = Callable[[str, int, str], Awaitable[LoadedModel]]  # project, version, sha256
Announce = Callable[[ModelLoadFailed], Awaitable[None]]

REASON_CHARS = 500  # an error may quote what it choked on: never more than this of it
REPLICA = f"{socket.gethostname()}/{os.getpid()}"


class _Alias:
    __slots__ = ("history", "settled", "target", "task")

    def __init__(self) -> None:
        self.history = AliasHistory()
        self.task: asyncio.Task[None] | None = None
        self.target: int | None = None  # what `task` converges on
        # Set once the alias first comes to rest (its newest loadable version served, or none
        # loads): what start-up waits for. Never cleared: later moves are not start-up.
        self.settled = asyncio.Event()


class ModelLoader:
    """Loads, swaps in and reports on the versions the aliases should serve.

    `fetch` builds a ready model (raises `RegistryUnavailable` when worth retrying; any other
    error means the version does not load); `announce` publishes a `ModelLoadFailed`."""

    def __init__(
        self,
        predictor: Predictor,
        fetch: Fetch,
        announce: Announce,
        *,
        retry_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self.predictor = predictor
        self._fetch = fetch
        self._announce = announce
        self._retry_s = retry_s
        self._retry_cap_s = retry_cap_s
        self._aliases: dict[Key, _Alias] = {}
        # Versions that did not load, and why: never tried again by this process (an artifact
        # and its signature are immutable), and skipped when an alias falls back.
        self._broken: dict[tuple[str, int], str] = {}
        self._reported: set[tuple[str, int, str]] = set()
        self._reports: set[asyncio.Task[None]] = set()

    # --- from the changelog ---------------------------------------------------------------------

    def moved(self, moves: Iterable[AliasMoved]) -> None:
        """Record the moves (in changelog order), then set every alias they touched converging
        on its newest version: a load under way for an older target is abandoned."""
        touched: list[Key] = []
        for move in moves:
            key = (move.project, move.alias)
            self._aliases.setdefault(key, _Alias()).history.moved(move.to_version, move.sha256)
            if key not in touched:
                touched.append(key)
        for key in touched:
            self._converge(key)

    def _converge(self, key: Key) -> None:
        state = self._aliases[key]
        target = state.history.newest
        if state.task is not None and not state.task.done():
            if state.target == target:
                return  # a redelivered batch: the same goal, already being pursued
            state.task.cancel()  # superseded: a swap only happens after a load completes
        elif self.predictor.current(*key) == target:
            state.settled.set()
            return
        state.target = target
        state.task = asyncio.create_task(self._run(key, state), name=f"load {key[0]} {key[1]}")

    # --- loading --------------------------------------------------------------------------------

    async def _run(self, key: Key, state: _Alias) -> None:
        try:
            await self._serve_newest_loadable(key, state.history)
        except asyncio.CancelledError:
            raise  # superseded or stopping: not at rest
        except Exception:
            log.exception("%s %s: loading failed unexpectedly", *key)
        state.settled.set()

    async def _serve_newest_loadable(self, key: Key, history: AliasHistory) -> None:
        project, alias = key
        newest = history.newest
        if newest is not None and (project, newest) in self._broken:
            # Known broken from another alias or an earlier move: reported for this one too.
            self._report(project, newest, alias, history.sha256(newest))
        broken = {v for (p, v) in self._broken if p == project}
        for version in history.candidates(broken):
            current = self.predictor.current(project, alias)
            if current == version:
                return  # what is served is the best that loads
            model = await self._load(project, alias, version, history.sha256(version))
            if model is not None:
                old = self.predictor.swap(model, alias)
                log.info("%s %s: v%d (was %s)", project, alias, version, old and old.version)
                return
        log.error(
            "%s %s: no version of its history loads; serving %s",
            project,
            alias,
            self.predictor.current(project, alias) or "nothing",
        )

    async def _load(
        self, project: str, alias: str, version: int, sha256: str
    ) -> LoadedModel | None:
        """The version ready to swap in, or None when it does not load (marked and reported).
        While the registry is unavailable, tries again with a growing pause."""
        backoff = Backoff(self._retry_s, self._retry_cap_s)
        while True:
            try:
                return await self._fetch(project, version, sha256)
            except RegistryUnavailable as exc:
                pause = backoff.next()
                log.warning(
                    "%s %s: v%d not loaded yet (%s); trying again in %.1fs",
                    project,
                    alias,
                    version,
                    _reason(exc),
                    pause,
                )
                await asyncio.sleep(pause)
            except Exception as exc:
                reason = _reason(exc)
                self._broken[(project, version)] = reason
                # No traceback: the error is the artifact's, not serving's, and the log should
                # carry its reason, never the artifact's bytes.
                log.error(
                    "%s %s: v%d does not load, %s; serving stays on %s",
                    project,
                    alias,
                    version,
                    reason,
                    self.predictor.current(project, alias) or "nothing",
                )
                self._report(project, version, alias, sha256)
                return None

    # --- reporting ------------------------------------------------------------------------------

    def _report(self, project: str, version: int, alias: str, sha256: str) -> None:
        """One ModelLoadFailed per version and alias per process, published in the background
        (retried while the broker refuses it): loading goes on meanwhile."""
        if (project, version, alias) in self._reported:
            return
        self._reported.add((project, version, alias))
        event = ModelLoadFailed(
            project=project,
            version=version,
            alias=alias,
            sha256=sha256,
            reason=self._broken[(project, version)],
            replica=REPLICA,
        )
        task = asyncio.create_task(self._publish(event), name=f"report {project} v{version}")
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _publish(self, event: ModelLoadFailed) -> None:
        backoff = Backoff(self._retry_s, self._retry_cap_s)
        while True:
            try:
                await self._announce(event)
                return
            except Exception as exc:
                log.warning("reporting v%d of %s: %r", event.version, event.project, exc)
                await backoff.sleep()

    # --- state ----------------------------------------------------------------------------------

    def failed(self) -> dict[Key, dict[str, Any]]:
        """Per alias whose newest version does not load: that version and why."""
        out: dict[Key, dict[str, Any]] = {}
        for (project, alias), state in self._aliases.items():
            newest = state.history.newest
            reason = self._broken.get((project, newest)) if newest is not None else None
            if reason is not None:
                out[(project, alias)] = {"version": newest, "reason": reason}
        return out

    async def settle(self, timeout_s: float) -> None:
        """Wait until every alias known now has come to rest, at most `timeout_s`: start-up
        serves the champions the changelog names, but never waits long on one that will not
        come (a version that does not load ends its alias's wait at once)."""
        waiting = {key: state for key, state in self._aliases.items() if not state.settled.is_set()}
        if not waiting:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(state.settled.wait() for state in waiting.values()))
        except TimeoutError:
            late = [f"{p} {a}" for (p, a), s in waiting.items() if not s.settled.is_set()]
            log.warning(
                "still loading after %.0fs, taking work meanwhile: %s", timeout_s, ", ".join(late)
            )

    async def close(self) -> None:
        tasks = [s.task for s in self._aliases.values() if s.task is not None] + list(self._reports)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:REASON_CHARS]
