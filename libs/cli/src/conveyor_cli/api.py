"""Calls to the running stack's HTTP APIs, each failure turned into one line and an exit code."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from .app import CliError, ExitCode

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT_S = 30.0
MAX_DETAIL = 500  # characters of a server's explanation worth a line
T = TypeVar("T")


def stack_state() -> dict[str, Any]:
    """The running stack's record (`home.running_stack`), or exit 3 saying how to start one."""
    from .home import StackError, running_stack

    try:
        return running_stack()
    except StackError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from exc


def bootstrap_servers() -> str:
    """Where the running stack's broker listens."""
    broker = stack_state().get("broker") or {}
    if not broker.get("bootstrap_servers"):
        raise CliError(
            "the running stack records no broker; set KAFKA_BOOTSTRAP_SERVERS or start one with "
            "`conveyor up`",
            ExitCode.UNREACHABLE,
        )
    return str(broker["bootstrap_servers"])


def service_url(service: str) -> str:
    services = stack_state()["services"]
    if service not in services:
        raise CliError(
            f"the running stack records no {service} service; restart it with `conveyor up`",
            ExitCode.UNREACHABLE,
        )
    return str(services[service]).rstrip("/")


def client(
    timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """An HTTP client carrying the caller's token (`CONVEYOR_TOKEN`, else the local stack's
    admin token)."""
    import httpx

    from .home import local_token

    headers = {"Authorization": f"Bearer {token}"} if (token := local_token()) else {}
    return httpx.Client(timeout=timeout_s, headers=headers, transport=transport)


def call(
    method: str,
    service: str,
    path: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    http: httpx.Client | None = None,
    **kwargs: Any,
) -> Any:
    """One API call; its JSON answer, or a `CliError` saying what went wrong."""
    base = service_url(service)
    if http is None:
        with client(timeout_s) as own:
            return request(own, method, service, base + path, **kwargs)
    return request(http, method, service, base + path, **kwargs)


def request(http: httpx.Client, method: str, service: str, url: str, **kwargs: Any) -> Any:
    import httpx

    try:
        answer = http.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        raise CliError(
            f"no stack at {url.split('/', 3)[2]} ({service} refused the connection); "
            "start one with `conveyor up`",
            ExitCode.UNREACHABLE,
        ) from exc
    except httpx.TimeoutException as exc:
        raise CliError(
            f"{service} did not answer within {http.timeout.read or 0:.0f} s ({method} {url})",
            ExitCode.TIMEOUT,
        ) from exc
    except httpx.HTTPError as exc:
        raise CliError(f"{service}: {exc or type(exc).__name__}", ExitCode.UNREACHABLE) from exc
    if answer.status_code >= 400:
        raise CliError(http_error(answer.status_code, answer.content))
    try:
        return answer.json()
    except ValueError as exc:
        raise CliError(
            f"{service} answered {answer.status_code} with a body that is not JSON"
        ) from exc


def http_error(status: int, body: bytes) -> str:
    """`403 forbidden: <the server's detail>`: the status as a person reads it, then why."""
    try:
        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = "error"
    detail = _detail(body)
    return f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace")
    else:
        found = data.get("detail", data) if isinstance(data, dict) else data
        if isinstance(found, list) and all(isinstance(e, dict) and "msg" in e for e in found):
            # FastAPI's validation errors: where, and what is wrong there.
            text = "; ".join(_validation_error(e) for e in found)
        else:
            text = found if isinstance(found, str) else json.dumps(found, default=str)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _validation_error(error: dict[str, Any]) -> str:
    where = [str(part) for part in error.get("loc", []) if part not in ("body", "query", "path")]
    return f"{'.'.join(where)}: {error['msg']}" if where else str(error["msg"])


def on_broker(bootstrap: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `work` (which talks to the broker at `bootstrap`); the broker's failures as errors."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    try:
        return asyncio.run(work())
    except KafkaConnectionError as exc:
        raise CliError(
            f"no broker at {bootstrap}; start a stack with `conveyor up`", ExitCode.UNREACHABLE
        ) from exc
    except KafkaTimeoutError as exc:
        raise CliError(
            f"the broker at {bootstrap} did not answer in time", ExitCode.TIMEOUT
        ) from exc
    except KafkaError as exc:
        raise CliError(f"the broker at {bootstrap}: {exc}") from exc


def build(model: Callable[..., T], what: str, **values: Any) -> T:
    """A contract's object from the command line's values; a violation is a usage error."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:
        raise CliError(f"{what}: {problems(exc)}", ExitCode.USAGE) from exc


def problems(exc: Any) -> str:
    """A pydantic ValidationError's first few problems, each with where it is."""
    found = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()]
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return "; ".join(found[:3]) + more
