"""The Open Inference Protocol's routes in the service's OpenAPI document
(``serving.openapi.service_document`` adds them).

An infer body is described as precisely as JSON Schema can state what the service takes:
every input once, one row (``shape`` ``[1]`` or ``[1, 1]``, data flat or nested), values typed
as ``/predict``'s record. What JSON Schema cannot state (the inputs in another order, many rows
with a shape matching the data, the binary tensor extension) is in the descriptions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from inference.contract import Contract
from serving.openapi import JSON, answer, column_schemas, error_answers, ref, shed_answer
from serving.routes import (
    V2,
    V2_INFER_SUFFIX,
    V2_LIVE,
    V2_MODEL,
    V2_MODEL_VERSION,
    V2_READY,
    V2_READY_SUFFIX,
)
from serving.v2 import KNOWN_DATATYPES, model_metadata

TAG = "Open Inference Protocol (KServe V2)"
NAME = {"name": "name", "in": "path", "required": True, "description": "the model's name"}
VERSION = {"name": "version", "in": "path", "required": True, "description": "its version"}
OBJECT = {"type": ["object", "null"]}  # null: unset, as MLServer's types send it


def not_found() -> dict[str, Any]:
    """A 404: this service's for a model it does not serve; the router's (text) for a path
    no route matches (a name holding a slash or a line break)."""
    return {
        "description": "no such model here",
        "content": {JSON: {"schema": ref("Error")}, "text/plain": {"schema": {"type": "string"}}},
    }


def _get(description: str, body: dict[str, Any], params: list[dict[str, Any]]) -> dict:
    responses = {"200": answer(description, body)}
    if params:
        responses["404"] = not_found()
    operation = {"tags": [TAG], "description": description, "responses": responses}
    return {"get": {**operation, **({"parameters": params} if params else {})}}


def input_tensor(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """One input of one row: ``value`` is the column's schema."""
    nested = {"type": "array", "prefixItems": [value], "minItems": 1, "maxItems": 1}
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"const": name},
            "datatype": {"enum": list(KNOWN_DATATYPES)},
            "shape": {"enum": [[1], [1, 1]]},
            "data": {
                "type": "array",
                "prefixItems": [{"anyOf": [value, nested]}],
                "minItems": 1,
                "maxItems": 1,
            },
            # binary_data_size: the binary extension, not a JSON body
            "parameters": {**OBJECT, "properties": {"binary_data_size": False}},
        },
    }


def infer_request(contract: Contract, record: type[BaseModel], max_rows: int) -> dict:
    columns = column_schemas(contract, record)
    tensors = [input_tensor(c.name, columns[c.name]) for c in contract.columns]
    return {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "title": "InferenceRequest",
                    "description": "An input per column of the model (by name, in any order; "
                    f"1 to {max_rows} rows: shape [n] or [n, 1] and n values, flat or nested; "
                    "any integer or float datatype where the column is a number, BYTES for "
                    "text, null where a column is optional). With the binary tensor "
                    "extension, the header `Inference-Header-Content-Length` gives this "
                    "JSON's length and each input's `parameters.binary_data_size` its "
                    "bytes after it (BYTES: 4-byte little-endian length, then UTF-8).",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": ["string", "null"]},
                        "parameters": OBJECT,
                        "inputs": {
                            "type": "array",
                            "prefixItems": tensors,
                            "minItems": len(tensors),
                            "maxItems": len(tensors),
                        },
                        "outputs": {
                            "type": ["array", "null"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"enum": output_names(contract)},
                                    "parameters": OBJECT,
                                },
                            },
                        },
                    },
                }
            }
        },
    }


def output_names(contract: Contract) -> list[str]:
    outputs = model_metadata(contract, "", "", contract.classes)["outputs"]
    return [t["name"] for t in outputs]


def infer_answer() -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": OBJECT,
        },
    }
    body = {
        "type": "object",
        "title": "InferenceResponse",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": tensor},
        },
    }
    return {
        "description": "the outputs asked for (all without `outputs`): JSON, or the binary "
        "tensor extension where an output's `binary_data` (or the request's "
        "`binary_data_output`) asks for it",
        "content": {
            JSON: {"schema": body},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


def infer_operation(contract: Contract, record: type[BaseModel], max_rows: int, params: list):
    error = ref("Error")
    return {
        "post": {
            "tags": [TAG],
            "description": "Predict, as /invocations does (one model call per request; canary "
            "and shadow apply to the live model's path without a version).",
            "parameters": params,
            "requestBody": infer_request(contract, record, max_rows),
            "responses": {
                "200": infer_answer(),
                **error_answers("Error", overload=shed_answer()),
                "400": answer("invalid input: the input and the row are named", error),
                "404": not_found(),
            },
        }
    }


def v2_paths(
    contract: Contract, record: type[BaseModel], tag: str, max_rows: int
) -> dict[str, dict[str, Any]]:
    """The protocol's path items (``serving.routes.v2_app_routes``) for the model of ``tag``."""
    name, _, version = tag.partition(":")
    metadata = model_metadata(contract, name, version, contract.classes)
    names = [{**NAME, "schema": {"type": "string", "enum": [name]}}]
    versions = [*names, {**VERSION, "schema": {"type": "string", "enum": [version]}}]
    health = {"type": "object", "additionalProperties": {"type": "boolean"}}
    ready = {"type": "object", "properties": {"name": {"type": "string"}, "ready": {}}}
    server = {"type": "object", "required": ["name", "version", "extensions"]}
    paths = {
        V2: _get("Server metadata: name, version, extensions.", server, []),
        V2_LIVE: _get("Liveness.", health, []),
        V2_READY: _get("Readiness: the model is loaded.", health, []),
    }
    for prefix, params in ((V2_MODEL, names), (V2_MODEL_VERSION, versions)):
        paths[prefix] = _get(
            "Model metadata: an input per column, the outputs.",
            {"type": "object", "examples": [metadata]},
            params,
        )
        paths[f"{prefix}{V2_READY_SUFFIX}"] = _get("The model is ready.", ready, params)
        paths[f"{prefix}{V2_INFER_SUFFIX}"] = infer_operation(contract, record, max_rows, params)
    return paths
