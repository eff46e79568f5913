"""Open Inference Protocol v2 over HTTP: a thin edge over the same predictor."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from ..domain.predictor import InvalidInput, LoadedModel, NoModel, Predictor

INPUT = "input"


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES", "FP32", "INT64"]
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def decode(request: InferenceRequest, model: LoadedModel) -> np.ndarray:
    """The request's `input` tensor as a float32 matrix, or InvalidInput saying why not."""
    tensors = {i.name: i for i in request.inputs}
    if INPUT not in tensors or len(tensors) != 1:
        raise InvalidInput(f"expected exactly one input named {INPUT!r}, got {sorted(tensors)}")
    tensor = tensors[INPUT]
    if tensor.datatype not in ("FP32", "FP64"):
        raise InvalidInput(f"input datatype {tensor.datatype} is not FP32")
    n = len(model.feature_names)
    if len(tensor.shape) != 2 or tensor.shape[1] != n or tensor.shape[0] < 1:
        raise InvalidInput(f"input shape {tensor.shape} is not [rows, {n}]")
    flat = _flatten(tensor.data)
    if len(flat) != tensor.shape[0] * n:
        raise InvalidInput(f"{len(flat)} values for shape {tensor.shape}")
    try:
        x = np.asarray(flat, dtype=np.float32).reshape(tensor.shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input data is not numeric: {exc}") from exc
    if not np.isfinite(x).all():
        raise InvalidInput("input data must be finite numbers")
    return x


def metadata(model: LoadedModel) -> dict[str, Any]:
    n = len(model.feature_names)
    return {
        "name": model.project,
        "versions": [str(model.version)],
        "platform": "onnxruntime",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, n]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
        ],
        "parameters": {
            "feature_names": model.feature_names,
            "classes": model.classes,
            "sha256": model.sha256,
        },
    }


def router(predictor: Predictor, is_ready: Any) -> APIRouter:
    api = APIRouter(tags=["inference (Open Inference Protocol v2)"])

    def _model(name: str, version: str | None = None) -> LoadedModel:
        try:
            return predictor.model(name, int(version) if version is not None else None)
        except ValueError as exc:
            raise HTTPException(400, detail=f"version {version!r} is not a number") from exc
        except NoModel as exc:
            raise HTTPException(404, detail=str(exc)) from exc

    @api.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(response: Response) -> dict[str, bool]:
        ok = bool(is_ready())
        response.status_code = 200 if ok else 503
        return {"ready": ok}

    @api.get("/v2")
    async def server() -> dict[str, Any]:
        return {"name": "conveyor-serving", "version": "0.1.0", "extensions": []}

    @api.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        return metadata(_model(name))

    @api.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(_model(name, version))

    @api.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict[str, Any]:
        model = _model(name)
        return {"name": name, "ready": True, "version": str(model.version)}

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        _model(name, version)
        return {"name": name, "ready": True}

    async def _infer(
        name: str, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        model = _model(name, version)
        try:
            x = decode(request, model)
            labels, probs = model.predict(x)
        except InvalidInput as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        k = len(model.classes)
        return InferenceResponse(
            model_name=name,
            model_version=str(model.version),
            id=request.id,
            outputs=[
                ResponseOutput(name="label", shape=[len(labels)], datatype="BYTES", data=labels),
                ResponseOutput(
                    name="probabilities",
                    shape=[len(labels), k],
                    datatype="FP32",
                    data=[row[c] for row in probs for c in model.classes],
                ),
            ],
        )

    @api.post("/v2/models/{name}/infer", response_model=InferenceResponse)
    async def infer(name: str, request: InferenceRequest) -> InferenceResponse:
        return await _infer(name, None, request)

    @api.post("/v2/models/{name}/versions/{version}/infer", response_model=InferenceResponse)
    async def infer_version(
        name: str, version: str, request: InferenceRequest
    ) -> InferenceResponse:
        return await _infer(name, version, request)

    @api.get("/models", tags=["serving"])
    async def loaded() -> dict[str, Any]:
        """What each project is served with now."""
        return predictor.loaded()

    return api
