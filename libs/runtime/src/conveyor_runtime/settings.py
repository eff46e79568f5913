from pydantic import Field
from pydantic_settings import SettingsConfigDict

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
