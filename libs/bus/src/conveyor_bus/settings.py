from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor_client.kafka_security import KafkaSecurity


@functools.lru_cache(maxsize=16)
def _shared(security: KafkaSecurity) -> KafkaSecurity:
    """The first of equal settings: its TLS context and its token provider (with the token it
    holds) are made once and shared by every client of the process."""
    return security


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


class KafkaSettings(BaseSettings):
    """Where the broker is, and how to connect to it. The same variables point at Tansu, at a
    Kafka of one's own, or at a managed or operator-run Kafka over TLS and SASL."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka brokers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to connect: TLS (SSL), SASL, both (SASL_SSL) or neither."
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(None, description="The SASL mechanism, with SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_username: str | None = Field(None, description="PLAIN and SCRAM user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="PLAIN and SCRAM password.")
    kafka_sasl_oauth_token_url: str | None = Field(
        None, description="OAUTHBEARER: the OAuth 2.0 token endpoint (client-credentials grant)."
    )
    kafka_sasl_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: client id.")
    kafka_sasl_oauth_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: client secret."
    )
    kafka_sasl_oauth_scope: str | None = Field(None, description="OAUTHBEARER: scope asked for.")
    kafka_sasl_oauth_token_file: Path | None = Field(
        None,
        description="OAUTHBEARER: a file holding the token (a projected service-account token), "
        "read again when it changes; instead of the client-credentials grant.",
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle that signed the brokers' certificates (else the system's)."
    )
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="The client certificate's key.")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted key file."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Whether the broker's certificate must name the host connected to."
    )
    kafka_connect_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a service waits at start-up for the broker to be reachable before "
        "it stops with the reason; settings the broker refuses stop it at once.",
    )
    kafka_create_topics: bool = Field(
        True,
        description="Whether a service creates the catalog's missing topics at start-up. False "
        "where an operator owns the topics (Strimzi's KafkaTopic resources): a service then only "
        "checks that they exist, and stops naming those that do not.",
    )
    kafka_max_batch: int = Field(256, ge=1, description="Most records handled in one batch.")
    kafka_batch_timeout_ms: int = Field(50, ge=1, description="Longest wait to fill a batch.")
    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        description="Longest a fetch waits for data. Kafka answers as soon as data arrives; "
        "a broker that answers only when the wait ends (Tansu) needs a short one.",
    )
    kafka_changelog_fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        description="The same, for a broadcast consumer of a changelog (at least the above): its "
        "records are rare, and a broker that answers only when the wait ends would be asked for "
        "them a hundred times a second by every replica.",
    )
    kafka_max_message_bytes: int = Field(
        1_000_000,
        ge=4096,
        description="Largest record a consumer takes (a larger one is dead-lettered unread) and "
        "largest dead letter it sends (its original value is cut to fit, saying how long it "
        "was): at most the broker's `message.max.bytes` (Apache Kafka's default, 1 MiB).",
    )
    kafka_linger_ms: int = Field(
        0, ge=0, description="How long the producer waits to fill a batch before sending it."
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="How long the broker waits for a group consumer's heartbeat before it gives "
        "the consumer's partitions to the others (after a crash, they wait this long). Apache "
        "Kafka accepts 6,000 to 1,800,000 by default (`group.min.session.timeout.ms`, "
        "`group.max.session.timeout.ms`). Tansu also holds each join for half of it.",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000,
        ge=100,
        description="How often a group consumer tells the broker it is alive: at most a third of "
        "the session time-out, so that a late heartbeat or two costs it nothing.",
    )

    @model_validator(mode="after")
    def _heartbeats_within_a_session(self) -> KafkaSettings:
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                f"kafka_heartbeat_interval_ms ({self.kafka_heartbeat_interval_ms}) is over a third "
                f"of kafka_session_timeout_ms ({self.kafka_session_timeout_ms})"
            )
        return self

    @model_validator(mode="after")
    def _security_works(self) -> KafkaSettings:
        # Refused here, when the settings are read: a service never starts half-configured.
        if problems := self.security.problems():
            raise ValueError("; ".join(problems))
        return self

    @property
    def security(self) -> KafkaSecurity:
        """TLS and SASL, as every Kafka client of the process uses them."""
        return _shared(
            KafkaSecurity(
                security_protocol=self.kafka_security_protocol,
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_username=self.kafka_sasl_username,
                sasl_password=_secret(self.kafka_sasl_password),
                sasl_oauth_token_url=self.kafka_sasl_oauth_token_url,
                sasl_oauth_client_id=self.kafka_sasl_oauth_client_id,
                sasl_oauth_client_secret=_secret(self.kafka_sasl_oauth_client_secret),
                sasl_oauth_scope=self.kafka_sasl_oauth_scope,
                sasl_oauth_token_file=_path(self.kafka_sasl_oauth_token_file),
                ssl_cafile=_path(self.kafka_ssl_cafile),
                ssl_certfile=_path(self.kafka_ssl_certfile),
                ssl_keyfile=_path(self.kafka_ssl_keyfile),
                ssl_key_password=_secret(self.kafka_ssl_key_password),
                ssl_check_hostname=self.kafka_ssl_check_hostname,
            )
        )

    def client_options(self, client_id: str) -> dict[str, Any]:
        """The keyword arguments of every aiokafka client of the process (producer, consumer,
        admin): the brokers, TLS and SASL."""
        return self.security.client_options(self.kafka_bootstrap_servers, client_id)
