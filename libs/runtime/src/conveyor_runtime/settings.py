from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from conveyor_auth import OidcConfig, Role, TokenEntry
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
    conveyor_oidc_issuer: str | None = Field(
        None,
        max_length=2000,
        description="OpenID Connect: the identity provider whose JWTs this service accepts "
        "(their `iss`); unset: tokens of the token file only.",
    )
    conveyor_oidc_audience: str | None = Field(
        None, max_length=2000, description="OpenID Connect: the `aud` a JWT must carry."
    )
    conveyor_oidc_jwks: str | None = Field(
        None,
        max_length=2000,
        description="OpenID Connect: the provider's signing keys, a JWKS file's path or an "
        "http(s) URL (cached; read again for a key id it does not hold).",
    )
    conveyor_oidc_roles_claim: str = Field(
        "roles",
        max_length=200,
        description="OpenID Connect: the claim holding the caller's roles or groups, a dotted "
        "path for a nested one (`realm_access.roles`).",
    )
    conveyor_oidc_role_map: dict[str, list[Role]] = Field(
        default_factory=dict,
        description="OpenID Connect: the provider's role or group names to Conveyor roles, as "
        'JSON (`{"ml-team": ["scientist"], "ml-leads": ["approver"]}`); empty: a claimed '
        "name that is a Conveyor role is that role.",
    )
    conveyor_oidc_actor_claims: list[str] = Field(
        ["preferred_username", "email", "sub"],
        min_length=1,
        max_length=10,
        description="OpenID Connect: the claims the caller's name is taken from, the first "
        "present.",
    )
    conveyor_oidc_algorithms: list[str] = Field(
        ["RS256", "PS256", "ES256", "EdDSA"],
        min_length=1,
        max_length=10,
        description="OpenID Connect: the signature algorithms taken (asymmetric ones only).",
    )
    conveyor_oidc_leeway_s: float = Field(
        60.0, ge=0, le=300, description="OpenID Connect: the clock skew allowed on `exp`/`nbf`."
    )
    conveyor_oidc_jwks_timeout_s: float = Field(
        5.0, gt=0, le=60, description="OpenID Connect: the longest a JWKS fetch may take."
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

    def oidc(self) -> OidcConfig | None:
        """The identity provider this service accepts JWTs of, if it is given one."""
        if not (
            self.conveyor_oidc_issuer or self.conveyor_oidc_audience or self.conveyor_oidc_jwks
        ):
            return None
        return OidcConfig(
            issuer=self.conveyor_oidc_issuer or "",
            audience=self.conveyor_oidc_audience or "",
            jwks=self.conveyor_oidc_jwks or "",
            roles_claim=self.conveyor_oidc_roles_claim,
            role_map=self.conveyor_oidc_role_map,
            actor_claims=tuple(self.conveyor_oidc_actor_claims),
            algorithms=tuple(self.conveyor_oidc_algorithms),
            leeway_s=self.conveyor_oidc_leeway_s,
            fetch_timeout_s=self.conveyor_oidc_jwks_timeout_s,
        )
