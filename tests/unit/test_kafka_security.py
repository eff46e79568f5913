"""TLS and SASL settings: the options every Kafka client is made with, per mechanism, the same
for FastStream's consumers as for the producer and admin clients; combinations that cannot work
refused before anything connects, each naming its setting; OAUTHBEARER tokens fetched once and
renewed before they expire."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from conveyor_bus import Bus, KafkaSettings
from conveyor_bus.bus import broker_options
from conveyor_client import Config, ConfigurationError
from conveyor_client.kafka_security import (
    ClientCredentials,
    KafkaSecurity,
    KafkaSecurityError,
    OAuthTokenError,
    TokenFile,
)
from tests import tls

KAFKA_VARIABLES = [
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in KAFKA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tls.Files:
    return tls.make(tmp_path_factory.mktemp("tls"))


def _settings(**values) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap_servers="broker-1:9093,broker-2:9093", **values)


def _consumer_options(settings: KafkaSettings) -> dict:
    """What FastStream makes the service's consumers with."""
    bus = Bus("ingest", settings)
    return dict(bus.broker.config.broker_config.builder.keywords)


def test_plaintext_is_the_default_and_adds_nothing():
    options = _settings().client_options("conveyor-ingest")
    assert options == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "client_id": "conveyor-ingest",
        "security_protocol": "PLAINTEXT",
    }
    assert "security" not in broker_options(options)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_password_mechanism_over_tls_reaches_every_client(mechanism, certs):
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="conveyor-ingest",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=certs.ca,
    )
    options = settings.client_options("conveyor-ingest")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "conveyor-ingest"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    consumer = _consumer_options(settings)
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "ssl_context"):
        assert consumer[key] == options[key], key
    assert consumer["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(settings.security)


def test_sasl_without_tls_sends_no_context():
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    options = settings.client_options("x")
    assert "ssl_context" not in options
    assert _consumer_options(settings)["ssl_context"] is None


def test_tls_context_is_built_from_the_files_and_checks_the_broker(certs):
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certs.ca,
        kafka_ssl_certfile=certs.client_cert,
        kafka_ssl_keyfile=certs.client_key,
    )
    context = settings.client_options("x")["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(s[0] for s in c["subject"])["commonName"] for c in context.get_ca_certs()] == [
        "conveyor test CA"
    ]
    # One context for every client of the process: the files are read once.
    assert settings.client_options("y")["ssl_context"] is context
    assert _consumer_options(settings)["ssl_context"] is context
    relaxed = _settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca, kafka_ssl_check_hostname=False
    )
    assert relaxed.client_options("x")["ssl_context"].check_hostname is False


def test_oauthbearer_gives_every_client_one_token_provider():
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_url="https://login.example/oauth2/token",
        kafka_sasl_oauth_client_id="conveyor",
        kafka_sasl_oauth_client_secret="s3cret",
    )
    options = settings.client_options("x")
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentials)
    assert settings.client_options("y")["sasl_oauth_token_provider"] is provider
    consumer = _consumer_options(settings)
    assert consumer["sasl_mechanism"] == "OAUTHBEARER"
    assert consumer["sasl_oauth_token_provider"] is provider
    assert "sasl_plain_username" not in options


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
                "kafka_sasl_username": "u",
            },
            "KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "KAFKA_SASL_OAUTH_TOKEN_URL",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "OAUTHBEARER",
                "kafka_sasl_oauth_token_url": "ftp://login.example",
                "kafka_sasl_oauth_client_id": "c",
                "kafka_sasl_oauth_client_secret": "s",
            },
            "KAFKA_SASL_OAUTH_TOKEN_URL=ftp://login.example is not an http(s) URL",
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL"),
        ({"kafka_ssl_cafile": "/etc/hosts"}, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
            "kafka_sasl_mechanism",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_setting(values, named):
    with pytest.raises(ValidationError) as refused:
        _settings(**values)
    assert named in str(refused.value)


def test_a_key_that_does_not_match_its_certificate_is_refused_naming_both(certs, tmp_path):
    other_key = tls.make(tmp_path).client_key  # another pair's key
    with pytest.raises(ValidationError) as refused:
        _settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=certs.client_cert,
            kafka_ssl_keyfile=other_key,
        )
    text = str(refused.value)
    assert "KAFKA_SSL_CERTFILE=" in text and "KAFKA_SSL_KEYFILE=" in text


def test_the_variables_are_read_from_the_environment(monkeypatch, certs):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "conveyor-serving")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "from-a-secret")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(certs.ca))
    options = KafkaSettings().client_options("conveyor-serving")
    assert options["sasl_plain_password"] == "from-a-secret"
    assert options["ssl_context"].get_ca_certs()
    # The client library and the command line read the same variables.
    config = Config.discover(environ=dict(__import__("os").environ), cwd=Path("/nonexistent"))
    client = config.overridden(bootstrap_servers="b:9093").kafka_options("conveyor-cli")
    assert client["sasl_mechanism"] == "SCRAM-SHA-512"
    assert client["sasl_plain_username"] == "conveyor-serving"


