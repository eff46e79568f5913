from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from conveyor_auth import TokenEntry
from conveyor_bus import KafkaSettings
from conveyor_db import DatabaseSettings


class ServiceSettings(KafkaSettings, DatabaseSettings):
    """Settings every service process reads (standard names, no prefix: one process, one service).

    Service-specific settings subclass this with their own env prefix.
    """

    model_config = SettingsConfigDict(extra="ignore")

    http_host: str = Field("127.0.0.1", description="Interface the HTTP API listens on.")
    http_port: int = Field(8100, ge=0, le=65535, description="Port of the HTTP API.")
    registry_url: str = Field("http://127.0.0.1:8104", description="Base URL of the registry API.")
    conveyor_tokens_file: Path | None = Field(
        None,
        description="The token file whose callers this service accepts (sha256s, names and "
        "roles, as `conveyor token issue` writes it); read again when it changes.",
    )
    conveyor_tokens: list[TokenEntry] = Field(
        default_factory=list,
        description="More accepted tokens, as JSON entries of the same form (a secret mounted "
        "into the environment, say).",
    )
    conveyor_token: SecretStr | None = Field(
        None, description="This service's own bearer token, for its calls to other services."
    )
    reply_topic_prefix: str = Field(
        "replies.",
        max_length=200,
        description="What a request's `ce_replyto` topic must start with to get a copy of its "
        "answer (a platform topic never does); the topic must exist: it is never created.",
    )
    http_max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest HTTP request body taken; a larger one is refused with 413 before "
        "it is read whole.",
    )
