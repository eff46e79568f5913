"""The client's Kafka side faked at its seam: messages kept, answers given by the test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conveyor_client import _wire
from conveyor_client._kafka import Replies

Message = tuple[str | None, bytes, Mapping[str, str]]


class FakeKafka:
    """Keeps what the client sends; `answer(request, headers)` of each prediction request
    returns the answer to deliver to the reply topic, or None for none."""

    def __init__(self, answer: Callable[[dict[str, Any], Mapping[str, str]], Any] | None = None):
        self.sent: list[tuple[str, Message]] = []
        self.answer = answer
        self.reply = Replies({}, _config())

    async def send(self, topic: _wire.Topic, messages: Sequence[Message]) -> None:
        for message in messages:
            self.sent.append((topic.name, message))
            if self.answer is not None and topic is _wire.PREDICTIONS_REQUESTS:
                answer = self.answer(json.loads(message[1]), message[2])
                if answer is not None:
                    # Delivered from the loop, as the reader would, after the send returns.
                    value = json.dumps(answer).encode()
                    asyncio.get_running_loop().call_soon(self.reply._deliver, value)

    async def replies(self) -> Replies:
        return self.reply

    async def close(self) -> None:
        pass

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m[1]) for name, m in self.sent if name == topic]


def _config() -> Any:
    from conveyor_client.config import Config

    return Config(bootstrap_servers="fake:9092")
