"""Getting started's "Using it" (docs/getting-started.md), run as written: `conveyor up` in one
folder, then the page's own command lines (read from the page, not copied here) and its Python
example, with nothing else than the CLI and the client library — load data, train and wait,
predict with raw fields over Kafka and HTTP, send feedback — and the labels are seen joined to
their predictions. Then a service stopped under `conveyor up`: `conveyor status` fails while it
does not answer; killed, it is restarted by `up`, and status counts the restart once it is back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor_cli import infra
from tests.e2e.support import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"


def _block(kind: str) -> str:
    found = re.search(rf"<!-- using-it: {kind} -->\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"{GUIDE.name} has no '{kind}' block under Using it"
    return found[1]


def _commands() -> list[list[str]]:
    """Each line of the page's CLI block as words, without its comment."""
    lines = [line.split("  #")[0].strip() for line in _block("cli").splitlines()]
    return [shlex.split(line) for line in lines if line]


class Terminal:
    """A second terminal in the folder where `conveyor up` runs: no CONVEYOR_* variables, no
    config file of the user's; the CLI finds the stack in ./.conveyor as a user's would."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def run(self, words: list[str]) -> str:
        assert words[:3] == ["uv", "run", "conveyor"], words
        args, into = words[3:], None
        if ">" in args:
            args, into = args[: args.index(">")], self.folder / args[args.index(">") + 1]
        done = subprocess.run(
            [sys.executable, "-m", "conveyor_cli.main", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stderr}{done.stdout}"
        if into is not None:
            into.write_text(done.stdout)
        return done.stdout


def _value(output: str, key: str) -> str:
    """A value of a `key  value` view."""
    found = re.search(rf"^{re.escape(key)}\s+(.+)$", output, re.M)
    assert found, f"no {key} in:\n{output}"
    return found[1].strip()


def test_the_readmes_using_it_runs_as_written(kafka, postgres, tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONVEYOR_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env |= {
        **kafka.client_env(),
        "DATABASE_URL": asyncio.run(infra.create_database(postgres.url, "using_it")),
        "XDG_CONFIG_HOME": str(tmp_path / "no-user-config"),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "conveyor_cli.main", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    # The second terminal: the broker and database the stack uses are not its business.
    terminal = Terminal(tmp_path, {k: v for k, v in env.items() if not k.startswith("KAFKA_")})
    try:
        state = tmp_path / ".conveyor" / "stack.json"
        until(lambda: state.exists() or up.poll() is not None, 120, "the stack")
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        until(lambda: _status_ok(terminal), 90, "every service healthy")

        outputs: dict[str, str] = {}
        request_id = ""
        for words in _commands():
            words = [request_id if w == "<request_id>" else w for w in words]
            out = terminal.run(words)
            command = words[3]
            outputs[
                command if command != "predict" else f"predict{'-http' * ('--http' in words)}"
            ] = out
            if command == "predict":
                assert _value(out, "label") in ("legit", "fraud")
                assert int(_value(out, "model_version")) >= 1
                request_id = request_id or _value(out, "request_id")

        assert len((tmp_path / "payments.csv").read_text().splitlines()) == 2001  # and a header
        assert _value(outputs["ingest"], "accepted") == "2000"
        assert _value(outputs["ingest"], "refused") == "0"
        assert _value(outputs["train"], "status") == "succeeded"
        assert _value(outputs["feedback"], "status") in ("recorded", "waiting")

        # The Python example, as an application runs it, in the same folder.
        done = subprocess.run(
            [sys.executable, "-c", _block("python")],
            cwd=tmp_path,
            env=terminal.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "accepted" in done.stdout and ("legit" in done.stdout or "fraud" in done.stdout)

        # Both labels joined their predictions (the CLI's and the library's).
        check = (
            "from conveyor_client import Client\n"
            "with Client() as c:\n"
            "    print(c.feedback_stats('fraud')['labels'])\n"
        )

        def joined() -> bool:
            out = subprocess.run(
                [sys.executable, "-c", check],
                cwd=tmp_path,
                env=terminal.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return out.returncode == 0 and int(out.stdout.strip() or 0) >= 2

        until(joined, 60, "both labels joined to their predictions")
        _killed_and_restarted(terminal, "feedback")
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output


def _status_ok(terminal: Terminal) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor_cli.main", "status"],
        cwd=terminal.folder,
        env=terminal.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode == 0


def _status(terminal: Terminal) -> tuple[int, dict[str, dict]]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor_cli.main", "status", "--json"],
        cwd=terminal.folder,
        env=terminal.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, {row["service"]: row for row in json.loads(done.stdout)}


def _killed_and_restarted(terminal: Terminal, service: str) -> None:
    code, rows = _status(terminal)
    assert code == 0 and all(r["restarts"] == 0 and r["status"] == "ready" for r in rows.values())
    assert rows["serving"]["models"]["projects"]["fraud"]["champion"] >= 1  # trained above
    assert all(entry["lag"] >= 0 for entry in rows["feedback"]["lag"])
    pid = rows[service]["process"]["pid"]
    # Stopped first, so the outage lasts until the kill: `conveyor up` restarts a dead service
    # within seconds, sooner than a status call may take on a busy machine.
    os.kill(pid, signal.SIGSTOP)
    try:
        code, rows = _status(terminal)
        assert code == 1 and rows[service]["status"] == "unreachable", rows[service]
    finally:
        os.kill(pid, signal.SIGKILL)

    def back() -> dict | None:
        code, rows = _status(terminal)
        return rows[service] if code == 0 else None

    row = until(back, 120, f"{service} restarted and ready")
    assert row["restarts"] == 1 and row["process"]["last_exit"] == -signal.SIGKILL
    assert row["process"]["pid"] != pid
