"""A/B: serving's drain under two revisions of the code, pair by pair, on one stack.

This host's speed drifts within minutes (the same step timed in place gave 1.0 and 2.1 µs a
record in two drains minutes apart), so a change worth a few per cent cannot be told from the
drift by two runs of `bench/serving.py`. Here serving runs from revision A and from revision B
by turns — the same broker, registry, model and requests; each pair's order alternates (AB, BA,
…) so a drift within a pair falls on each side as often — and each pair gives the ratio of B to
A: in CPU time a prediction (serving's own, the figure a change moves) and in predictions a
second (what the ceiling's ratio is made of). The medians of the pairs' ratios are the result.

Each revision runs from a git worktree of it, its `libs/*/src` and `services/*/src` first on
the service's PYTHONPATH (ahead of the workspace's editable installs); `.` is the working tree
as it is. Both must share the dependencies installed in the environment.

    uv run python bench/ab.py A_REV B_REV [--pairs 6] [--n 150000]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import Drain, bench_stack, say
from serving import champion, kafka_throughput, requests, stop_serving

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A tree of `rev` (the working tree itself for `.`), removed afterwards."""
    if rev == ".":
        yield REPO
        return
    parent = Path(tempfile.mkdtemp(prefix="conveyor-ab-"))
    tree = parent / "tree"
    git = ["git", "-C", str(REPO)]
    subprocess.run([*git, "worktree", "add", "--detach", str(tree), rev], check=True)
    try:
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=True)
        shutil.rmtree(parent, ignore_errors=True)


def pythonpath(tree: Path) -> str:
    sources = sorted(tree.glob("libs/*/src")) + sorted(tree.glob("services/*/src"))
    return os.pathsep.join(str(s) for s in sources)


async def main(args: argparse.Namespace) -> dict:
    with checkout(args.a) as tree_a, checkout(args.b) as tree_b, bench_stack() as bench:
        project, vectors = await champion(bench)
        trees = {"A": tree_a, "B": tree_b}
        cpu: list[float] = []
        rate: list[float] = []
        for pair in range(args.pairs):
            order = ("A", "B") if pair % 2 == 0 else ("B", "A")
            drained: dict[str, Drain] = {}
            for side in order:
                prefix = f"ab{pair}{side}"
                say(f"pair {pair + 1} of {args.pairs}, {side} …")
                messages = requests(project, vectors, args.n, prefix)
                drained[side] = await kafka_throughput(
                    bench, project, messages, prefix, PYTHONPATH=pythonpath(trees[side])
                )
                stop_serving(bench)
            cpu.append(drained["B"].cpu_us / drained["A"].cpu_us)
            rate.append(drained["B"].per_s / drained["A"].per_s)
            say(
                f"  B / A: CPU a prediction {cpu[-1]:.3f}, predictions/s {rate[-1]:.3f} "
                f"(A {drained['A'].per_s:,.0f}/s at {drained['A'].cpu_us:.1f} µs, "
                f"B {drained['B'].per_s:,.0f}/s at {drained['B'].cpu_us:.1f} µs)"
            )
    say(
        f"B / A by the median of {args.pairs} pairs: CPU a prediction {statistics.median(cpu):.3f} "
        f"({min(cpu):.3f} to {max(cpu):.3f}), predictions/s {statistics.median(rate):.3f} "
        f"({min(rate):.3f} to {max(rate):.3f})"
    )
    return {
        "a": args.a,
        "b": args.b,
        "cpu_ratio": round(statistics.median(cpu), 3),
        "cpu_ratios": [round(r, 3) for r in cpu],
        "rate_ratio": round(statistics.median(rate), 3),
        "rate_ratios": [round(r, 3) for r in rate],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="revision A (a git revision, or . for the working tree)")
    parser.add_argument("b", help="revision B")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of drains, A and B each")
    parser.add_argument("--n", type=int, default=150_000, help="requests a drain")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
