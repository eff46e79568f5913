"""The Python client of Conveyor.

```python
from conveyor_client import Client

with Client() as conveyor:                      # finds the platform: conveyor_client.config
    conveyor.submit_records("fraud", records)   # HTTP (default) or via="kafka"
    answer = conveyor.predict("fraud", fields)  # Kafka (default) or via="http"
    conveyor.send_feedback("fraud", answer.request_id, "legit")
```

`AsyncClient` has the same methods as coroutines. Every error is a `ConveyorError` (the tree is
in `conveyor_client.errors`).
"""

from typing import TYPE_CHECKING, Any

from .config import Config, config_path
from .errors import (
    ConfigurationError,
    Conflict,
    ConveyorError,
    DeadlineExceeded,
    Forbidden,
    InvalidArgument,
    NotFound,
    PredictionFailed,
    Refused,
    ServiceError,
    TrainingFailed,
    Unauthorized,
    Unavailable,
)
from .models import FeedbackOutcome, Prediction, Record, RefusedRecord, Submitted, TrainingRun

if TYPE_CHECKING:
    from .aio import AsyncClient, __version__
    from .sync import Client

# The clients load httpx and aiokafka when first named: a tool that only reads the configuration
# (a command line's `--help`, shell completion) does not pay for them.
_LAZY = {"AsyncClient": "aio", "__version__": "aio", "Client": "sync"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "Client",
    "Config",
    "ConfigurationError",
    "Conflict",
    "ConveyorError",
    "DeadlineExceeded",
    "FeedbackOutcome",
    "Forbidden",
    "InvalidArgument",
    "NotFound",
    "Prediction",
    "PredictionFailed",
    "Record",
    "Refused",
    "RefusedRecord",
    "ServiceError",
    "Submitted",
    "TrainingFailed",
    "TrainingRun",
    "Unauthorized",
    "Unavailable",
    "__version__",
    "config_path",
]
