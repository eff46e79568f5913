"""What a Kubernetes installation of Conveyor is made from: a values file (YAML), every key with
a default, checked when read (an unknown key, a bad combination: one line naming it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The services' own ports (each bootstrap's http_port, which the image's health check reads).
PORTS = {
    "ingest": 8101,
    "feature": 8102,
    "trainer": 8103,
    "registry": 8104,
    "serving": 8105,
    "monitor": 8106,
    "feedback": 8107,
}
# The console's port (its bootstrap's http_port): it is no service of the topics (no Kafka user,
# no database), so it is kept apart from PORTS.
CONSOLE_PORT = 8108
# The services that read Kafka as a stream and may run as many replicas as their topics have
# partitions, scaled on their consumer groups' lag. The trainer and the registry keep the
# replicas they are given.
STREAM_SERVICES = ("ingest", "feature", "serving", "monitor", "feedback")
NO_DATABASE = frozenset({"serving"})  # serving keeps nothing of its own
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Name = Annotated[str, Field(pattern=K8S_NAME, max_length=52)]
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$", max_length=20)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretKey(Strict):
    """One key of a Secret."""

    name: Name
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class Image(Strict):
    registry: str = Field(
        "ghcr.io/conveyor", description="Images are <registry>/conveyor-<service>:<tag>."
    )
    tag: str = "0.1.0"
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pull_secrets: tuple[Name, ...] = ()


class Strimzi(Strict):
    """A Kafka cluster run by the Strimzi operator (KRaft, one node pool)."""

    cluster: Name = "conveyor-kafka"
    replicas: int = Field(3, ge=1, le=99, description="Brokers (each also a controller).")
    storage_size: Quantity = "100Gi"
    storage_class: str | None = None
    topic_replicas: int = Field(3, ge=1)


class Kafka(Strict):
    """Strimzi's Kafka, made here; or any Kafka by address (a managed one, one of one's own)."""

    provider: Literal["strimzi", "external"] = "strimzi"
    strimzi: Strimzi = Strimzi()
    # external: where it is and how to connect (Strimzi's are fixed: TLS and SCRAM-SHA-512).
    bootstrap_servers: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_SSL"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = (
        "SCRAM-SHA-512"
    )
    oauth_token_url: str | None = None
    oauth_scope: str | None = None
    # A Secret with `username` and `password` (or, for OAUTHBEARER, `client-id` and
    # `client-secret`) that every service connects with.
    credentials_secret: Name | None = "conveyor-kafka"
    ca: SecretKey | None = None  # the CA of the brokers' certificates, when not a public one
    create_topics: bool = True

    @model_validator(mode="after")
    def _complete(self) -> Kafka:
        if self.provider == "external":
            if not self.bootstrap_servers:
                raise ValueError("kafka.bootstrap_servers is required with provider: external")
            sasl = self.security_protocol.startswith("SASL_")
            if sasl and (self.sasl_mechanism is None or self.credentials_secret is None):
                raise ValueError(
                    f"kafka.security_protocol {self.security_protocol} needs "
                    "kafka.sasl_mechanism and kafka.credentials_secret"
                )
            if self.sasl_mechanism == "OAUTHBEARER" and sasl and not self.oauth_token_url:
                raise ValueError("kafka.sasl_mechanism OAUTHBEARER needs kafka.oauth_token_url")
            if self.ca is not None and "SSL" not in self.security_protocol:
                raise ValueError(f"kafka.ca is set but {self.security_protocol} uses no TLS")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.provider == "strimzi" or "SSL" in self.security_protocol

    @property
    def uses_sasl(self) -> bool:
        return self.provider == "strimzi" or self.security_protocol.startswith("SASL_")


class CloudNativePG(Strict):
    cluster: Name = "conveyor-db"
    instances: int = Field(3, ge=1, le=9)
    storage_size: Quantity = "20Gi"
    storage_class: str | None = None
    max_connections: int = Field(300, ge=50)


class Postgres(Strict):
    """A PostgreSQL cluster run by CloudNativePG, made here; or any PostgreSQL by URL."""

    provider: Literal["cloudnativepg", "external"] = "cloudnativepg"
    cloudnativepg: CloudNativePG = CloudNativePG()
    url: SecretKey = SecretKey(name="conveyor-database", key="url")  # external: its URL


class Autoscaling(Strict):
    enabled: bool = True
    min_replicas: int = Field(1, ge=1)
    # At most as many replicas as the topics it reads have partitions (a replica more would
    # have nothing to read); None: exactly that many.
    max_replicas: int | None = Field(None, ge=1)
    lag_threshold: int = Field(1000, ge=1, description="Records behind, per replica, to scale on.")


class Resources(Strict):
    cpu: Quantity = "250m"
    memory: Quantity = "512Mi"
    memory_limit: Quantity = "1Gi"


class Service(Strict):
    replicas: int = Field(2, ge=1, description="Without autoscaling: how many run.")
    resources: Resources = Resources()
    autoscaling: Autoscaling = Autoscaling()
    env: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(
        default_factory=dict, description="More of the service's settings (variables)."
    )


class Console(Strict):
    """The web application for people, which calls the registry and the monitor as whoever
    signed in. Give it the identity provider through `env` (`CONVEYOR_OIDC_ISSUER`, ...,
    `CONSOLE_PUBLIC_URL`, `CONSOLE_SECURE_COOKIE`), as the services get theirs."""

    enabled: bool = True
    resources: Resources = Resources(cpu="100m", memory="256Mi", memory_limit="512Mi")
    env: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(
        default_factory=dict, description="More of the console's settings (variables)."
    )


def _defaults() -> dict[str, Service]:
    lag = {"ingest": 5000, "feature": 2000, "serving": 500, "monitor": 5000, "feedback": 1000}
    big = Resources(cpu="500m", memory="1Gi", memory_limit="2Gi")
    out = {}
    for name in PORTS:
        out[name] = Service(
            replicas=1 if name == "trainer" else 2,
            resources=big if name in ("trainer", "serving") else Resources(),
            autoscaling=Autoscaling(
                enabled=name in STREAM_SERVICES, lag_threshold=lag.get(name, 1000)
            ),
        )
    return out


class Values(Strict):
    """Everything the manifests are made from (`deploy/kubernetes/values-*.yaml`)."""

    namespace: Name = "conveyor"
    prefix: Name = Field("conveyor", description="Resources are named <prefix>-<service>.")
    image: Image = Image()
    kafka: Kafka = Kafka()
    postgres: Postgres = Postgres()
    # The token file every service accepts callers of (key `tokens.json`, as `conveyor token
    # issue` writes it), and the tokens the trainer and serving call other services with.
    tokens_secret: Name = "conveyor-tokens"
    service_tokens_secret: Name = "conveyor-service-tokens"
    otel_endpoint: str | None = None
    services: dict[str, Service] = Field(default_factory=_defaults)
    console: Console = Console()

    @field_validator("services", mode="after")
    @classmethod
    def _every_service(cls, given: dict[str, Service]) -> dict[str, Service]:
        """Each service as given, the others with their defaults; in the ports' order."""
        if unknown := sorted(set(given) - set(PORTS)):
            raise ValueError(f"unknown services {', '.join(unknown)}; known: {', '.join(PORTS)}")
        defaults = _defaults()
        services = {name: given.get(name, defaults[name]) for name in PORTS}
        for name, service in services.items():
            if service.autoscaling.enabled and name not in STREAM_SERVICES:
                raise ValueError(
                    f"{name}.autoscaling: only the stream services "
                    f"({', '.join(STREAM_SERVICES)}) scale on consumer lag"
                )
        return services


class ValuesError(ValueError):
    """A values file that cannot be used: the message names the key."""


def load(path: Path | None) -> Values:
    """The values of a YAML file (every key optional), or the defaults."""
    import yaml

    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValuesError(f"{path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValuesError(f"{path}: not a mapping of values")
    try:
        return Values.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ValuesError(where + problems) from exc
