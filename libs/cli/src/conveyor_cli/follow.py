"""Follow training runs until they end (`train --wait`, `experiment --wait`).

The trainer reports a run's state at `GET /runs/{run_id}`: `running` (with the version it
claimed once its examples are read), then `succeeded`, `failed` or `skipped` with the reason.
Each change is a line on stderr; on a terminal a spinner shows the time spent in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import api, output
from .app import CliError, ExitCode

if TYPE_CHECKING:
    import httpx

ENDED = frozenset({"succeeded", "failed", "skipped"})
POLL_S = 0.5
UNREACHABLE_GRACE_S = 15.0  # how long the trainer may not answer (a restart) before giving up
T = TypeVar("T")


def run_state(run: dict[str, Any]) -> str:
    """What a run is doing, in a few words."""
    status, version = run["status"], run.get("model_version")
    if status == "running":
        return f"training v{version}" if version else "reading its examples"
    if status == "succeeded":
        promoted = " and promoted" if run.get("promoted") else ""
        return f"succeeded: v{version}{promoted} — {run.get('reason', '')}"
    return f"{status}: {run.get('reason', '')}"


def follow_run(run_id: str, timeout_s: float) -> dict[str, Any]:
    """The run's record once it ended."""

    def probe(http: httpx.Client, base: str) -> tuple[dict[str, Any] | None, str]:
        run = api.request(http, "GET", "trainer", f"{base}/runs/{run_id}")
        return (run if run["status"] in ENDED else None), f"run {run_id[:8]} {run_state(run)}"

    return _follow(probe, f"run {run_id[:8]}", timeout_s)


def follow_experiment(
    project: str, experiment_id: str, variants: int, timeout_s: float
) -> list[dict[str, Any]]:
    """The experiment's runs (one per variant, in order) once every one ended."""

    def probe(http: httpx.Client, base: str) -> tuple[list[dict[str, Any]] | None, str]:
        path = f"{base}/projects/{project}/runs"
        runs = api.request(http, "GET", "trainer", path, params={"experiment": experiment_id})
        ended = [r for r in runs if r["status"] in ENDED]
        state = f"experiment {experiment_id[:8]}: {len(ended)} of {variants} runs ended"
        if going := [r for r in runs if r["status"] not in ENDED]:
            state += f"; run {going[0]['run_id'][:8]} {run_state(going[0])}"
        done = len(ended) >= variants and not going
        return (runs if done else None), state

    return _follow(probe, f"experiment {experiment_id[:8]}", timeout_s)


def _follow(
    probe: Callable[[httpx.Client, str], tuple[T | None, str]], what: str, timeout_s: float
) -> T:
    from rich.markup import escape

    base = api.service_url("trainer")
    console = output.stderr()
    started = time.monotonic()
    deadline = started + timeout_s
    last_state = ""
    unreachable_since: float | None = None
    with api.client(timeout_s=10.0) as http, console.status(what, spinner="dots") as spinner:
        while True:
            now = time.monotonic()
            try:
                result, state = probe(http, base)
                unreachable_since = None
            except CliError as exc:
                if exc.code not in (ExitCode.UNREACHABLE, ExitCode.TIMEOUT):
                    raise
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_GRACE_S:
                    raise
                result, state = None, f"{last_state} (the trainer does not answer: {exc})"
            if state != last_state:
                output.note(f"[dim]{now - started:6.1f}s[/dim]  {escape(state)}")
                last_state = state
            if result is not None:
                return result
            if now >= deadline:
                raise CliError(
                    f"{what} has not ended after {timeout_s:.0f} s (it goes on: "
                    "`conveyor runs PROJECT` shows it)",
                    ExitCode.TIMEOUT,
                )
            spinner.update(f"{escape(state)} [dim]{now - started:.0f}s[/dim]")
            time.sleep(POLL_S)
