"""What the console is told: where the services are, who may sign in, how sessions last."""

from __future__ import annotations

from pydantic import Field, SecretStr

from conveyor_runtime import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """The console reads the same token file and identity provider settings as every service
    (to know who signs in) and calls the registry, the monitor and the trainer as that person."""

    http_port: int = Field(8108, ge=0, le=65535, description="Port of the console.")
    monitor_url: str = Field("http://127.0.0.1:8106", description="Base URL of the monitor API.")
    trainer_url: str = Field("http://127.0.0.1:8103", description="Base URL of the trainer API.")
    console_public_url: str | None = Field(
        None,
        max_length=2000,
        description="The console's address as browsers reach it (`https://console.example.com`)"
        ": the identity provider sends people back to `<this>/signin/callback`. Unset: taken "
        "from each request's own address.",
    )
    console_oidc_client_id: str | None = Field(
        None,
        max_length=500,
        description="The console's client id at the identity provider; unset: "
        "CONVEYOR_OIDC_AUDIENCE (the services take tokens issued to the console).",
    )
    console_oidc_client_secret: SecretStr | None = Field(
        None, description="The client's secret, for a confidential client; unset: a public one."
    )
    console_oidc_scopes: str = Field(
        "openid profile email",
        max_length=500,
        description="The scopes asked for (`openid` first); add the one that brings the roles "
        "claim where the provider needs it.",
    )
    console_session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400, description="How long a sign-in lasts at most."
    )
    console_max_sessions: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Sessions kept at once, of people signed in and, apart, of visitors not "
        "signed in yet (the oldest of each go first).",
    )
    console_call_timeout_s: float = Field(
        10.0, gt=0, le=120, description="The longest a call to a service may take."
    )
    console_secure_cookie: bool = Field(
        False,
        description="Send the session cookie over https only: set it wherever the console is "
        "served over https.",
    )
