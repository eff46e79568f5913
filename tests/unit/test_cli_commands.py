"""`conveyor` commands against fake services (httpx.MockTransport): what they print on stdout
(tables, or JSON with --json), and every failure as one line on stderr with its exit code."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor_cli import api, follow
from conveyor_cli.app import ExitCode
from conveyor_cli.main import run

SERVICES = ("registry", "trainer", "monitor", "feedback")
Handler = Callable[[httpx.Request], Any]


class FakeStack:
    """Routes `(method, service, path)` to an answer: a body (200), a `(status, body)` pair, or
    a function of the request (which may raise, as a failing network does; a coroutine function
    answers asynchronous clients only)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], Any] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, service: str, path: str, answer: Any) -> None:
        self.routes[(method, service, path)] = answer

    def handle(self, request: httpx.Request) -> Any:
        self.requests.append(request)
        service = request.url.host.removesuffix(".test")
        answer = self.routes.get((request.method, service, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": f"no route {request.url.path}"})
        if inspect.iscoroutinefunction(answer):
            return answer(request)  # awaited by the asynchronous transport
        if callable(answer):
            answer = answer(request)
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    home = tmp_path / "home"
    home.mkdir()
    services = {name: f"http://{name}.test" for name in SERVICES}
    (home / "stack.json").write_text(json.dumps({"services": services, "broker": {}}))
    monkeypatch.setenv("CONVEYOR_HOME", str(home))
    monkeypatch.setenv("CONVEYOR_TOKEN", "cvt_the-callers-token")
    monkeypatch.delenv("CONVEYOR_DEBUG", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    # Nothing of the machine's own: no user config file, no stack in the working directory.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CONVEYOR_CONFIG", raising=False)
    monkeypatch.delenv("CONVEYOR_STACK", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if re.fullmatch(r"CONVEYOR_[A-Z]+_URL", name):
            monkeypatch.delenv(name)
    fake = FakeStack()
    transport = httpx.MockTransport(fake.handle)
    monkeypatch.setattr(api, "client", functools.partial(api.client, transport=transport))
    monkeypatch.setattr(
        api, "async_client", functools.partial(api.async_client, transport=transport)
    )
    monkeypatch.setattr(follow, "POLL_S", 0.01)
    return fake


def conveyor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one error line, which ends stderr; never a traceback."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            403,
            {"detail": "dave may not decide: needs approver"},
            "403 forbidden: dave may not decide: needs approver",
        ),
        (404, {"detail": "unknown project 'nope'"}, "404 not found: unknown project 'nope'"),
        (
            422,
            {"detail": [{"loc": ["body", "version"], "msg": "Input should be a valid integer"}]},
            "422 unprocessable entity: version: Input should be a valid integer",
        ),
        (409, {"detail": "no\nearlier\tmove"}, "409 conflict: no earlier move"),
        (500, "Internal Server Error", "500 internal server error: Internal Server Error"),
        (503, "", "503 service unavailable"),
    ],
)
def test_an_http_error_is_its_status_and_the_servers_detail(stack, capsys, status, body, expected):
    stack.on("POST", "registry", "/projects/wine/aliases/champion/rollback", (status, body))
    code, out, err = conveyor(capsys, "rollback", "wine")
    assert code == ExitCode.FAILED and out == ""
    assert error_line(err) == f"error: {expected}"


def test_a_long_detail_is_cut_to_one_readable_line():
    line = api.http_error(400, json.dumps({"detail": "x" * 5000}).encode())
    assert line.startswith("400 bad request: xxx") and len(line) < 600 and line.endswith("…")


def test_nothing_listening_says_how_to_start_a_stack(stack, capsys):
    def refused(request: httpx.Request) -> Any:
        raise httpx.ConnectError("connection refused", request=request)

    stack.on("GET", "registry", "/projects", refused)
    code, out, err = conveyor(capsys, "projects")
    assert code == ExitCode.UNREACHABLE and out == ""
    assert error_line(err) == (
        "error: no stack at registry.test (registry refused the connection); "
        "start one with `conveyor up`"
    )


def test_no_stack_recorded(stack, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "elsewhere"))
    code, _, err = conveyor(capsys, "versions", "wine")
    assert code == ExitCode.UNREACHABLE
    assert "no URL for the registry service" in error_line(err) and "conveyor up" in err


