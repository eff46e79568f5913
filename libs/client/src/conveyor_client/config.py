"""Where the platform is and who is calling: found once, from the first source that says.

Each setting is taken from the first of these that gives it (a source that gives some settings
leaves the others to the sources after it):

1. **Arguments** to `Config.discover()` (and so to `Client(...)` / `AsyncClient(...)`).
2. **The environment**: `CONVEYOR_<SERVICE>_URL` (`CONVEYOR_REGISTRY_URL`, ...),
   `CONVEYOR_BOOTSTRAP_SERVERS` (else `KAFKA_BOOTSTRAP_SERVERS`), `CONVEYOR_TOKEN`,
   `CONVEYOR_SOURCE`, `CONVEYOR_REPLY_PREFIX`, `CONVEYOR_TIMEOUT`,
   `CONVEYOR_FETCH_MAX_WAIT_MS` (else `KAFKA_FETCH_MAX_WAIT_MS`); then the stack file named by
   `CONVEYOR_STACK` (a `stack.json`), then `$CONVEYOR_HOME/stack.json` — each with the `token`
   file beside it.
3. **The user's config file**: `$CONVEYOR_CONFIG`, else `$XDG_CONFIG_HOME/conveyor/config.toml`,
   else `~/.config/conveyor/config.toml` (TOML; keys below), and the stack file its `stack`
   key names.
4. **The stack in the working directory**: `./.conveyor/stack.json` and `./.conveyor/token`, as
   `conveyor up` (and `make run`) write them.

The config file:

```toml
token = "..."                        # the bearer token (an application's: role `app`)
bootstrap_servers = "kafka:9092"
stack = "/srv/conveyor/stack.json"   # a stack file to read the rest from
source = "shop/checkout"             # ce_source of the events sent
reply_prefix = "replies."            # what the services require of a reply topic's name
timeout = 30.0                       # seconds, each HTTP request
fetch_max_wait_ms = 500              # the reply consumer's longest fetch wait

[services]
registry = "https://registry.example"
ingest = "https://ingest.example"

[kafka]                              # given to aiokafka's producer, consumer, admin client
security_protocol = "SASL_SSL"
sasl_mechanism = "PLAIN"
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

from .errors import ConfigurationError
from .kafka_security import FIELDS as SECURITY_FIELDS
from .kafka_security import KafkaSecurity, KafkaSecurityError

# Where each is found; the console is one too, for `conveyor status` (the client calls it never).
SERVICES = (
    "ingest",
    "feature",
    "trainer",
    "registry",
    "serving",
    "monitor",
    "feedback",
    "console",
)
STATE_DIR = ".conveyor"  # where `conveyor up` records the stack, in its working directory
STACK_FILE = "stack.json"
TOKEN_FILE = "token"
DEFAULT_SOURCE = "conveyor/client"
DEFAULT_REPLY_PREFIX = "replies."  # the services' REPLY_TOPIC_PREFIX default
DEFAULT_TIMEOUT_S = 30.0
# Kafka's own default: its broker answers as soon as data arrives. A broker that answers only
# when the wait ends (the embedded Tansu) would add up to that to every answer: its stack file
# names the shorter wait it gives its own clients.
KAFKA_FETCH_MAX_WAIT_MS = 500
T = TypeVar("T", int, float)
_SCALARS = ("bootstrap_servers", "token", "source", "reply_prefix", "timeout", "fetch_max_wait_ms")
_FILE_KEYS = frozenset({*_SCALARS, "services", "stack", "kafka"})
# aiokafka's own names for the SASL credentials, taken as the settings' (`sasl_username`, ...).
_KAFKA_ALIASES = {"sasl_plain_username": "sasl_username", "sasl_plain_password": "sasl_password"}


@dataclass(frozen=True)
class Config:
    """What a client needs: each service's base URL, the broker, the token, and the settings of
    its Kafka clients. `origins` says where each setting came from (for messages and
    `conveyor status`)."""

    services: Mapping[str, str] = field(default_factory=dict)
    bootstrap_servers: str | None = None
    token: str | None = None
    source: str = DEFAULT_SOURCE
    reply_prefix: str = DEFAULT_REPLY_PREFIX
    timeout: float = DEFAULT_TIMEOUT_S
    fetch_max_wait_ms: int = KAFKA_FETCH_MAX_WAIT_MS
    kafka: Mapping[str, Any] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        """The base URL of `service`; ConfigurationError when no source gives it."""
        if service not in SERVICES:
            raise ConfigurationError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        url = self.services.get(service)
        if not url:
            raise ConfigurationError(
                f"no URL for the {service} service: pass services={{{service!r}: ...}}, set "
                f"CONVEYOR_{service.upper()}_URL or CONVEYOR_STACK, add it to the config file, "
                "or start a stack here with `conveyor up`"
            )
        return url

    def broker(self) -> str:
        """The bootstrap servers; ConfigurationError when no source gives them."""
        if not self.bootstrap_servers:
            raise ConfigurationError(
                "no Kafka broker: pass bootstrap_servers=..., set CONVEYOR_BOOTSTRAP_SERVERS or "
                "CONVEYOR_STACK, add it to the config file, or start a stack here with "
                "`conveyor up`"
            )
        return self.bootstrap_servers

    @property
    def kafka_security(self) -> KafkaSecurity:
        """TLS and SASL of the client's Kafka clients; ConfigurationError when they cannot
        work together (each problem naming its setting)."""
        origin = self.origins.get("kafka", "environment")
        try:
            security = KafkaSecurity.from_mapping(
                self.kafka, "" if origin == "environment" else origin
            )
        except KafkaSecurityError as exc:  # a value of the wrong kind
            raise ConfigurationError(str(exc)) from exc
        if problems := security.problems():
            raise ConfigurationError("Kafka settings: " + "; ".join(problems))
        return security

    def kafka_options(self, client_id: str) -> dict[str, Any]:
        """The keyword arguments of every aiokafka client made with this configuration: the
        brokers, TLS and SASL, and the `[kafka]` table's other keys as they are."""
        try:
            options = self.kafka_security.client_options(self.broker(), client_id)
        except KafkaSecurityError as exc:
            raise ConfigurationError(str(exc)) from exc
        extra = {k: v for k, v in self.kafka.items() if k not in SECURITY_FIELDS}
        return options | extra

    def overridden(self, **given: Unpack[Settings]) -> Config:
        """This configuration with the settings given here instead (None: kept)."""
        kept = _Layer(
            "configuration",
            dict(self.services),
            {key: getattr(self, key) for key in _SCALARS},
            dict(self.kafka),
        )
        merged = _merge([_arguments(given), kept])
        # Where a kept setting came from is what this configuration said.
        origins = {k: v for k, v in merged.origins.items() if v == ARGUMENTS}
        return dataclasses.replace(merged, origins={**self.origins, **origins})

    @classmethod
    def discover(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        **given: Unpack[Settings],
    ) -> Config:
        """The configuration from the arguments, the environment, the user's config file and
        `./.conveyor/`, in that order (module doc). `environ` and `cwd` stand in for the
        process's own (tests, or a tool that configures another process)."""
        env = os.environ if environ is None else environ
        here = Path.cwd() if cwd is None else cwd
        layers = [_arguments(given)]
        layers += _environment(env)
        layers += _config_file(env)
        layers += _stack(here / STATE_DIR / STACK_FILE, required=False)
        return _merge(layers)


