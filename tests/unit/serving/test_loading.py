"""Each alias converges, in the background, on the newest version of its history that loads."""

from __future__ import annotations

import asyncio

from conveyor_contracts.events import AliasMoved, ModelLoadFailed
from conveyor_runtime import RegistryUnavailable
from conveyor_serving.domain.aliases import AliasHistory
from conveyor_serving.domain.predictor import CHAMPION, LoadedModel, Predictor
from conveyor_serving.loading import ModelLoader
from tests.support import until


def test_an_alias_history_orders_versions_by_their_latest_move():
    h = AliasHistory()
    assert h.newest is None and h.candidates() == []
    for v in (1, 2, 1, 3):
        h.moved(v, f"sha{v}")
    assert h.newest == 3 and h.candidates() == [3, 1, 2]
    assert h.candidates(broken={3}) == [1, 2]
    for v in (1, 3):  # a redelivered tail of the changelog changes nothing
        h.moved(v, f"sha{v}")
    assert h.candidates() == [3, 1, 2] and h.sha256(2) == "sha2"


def _move(version: int, alias: str = CHAMPION, project: str = "p") -> AliasMoved:
    return AliasMoved(
        project=project,
        alias=alias,
        from_version=None,
        to_version=version,
        sha256=f"sha{version}",
        actor="t",
        reason="t",
    )


class Registry:
    """Versions as `fetch` sees them: a model, errors to raise first (`errors`, in turn) or
    always (`broken`), or a gate to wait on first."""

    def __init__(self) -> None:
        self.errors: dict[int, list[Exception]] = {}
        self.broken: dict[int, Exception] = {}
        self.gates: dict[int, asyncio.Event] = {}
        self.fetched: list[int] = []
        self.announced: list[ModelLoadFailed] = []

    async def fetch(self, project: str, version: int, sha256: str) -> LoadedModel:
        self.fetched.append(version)
        if version in self.gates:
            await self.gates[version].wait()
        if version in self.broken:
            raise self.broken[version]
        if self.errors.get(version):
            raise self.errors[version].pop(0)
        return LoadedModel(project, version, sha256, ["x"], ["a", "b"], session=None)  # type: ignore[arg-type]

    async def announce(self, failure: ModelLoadFailed) -> None:
        self.announced.append(failure)


def _loader(registry: Registry) -> tuple[ModelLoader, Predictor]:
    predictor = Predictor()
    loader = ModelLoader(predictor, registry.fetch, registry.announce, retry_s=0.01)
    return loader, predictor


async def test_a_version_that_does_not_load_leaves_the_one_before_serving():
    registry = Registry()
    registry.broken[2] = ValueError("garbage " + "x" * 1000)
    loader, predictor = _loader(registry)
    loader.moved([_move(1)])
    await loader.settle(5)
    assert predictor.current("p", CHAMPION) == 1
    loader.moved([_move(2)])
    await until(lambda: loader.failed(), 5, "v2 marked failed")
    assert predictor.current("p", CHAMPION) == 1
    failed = loader.failed()[("p", CHAMPION)]
    assert failed["version"] == 2 and failed["reason"].startswith("ValueError: garbage")
    assert len(failed["reason"]) <= 500
    # Moved to it again, and as the challenger: not fetched again; reported once per alias.
    loader.moved([_move(2), _move(2, "challenger")])
    await until(lambda: len(registry.announced) == 2, 5, "two reports")
    assert [(f.version, f.alias) for f in registry.announced] == [
        (2, CHAMPION),
        (2, "challenger"),
    ]
    assert registry.fetched.count(2) == 1 and predictor.current("p", "challenger") is None
    # A newer version that loads clears the failure.
    loader.moved([_move(3)])
    await until(lambda: predictor.current("p", CHAMPION) == 3, 5, "v3 loaded")
    assert ("p", CHAMPION) not in loader.failed()
    await loader.close()


async def test_after_a_restart_a_broken_newest_falls_back_at_once():
    registry = Registry()
    registry.broken[3] = ValueError("garbage")
    registry.broken[2] = KeyError("signature")
    loader, predictor = _loader(registry)
    loader.moved([_move(1), _move(2), _move(3), _move(5, project="q")])
    await asyncio.wait_for(loader.settle(30), 5)
    assert predictor.current("p", CHAMPION) == 1 and predictor.current("q", CHAMPION) == 5
    assert registry.fetched.count(3) == registry.fetched.count(2) == 1
    await loader.close()


async def test_an_unavailable_registry_is_retried_and_a_newer_move_supersedes():
    registry = Registry()
    registry.errors[1] = [RegistryUnavailable("503")] * 3
    loader, predictor = _loader(registry)
    loader.moved([_move(1)])
    await until(lambda: predictor.current("p", CHAMPION) == 1, 5, "v1 after retries")
    assert registry.fetched.count(1) == 4 and registry.announced == []  # 3 refusals, then it

    # Start-up stops waiting for an alias at its timeout while the registry stays away.
    registry.broken[4] = RegistryUnavailable("down")
    loader.moved([_move(4, project="r")])
    await asyncio.wait_for(loader.settle(0.2), 5)
    assert predictor.current("r", CHAMPION) is None and loader.failed() == {}
    assert registry.fetched.count(4) >= 2 and registry.announced == []

    # v2 is slow to load; v3 arrives meanwhile: v3 serves, and v2 never does.
    registry.gates[2] = asyncio.Event()
    loader.moved([_move(2)])
    await until(lambda: 2 in registry.fetched, 5, "v2 being fetched")
    loader.moved([_move(3)])
    await until(lambda: predictor.current("p", CHAMPION) == 3, 5, "v3 loaded")
    registry.gates[2].set()
    for _ in range(5):  # turns of the loop in which a v2 load that survived would swap
        await asyncio.sleep(0)
    assert predictor.current("p", CHAMPION) == 3
    await loader.close()