def test_a_slow_service_times_out(stack, capsys):
    def slow(request: httpx.Request) -> Any:
        raise httpx.ReadTimeout("timed out", request=request)

    stack.on("GET", "monitor", "/projects/wine/drift", slow)
    code, _, err = conveyor(capsys, "drift", "wine")
    assert code == ExitCode.TIMEOUT
    assert error_line(err).startswith("error: monitor did not answer within 30 s")


def test_ctrl_c_exits_130(stack, capsys):
    def interrupted(request: httpx.Request) -> Any:
        raise KeyboardInterrupt

    stack.on("GET", "registry", "/projects", interrupted)
    code, _, err = conveyor(capsys, "projects")
    assert code == ExitCode.INTERRUPTED == 130
    assert error_line(err) == "error: interrupted"


def test_an_unexpected_failure_is_one_line_unless_debugging(stack, capsys, monkeypatch):
    def broken(request: httpx.Request) -> Any:
        raise RuntimeError("something\nunforeseen")

    stack.on("GET", "registry", "/projects", broken)
    code, _, err = conveyor(capsys, "projects")
    assert code == ExitCode.FAILED
    assert error_line(err) == (
        "error: RuntimeError: something unforeseen (run with --debug for the traceback)"
    )
    code, _, err = conveyor(capsys, "--debug", "projects")
    assert code == ExitCode.FAILED and "Traceback" in err and "RuntimeError" in err
    monkeypatch.setenv("CONVEYOR_DEBUG", "1")
    code, _, err = conveyor(capsys, "projects")
    assert code == ExitCode.FAILED and "Traceback" in err


def test_bad_input_is_a_usage_error_before_anything_is_sent(stack, capsys, tmp_path):
    broken = tmp_path / "project.json"
    broken.write_text('{"name": "x"}')
    for argv, expected in [
        (["apply", "no-such-example"], "no file 'no-such-example' and no example"),
        (["apply", str(broken)], f"{broken} is not a valid project:"),
        (["experiment", "wine", "--variant", "{not json"], "--variant is not JSON"),
        (["predict", "wine", "cellar-1", "amount"], "'amount' is not name=value"),
    ]:
        code, out, err = conveyor(capsys, *argv)
        assert code == ExitCode.USAGE and out == "", argv
        assert expected in error_line(err)
    assert stack.requests == []


# --- what is printed ------------------------------------------------------------------------------

VERSIONS = [
    {
        "version": 1,
        "run_id": "a" * 32,
        "status": "ready",
        "metrics": {"accuracy": 0.91},
        "sha256": "f" * 64,
        "created_at": "2026-01-02T03:04:05.678+00:00",
        "failure_reason": None,
    },
    {
        "version": 2,
        "run_id": "b" * 32,
        "status": "failed",
        "metrics": {},
        "sha256": None,
        "created_at": "2026-01-03T03:04:05+00:00",
        "failure_reason": "[red]the ONNX gate[/red]",
    },
]


