"""How a Kafka client authenticates and encrypts: TLS and SASL (PLAIN, SCRAM-SHA-256/512,
OAUTHBEARER), turned into the keyword arguments of every aiokafka client in one place.

Every Kafka client of the platform (the services' producers, consumers and admin clients, the
command line's, the client library's) is made from `KafkaSecurity.client_options`, so none
connects differently from the others. A combination that cannot work is refused before anything
connects (`KafkaSecurity.problems`), each problem naming its setting; `check_connection` makes the
first connection within a deadline and turns what failed (nothing listening, a TLS handshake, a
refused mechanism or password) into one line that says which setting to look at.

The settings, as environment variables (a service reads them all; the client library and the
command line too, and from the `[kafka]` table of their config file without the `KAFKA_` prefix):

- `KAFKA_SECURITY_PROTOCOL`: `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`;
- `KAFKA_SASL_MECHANISM`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`;
- `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`: PLAIN and SCRAM credentials;
- `KAFKA_SASL_OAUTH_TOKEN_URL`, `KAFKA_SASL_OAUTH_CLIENT_ID`, `KAFKA_SASL_OAUTH_CLIENT_SECRET`,
  `KAFKA_SASL_OAUTH_SCOPE`: OAUTHBEARER through the OAuth 2.0 client-credentials grant;
- `KAFKA_SASL_OAUTH_TOKEN_FILE`: OAUTHBEARER with a token a file holds (a projected
  service-account token), read again when it changes;
- `KAFKA_SSL_CAFILE`: the CA bundle that signed the brokers' certificates (else the system's);
- `KAFKA_SSL_CERTFILE`, `KAFKA_SSL_KEYFILE`, `KAFKA_SSL_KEY_PASSWORD`: a client certificate
  (mutual TLS);
- `KAFKA_SSL_CHECK_HOSTNAME`: `true` (default), the broker's certificate must name the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
# The fields a config file's `[kafka]` table or the environment may set (as KAFKA_<NAME>).
FIELDS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "sasl_oauth_token_url",
    "sasl_oauth_client_id",
    "sasl_oauth_client_secret",
    "sasl_oauth_scope",
    "sasl_oauth_token_file",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password",
    "ssl_check_hostname",
)
# A token is fetched again once this share of its lifetime has passed: a connection made just
# before it expires must not carry it.
TOKEN_REFRESH_SHARE = 0.8
TOKEN_TIMEOUT_S = 10.0
# The longest a single attempt at the first connection may take; attempts repeat, while the
# broker cannot be reached at all, until the caller's deadline.
ATTEMPT_TIMEOUT_S = 10.0
# How long a second look at a listener that closed the connection waits for its TLS to speak.
LOOK_S = 1.0

log = logging.getLogger(__name__)


class KafkaSecurityError(Exception):
    """The Kafka settings cannot work together, or the broker refused them: the message says
    which setting to look at. `retryable` is true when the broker may simply not be up yet."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class OAuthTokenError(KafkaSecurityError, KafkaConnectionError):
    """No OAUTHBEARER token could be had. Also a connection error of aiokafka's: a client that
    reconnects later, when the token endpoint fails, retries as for a broker out of reach."""


