"""onnxruntime sessions."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort


class OnnxSession:
    def __init__(self, model: bytes) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the event loop's thread is the unit of parallelism
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.n_inputs = int(self._session.get_inputs()[0].shape[1])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        label, probabilities = self._session.run(["label", "probabilities"], {"input": x})
        return np.asarray(label), np.asarray(probabilities)

    @classmethod
    async def load(cls, model: bytes) -> OnnxSession:
        """Load and warm up off the event loop, so serving keeps answering meanwhile."""

        def _load() -> OnnxSession:
            session = cls(model)
            session.predict(np.zeros((1, session.n_inputs), dtype=np.float32))
            return session

        return await asyncio.to_thread(_load)
