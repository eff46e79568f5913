"""Every error the client raises, in one tree.

```
ConveyorError
├── ConfigurationError   nothing says where a service or the broker is, or a config file is wrong
├── InvalidArgument      refused before anything was sent (an id too long, a field missing); also
│                        a ValueError
├── ServiceError         a service answered with an error status (`status`, `reason`, `detail`)
│   ├── Unauthorized     401: no token, or one the service does not accept
│   ├── Forbidden        403: the token's roles do not allow the action
│   ├── NotFound         404: no such project, version, run, alias, ...
│   ├── Conflict         409: conflicts with the present state (a run already going, ...)
│   └── Refused          any other 4xx: the request or its content is refused (`problems`)
├── Unavailable          5xx, a connection that failed, a broker that cannot be reached: worth
│                        retrying later
├── PredictionFailed     the answer to a prediction request is an error (`reason`, `prediction`)
├── DeadlineExceeded     no answer in time, or the platform answered "deadline exceeded"; also a
│                        TimeoutError
└── TrainingFailed       the run waited for failed or was skipped (`run`)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Prediction, TrainingRun


class ConveyorError(Exception):
    """Base of every error the client raises."""


class ConfigurationError(ConveyorError):
    """The client does not know where a service or the broker is, or a configuration source is
    malformed."""


class InvalidArgument(ConveyorError, ValueError):
    """An argument the platform would refuse, caught before anything is sent."""


class ServiceError(ConveyorError):
    """A service answered with an error status.

    `status` is the HTTP status, `reason` the service's explanation in one line, `detail` the
    answer's `detail` as sent (text, a list of validation errors, or a structured refusal),
    `service` which service answered and `method`/`url` what was asked."""

    def __init__(
        self,
        reason: str,
        *,
        status: int,
        detail: Any = None,
        service: str = "",
        method: str = "",
        url: str = "",
    ) -> None:
        self.reason = reason
        self.status = status
        self.detail = detail
        self.service = service
        self.method = method
        self.url = url
        where = f"{service}: " if service else ""
        super().__init__(f"{where}{status} {reason}")

    @property
    def problems(self) -> list[str]:
        """Each problem the answer names, one line each: `loc: msg` of a validation error,
        `#index: problems` of a refused record or feedback, `id: problem` of a conflict."""
        return _problems(self.detail)


class Unauthorized(ServiceError):
    """401: no token was sent, or the service does not accept it (unknown or revoked)."""


class Forbidden(ServiceError):
    """403: the caller is known, but its roles do not allow the action."""


class NotFound(ServiceError):
    """404: the project, version, alias, run or prediction named does not exist."""


class Conflict(ServiceError):
    """409: the request conflicts with the present state (a run already going, an id already
    taken with other content, a version not ready, ...)."""


class Refused(ServiceError):
    """Any other 4xx: the request does not validate, its records fail their contract, it is over
    a budget or a size limit; `problems` lists each failing place or record and why."""


class Unavailable(ConveyorError):
    """The platform could not be reached or failed (5xx, a refused connection, a broker that
    does not answer): nothing is known to have happened; worth retrying later. `status` is the
    HTTP status when a service answered, `retry_after` the seconds it asked to wait (its
    `Retry-After`), if it said."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        service: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.service = service
        self.retry_after = retry_after
        where = f"{service}: " if service else ""
        code = f"{status} " if status is not None else ""
        super().__init__(f"{where}{code}{reason}")


class PredictionFailed(ConveyorError):
    """The platform answered the prediction request with an error: `reason` says why (the
    request's fields fail the project's contract, no model is loaded, ...); `prediction` is the
    whole answer."""

    def __init__(self, reason: str, prediction: Prediction | None = None) -> None:
        self.reason = reason
        self.prediction = prediction
        super().__init__(reason)


class DeadlineExceeded(ConveyorError, TimeoutError):
    """No answer came before the deadline (a prediction, a training run waited for), or the
    platform answered that the request's deadline had passed (`prediction` is that answer)."""

    def __init__(self, reason: str, prediction: Prediction | None = None) -> None:
        self.reason = reason
        self.prediction = prediction
        super().__init__(reason)


class TrainingFailed(ConveyorError):
    """The training run waited for ended `failed` or `skipped`; `run` says which and why."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        super().__init__(f"run {run.run_id} of {run.project} {run.status}: {run.reason}")


def _problems(detail: Any) -> list[str]:
    """Each problem a refusal names, as one line: `loc: msg` of a validation error, `record N:
    problem` of a refused record or feedback."""
    if isinstance(detail, str):
        return [detail]
    if isinstance(detail, list):
        lines = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(part) for part in item.get("loc", []) if part != "body")
                msg = str(item.get("msg", item))
                lines.append(f"{loc}: {msg}" if loc else msg)
            else:
                lines.append(str(item))
        return lines
    if isinstance(detail, dict):
        errors = detail.get("errors")
        if isinstance(errors, list):
            lines = []
            for error in errors:
                if not isinstance(error, dict):
                    lines.append(str(error))
                    continue
                problems = error.get("problems", error.get("problem", ""))
                text = "; ".join(map(str, problems)) if isinstance(problems, list) else problems
                lines.append(f"#{error.get('index', '?')}: {text}")
            return lines
        if "refused" in detail and isinstance(detail["refused"], list):
            return [
                f"{r.get('feedback_id', '?')}: {r.get('problem', '')}"
                for r in detail["refused"]
                if isinstance(r, dict)
            ]
        if "message" in detail:
            return [str(detail["message"])]
    return [] if detail is None else [str(detail)]