def _env_name(name: str) -> str:
    return f"KAFKA_{name.upper()}"


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings of a Kafka client. Secrets are kept out of `repr`."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_oauth_token_url: str | None = None
    sasl_oauth_client_id: str | None = None
    sasl_oauth_client_secret: str | None = field(default=None, repr=False)
    sasl_oauth_scope: str | None = None
    sasl_oauth_token_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    # Where the settings came from, for messages: "" for the environment (each setting named
    # KAFKA_<NAME>), else a config file's path (each named `[kafka] <name>` there).
    origin: str = field(default="", compare=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: str = "") -> KafkaSecurity:
        """From the `FIELDS` of a mapping (a `[kafka]` table, the environment's values);
        unknown keys are left to the caller."""
        given = {k: values[k] for k in FIELDS if values.get(k) not in (None, "")}
        if "ssl_check_hostname" in given:
            given["ssl_check_hostname"] = _flag(given["ssl_check_hostname"], "ssl_check_hostname")
        for key, value in given.items():
            if key != "ssl_check_hostname":
                given[key] = str(value).strip()
        if "security_protocol" in given:
            given["security_protocol"] = given["security_protocol"].upper()
        if "sasl_mechanism" in given:
            given["sasl_mechanism"] = given["sasl_mechanism"].upper()
        return cls(**given, origin=origin)

    def name(self, setting: str) -> str:
        """How a setting is named where these settings came from."""
        return f"[kafka] {setting} in {self.origin}" if self.origin else _env_name(setting)

    def _said(self, setting: str) -> str:
        return f"{self.name(setting)}={getattr(self, setting)}"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def problems(self) -> list[str]:
        """Everything that keeps these settings from working, each naming its setting; empty
        when they can be used."""
        out: list[str] = []
        name = self.name
        if self.security_protocol not in PROTOCOLS:
            return [f"{self._said('security_protocol')} is not one of {', '.join(PROTOCOLS)}"]
        if self.uses_sasl:
            out += self._sasl_problems()
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            out.append(
                f"{name('sasl_mechanism')}/{name('sasl_username')} are set but "
                f"{self._said('security_protocol')} uses no SASL (SASL_PLAINTEXT or SASL_SSL does)"
            )
        tls_files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if not self.uses_tls and any(getattr(self, f) for f in tls_files):
            out.append(
                f"TLS files are set but {self._said('security_protocol')} uses no TLS "
                "(SSL or SASL_SSL does)"
            )
        if self.uses_tls:
            out += self._tls_problems()
        return out

    def _sasl_problems(self) -> list[str]:
        name = self.name
        mechanism = self.sasl_mechanism
        if mechanism is None:
            return [
                f"{self._said('security_protocol')} needs {name('sasl_mechanism')}: one of "
                f"{', '.join(MECHANISMS)}"
            ]
        if mechanism not in MECHANISMS:
            return [f"{self._said('sasl_mechanism')} is not one of {', '.join(MECHANISMS)}"]
        out = []
        if mechanism == "OAUTHBEARER":
            if self.sasl_username or self.sasl_password:
                out.append(
                    f"{name('sasl_username')}/{name('sasl_password')} are not used by OAUTHBEARER: "
                    f"set {name('sasl_oauth_token_url')} with a client id and secret, or "
                    f"{name('sasl_oauth_token_file')}"
                )
            grant = (
                self.sasl_oauth_token_url,
                self.sasl_oauth_client_id,
                self.sasl_oauth_client_secret,
            )
            if self.sasl_oauth_token_file:
                if any(grant):
                    out.append(
                        f"{name('sasl_oauth_token_file')} and {name('sasl_oauth_token_url')} are "
                        "two ways to get a token: set one"
                    )
                elif not Path(self.sasl_oauth_token_file).is_file():
                    out.append(f"{self._said('sasl_oauth_token_file')}: no such file")
            elif not all(grant):
                missing = [
                    name(n)
                    for n, v in zip(
                        (
                            "sasl_oauth_token_url",
                            "sasl_oauth_client_id",
                            "sasl_oauth_client_secret",
                        ),
                        grant,
                        strict=True,
                    )
                    if not v
                ]
                out.append(
                    f"OAUTHBEARER needs {', '.join(missing)} (the client-credentials grant), or "
                    f"{name('sasl_oauth_token_file')}"
                )
            elif not str(self.sasl_oauth_token_url).startswith(("https://", "http://")):
                out.append(f"{self._said('sasl_oauth_token_url')} is not an http(s) URL")
        else:
            missing = [name(n) for n in ("sasl_username", "sasl_password") if not getattr(self, n)]
            if missing:
                out.append(f"{self._said('sasl_mechanism')} needs {' and '.join(missing)}")
        return out

    def _tls_problems(self) -> list[str]:
        out = []
        for setting in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, setting)
            if path and not Path(path).is_file():
                out.append(f"{self._said(setting)}: no such file")
        if self.ssl_keyfile and not self.ssl_certfile:
            out.append(f"{self.name('ssl_keyfile')} is set without {self.name('ssl_certfile')}")
        if self.ssl_key_password and not self.ssl_certfile:
            out.append(
                f"{self.name('ssl_key_password')} is set without {self.name('ssl_certfile')}"
            )
        if not out:
            try:
                self.ssl_context  # noqa: B018 (built now: a bad file is a problem of the settings)
            except KafkaSecurityError as exc:
                out.append(str(exc))
        return out

    def validate(self) -> None:
        """Raise KafkaSecurityError listing every problem, if there is any."""
        if problems := self.problems():
            raise KafkaSecurityError("Kafka settings: " + "; ".join(problems))

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of every connection (built once: the files are read at start-up)."""
        try:
            context = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_key_password,
            )
        except ssl.SSLError as exc:
            files = ", ".join(
                self._said(n)
                for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
                if getattr(self, n)
            )
            raise KafkaSecurityError(f"TLS files cannot be used ({files}): {exc}") from exc
        except OSError as exc:
            raise KafkaSecurityError(f"a TLS file cannot be read: {exc}") from exc
        context.check_hostname = self.ssl_check_hostname
        return context

    @cached_property
    def token_provider(self) -> AbstractTokenProvider:
        """One provider for every client made with these settings: a token is fetched once and
        shared until it is due for renewal."""
        if self.sasl_oauth_token_file:
            return TokenFile(Path(self.sasl_oauth_token_file))
        assert self.sasl_oauth_token_url and self.sasl_oauth_client_id
        return ClientCredentials(
            self.sasl_oauth_token_url,
            self.sasl_oauth_client_id,
            self.sasl_oauth_client_secret or "",
            self.sasl_oauth_scope,
            names=(
                self.name("sasl_oauth_token_url"),
                self.name("sasl_oauth_client_id"),
                self.name("sasl_oauth_client_secret"),
            ),
        )

    def client_options(self, bootstrap_servers: str, client_id: str) -> dict[str, Any]:
        """The keyword arguments every aiokafka client (producer, consumer, admin) is made
        with. Raises KafkaSecurityError when the settings cannot work."""
        self.validate()
        options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.token_provider
            else:
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = self.sasl_password
        return options


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise KafkaSecurityError(f"{_env_name(name)}={value!r} is neither true nor false")


class ClientCredentials(AbstractTokenProvider):
    """OAUTHBEARER tokens from an OAuth 2.0 token endpoint (the client-credentials grant, the
    client's id and secret in the form), kept until most of their lifetime has passed."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        names: tuple[str, str, str] = ("token URL", "client id", "client secret"),
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`names` are the settings' names, for messages; `transport` an httpx transport of
        one's own (a proxy's, a test's), `clock` the seconds tokens expire by."""
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self._names = names
        self._transport = transport
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token, lifetime = await self._fetch()
                self._renew_at = self._clock() + lifetime * TOKEN_REFRESH_SHARE
        return self._token

    async def _fetch(self) -> tuple[str, float]:
        import httpx

        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }
        if self.scope:
            form["scope"] = self.scope
        url_name, id_name, secret_name = self._names
        try:
            async with httpx.AsyncClient(
                timeout=TOKEN_TIMEOUT_S, transport=self._transport
            ) as http:
                answer = await http.post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            raise OAuthTokenError(
                f"the OAuth token endpoint {url_name}={self.token_url} cannot be reached: "
                f"{type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        if answer.status_code in (400, 401, 403):
            raise OAuthTokenError(
                f"the OAuth token endpoint {self.token_url} refused {id_name}={self.client_id} "
                f"({answer.status_code}: {answer.text[:200]}); check {id_name} and {secret_name}"
            )
        if answer.status_code != 200:
            raise OAuthTokenError(
                f"the OAuth token endpoint {url_name}={self.token_url} answered "
                f"{answer.status_code}: {answer.text[:200]}",
                retryable=answer.status_code >= 500,
            )
        try:
            body = answer.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or 300)
        except (ValueError, KeyError, TypeError) as exc:
            raise OAuthTokenError(
                f"the OAuth token endpoint {url_name}={self.token_url} answered without an "
                f"access_token: {answer.text[:200]}"
            ) from exc
        if not isinstance(token, str) or not token:
            raise OAuthTokenError(f"the OAuth token endpoint {self.token_url} gave no token")
        return token, max(lifetime, 1.0)