def test_versions_as_a_table_and_as_json(stack, capsys):
    stack.on("GET", "registry", "/projects/wine/versions", VERSIONS)
    stack.on("GET", "registry", "/projects/wine/aliases", {"champion": 1, "shadow": 1})
    code, out, err = conveyor(capsys, "versions", "wine")
    assert code == 0 and err == ""
    header, first, _ = (
        line for line in out.splitlines() if "version" in line or "ready" in line or "fail" in line
    )
    assert all(c in header for c in ("version", "aliases", "status", "accuracy", "created"))
    assert "champion, shadow" in first and "0.91" in first and "2026-01-02 03:04:05" in first
    assert "[red]the ONNX gate[/red]" in out  # a server's text is shown as it is, never as markup
    code, out, err = conveyor(capsys, "versions", "wine", "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == {"versions": VERSIONS, "aliases": {"champion": 1, "shadow": 1}}
    assert all(r.headers["authorization"] == "Bearer cvt_the-callers-token" for r in stack.requests)


def test_an_empty_list_says_so_on_stderr(stack, capsys):
    stack.on("GET", "registry", "/projects", [])
    code, out, err = conveyor(capsys, "projects")
    assert (code, out) == (0, "") and "no projects yet" in err
    code, out, _ = conveyor(capsys, "projects", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_a_promotion_held_for_approval(stack, capsys):
    request = {
        "id": 7,
        "project": "wine",
        "alias": "champion",
        "version": 3,
        "requested_by": "dave",
        "reason": "second look",
        "evidence": {},
        "state": "pending",
        "decided_by": None,
        "decision_reason": None,
        "decided_at": None,
        "created_at": "2026-01-03T03:04:05+00:00",
    }

    def held(r: httpx.Request) -> Any:
        assert json.loads(r.content) == {"version": 3, "reason": "second look"}
        return (202, request)

    stack.on("PUT", "registry", "/projects/wine/aliases/champion", held)
    code, out, err = conveyor(capsys, "promote", "wine", "3", "--reason", "second look")
    assert code == 0 and "request 7 awaits an approver" in err
    assert re.search(r"^state\s+pending$", out, re.M) and re.search(r"^id\s+7$", out, re.M)
    code, out, _ = conveyor(capsys, "promote", "wine", "3", "-r", "second look", "--json")
    assert json.loads(out) == request


def _ready(service: str, **more: Any) -> dict[str, Any]:
    return {"service": service, "version": "0.1.0", "ready": True, "problems": []} | more


def _recorded(stack_home: Path, **processes: dict[str, Any]) -> None:
    """What `conveyor up` records of its processes, in the stack file the fixture wrote."""
    path = stack_home / "stack.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps(state | {"processes": processes}))


def test_status_shows_each_services_restarts_version_and_models(stack, capsys, tmp_path):
    for name in SERVICES:
        stack.on("GET", name, "/readyz", _ready(name))
    models = {
        "projects": {
            "fraud": {"champion": 7, "challenger": 8, "mode": "canary", "canary_share": 0.1},
            "wine": {"champion": 3, "failed": {"challenger": 4}},
        },
        "more": 2,
    }
    stack.on("GET", "monitor", "/readyz", _ready("monitor", models=models))
    process = {"pid": 4242, "started_at": "2026-01-01T00:00:00+00:00", "restarts": 2}
    _recorded(tmp_path / "home", monitor=process | {"last_exit": -9})

    code, out, err = conveyor(capsys, "status", "--json")
    assert code == 0, err
    rows = {row["service"]: row for row in json.loads(out)}
    assert list(rows) == list(SERVICES)
    assert rows["monitor"]["restarts"] == 2 and rows["monitor"]["process"]["last_exit"] == -9
    assert rows["monitor"]["models"] == models and rows["monitor"]["version"] == "0.1.0"
    # Found in the stack file, but not recorded by `conveyor up`: not known, rather than 0.
    assert rows["registry"]["restarts"] is None and rows["registry"]["process"] is None
    # No broker in the stack file: the lag is unknown, said so, and it fails nothing by itself.
    assert all(row["lag"] is None for row in rows.values())
    assert "lag unknown" in err

    code, out, _ = conveyor(capsys, "status")
    assert code == 0
    monitor = next(line for line in out.splitlines() if "monitor" in line)
    assert "2 (last exit -9)" in monitor
    assert "fraud v7 + challenger v8 (canary 10%)" in monitor
    assert "wine v3 [did not load: challenger v4]" in monitor and "and 2 more" in monitor
    registry = next(line for line in out.splitlines() if "registry" in line)
    assert "unknown" in registry


def test_status_fails_when_a_service_is_down_not_ready_or_hung(stack, capsys, monkeypatch):
    from conveyor_cli import status

    monkeypatch.setattr(status, "READY_TIMEOUT_S", 0.2)
    for name in SERVICES:
        stack.on("GET", name, "/readyz", _ready(name))
    stack.on(
        "GET",
        "monitor",
        "/readyz",
        (503, _ready("monitor", ready=False, problems=["broker: KafkaConnectionError"])),
    )

    def refused(request: httpx.Request) -> Any:
        raise httpx.ConnectError("connection refused", request=request)

    stack.on("GET", "trainer", "/readyz", refused)

    async def hung(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=_ready("feedback"))

    stack.on("GET", "feedback", "/readyz", hung)
    started = time.monotonic()
    code, out, err = conveyor(capsys, "status", "--json")
    assert time.monotonic() - started < 5  # the hung service held it no longer than its limit
    assert code == ExitCode.FAILED
    rows = {row["service"]: row for row in json.loads(out)}
    assert rows["monitor"]["status"] == "not ready"
    assert rows["monitor"]["problems"] == ["broker: KafkaConnectionError"]
    assert rows["trainer"]["status"] == rows["feedback"]["status"] == "unreachable"
    assert rows["feedback"]["problems"] == ["no answer in 0.2 s"]
    assert error_line(err) == (
        "error: 1 of 4 services ready; trainer unreachable; monitor not ready; feedback unreachable"
    )

    for name in SERVICES:
        stack.on("GET", name, "/readyz", refused)
    code, _, err = conveyor(capsys, "status")
    assert code == ExitCode.UNREACHABLE and "no service answers" in error_line(err)


def test_status_with_a_lag_limit_fails_when_the_lag_cannot_be_read(stack, capsys):
    for name in SERVICES:
        stack.on("GET", name, "/readyz", _ready(name))
    code, _, err = conveyor(capsys, "status", "--max-lag", "100")
    assert code == ExitCode.FAILED
    assert error_line(err).startswith("error: 4 of 4 services ready; lag unknown: no Kafka broker")


def test_a_lag_beyond_the_limit_is_a_problem():
    from conveyor_cli.status import problems

    lag = [
        {"topic": "feedback.submitted.v1", "group": "conveyor-feedback.x", "lag": 12},
        {"topic": "predictions.responses.v1", "group": "conveyor-feedback.y", "lag": 0},
    ]
    rows = [{"service": "feedback", "status": "ready", "lag": lag}]
    assert problems(rows, None, None) == []
    assert problems(rows, 12, None) == []
    assert problems(rows, 11, None) == ["conveyor-feedback.x is 12 behind on feedback.submitted.v1"]
    down = [{"service": "feedback", "status": "unreachable", "lag": None}]
    assert problems(down, None, "no broker") == ["feedback unreachable"]


# --- following runs -------------------------------------------------------------------------------


def _run(status: str, **changes: Any) -> dict[str, Any]:
    return {
        "run_id": "c0ffee" * 5 + "00",
        "project": "wine",
        "status": status,
        "model_version": None,
        "promoted": False,
        "reason": "" if status == "running" else "better than the champion",
        "metrics": {},
        "champion_metrics": {},
        "training_rows": 0,
        "duration_s": None,
        "trigger": "alice: first cut",
        "started_at": "2026-01-02T03:04:05+00:00",
        "finished_at": None,
        "logs": "",
    } | changes


def _trainer_reports(stack: FakeStack, *states: dict[str, Any]) -> None:
    """The run as GET /runs/{id} answers it, one state after another (the last one stays)."""
    answers = list(states)
    run_id = states[0]["run_id"]
    stack.on("POST", "trainer", "/projects/wine/runs", (202, {"run_id": run_id}))
    stack.on(
        "GET",
        "trainer",
        f"/runs/{run_id}",
        lambda _: answers.pop(0) if len(answers) > 1 else answers[0],
    )


def test_train_wait_follows_the_run_to_success(stack, capsys):
    done = _run("succeeded", model_version=3, promoted=True, metrics={"accuracy": 0.93})
    _trainer_reports(stack, _run("running"), _run("running", model_version=3), done)
    code, out, err = conveyor(capsys, "train", "wine", "--wait", "--json")
    assert code == 0, err
    assert json.loads(out) == done
    progress = [re.fullmatch(r"\s*\d+\.\ds  (.*)", line) for line in err.splitlines()]
    assert all(progress), err  # a line per change of state, and nothing else (no spinner)
    assert [line[1] for line in progress if line] == [
        "run c0ffeec0 reading its examples",
        "run c0ffeec0 training v3",
        "run c0ffeec0 succeeded: v3 and promoted — better than the champion",
    ]
    code, out, _ = conveyor(capsys, "train", "wine")  # without --wait: the run's id
    assert code == 0 and re.search(r"^run_id\s+c0ffee", out, re.M)


def test_train_wait_fails_with_the_runs_reason(stack, capsys):
    failed = _run("failed", reason="ValueError('no labels')", logs="10:00:01 fit\n10:00:02 boom")
    _trainer_reports(stack, _run("running"), failed)
    code, out, err = conveyor(capsys, "train", "wine", "--wait")
    assert code == ExitCode.FAILED
    assert re.search(r"^status\s+failed$", out, re.M)  # the run, as it ended
    assert "10:00:02 boom" in err  # the end of its log
    assert error_line(err) == "error: run c0ffeec0 failed: ValueError('no labels')"


def test_train_wait_gives_up_at_the_timeout(stack, capsys):
    _trainer_reports(stack, _run("running"))
    code, out, err = conveyor(capsys, "train", "wine", "--wait", "--timeout", "1")
    assert code == ExitCode.TIMEOUT and out == ""
    assert error_line(err).startswith("error: run c0ffeec0 has not ended after 1 s")


def test_experiment_wait_follows_every_variant(stack, capsys):
    ids = ["1" * 32, "2" * 32]
    stack.on(
        "POST",
        "trainer",
        "/projects/wine/experiments",
        (202, {"run_id": ids[0], "experiment_id": "e" * 32}),
    )
    first = _run("succeeded", run_id=ids[0], model_version=4)
    listings = [
        [_run("running", run_id=ids[0])],
        [first, _run("running", run_id=ids[1], model_version=5)],
        [first, _run("skipped", run_id=ids[1], reason="another run held the project")],
    ]

    def listing(request: httpx.Request) -> Any:
        assert request.url.params["experiment"] == "e" * 32
        return listings.pop(0) if len(listings) > 1 else listings[0]

    stack.on("GET", "trainer", "/projects/wine/runs", listing)
    variants = ['{"class_path": "sklearn.tree.DecisionTreeClassifier"}'] * 2
    argv = ["experiment", "wine", "-v", variants[0], "-v", variants[1], "--wait", "--json"]
    code, out, err = conveyor(capsys, *argv)
    assert code == ExitCode.FAILED
    result = json.loads(out)
    assert result["experiment_id"] == "e" * 32
    assert [r["status"] for r in result["runs"]] == ["succeeded", "skipped"]
    assert "experiment eeeeeeee: 1 of 2 runs ended; run 22222222 training v5" in err
    assert error_line(err) == "error: run 22222222 skipped: another run held the project"


def test_the_stack_is_found_from_the_users_config_file(stack, capsys, tmp_path, monkeypatch):
    """Away from the folder `conveyor up` ran in, with no CONVEYOR_* variables: the user's
    config file says where the platform is and who is calling."""
    monkeypatch.delenv("CONVEYOR_HOME")
    monkeypatch.delenv("CONVEYOR_TOKEN")
    config = tmp_path / "xdg" / "conveyor" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'token = "cvt_from-the-config-file"\n[services]\nregistry = "http://registry.test"\n'
    )
    stack.on("GET", "registry", "/projects", [{"project": "wine", "version": 1}])
    code, out, _ = conveyor(capsys, "projects", "--json")
    assert code == 0 and json.loads(out) == [{"project": "wine", "version": 1}]
    assert stack.requests[-1].headers["authorization"] == "Bearer cvt_from-the-config-file"
    # A variable overrides the file.
    monkeypatch.setenv("CONVEYOR_TOKEN", "cvt_from-the-environment")
    assert conveyor(capsys, "projects", "--json")[0] == 0
    assert stack.requests[-1].headers["authorization"] == "Bearer cvt_from-the-environment"


# --- audit and tokens ---------------------------------------------------------------------------


def _entry(i: int, action: str = "promotion.approve", via: str = "token") -> dict[str, Any]:
    return {
        "id": i,
        "at": f"2026-01-0{i}T03:04:05+00:00",
        "actor": "alice",
        "role": "approver",
        "via": via,
        "action": action,
        "project": "wine",
        "target": "request 7 of dave: champion → v3",
        "reason": "holdout reviewed",
        "request_id": "r1",
        "details": {},
        "source": "conveyor/registry",
    }


def test_audit_lists_the_changes_newest_first_paging_as_the_registry_says(stack, capsys):
    pages = {None: ([_entry(3, via="oidc"), _entry(2)], 2), "2": ([_entry(1, "alias.move")], None)}
    asked: list[dict[str, str]] = []

    def page(r: httpx.Request) -> Any:
        asked.append(dict(r.url.params))
        entries, following = pages[r.url.params.get("before")]
        return {"entries": entries, "next": following}

    stack.on("GET", "registry", "/audit", page)
    code, out, err = conveyor(
        capsys, "audit", "--project", "wine", "--actor", "alice", "--action", "promotion"
    )
    assert code == 0 and err == ""
    assert asked == [
        {"project": "wine", "actor": "alice", "action": "promotion", "limit": "50"},
        {"project": "wine", "actor": "alice", "action": "promotion", "limit": "48", "before": "2"},
    ]
    rows = [line for line in out.splitlines() if "alice" in line]
    assert len(rows) == 3 and "alice (oidc)" in rows[0] and "2026-01-03 03:04:05" in rows[0]
    assert "alias.move" in rows[2] and "approver" in rows[1]

    asked.clear()
    code, out, _ = conveyor(capsys, "audit", "-n", "2", "--json")
    assert code == 0 and [e["id"] for e in json.loads(out)] == [3, 2]
    assert asked == [{"limit": "2"}]

    stack.on("GET", "registry", "/audit", {"entries": [], "next": None})
    code, out, err = conveyor(capsys, "audit", "--actor", "nobody")
    assert (code, out) == (0, "") and "no changes recorded that match" in err
    stack.on("GET", "registry", "/audit", (401, {"detail": "this needs a bearer token"}))
    code, _, err = conveyor(capsys, "audit")
    assert code == 1 and error_line(err) == "error: 401 unauthorized: this needs a bearer token"


def test_a_token_change_is_recorded_in_the_audit_log_before_the_file_changes(
    stack, capsys, tmp_path
):
    path = tmp_path / "tokens.json"
    recorded: list[dict[str, Any]] = []

    def record(r: httpx.Request) -> Any:
        assert not path.exists() or "ci" not in path.read_text()  # the record comes first
        recorded.append(json.loads(r.content))
        return (201, {"event_id": "e1"})

    stack.on("POST", "registry", "/audit/tokens", record)
    code, out, err = conveyor(
        capsys, "token", "issue", "ci", "--role", "scientist", "--file", str(path), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["name"] == "ci" and "ci" in path.read_text()
    assert recorded == [
        {
            "action": "token.issue",
            "name": "ci",
            "roles": ["scientist"],
            "reason": "issued from the CLI",
        }
    ]
    # The token's secret never reaches the audit log.
    assert json.loads(out)["token"] not in json.dumps(recorded)

    # Refused (the caller is no admin): the file stays as it was.
    before = path.read_text()
    stack.on("POST", "registry", "/audit/tokens", (403, {"detail": "dave may not administer"}))
    code, _, err = conveyor(capsys, "token", "revoke", "ci", "--file", str(path))
    assert code == 1 and "refused the change, which was not made" in error_line(err)
    assert path.read_text() == before

    # No stack to reach: the change is made, and said to be unrecorded.
    def down(request: httpx.Request) -> Any:
        raise httpx.ConnectError("refused", request=request)

    stack.on("POST", "registry", "/audit/tokens", down)
    code, out, err = conveyor(capsys, "token", "revoke", "ci", "--file", str(path), "-r", "left")
    assert code == 0 and "not recorded in the audit log: no stack at registry.test" in err
    assert "ci" not in path.read_text()
    code, _, err = conveyor(
        capsys, "token", "issue", "ci", "--role", "app", "--file", str(path), "--no-audit"
    )
    assert code == 0 and "not recorded in the audit log (--no-audit)" in err
    assert len(recorded) == 1
