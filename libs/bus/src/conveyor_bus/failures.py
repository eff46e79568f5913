"""What a consumer does when a batch fails: retry what the world caused, isolate what a message
caused, and dead-letter it once.

A failure is one of two kinds:

- **transient**: the database or the broker is unavailable, slow or restarting. Nothing is wrong
  with the messages; the batch is handled again in place after a capped back-off, as long as it
  takes, and the consumer reports itself not ready meanwhile. Nothing is dead-lettered for it.
- **anything else**: a message the handler cannot apply (a value Postgres refuses, an overflow, a
  bug that one input triggers). The batch is tried a few times (`MAX_ATTEMPTS`, a fluke gets a
  second chance), then split in halves, each handled on its own, down to the one message that
  fails alone: that message goes to `<topic>.dlq` with the reason and the exception type, and
  its neighbours are handled as usual.

The predicate that tells them apart is the consumer's (`Transient`): the bus knows the broker's
errors; a service adds its database's and its peers' (`conveyor_db.is_transient`, the registry
client's `RegistryUnavailable`) when it builds its bus.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

from .errors import PublishError

Transient = Callable[[BaseException], bool]
T = TypeVar("T")

# A batch that fails for a reason other than a transient one is tried this often before it is
# split to find the message that fails it.
MAX_ATTEMPTS = 3


class Retry(Exception):
    """Raised by a handler for a condition that passes by itself (a peer still starting, say):
    always transient, whatever the classification of its cause."""


def broker_transient(exc: BaseException) -> bool:
    """The broker's own transient errors, and a produce that failed for one of them."""
    if isinstance(exc, Retry | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, PublishError):
        return exc.__cause__ is None or broker_transient(exc.__cause__)
    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError | NodeNotReadyError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def any_of(*predicates: Transient) -> Transient:
    """A predicate true when one of `predicates` is, for the exception or any exception it was
    raised from (`raise ... from exc`): a wrapped connection failure is still one."""

    def transient(exc: BaseException) -> bool:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            if any(p(current) for p in predicates):
                return True
            seen.add(id(current))
            current = current.__cause__
        return False

    return transient


class Backoff:
    """Exponential back-off with full jitter between attempts, capped: replicas that failed
    together do not all retry together."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap_s, self.first_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> float:
        delay = self.next()
        await asyncio.sleep(delay)
        return delay


def halves(items: list[T]) -> tuple[list[T], list[T]]:
    middle = len(items) // 2
    return items[:middle], items[middle:]


def describe(exc: BaseException) -> str:
    """An exception as a dead letter's reason: its type and message (bounded)."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text[:2000]}" if text else name


def exception_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# What a dead letter may weigh: the broker refuses a message over its limit (Apache Kafka's
# default `message.max.bytes` is about 1 MiB), and a dead letter it refused would be a poison
# message of its own. Headers are counted at their encoded size plus a little per header.
HEADER_OVERHEAD = 16
TRUNCATED = "dlq_truncated_bytes"


def bounded(
    value: bytes, headers: Mapping[str, str], limit: int, reserved: Iterable[str]
) -> tuple[bytes, dict[str, str]]:
    """`value` and `headers` cut to fit `limit` bytes together: the original headers first lose
    their longest values (the `reserved` ones, the dead letter's own, are kept), then the value is
    cut, and `dlq_truncated_bytes` says how long it was."""
    kept = set(reserved)
    out = dict(headers)

    def size(hs: Mapping[str, str]) -> int:
        return sum(len(k.encode()) + len(v.encode()) + HEADER_OVERHEAD for k, v in hs.items())

    if size(out) + len(value) <= limit:
        return value, out
    out[TRUNCATED] = str(len(value))
    # Original headers over a quarter of the budget go first, longest first.
    for name in sorted((k for k in out if k not in kept), key=lambda k: -len(out[k])):
        if size(out) <= limit // 2 or len(out[name]) < limit // 4:
            break
        out[name] = out[name][:256] + "…"
    room = max(0, limit - size(out))
    return value[:room], out
