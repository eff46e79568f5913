"""Open Inference Protocol v2 over HTTP: a thin edge over the same predictor."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from conveyor_auth import Action, Principal, caller
from conveyor_bus import tracing

from ..domain.predictor import CHAMPION, InvalidInput, LoadedModel, NoModel, Predictor

INPUT = "input"


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] = Field(default_factory=list)
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


def decode(request: InferenceRequest, model: LoadedModel, binary: bytes = b"") -> np.ndarray:
    """The request's `input` tensor as a float32 matrix, or InvalidInput saying why not.

    The tensor's values are in its JSON `data`, or, with the binary data extension, in the
    `binary_data_size` bytes that follow the JSON header."""
    tensors = {i.name: i for i in request.inputs}
    if INPUT not in tensors or len(tensors) != 1:
        raise InvalidInput(f"expected exactly one input named {INPUT!r}, got {sorted(tensors)}")
    tensor = tensors[INPUT]
    if tensor.datatype not in ("FP32", "FP64"):
        raise InvalidInput(f"input datatype {tensor.datatype} is not FP32")
    n = len(model.feature_names)
    if len(tensor.shape) != 2 or tensor.shape[1] != n or tensor.shape[0] < 1:
        raise InvalidInput(f"input shape {tensor.shape} is not [rows, {n}]")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        dtype = np.float32 if tensor.datatype == "FP32" else np.float64
        if not isinstance(size, int) or size != len(binary) or size % dtype().itemsize:
            raise InvalidInput(f"binary_data_size {size} does not match {len(binary)} bytes")
        flat: Any = np.frombuffer(binary, dtype=dtype)
    else:
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


def served(
    predictor: Predictor, failed: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    out = predictor.loaded()
    for (project, alias), failure in failed.items():
        entry = out.setdefault(project, {})
        if alias == CHAMPION:  # the champion's fields are the project's own
            entry["failed"] = failure
        else:
            entry.setdefault(alias, {})["failed"] = failure
    return out


class OipError(BaseModel):
    """An Open Inference Protocol error."""

    error: str


def _oip(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "The request (or the version in its path) is not one the model can take.",
        404: "No such model, or no such version of it loaded.",
    }
    return {code: {"model": OipError, "description": reasons[code]} for code in codes}


class Refused(Exception):
    """An Open Inference Protocol error: answered as `{"error": reason}` with its status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _errors_as_oip(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(endpoint)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await endpoint(*args, **kwargs)
        except Refused as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    return wrapped


HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary data extension


async def read_request(request: Request) -> tuple[InferenceRequest, bytes]:
    """The JSON inference request and any binary tensor data after it. Clients do not all send
    `content-type: application/json`, so the body is read as the protocol defines it."""
    body = await request.body()
    length = request.headers.get(HEADER_LENGTH)
    try:
        split = int(length) if length is not None else len(body)
        return InferenceRequest.model_validate_json(body[:split]), body[split:]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise Refused(400, f"invalid inference request: {exc}") from exc


Submitter = Annotated[Principal, caller(Action.SUBMIT)]


def router(
    predictor: Predictor,
    is_ready: Callable[[], bool],
    failed: Callable[[], Mapping[tuple[str, str], dict[str, Any]]] = dict,
) -> APIRouter:
    api = APIRouter(tags=["inference (Open Inference Protocol v2)"])
    body_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": InferenceRequest.model_json_schema()}},
        }
    }

    def _model(name: str, version: str | None = None) -> LoadedModel:
        try:
            return predictor.model(name, int(version) if version is not None else None)
        except ValueError as exc:
            raise Refused(400, f"version {version!r} is not a number") from exc
        except NoModel as exc:
            raise Refused(404, str(exc)) from exc

    @api.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get(
        "/v2/health/ready",
        responses={503: {"description": "Not ready: models still loading, or none loads."}},
    )
    async def ready(response: Response) -> dict[str, bool]:
        ok = bool(is_ready())
        response.status_code = 200 if ok else 503
        return {"ready": ok}

    @api.get("/v2")
    async def server() -> dict[str, Any]:
        return {
            "name": "conveyor-serving",
            "version": "0.1.0",
            "extensions": ["binary_tensor_data"],
        }

    @api.get("/v2/models/{name}", responses=_oip(404))
    @_errors_as_oip
    async def model_metadata(name: str) -> dict[str, Any]:
        return metadata(_model(name))

    @api.get("/v2/models/{name}/versions/{version}", responses=_oip(400, 404))
    @_errors_as_oip
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(_model(name, version))

    @api.get("/v2/models/{name}/ready", responses=_oip(404))
    @_errors_as_oip
    async def model_ready(name: str) -> dict[str, Any]:
        model = _model(name)
        return {"name": name, "ready": True, "version": str(model.version)}

    @api.get("/v2/models/{name}/versions/{version}/ready", responses=_oip(400, 404))
    @_errors_as_oip
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        _model(name, version)
        return {"name": name, "ready": True}

    async def _infer(name: str, version: str | None, request: Request) -> InferenceResponse:
        model = _model(name, version)
        body, binary = await read_request(request)
        try:
            x = decode(body, model, binary)
            with tracing.span("infer", attributes={"conveyor.model": f"{name} v{model.version}"}):
                labels, probs = model.predict(x)
        except InvalidInput as exc:
            raise Refused(400, str(exc)) from exc
        k = len(model.classes)
        return InferenceResponse(
            model_name=name,
            model_version=str(model.version),
            id=body.id,
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

    @api.post(
        "/v2/models/{name}/infer",
        response_model=InferenceResponse,
        responses=_oip(400, 404),
        openapi_extra=body_schema,
    )
    @_errors_as_oip
    async def infer(name: str, request: Request, _who: Submitter) -> InferenceResponse:
        return await _infer(name, None, request)

    @api.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=InferenceResponse,
        responses=_oip(400, 404),
        openapi_extra=body_schema,
    )
    @_errors_as_oip
    async def infer_version(
        name: str, version: str, request: Request, _who: Submitter
    ) -> InferenceResponse:
        return await _infer(name, version, request)

    @api.get("/models", tags=["serving"])
    async def loaded() -> dict[str, Any]:
        """What each project is served with now, and per alias the newest version that did not
        load (`failed`: its version and why), if that is what the alias points at."""
        return served(predictor, failed())

    return api