class Settings(TypedDict, total=False):
    """The settings a caller may give (each None or left out: found by discovery)."""

    services: Mapping[str, str] | None
    bootstrap_servers: str | None
    token: str | None
    source: str | None
    reply_prefix: str | None
    timeout: float | None
    fetch_max_wait_ms: int | None
    kafka: Mapping[str, Any] | None


ARGUMENTS = "arguments"


def _arguments(given: Settings) -> _Layer:
    values = {key: given.get(key) for key in _SCALARS}
    return _Layer(
        ARGUMENTS, dict(given.get("services") or {}), values, dict(given.get("kafka") or {})
    )


@dataclass
class _Layer:
    origin: str
    services: dict[str, str]
    values: dict[str, Any]
    kafka: dict[str, Any] = field(default_factory=dict)


def _environment(env: Mapping[str, str]) -> list[_Layer]:
    services = {
        name: env[f"CONVEYOR_{name.upper()}_URL"]
        for name in SERVICES
        if env.get(f"CONVEYOR_{name.upper()}_URL")
    }
    values = {
        "bootstrap_servers": env.get("CONVEYOR_BOOTSTRAP_SERVERS")
        or env.get("KAFKA_BOOTSTRAP_SERVERS"),
        "token": env.get("CONVEYOR_TOKEN"),
        "source": env.get("CONVEYOR_SOURCE"),
        "reply_prefix": env.get("CONVEYOR_REPLY_PREFIX"),
        "timeout": env.get("CONVEYOR_TIMEOUT"),
        "fetch_max_wait_ms": env.get("CONVEYOR_FETCH_MAX_WAIT_MS")
        or env.get("KAFKA_FETCH_MAX_WAIT_MS"),
    }
    kafka = {
        name: env[f"KAFKA_{name.upper()}"]
        for name in SECURITY_FIELDS
        if env.get(f"KAFKA_{name.upper()}")
    }
    layers = [_Layer("environment", services, values, kafka)]
    if stack := env.get("CONVEYOR_STACK"):
        layers += _stack(Path(stack), required=True)
    if home := env.get("CONVEYOR_HOME"):
        layers += _stack(Path(home) / STACK_FILE, required=False)
    return layers


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's config file (which need not exist): `$CONVEYOR_CONFIG`, else
    `$XDG_CONFIG_HOME/conveyor/config.toml`, else `~/.config/conveyor/config.toml`."""
    env = os.environ if environ is None else environ
    if explicit := env.get("CONVEYOR_CONFIG"):
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "conveyor" / "config.toml"


def _config_file(env: Mapping[str, str]) -> list[_Layer]:
    path = config_path(env)
    if not path.is_file():
        if env.get("CONVEYOR_CONFIG"):
            raise ConfigurationError(f"CONVEYOR_CONFIG names {path}, which is not a file")
        return []
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    if unknown := sorted(set(data) - _FILE_KEYS):
        raise ConfigurationError(
            f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_FILE_KEYS))})"
        )
    services = data.get("services", {})
    kafka = data.get("kafka", {})
    if not isinstance(services, dict) or not isinstance(kafka, dict):
        raise ConfigurationError(f"{path}: `services` and `kafka` are tables")
    layers = [_Layer(str(path), {str(k): v for k, v in services.items()}, _pick(data), dict(kafka))]
    if stack := data.get("stack"):
        stack_path = Path(str(stack)).expanduser()
        layers += _stack(stack_path if stack_path.is_absolute() else path.parent / stack_path, True)
    return layers


def _pick(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: data.get(key) for key in _SCALARS}


def _stack(path: Path, required: bool) -> list[_Layer]:
    """The settings of a stack file as `conveyor up` writes it (`{"services": {name: url},
    "broker": {"bootstrap_servers", "kind", "fetch_max_wait_ms" (when the broker needs a
    short one)}}`), and the token in the `token` file beside it."""
    layers = []
    if path.is_file():
        try:
            state = json.loads(path.read_text())
            services = dict(state.get("services") or {})
            broker = dict(state.get("broker") or {})
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"{path}: not a stack file ({exc})") from exc
        values: dict[str, Any] = {
            "bootstrap_servers": broker.get("bootstrap_servers"),
            "fetch_max_wait_ms": broker.get("fetch_max_wait_ms"),
        }
        layers.append(_Layer(str(path), {str(k): v for k, v in services.items()}, values))
    elif required:
        raise ConfigurationError(f"CONVEYOR_STACK names {path}, which is not a file")
    token_path = path.parent / TOKEN_FILE
    if token_path.is_file():
        try:
            token = token_path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"{token_path}: {exc}") from exc
        if token:
            layers.append(_Layer(str(token_path), {}, {"token": token}))
    return layers


def _merge(layers: list[_Layer]) -> Config:
    services: dict[str, str] = {}
    values: dict[str, Any] = {}
    kafka: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        for name, url in layer.services.items():
            if name not in SERVICES:
                raise ConfigurationError(
                    f"{layer.origin}: unknown service {name!r}; one of {', '.join(SERVICES)}"
                )
            if name not in services and url:
                services[name] = _url(url, layer.origin, name)
                origins[name] = layer.origin
        for key, value in layer.values.items():
            if key not in values and value is not None and value != "":
                values[key] = value
                origins[key] = layer.origin
        for key, value in layer.kafka.items():
            key = _KAFKA_ALIASES.get(str(key), str(key))
            if key not in kafka:
                kafka[key] = value
                # Where TLS and SASL were set, for messages that name a setting.
                origins.setdefault("kafka", layer.origin)
    return Config(
        services=services,
        bootstrap_servers=_text(values, "bootstrap_servers", origins),
        token=_text(values, "token", origins),
        source=_text(values, "source", origins) or DEFAULT_SOURCE,
        reply_prefix=_text(values, "reply_prefix", origins) or DEFAULT_REPLY_PREFIX,
        timeout=_number(values, "timeout", origins, float, DEFAULT_TIMEOUT_S),
        fetch_max_wait_ms=_number(
            values, "fetch_max_wait_ms", origins, int, KAFKA_FETCH_MAX_WAIT_MS
        ),
        kafka=kafka,
        origins=origins,
    )


def _url(value: Any, origin: str, name: str) -> str:
    text = str(value).strip()
    if not text.startswith(("http://", "https://")):
        raise ConfigurationError(f"{origin}: the {name} URL {text[:100]!r} is not http(s)")
    return text.rstrip("/")


def _text(values: Mapping[str, Any], key: str, origins: Mapping[str, str]) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{origins[key]}: {key} is not text")
    return value.strip() or None


def _number(
    values: Mapping[str, Any], key: str, origins: Mapping[str, str], kind: type[T], default: T
) -> T:
    value = values.get(key)
    if value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{origins[key]}: {key} {value!r} is not a number") from None
    if number <= 0:
        raise ConfigurationError(f"{origins[key]}: {key} must be positive, not {value!r}")
    return number
