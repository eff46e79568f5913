"""A Dockerfile's build stage replayed on this machine, without a Docker engine.

The Dockerfile is read by dockerfile-parse; the instructions of one stage are carried out in
order into a directory that stands for the image's root: ARG and ENV set the environment, WORKDIR
the directory, COPY copies from the build context (the repository, less what .dockerignore
excludes) and RUN runs the same command with `sh -c`, its `--mount` options dropped. What differs
from an engine's build, and why it does not change what is checked:
- the base image's Python is this machine's (the same minor version: the lock pins it);
- `COPY --from=<stage>` of a binary takes this machine's binary of the same name (uv: the
  workspace's), as the image's stages are not pulled;
- uv's cache is this machine's own instead of a cache mount: the same wheels, from the same lock.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


_PASSED = frozenset(
    {"UV_CACHE_DIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_NATIVE_TLS"}
    | {"UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX"}
)


class ReplayError(RuntimeError):
    pass


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` as the builder expands them in COPY, ENV, WORKDIR (unset: empty)."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def stage(dockerfile: Path, name: str) -> list[dict[str, str]]:
    """The instructions of the stage `FROM ... AS name`, in order (comments left out). An ARG
    declared before the first FROM is not among them: a stage sees it only by declaring it."""
    instructions: list[dict[str, str]] = []
    inside = False
    for item in DockerfileParser(path=str(dockerfile)).structure:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            inside = len(words) == 3 and words[1].upper() == "AS" and words[2] == name
        elif inside and item["instruction"] != "COMMENT":
            instructions.append({"instruction": item["instruction"], "value": item["value"]})
    if not instructions:
        raise ReplayError(f"{dockerfile} has no stage named {name}")
    return instructions


def instruction(dockerfile: Path, name: str) -> str:
    """The value of the last `name` instruction (HEALTHCHECK, CMD, …): the final stage's."""
    structure = DockerfileParser(path=str(dockerfile)).structure
    values = [i["value"] for i in structure if i["instruction"] == name]
    if not values:
        raise ReplayError(f"{dockerfile} has no {name}")
    return values[-1]


def _ignore_patterns(context: Path) -> list[re.Pattern[str]]:
    path = context / ".dockerignore"
    patterns = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ReplayError(f".dockerignore exceptions are not replayed: {line}")
        regex = ""
        for token in re.split(r"(\*\*/|\*|\?)", line.strip("/")):
            regex += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append(re.compile(regex + "$"))
    return patterns


@dataclass
class Replay:
    """One build: `root` stands for the image's `/`, `context` is what `docker build` is given."""

    context: Path
    root: Path
    build_args: dict[str, str]
    tools: dict[str, Path]  # `COPY --from=<stage> /<name>` → this machine's binary
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ignored = _ignore_patterns(self.context)
        (self.root / "bin").mkdir(parents=True, exist_ok=True)

    def host(self, path: str) -> Path:
        """Where an absolute path of the image is on this machine."""
        absolute = path if path.startswith("/") else f"{self.workdir.rstrip('/')}/{path}"
        return self.root / absolute.lstrip("/")

    def ignored(self, relative: str) -> bool:
        parts = relative.split("/")
        return any(
            p.match("/".join(parts[:n])) for p in self._ignored for n in range(1, len(parts) + 1)
        )

    def run_stage(self, instructions: list[dict[str, str]]) -> None:
        for item in instructions:
            getattr(self, "_" + item["instruction"].lower())(item["value"])

    def _arg(self, value: str) -> None:
        name, _, default = value.partition("=")
        self.env[name] = self.build_args.get(name, default)

    def _env(self, value: str) -> None:
        for pair in shlex.split(value):
            name, _, raw = pair.partition("=")
            self.env[name] = substitute(raw, self.env)

    def _workdir(self, value: str) -> None:
        self.workdir = substitute(value, self.env)
        self.host(self.workdir).mkdir(parents=True, exist_ok=True)

    def _label(self, value: str) -> None:
        pass

    def _copy(self, value: str) -> None:
        words = [substitute(w, self.env) for w in shlex.split(value)]
        options = [w for w in words if w.startswith("--")]
        *sources, dest = [w for w in words if not w.startswith("--")]
        stage_from = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        if stage_from is not None:
            (source,) = sources
            binary = self.tools[Path(source).name]
            target = self.host(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(binary)
            self.log.append(f"COPY --from={stage_from} {source} {dest}: {binary}")
            return
        into_directory = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if any(c in source for c in "*?["):
                raise ReplayError(f"wildcards are not replayed: COPY {value}")
            origin = self.context / source
            if not origin.exists() or self.ignored(source.rstrip("/")):
                raise ReplayError(f"COPY {value}: {source} is not in the build context")
            target = self.host(dest)
            if origin.is_dir():
                self._copy_tree(origin, target, source.rstrip("/"))
            else:
                if into_directory:
                    target = target / origin.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
        self.log.append(f"COPY {value}")

    def _copy_tree(self, origin: Path, target: Path, relative: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for child in origin.iterdir():
            child_relative = f"{relative}/{child.name}"
            if self.ignored(child_relative):
                continue
            if child.is_dir() and not child.is_symlink():
                self._copy_tree(child, target / child.name, child_relative)
            else:
                shutil.copy2(child, target / child.name, follow_symlinks=False)

    def _run(self, value: str) -> None:
        command = value
        while command.startswith("--"):
            option, _, command = command.partition(" ")
            if not option.startswith(("--mount=type=cache", "--mount=type=secret")):
                raise ReplayError(f"RUN option {option} is not replayed")
            command = command.lstrip()
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
        }
        # The machine's interpreter and uv cache stand for the image's (see the docstring).
        env["UV_PYTHON"] = os.environ.get("UV_PYTHON") or str(
            Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        )
        # And the machine's network: its proxies and certificates (uv fetches the build backend
        # of the workspace's own packages from the index, as the image's build does).
        for name, value in os.environ.items():
            if name in _PASSED or name.lower().endswith("_proxy"):
                env[name] = value
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=self.host(self.workdir),
            env=env | self.env,
            capture_output=True,
            text=True,
        )
        self.log.append(f"RUN {command}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise ReplayError(
                f"RUN {command}\nexited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
