"""Calls to the running stack's HTTP APIs, each failure turned into one line and an exit code."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from .app import CliError, ExitCode

if TYPE_CHECKING:
    import httpx

    from conveyor_client import Client, Config

DEFAULT_TIMEOUT_S = 30.0
MAX_DETAIL = 500  # characters of a server's explanation worth a line
T = TypeVar("T")


def config() -> Config:
    """Where the platform is and who is calling, found as the client library finds it:
    arguments, then the environment (`CONVEYOR_<SERVICE>_URL`, `CONVEYOR_BOOTSTRAP_SERVERS`,
    `CONVEYOR_TOKEN`, `CONVEYOR_STACK`, `CONVEYOR_HOME`), then the user's config file
    (`~/.config/conveyor/config.toml`), then a stack started here (`./.conveyor/`)."""
    from conveyor_client import Config, ConfigurationError

    try:
        return Config.discover()
    except ConfigurationError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc


def bootstrap_servers() -> str:
    """Where the platform's broker listens."""
    from conveyor_client import ConfigurationError

    try:
        return config().broker()
    except ConfigurationError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from exc


def service_url(service: str) -> str:
    from conveyor_client import ConfigurationError

    try:
        return config().url(service).rstrip("/")
    except ConfigurationError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from exc


def client(
    timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """An HTTP client carrying the caller's token (as `config()` finds it)."""
    import httpx

    return httpx.Client(timeout=timeout_s, headers=_auth(), transport=transport)


def async_client(
    timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """`client()`'s asynchronous twin, for calls made at once."""
    import httpx

    return httpx.AsyncClient(timeout=timeout_s, headers=_auth(), transport=transport)


def _auth() -> dict[str, str]:
    token = config().token
    return {"Authorization": f"Bearer {token}"} if token else {}


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

    from conveyor_client import ConfigurationError
    from conveyor_client.kafka_security import KafkaSecurityError

    try:
        return asyncio.run(work())
    except KafkaSecurityError as exc:
        # Said by the first connection, naming the setting to look at.
        code = ExitCode.UNREACHABLE if exc.retryable else ExitCode.USAGE
        raise CliError(str(exc), code) from exc
    except ConfigurationError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc
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


@contextmanager
def platform() -> Iterator[Client]:
    """The client library, configured as `config()` finds the platform; what it raises becomes
    one line and an exit code."""
    from conveyor_client import Client

    with client_errors(), Client(config()) as conveyor:
        yield conveyor


@contextmanager
def client_errors() -> Iterator[None]:
    """The client library's errors as the CLI's: 2 for an argument it refused before sending, 3
    when nothing answered, 4 for a deadline, 1 for a refusal (`403 forbidden: why`)."""
    from conveyor_client import errors

    try:
        yield
    except errors.InvalidArgument as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc
    except errors.ServiceError as exc:
        try:
            phrase = HTTPStatus(exc.status).phrase.lower()
        except ValueError:
            phrase = "error"
        reason = "; ".join(exc.problems) or exc.reason
        raise CliError(f"{exc.status} {phrase}: {reason}") from exc
    except (errors.ConfigurationError, errors.Unavailable) as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from exc
    except errors.DeadlineExceeded as exc:
        raise CliError(str(exc), ExitCode.TIMEOUT) from exc
    except errors.ConveyorError as exc:
        raise CliError(str(exc)) from exc
