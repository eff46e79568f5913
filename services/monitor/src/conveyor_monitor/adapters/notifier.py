"""Episodes to the project's webhooks, at least once.

An episode opened or closed is written to `notifications` (one row per URL) in the transaction
that opens or closes it, and delivered from there: POSTed as JSON with an `Idempotency-Key`
(the episode id and the event) until the receiver answers 2xx, with backoff between attempts,
in order per receiver (an episode's close never arrives before its opening).
A monitor that crashes before delivering posts after its restart; a receiver that was down gets
the episode when it is back (within `MAX_ATTEMPTS`).

A URL whose host is not public (`targets`) is refused before anything is sent and marked failed at
once: retrying would not change the answer. What a receiver answers is reduced to its status
code: its body is the receiver's to show, not ours to keep or log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
import httpx
from opentelemetry import metrics

from conveyor_contracts.events import DriftDetected, DriftResolved
from conveyor_db import Database

from .targets import Allowance, Refused, Resolver, check, resolve

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_S = 1.0  # doubles per attempt, capped at MAX_BACKOFF_S
MAX_BACKOFF_S = 300.0
BATCH = 50
MAX_ERROR = 200  # characters of an error kept in `last_error`

NOTIFICATIONS = metrics.get_meter("conveyor.monitor").create_counter(
    "conveyor.notifications",
    unit="{notification}",
    description="Webhook deliveries of drift episodes, by outcome (delivered, retry, failed).",
)


async def notify(
    con: asyncpg.Connection, urls: Sequence[str], event: DriftDetected | DriftResolved
) -> None:
    """Queue `event` for every URL, in the caller's transaction."""
    if urls:
        payload = event.model_dump(mode="json")
        await con.executemany(
            "INSERT INTO notifications (episode_id, event, url, payload) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT DO NOTHING",
            [(event.episode_id, event.type, url, payload) for url in urls],
        )


class Notifier:
    def __init__(
        self,
        db: Database,
        *,
        allowance: Allowance | None = None,
        timeout_s: float = 5.0,
        resolver: Resolver = resolve,
    ) -> None:
        self.db = db
        self.allowance = allowance or Allowance()
        self.timeout_s = timeout_s
        self.resolver = resolver
        self.client = httpx.AsyncClient(
            timeout=timeout_s,
            # A redirect would lead to a target nobody checked.
            follow_redirects=False,
            # A transport of its own, so no proxy from the environment (HTTPS_PROXY...) stands
            # between the monitor and the address it checked; the CA settings still apply.
            transport=httpx.AsyncHTTPTransport(
                # Each POST goes to an address by number with the host name in `Host` and SNI:
                # a pooled connection is keyed by the number alone, and could carry the next
                # request for another name on that address over TLS verified for the first.
                limits=httpx.Limits(max_keepalive_connections=0),
            ),
        )

    async def deliver(self) -> int:
        """Post every notification that is due; returns how many were delivered."""
        due = await self.db.pool.fetch(
            "SELECT id, episode_id, event, url, payload, attempts FROM notifications n "
            "WHERE delivered_at IS NULL AND failed_at IS NULL AND NOT EXISTS ("
            " SELECT 1 FROM notifications e WHERE e.url = n.url AND e.id < n.id AND"
            " e.delivered_at IS NULL AND e.failed_at IS NULL AND e.next_at > now()) "
            "AND next_at <= now() ORDER BY id LIMIT $1",
            BATCH,
        )
        delivered = 0
        stalled: set[str] = set()  # receivers that refused one: the rest wait, in order
        refused: dict[str, str] = {}  # targets refused in this pass, with the reason
        for n in due:
            if n["url"] in stalled:
                continue
            try:
                if n["url"] in refused:
                    raise Refused(refused[n["url"]])
                error = await self._post(n)
            except Refused as exc:
                refused[n["url"]] = str(exc)
                await self._refuse(n, str(exc))
                continue
            if error is None:
                delivered += 1
                NOTIFICATIONS.add(1, {"outcome": "delivered"})
                await self.db.pool.execute(
                    "UPDATE notifications SET delivered_at = now(), attempts = attempts + 1, "
                    "last_error = NULL WHERE id = $1",
                    n["id"],
                )
                continue
            stalled.add(n["url"])
            attempts = n["attempts"] + 1
            gave_up = attempts >= MAX_ATTEMPTS
            NOTIFICATIONS.add(1, {"outcome": "failed" if gave_up else "retry"})
            log.warning(
                "webhook %s for episode %s: %s (attempt %d%s)",
                n["url"],
                n["episode_id"],
                error,
                attempts,
                ", giving up" if gave_up else "",
            )
            await self.db.pool.execute(
                "UPDATE notifications SET attempts = $2, last_error = $3, "
                "next_at = now() + make_interval(secs => $4), "
                "failed_at = CASE WHEN $5 THEN now() END WHERE id = $1",
                n["id"],
                attempts,
                error,
                min(BACKOFF_S * 2 ** (attempts - 1), MAX_BACKOFF_S),
                gave_up,
            )
        return delivered

    async def _refuse(self, n: asyncpg.Record, reason: str) -> None:
        NOTIFICATIONS.add(1, {"outcome": "failed"})
        log.warning("webhook %s for episode %s refused: %s", n["url"], n["episode_id"], reason)
        await self.db.pool.execute(
            "UPDATE notifications SET attempts = attempts + 1, last_error = $2, "
            "failed_at = now() WHERE id = $1",
            n["id"],
            _short(f"refused: {reason}"),
        )

    async def _post(self, n: asyncpg.Record) -> str | None:
        """POST one notification: None once delivered, else why not (to try again later).
        Raises `Refused` for a target that is not to be posted to at all."""
        try:
            url = httpx.URL(n["url"])
        except httpx.InvalidURL as exc:
            raise Refused(f"not a valid URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused("not an http(s) URL")
        host = url.raw_host.decode("ascii")  # IDNA-encoded; an IPv6 literal without brackets
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self.timeout_s):
                addresses = await self.resolver(host, port)
        except (OSError, TimeoutError) as exc:
            return _short(f"cannot resolve {host}: {type(exc).__name__}: {exc}")
        check(host, addresses, self.allowance)
        headers = {
            "Idempotency-Key": f"{n['episode_id']}:{n['event']}",
            "User-Agent": "conveyor-monitor",
            "Host": url.netloc.decode("ascii"),
        }
        error = "no address"
        for address in addresses:  # in the resolver's order, as a client connecting by name
            try:
                # The body is never read: only the status is kept, and a receiver cannot make
                # the monitor download anything.
                async with self.client.stream(
                    "POST",
                    url.copy_with(host=str(address)),
                    json=n["payload"],
                    headers=headers,
                    # Certificates are checked against the name, and SNI carries it.
                    extensions={"sni_hostname": host},
                ) as r:
                    status = r.status_code
            except httpx.ConnectError as exc:
                error = _short(f"{type(exc).__name__}: {exc}")
                continue  # the next address, as a client connecting by name would
            except httpx.TimeoutException as exc:
                return _short(f"{type(exc).__name__}: {exc}")
            except httpx.HTTPError as exc:
                # Once the receiver has answered, an error's message may quote what it sent.
                return type(exc).__name__
            return None if 200 <= status < 300 else f"HTTP {status}"
        return error

    async def close(self) -> None:
        await self.client.aclose()


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."
