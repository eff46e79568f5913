"""The client is usable without the workspace: its wheel, installed into a fresh virtual
environment with only its declared dependencies (at the versions the lock pins), imports,
answers and fails as documented, and finds none of the platform's own packages there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Run in the fresh environment: a registry stand-in on a free loopback port, and the client
# against it from synchronous and asyncio code.
SCRIPT = r"""
import asyncio, importlib.util, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import conveyor_client
from conveyor_client import AsyncClient, Client, NotFound, Unauthorized

class Registry(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer t0ken":
            status, body = 401, {"detail": "unknown token"}
        elif self.path == "/projects":
            status, body = 200, [{"project": "fraud", "project_version": 1}]
        else:
            status, body = 404, {"detail": f"unknown project {self.path.split('/')[2]!r}"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"
with Client(services={"registry": url}, token="t0ken") as conveyor:
    assert conveyor.projects() == [{"project": "fraud", "project_version": 1}]
    try:
        conveyor.aliases("ghost")
    except NotFound as exc:
        assert exc.reason == "unknown project 'ghost'", exc
    else:
        raise AssertionError("no NotFound")

async def main():
    async with AsyncClient(services={"registry": url}, token="wrong") as conveyor:
        try:
            await conveyor.projects()
        except Unauthorized as exc:
            return exc.status

assert asyncio.run(main()) == 401
assert resources.files("conveyor_client").joinpath("py.typed").is_file()
present = [m for m in ("conveyor_contracts", "conveyor_runtime", "pydantic", "fastapi")
           if importlib.util.find_spec(m)]
assert present == [], present
print("ok", conveyor_client.__file__)
"""


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "uv" / "bin" / "uv")
    assert Path(found).exists(), "uv is not installed (make sync installs it)"
    return found


def _run(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_and_works_in_a_fresh_environment(tmp_path):
    uv = _uv()
    _run(uv, "build", "--package", "conveyor-client", "--wheel", "-o", str(tmp_path), cwd=REPO)
    wheels = list(tmp_path.glob("conveyor_client-*.whl"))
    assert len(wheels) == 1
    # The versions the workspace is tested with: the lock's, of the client's dependencies only.
    pins = _run(
        uv,
        "export",
        "--package",
        "conveyor-client",
        "--frozen",
        "--no-hashes",
        "--no-emit-project",
        "--no-dev",
        cwd=REPO,
    )
    (tmp_path / "pins.txt").write_text(pins)
    _run(uv, "venv", "--python", sys.executable, str(tmp_path / "venv"), cwd=tmp_path)
    python = str(tmp_path / "venv" / "bin" / "python")
    _run(uv, "pip", "install", "--python", python, "-c", "pins.txt", str(wheels[0]), cwd=tmp_path)
    installed = _run(uv, "pip", "list", "--python", python, "--format", "freeze", cwd=tmp_path)
    names = {line.split("==")[0] for line in installed.split()}
    assert {"conveyor-client", "httpx", "aiokafka"} <= names
    assert not {n for n in names if n.startswith("conveyor-") and n != "conveyor-client"}
    assert "pydantic" not in names
    out = _run(python, "-I", "-c", SCRIPT, cwd=tmp_path)
    assert out.startswith("ok ") and str(tmp_path / "venv") in out