class TokenFile(AbstractTokenProvider):
    """An OAUTHBEARER token a file holds (Kubernetes projects a service account's token into a
    file and renews it there): read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: str | None = None
        self._stamp: tuple[float, int] | None = None

    async def token(self) -> str:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if self._token is None or stamp != self._stamp:
                self._token, self._stamp = self.path.read_text().strip(), stamp
        except OSError as exc:
            raise OAuthTokenError(f"KAFKA_SASL_OAUTH_TOKEN_FILE {self.path}: {exc}") from exc
        if not self._token:
            raise OAuthTokenError(f"KAFKA_SASL_OAUTH_TOKEN_FILE {self.path} is empty")
        return self._token


# --- the first connection ----------------------------------------------------------------------


def bootstrap_hosts(
    bootstrap_servers: str, brokers: str = "KAFKA_BOOTSTRAP_SERVERS"
) -> list[tuple[str, int]]:
    """The (host, port) pairs of a bootstrap list (`host:port,...`, `[v6]:port`)."""
    hosts = []
    for entry in bootstrap_servers.split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep:
            host, port = entry, "9092"
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError:
            raise KafkaSecurityError(f"{brokers} entry {entry!r} is not host:port") from None
    if not hosts:
        raise KafkaSecurityError(f"{brokers} is empty")
    return hosts


async def check_connection(
    options: Mapping[str, Any],
    security: KafkaSecurity,
    *,
    timeout_s: float = 30.0,
    wait: bool = True,
    brokers: str = "KAFKA_BOOTSTRAP_SERVERS",
) -> set[str]:
    """Connect as every client of these settings will, and return the broker's topics.

    A broker that cannot be reached (nothing listening yet, a connection closed unanswered) is
    tried again until `timeout_s`; one that refuses the settings (a certificate not trusted, a
    listener of another protocol, a mechanism not offered, credentials refused) fails at once.
    Either way the KafkaSecurityError says what failed and which setting to look at. With
    `wait` false, a broker out of reach fails at once too (`retryable` says it is worth trying
    later); `brokers` is how the bootstrap servers are named in messages."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = 0.25
    while True:
        try:
            return await _attempt(options, security, deadline, brokers)
        except KafkaSecurityError as exc:
            if not exc.retryable or not wait:
                raise
            if loop.time() + pause >= deadline:
                raise KafkaSecurityError(f"{exc} (gave up after {timeout_s:g}s)") from exc
            log.warning("Kafka not reachable yet: %s", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


async def _attempt(
    options: Mapping[str, Any], security: KafkaSecurity, deadline: float, brokers: str
) -> set[str]:
    """One try: a socket (and a TLS handshake) first, where a failure says the most; then the
    Kafka handshake proper, SASL included, and the list of topics."""
    loop = asyncio.get_running_loop()
    where = await _reach(options["bootstrap_servers"], security, deadline, brokers)
    if security.uses_sasl and security.sasl_mechanism == "OAUTHBEARER":
        await security.token_provider.token()  # its own failure, said plainly
    budget = max(min(ATTEMPT_TIMEOUT_S, deadline - loop.time()), 0.1)
    logged: list[BaseException] = []
    admin = AIOKafkaAdminClient(**{**options, "request_timeout_ms": int(budget * 1000)})
    try:
        with _failures_logged(logged):
            async with asyncio.timeout(budget):
                await admin.start()
                return set(await admin.list_topics())
    except (TimeoutError, KafkaError, OSError) as exc:
        failure: BaseException = exc
    except (KeyError, ValueError) as exc:
        # aiokafka's SCRAM client reads the broker's final message for a signature; a broker
        # that refuses the credentials sends an error there instead (RFC 5802 `e=`), and the
        # client fails on the missing field rather than with a Kafka error.
        if not (security.uses_sasl and (security.sasl_mechanism or "").startswith("SCRAM-")):
            raise
        failure = _ScramRefused(f"the SCRAM exchange ended without the server's proof ({exc!r})")
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    refusal = _refusal(where, security, failure, logged, budget)
    if refusal.retryable:  # nothing said why: a closer look at the listener's TLS
        refusal = await _listener_protocol(where, security) or refusal
    raise refusal


@contextlib.contextmanager
def _failures_logged(into: list[BaseException]) -> Iterator[None]:
    """Collect the errors aiokafka logs while it bootstraps: it tries each broker in turn and
    raises only "unable to bootstrap", logging why each one failed (a refused SASL mechanism, a
    refused password) — the reason worth telling."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            for arg in record.args if isinstance(record.args, tuple) else ():
                if isinstance(arg, BaseException):
                    into.append(arg)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


async def _reach(
    bootstrap_servers: str | list[str], security: KafkaSecurity, deadline: float, brokers: str
) -> str:
    """The first bootstrap broker a socket opens to (with a TLS handshake, when the settings
    use TLS), as `host:port`; else a KafkaSecurityError saying why none did."""
    loop = asyncio.get_running_loop()
    last: BaseException | None = None
    listed = (
        bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
    )
    for host, port in bootstrap_hosts(listed, brokers):
        try:
            async with asyncio.timeout(max(min(5.0, deadline - loop.time()), 0.1)):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
        except (OSError, TimeoutError) as exc:
            last = exc
            continue
        if security.uses_tls:
            await _handshake(host, port, security, deadline)
        return f"{host}:{port}"
    raise KafkaSecurityError(
        f"cannot reach Kafka at {brokers}={listed}: {type(last).__name__}: {last}",
        retryable=True,
    )


async def _handshake(host: str, port: int, security: KafkaSecurity, deadline: float) -> None:
    where = f"{host}:{port}"
    protocol = security._said("security_protocol")
    try:
        async with asyncio.timeout(
            max(min(5.0, deadline - asyncio.get_running_loop().time()), 0.1)
        ):
            _, writer = await asyncio.open_connection(
                host, port, ssl=security.ssl_context, server_hostname=host
            )
        writer.close()
    except ssl.SSLCertVerificationError as exc:
        hostname = "hostname" in str(exc).lower() or "IP address" in str(exc)
        raise KafkaSecurityError(
            f"TLS: {where} presented a certificate this client does not trust "
            f"({exc.verify_message}); {security.name('ssl_cafile')} names the CA that signed "
            "the brokers' certificates"
            + (
                f" ({security.name('ssl_check_hostname')}=false skips the check of the name)"
                if hostname
                else ""
            )
        ) from exc
    except ssl.SSLError as exc:
        # A TLS error proper (an alert, a record no TLS listener would send): the listener
        # speaks another protocol, or wants a client certificate.
        raise KafkaSecurityError(
            f"TLS: no handshake with {where} ({exc.reason or exc}); is it a TLS listener that "
            f"takes this client ({security.name('ssl_certfile')} for one that wants a client "
            f"certificate)? {protocol} expects one"
        ) from exc
    except (OSError, TimeoutError) as exc:
        # Silence or a reset: a plaintext listener waiting for a request, or a broker starting.
        raise KafkaSecurityError(
            f"TLS: no handshake with {where} ({type(exc).__name__}); is it a TLS listener? "
            f"{protocol} expects one",
            retryable=True,
        ) from exc


async def _listener_protocol(where: str, security: KafkaSecurity) -> KafkaSecurityError | None:
    """When a connection closed without a word: whether the listener's TLS is the reason. A
    plaintext client at a TLS listener is closed on; so is a TLS client without a certificate
    the listener trusts, told only after the handshake (TLS 1.3 sends that alert afterwards)."""
    host, _, port = where.rpartition(":")
    if security.uses_tls:
        try:
            async with asyncio.timeout(LOOK_S):
                reader, writer = await asyncio.open_connection(
                    host, int(port), ssl=security.ssl_context, server_hostname=host
                )
                try:
                    # A Kafka broker says nothing first: it waits for a request. A session it
                    # ends at once (an alert, read here as the end of the stream or as an error)
                    # is one it refused.
                    ended = await reader.read(1) == b""
                finally:
                    writer.close()
        except (ssl.SSLError, ConnectionResetError) as exc:
            ended, why = True, f" ({getattr(exc, 'reason', None) or exc})"
        except (OSError, TimeoutError):
            return None
        else:
            why = ""
        if not ended:
            return None
        return KafkaSecurityError(
            f"TLS: {where} ended the session right after the handshake{why}: it wants a client "
            f"certificate it trusts ({security.name('ssl_certfile')}, "
            f"{security.name('ssl_keyfile')})"
        )
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(LOOK_S):
            _, writer = await asyncio.open_connection(host, int(port), ssl=unverified)
            writer.close()
    except (ssl.SSLError, OSError, TimeoutError):
        return None
    wanted = "SASL_SSL" if security.uses_sasl else "SSL"
    return KafkaSecurityError(
        f"{where} is a TLS listener: {security._said('security_protocol')} should be {wanted} "
        f"(with {security.name('ssl_cafile')} naming the CA of its certificate)"
    )


class _ScramRefused(Exception):
    """The broker ended a SCRAM exchange with an error where its proof belongs."""


def _refusal(
    where: str,
    security: KafkaSecurity,
    failure: BaseException,
    logged: list[BaseException],
    waited_s: float,
) -> KafkaSecurityError:
    """Why the Kafka handshake failed once a socket could be opened: what the broker refused."""
    name = security.name
    protocol = security._said("security_protocol")
    for exc in logged:
        if isinstance(exc, UnsupportedSaslMechanismError):
            detail = str(exc) if "Enabled mechanisms" in str(exc) else "it has no such mechanism"
            return KafkaSecurityError(
                f"{where} refused {security._said('sasl_mechanism')} ({detail}); "
                f"{name('sasl_mechanism')} must be one its listener offers, and "
                f"{name('security_protocol')} that listener's protocol"
            )
        if isinstance(exc, SaslAuthenticationFailed | IllegalSaslStateError):
            who = (
                f"the token of {security._said('sasl_oauth_client_id')}"
                if security.sasl_mechanism == "OAUTHBEARER"
                else f"{security._said('sasl_username')} and its {name('sasl_password')}"
            )
            return KafkaSecurityError(
                f"{where} refused {who} over {security.sasl_mechanism}: {exc}"
            )
        if isinstance(exc, KafkaSecurityError):
            return exc
    if isinstance(failure, _ScramRefused):
        return KafkaSecurityError(
            f"{where} refused {security._said('sasl_username')} and its "
            f"{name('sasl_password')} over {security.sasl_mechanism}: {failure}"
        )
    if isinstance(failure, TimeoutError) and not logged:
        return KafkaSecurityError(
            f"{where} accepted a connection but gave no Kafka answer within {waited_s:.0f}s over "
            f"{protocol}: is that its listener's protocol (a TLS listener waits silently for a "
            "handshake)?",
            retryable=True,
        )
    reasons = "; ".join(dict.fromkeys(f"{type(e).__name__}: {e}" for e in logged)) or (
        f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
    )
    sasl = f" with {security._said('sasl_mechanism')}" if security.uses_sasl else ""
    # Nothing refused outright (a connection closed, a request unanswered): a broker may still
    # be starting, so it is tried again until the deadline, and this is what is said then.
    return KafkaSecurityError(
        f"{where} did not complete a Kafka connection over {protocol} ({reasons}); does its "
        f"listener take {protocol}{sasl}?",
        retryable=True,
    )
