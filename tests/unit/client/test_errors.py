"""Every HTTP refusal as the client's error, with the service's reason."""

from __future__ import annotations

import httpx
import pytest

from conveyor_client import (
    ConfigurationError,
    Conflict,
    ConveyorError,
    DeadlineExceeded,
    Forbidden,
    InvalidArgument,
    NotFound,
    Refused,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from conveyor_client.aio import AsyncClient
from conveyor_client.config import Config
from tests.unit.client.support import Services, detail

VERSIONS = "/projects/fraud/versions"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (400, Refused),
        (413, Refused),
        (429, Refused),
    ],
)
async def test_a_4xx_is_its_own_error_with_the_services_reason(status, kind):
    services = Services()
    services.on("registry", "GET", VERSIONS, detail(status, f"the reason for {status}"))
    async with services.client() as conveyor:
        with pytest.raises(kind) as caught:
            await conveyor.versions("fraud")
    error = caught.value
    assert isinstance(error, ServiceError) and isinstance(error, ConveyorError)
    assert (error.status, error.reason, error.service) == (
        status,
        f"the reason for {status}",
        "registry",
    )
    assert error.detail == f"the reason for {status}"
    assert error.method == "GET" and error.url == f"http://registry.test{VERSIONS}"
    assert f"registry: {status} the reason for {status}" == str(error)


async def test_a_validation_error_names_each_place_and_why():
    services = Services()
    invalid = [
        {
            "loc": ["body", "reason"],
            "msg": "String should have at most 500 characters",
            "type": "x",
        },
        {"loc": ["query", "version"], "msg": "Input should be greater than 0", "type": "y"},
    ]
    services.on("trainer", "POST", "/projects/fraud/runs", detail(422, invalid))
    async with services.client() as conveyor:
        with pytest.raises(Refused) as caught:
            await conveyor.train("fraud", "why")
    assert caught.value.problems == [
        "reason: String should have at most 500 characters",
        "query.version: Input should be greater than 0",
    ]
    assert "reason: String should have at most 500" in caught.value.reason


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (502, None), (503, 2.0)])
async def test_a_5xx_is_unavailable(status, retry_after):
    services = Services()
    headers = {"Retry-After": "2"} if retry_after else {}
    answer = httpx.Response(status, json={"detail": "no model is loaded"}, headers=headers)
    services.on("registry", "GET", "/projects", answer)
    async with services.client() as conveyor:
        with pytest.raises(Unavailable) as caught:
            await conveyor.projects()
    assert caught.value.status == status and caught.value.reason == "no model is loaded"
    assert caught.value.retry_after == retry_after


async def test_a_service_that_cannot_be_reached_is_unavailable():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AsyncClient(
        Config(services={"registry": "http://registry.test"}),
        transport=httpx.MockTransport(refuse),
    ) as conveyor:
        with pytest.raises(Unavailable, match="ConnectError: connection refused") as caught:
            await conveyor.projects()
    assert caught.value.status is None and caught.value.service == "registry"


async def test_a_body_that_is_not_json_is_kept_as_the_reason():
    services = Services()
    services.on("registry", "GET", "/projects", httpx.Response(502, text="Bad gateway"))
    async with services.client() as conveyor:
        with pytest.raises(Unavailable, match="Bad gateway"):
            await conveyor.projects()


async def test_a_service_not_configured_is_a_configuration_error():
    async with AsyncClient(Config(services={})) as conveyor:
        with pytest.raises(ConfigurationError, match="CONVEYOR_TRAINER_URL"):
            await conveyor.train("fraud")
        with pytest.raises(ConfigurationError, match="CONVEYOR_BOOTSTRAP_SERVERS"):
            await conveyor.send_feedback("fraud", "r-1", "legit", via="kafka")


@pytest.mark.parametrize(
    ("project", "why"),
    [
        ("x" * 201, "201 characters long; at most 200"),
        ("bad\nname", "control character"),
        ("", "empty"),
        (7, "must be text"),
    ],
)
async def test_ids_are_checked_before_anything_is_sent(project, why):
    services = Services()
    async with services.client() as conveyor:
        for call in (
            conveyor.versions(project),
            conveyor.predict(project, {"customer": "c-1"}, via="http"),
            conveyor.send_feedback(project, "r-1", "legit"),
            conveyor.submit_records(project, [{"customer": "c-1"}]),
            conveyor.train(project),
        ):
            with pytest.raises(InvalidArgument, match=why):
                await call
        with pytest.raises(InvalidArgument, match="request_id"):
            await conveyor.send_feedback("fraud", "r\x00", "legit")
        with pytest.raises(InvalidArgument, match="at most 500"):
            await conveyor.train("fraud", "x" * 501)
        with pytest.raises(InvalidArgument, match="version must be an integer"):
            await conveyor.version("fraud", 0)
        with pytest.raises(InvalidArgument, match="via must be"):
            await conveyor.predict("fraud", {}, via="smoke")  # type: ignore[arg-type]
    assert services.requests == []


async def test_a_requests_timeout_outside_a_deadline_is_unavailable():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    services = Services()
    services.on("registry", "GET", "/projects", slow)
    services.on("serving", "POST", "/projects/fraud/predict", slow)
    async with services.client() as conveyor:
        with pytest.raises(Unavailable, match="ReadTimeout"):
            await conveyor.projects()
        with pytest.raises(DeadlineExceeded):
            await conveyor.predict("fraud", {"customer": "c-1"}, via="http", timeout=1)
