"""Where the client finds the platform: arguments, environment, the user's config file, then
`./.conveyor/`, each setting from the first that gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor_cli import infra
from conveyor_cli.stack import Stack
from conveyor_client import ConfigurationError, config_path
from conveyor_client.config import Config


def _stack(directory: Path, port: int, token: str | None = None, embedded: bool = True) -> Path:
    """A stack file as `conveyor up` writes it, and its token file."""
    directory.mkdir(parents=True, exist_ok=True)
    broker = infra.Broker(f"127.0.0.1:{port}", infra.TANSU if embedded else "configured")
    stack = Stack(state_dir=directory, broker=broker, postgres=infra.Postgres("", "embedded"))
    stack.write_state()
    state = json.loads((directory / "stack.json").read_text())
    state |= {
        "database": {"kind": "embedded"},
        "services": {
            "registry": f"http://127.0.0.1:{port + 1}",
            "ingest": f"http://127.0.0.1:{port + 2}",
        },
    }
    (directory / "stack.json").write_text(json.dumps(state))
    if token is not None:
        (directory / "token").write_text(token + "\n")
    return directory / "stack.json"


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment with a HOME of its own and nothing else."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


def _config_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_working_directorys_stack_is_the_last_resort(tmp_path, home):
    _stack(tmp_path / "work" / ".conveyor", 9000, token="local-admin-token")
    config = Config.discover(environ=home, cwd=tmp_path / "work")
    assert config.services == {
        "registry": "http://127.0.0.1:9001",
        "ingest": "http://127.0.0.1:9002",
    }
    assert config.bootstrap_servers == "127.0.0.1:9000"
    assert config.token == "local-admin-token"
    assert config.fetch_max_wait_ms == 10  # the embedded broker answers a fetch when its wait ends
    assert config.origins["token"] == str(tmp_path / "work" / ".conveyor" / "token")
    assert config.origins["registry"] == str(tmp_path / "work" / ".conveyor" / "stack.json")


def test_nothing_anywhere_is_an_empty_configuration_that_says_what_to_set(tmp_path, home):
    config = Config.discover(environ=home, cwd=tmp_path)
    assert config.services == {} and config.bootstrap_servers is None and config.token is None
    assert config.fetch_max_wait_ms == 500 and config.reply_prefix == "replies."
    with pytest.raises(ConfigurationError, match="CONVEYOR_REGISTRY_URL"):
        config.url("registry")
    with pytest.raises(ConfigurationError, match="CONVEYOR_BOOTSTRAP_SERVERS"):
        config.broker()


def test_the_config_file_comes_before_the_working_directory(tmp_path, home):
    _stack(tmp_path / "work" / ".conveyor", 9000, token="local-admin-token")
    _config_file(
        Path(home["HOME"]) / ".config" / "conveyor" / "config.toml",
        'token = "from-file"\nsource = "shop/checkout"\n[services]\n'
        'registry = "https://registry.example/"\n[kafka]\nsecurity_protocol = "SSL"\n',
    )
    config = Config.discover(environ=home, cwd=tmp_path / "work")
    assert config.token == "from-file" and config.source == "shop/checkout"
    assert config.services["registry"] == "https://registry.example"  # without the slash
    assert config.services["ingest"] == "http://127.0.0.1:9002"  # the file did not say
    assert config.bootstrap_servers == "127.0.0.1:9000"
    assert dict(config.kafka) == {"security_protocol": "SSL"}


def test_xdg_config_home_and_conveyor_config_name_the_file(tmp_path, home):
    xdg = _config_file(tmp_path / "xdg" / "conveyor" / "config.toml", 'token = "xdg"\n')
    named = _config_file(tmp_path / "elsewhere.toml", 'token = "named"\n')
    env = home | {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert config_path(env) == xdg
    assert Config.discover(environ=env, cwd=tmp_path).token == "xdg"
    env |= {"CONVEYOR_CONFIG": str(named)}
    assert Config.discover(environ=env, cwd=tmp_path).token == "named"
    with pytest.raises(ConfigurationError, match="CONVEYOR_CONFIG names"):
        Config.discover(environ=env | {"CONVEYOR_CONFIG": str(tmp_path / "none")}, cwd=tmp_path)


def test_a_config_files_stack_key_reads_that_stack(tmp_path, home):
    stack = _stack(tmp_path / "prod", 7000, token="prod-token", embedded=False)
    env = home | {"CONVEYOR_CONFIG": str(tmp_path / "c.toml")}
    _config_file(tmp_path / "c.toml", f'stack = "{stack}"\n')
    config = Config.discover(environ=env, cwd=tmp_path)
    assert config.bootstrap_servers == "127.0.0.1:7000" and config.token == "prod-token"
    assert config.fetch_max_wait_ms == 500  # Apache Kafka answers as soon as data arrives


def test_the_environment_comes_before_the_config_file(tmp_path, home):
    _config_file(
        Path(home["HOME"]) / ".config" / "conveyor" / "config.toml",
        'token = "from-file"\nbootstrap_servers = "file:9092"\n[services]\nregistry = "http://file"\n',
    )
    home_stack = _stack(tmp_path / "state", 8000, token="home-token")
    env = home | {
        "CONVEYOR_REGISTRY_URL": "http://env-registry:1",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-env:9092",
        "CONVEYOR_HOME": str(home_stack.parent),
        "CONVEYOR_REPLY_PREFIX": "answers.",
        "CONVEYOR_TIMEOUT": "2.5",
    }
    config = Config.discover(environ=env, cwd=tmp_path)
    assert config.services["registry"] == "http://env-registry:1"
    assert config.services["ingest"] == "http://127.0.0.1:8002"  # $CONVEYOR_HOME/stack.json
    assert config.bootstrap_servers == "kafka-env:9092"
    assert config.token == "home-token"  # $CONVEYOR_HOME/token, before the config file
    assert config.reply_prefix == "answers." and config.timeout == 2.5
    env |= {"CONVEYOR_BOOTSTRAP_SERVERS": "conveyor-env:9092", "CONVEYOR_TOKEN": "env-token"}
    config = Config.discover(environ=env, cwd=tmp_path)
    assert config.bootstrap_servers == "conveyor-env:9092" and config.token == "env-token"
    assert config.origins["token"] == "environment"


def test_conveyor_stack_comes_before_conveyor_home_and_must_exist(tmp_path, home):
    one = _stack(tmp_path / "one", 5000, token="one")
    two = _stack(tmp_path / "two", 6000, token="two")
    env = home | {"CONVEYOR_STACK": str(one), "CONVEYOR_HOME": str(two.parent)}
    config = Config.discover(environ=env, cwd=tmp_path)
    assert config.bootstrap_servers == "127.0.0.1:5000" and config.token == "one"
    with pytest.raises(ConfigurationError, match="CONVEYOR_STACK names"):
        Config.discover(environ=env | {"CONVEYOR_STACK": str(tmp_path / "gone.json")}, cwd=tmp_path)


def test_arguments_come_first(tmp_path, home):
    _stack(tmp_path / ".conveyor", 9000, token="local")
    env = home | {"CONVEYOR_TOKEN": "env", "CONVEYOR_REGISTRY_URL": "http://env:1"}
    config = Config.discover(
        services={"registry": "http://arg:1"},
        token="arg",
        bootstrap_servers="arg:9092",
        environ=env,
        cwd=tmp_path,
    )
    assert (config.token, config.bootstrap_servers) == ("arg", "arg:9092")
    assert config.services["registry"] == "http://arg:1"
    assert config.origins["registry"] == "arguments"
    # Overriding a configuration keeps what is not given again.
    again = config.overridden(token="other")
    assert again.token == "other" and again.services == config.services
    assert again.origins["token"] == "arguments" and again.origins["registry"] == "arguments"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('tokn = "x"\n', "unknown keys tokn"),
        ("token = \n", "Invalid value"),
        ('services = "x"\n', "are tables"),
        ('[services]\nregistri = "http://x"\n', "unknown service 'registri'"),
        ('[services]\nregistry = "ftp://x"\n', "is not http"),
        ("timeout = -1\n", "must be positive"),
        ("token = 3\n", "token is not text"),
    ],
)
def test_a_malformed_config_file_says_where_and_what(tmp_path, home, text, why):
    path = _config_file(tmp_path / "c.toml", text)
    with pytest.raises(ConfigurationError, match=why) as caught:
        Config.discover(environ=home | {"CONVEYOR_CONFIG": str(path)}, cwd=tmp_path)
    assert str(path) in str(caught.value)


def test_a_malformed_stack_file_is_a_configuration_error(tmp_path, home):
    (tmp_path / ".conveyor").mkdir()
    (tmp_path / ".conveyor" / "stack.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not a stack file"):
        Config.discover(environ=home, cwd=tmp_path)


def test_the_process_environment_and_directory_are_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("CONVEYOR_TOKEN", "CONVEYOR_STACK", "CONVEYOR_HOME", "CONVEYOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    _stack(tmp_path / ".conveyor", 4000, token="here")
    assert Config.discover().token == "here"
