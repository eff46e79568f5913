"""What `conveyor status` gathers about each service, and how it judges it.

Per service: its readiness and version (`GET /readyz`, asked of every service at once, each call
bounded), serving's models (in the same answer), the restarts `conveyor up` recorded in its
state file (unknown for a service found another way), and the lag of each consumer group it
reads in, from the broker. A service that does not answer still has its lag shown: its groups
are then the ones the catalog says it reads in, and its backlog is what one wants to see.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from conveyor_client import Config

READY_TIMEOUT_S = 3.0  # one service's /readyz: a hung service is "unreachable" after this
LAG_TIMEOUT_S = 10.0  # the broker's part, connection included

READY, NOT_READY, UNREACHABLE = "ready", "not ready", "unreachable"


async def probe(http: httpx.AsyncClient, service: str, url: str) -> dict[str, Any]:
    """One service's row: its status and what /readyz says of it."""
    import httpx

    row: dict[str, Any] = {"service": service, "url": url}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            answer = await http.get(url.rstrip("/") + "/readyz")
        body = answer.json()
        if not isinstance(body, dict) or answer.status_code not in (200, 503):
            raise ValueError(f"/readyz answered {answer.status_code}")
    except TimeoutError:
        return row | {"status": UNREACHABLE, "problems": [f"no answer in {READY_TIMEOUT_S:g} s"]}
    except (httpx.HTTPError, ValueError) as exc:
        return row | {"status": UNREACHABLE, "problems": [str(exc) or type(exc).__name__]}
    problems = [str(p) for p in body.get("problems") or []]
    row["status"] = READY if answer.status_code == 200 and body.get("ready") else NOT_READY
    row["problems"] = problems
    row["version"] = body.get("version")
    if "models" in body:
        row["models"] = body["models"]
    groups = body.get("groups")
    if isinstance(groups, dict):
        row["groups"] = {str(topic): str(group) for topic, group in groups.items()}
    return row


def processes(config: Config) -> dict[str, dict[str, Any]]:
    """What `conveyor up` recorded of each service's process, for the services found in its
    state file; none for a service found another way (an environment variable, a config file)."""
    out: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, Any]] = {}
    for service in config.services:
        origin = config.origins.get(service, "")
        if origin not in files:
            files[origin] = _recorded(origin)
        if isinstance(found := files[origin].get(service), dict):
            out[service] = found
    return out


def _recorded(origin: str) -> dict[str, Any]:
    path = Path(origin)
    if path.suffix != ".json" or not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text()).get("processes")
    except (OSError, ValueError, AttributeError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


async def gather(
    config: Config,
    http: httpx.AsyncClient,
    kafka: Mapping[str, Any] | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Every service's row, and why the lag is unknown (None when it is known). `kafka`: the
    options of the broker's clients, None when no broker is known."""
    from conveyor_bus import catalog_groups

    rows = list(
        await asyncio.gather(*(probe(http, name, url) for name, url in config.services.items()))
    )
    recorded = processes(config)
    for row in rows:
        process = recorded.get(row["service"])
        row["restarts"] = process.get("restarts") if process else None
        row["process"] = process
        row.setdefault("groups", catalog_groups(row["service"]))
    if kafka is None:
        return _without_lag(rows), "no broker known (CONVEYOR_BOOTSTRAP_SERVERS)"
    try:
        async with asyncio.timeout(LAG_TIMEOUT_S):
            lags = await _lag(kafka, rows)
    except TimeoutError:
        return _without_lag(rows), f"the broker did not answer within {LAG_TIMEOUT_S:g} s"
    except Exception as exc:  # the broker's or the settings' refusal: the rest still stands
        return _without_lag(rows), f"the broker: {str(exc) or type(exc).__name__}"
    for row in rows:
        row["lag"] = [lags[(group, topic)] for topic, group in sorted(row.pop("groups").items())]
    return rows, None


def _without_lag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row.pop("groups", None)
        row["lag"] = None
    return rows


async def _lag(
    kafka: Mapping[str, Any], rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    from conveyor_bus import consumer_lag

    pairs = [(group, topic) for row in rows for topic, group in sorted(row["groups"].items())]
    return {
        (lag.group, lag.topic): {
            "topic": lag.topic,
            "group": lag.group,
            "lag": lag.total,
            "partitions": {str(p): n for p, n in lag.partitions.items()},
        }
        for lag in await consumer_lag(kafka, pairs)
    }


def problems(
    rows: Sequence[dict[str, Any]], max_lag: int | None, lag_unknown: str | None
) -> list[str]:
    """Why the stack is not healthy: a service not ready or out of reach, a group further behind
    than `max_lag`, or a lag that could not be read when a limit was asked for."""
    found = [f"{r['service']} {r['status']}" for r in rows if r["status"] != READY]
    if max_lag is not None:
        if lag_unknown is not None:
            found.append(f"lag unknown: {lag_unknown}")
        for row in rows:
            found += [
                f"{lag['group']} is {lag['lag']} behind on {lag['topic']}"
                for lag in row["lag"] or ()
                if lag["lag"] > max_lag
            ]
    return found


# --- as a table -----------------------------------------------------------------------------------


def table_row(row: Mapping[str, Any]) -> tuple[str, ...]:
    """service, status, restarts, version, models, lag: as a person reads them."""
    status = row["status"]
    if row.get("problems") and status != READY:
        status += ": " + "; ".join(row["problems"])
    restarts = "unknown" if row.get("restarts") is None else str(row["restarts"])
    if (process := row.get("process")) and process.get("last_exit") is not None:
        restarts += f" (last exit {process['last_exit']})"
    return (
        row["service"],
        status,
        restarts,
        row.get("version") or "",
        models_text(row.get("models")),
        lag_text(row.get("lag")),
    )


COLUMNS = ("service", "status", "restarts", "version", "models", "lag")


def models_text(models: Mapping[str, Any] | None) -> str:
    """`wine v3, fraud v7 + challenger v8 (canary 10%)`: serving's summary in a line."""
    if not models:
        return ""
    parts = []
    for project, served in (models.get("projects") or {}).items():
        text = f"{project} v{served['champion']}" if "champion" in served else f"{project} -"
        if "challenger" in served:
            mode = served.get("mode", "")
            if mode == "canary":
                mode += f" {served.get('canary_share', 0):.0%}"
            text += f" + challenger v{served['challenger']} ({mode})"
        if failed := served.get("failed"):
            text += " [did not load: " + ", ".join(f"{a} v{v}" for a, v in failed.items()) + "]"
        parts.append(text)
    if more := models.get("more"):
        parts.append(f"and {more} more")
    return ", ".join(parts)


def lag_text(lag: Sequence[Mapping[str, Any]] | None) -> str:
    """`predictions.responses.v1 0, feedback.submitted.v1 12`: the topics' lags in a line."""
    if lag is None:
        return "unknown"
    return ", ".join(f"{entry['topic']} {entry['lag']}" for entry in lag)
