"""What an alias should serve: the versions it was moved to, newest first, minus the broken."""

from __future__ import annotations

from collections.abc import Container


class AliasHistory:
    """The versions one alias of one project was moved to, each with the sha256 its move
    announced, ordered by each version's latest move. An alias serves the newest of them that
    loads: the newest while it loads, else the one it pointed at before (the same after a restart,
    which replays the moves, as while running). Replaying moves already seen changes nothing, so
    a redelivered batch of the changelog is harmless."""

    __slots__ = ("_moves",)

    def __init__(self) -> None:
        self._moves: dict[int, str] = {}  # version → sha256, in order of latest move

    def moved(self, version: int, sha256: str) -> None:
        self._moves.pop(version, None)
        self._moves[version] = sha256

    @property
    def newest(self) -> int | None:
        return next(reversed(self._moves), None)

    def sha256(self, version: int) -> str:
        return self._moves[version]

    def candidates(self, broken: Container[int] = ()) -> list[int]:
        """The versions to try, best first: the newest, then each earlier one, without those
        known not to load."""
        return [v for v in reversed(self._moves) if v not in broken]