def test_the_client_config_file_takes_the_same_settings_and_passes_the_rest(tmp_path, certs):
    path = tmp_path / "config.toml"
    path.write_text(
        'bootstrap_servers = "kafka.example:9093"\n[kafka]\nsecurity_protocol = "sasl_ssl"\n'
        'sasl_mechanism = "scram-sha-256"\nsasl_plain_username = "shop"\n'
        f'sasl_password = "pw"\nssl_cafile = "{certs.ca}"\nrequest_timeout_ms = 5000\n'
    )
    config = Config.discover(environ={"CONVEYOR_CONFIG": str(path)}, cwd=tmp_path)
    options = config.kafka_options("conveyor-client")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "shop"  # aiokafka's own name, taken as ours
    assert options["request_timeout_ms"] == 5000
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    path.write_text(
        'bootstrap_servers = "kafka.example:9093"\n[kafka]\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "PLAIN"\nsasl_username = "shop"\n'
    )
    with pytest.raises(ConfigurationError, match=rf"\[kafka\] sasl_password in {path}"):
        Config.discover(environ={"CONVEYOR_CONFIG": str(path)}, cwd=tmp_path).kafka_options("c")


class TokenEndpoint:
    """An OAuth token endpoint: each answer's token numbered, each request's form kept."""

    def __init__(self, status: int = 200, expires_in: int = 3600) -> None:
        self.forms: list[dict[str, list[str]]] = []
        self.status = status
        self.expires_in = expires_in

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(parse_qs(request.content.decode()))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "invalid_client"})
        body = {"access_token": f"token-{len(self.forms)}", "expires_in": self.expires_in}
        return httpx.Response(200, content=json.dumps(body))


async def test_a_client_credentials_token_is_fetched_once_and_renewed_before_it_expires():
    endpoint = TokenEndpoint(expires_in=100)
    now = [0.0]
    provider = ClientCredentials(
        "https://login.example/token",
        "conveyor",
        "s3cret",
        "kafka",
        transport=httpx.MockTransport(endpoint),
        clock=lambda: now[0],
    )
    assert await provider.token() == "token-1"
    now[0] = 79.0
    assert await provider.token() == "token-1"
    assert endpoint.forms == [
        {
            "grant_type": ["client_credentials"],
            "client_id": ["conveyor"],
            "client_secret": ["s3cret"],
            "scope": ["kafka"],
        }
    ]
    now[0] = 80.0  # most of its lifetime passed: a connection made now must not carry it
    assert await provider.token() == "token-2"
    assert await provider.token() == "token-2"
    assert len(endpoint.forms) == 2


async def test_a_refused_client_is_said_with_the_settings_to_look_at():
    provider = ClientCredentials(
        "https://login.example/token",
        "conveyor",
        "wrong",
        names=(
            "KAFKA_SASL_OAUTH_TOKEN_URL",
            "KAFKA_SASL_OAUTH_CLIENT_ID",
            "KAFKA_SASL_OAUTH_CLIENT_SECRET",
        ),
        transport=httpx.MockTransport(TokenEndpoint(status=401)),
    )
    with pytest.raises(OAuthTokenError) as refused:
        await provider.token()
    assert "KAFKA_SASL_OAUTH_CLIENT_ID=conveyor" in str(refused.value)
    assert "KAFKA_SASL_OAUTH_CLIENT_SECRET" in str(refused.value)
    assert not refused.value.retryable


async def test_a_token_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    provider = TokenFile(path)
    assert await provider.token() == "first"
    path.write_text("second, renewed\n")
    assert await provider.token() == "second, renewed"
    path.write_text("")
    with pytest.raises(OAuthTokenError, match="is empty"):
        await provider.token()


def test_security_errors_name_the_config_file_key_when_set_there(tmp_path):
    security = KafkaSecurity.from_mapping(
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, origin="/etc/conveyor.toml"
    )
    with pytest.raises(KafkaSecurityError) as refused:
        security.client_options("b:9093", "x")
    assert "[kafka] sasl_username in /etc/conveyor.toml" in str(refused.value)


def test_the_command_line_refuses_settings_that_cannot_work(monkeypatch, capsys, tmp_path):
    from conveyor_cli.main import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CONVEYOR_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert run(["request-training", "fraud"]) == 2
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM" in capsys.readouterr().err


def test_with_topics_owned_by_an_operator_no_subscriber_creates_one():
    owned = Bus("ingest", _settings(kafka_create_topics=False))
    assert owned.broker.config.broker_config.allow_auto_create_topics is False
    assert Bus("ingest", _settings()).broker.config.broker_config.allow_auto_create_topics is True
