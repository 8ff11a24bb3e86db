"""The Open Inference Protocol (KServe V2 REST) as plain functions: a request's body and
headers -> the model's input frame, the model's outputs -> the answer's body and headers, and
the model's metadata. No server needed (``serving.v2_routes`` serves them; the paths are
``serving.routes``').

What real clients send is taken: inputs by name in any order, shape ``[n]`` or ``[n, 1]``,
data flat or nested, any integer or float datatype where the column is a number (the
contract's checks decide, value by value, as on ``/invocations``), BYTES as strings, null
where a column is optional, parameters (``content_type`` and others) accepted and ignored
where unused, and the binary tensor extension (``Inference-Header-Content-Length``,
``binary_data_size``, length-prefixed BYTES) both ways.

Every value goes through ``inference.contract.validated_columns``, the checks ``/invocations``
uses: the same values give the same frame, and a bad one the same error, naming the column
(the input) and the row.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

from inference.contract import Contract, column_records, validated_columns
from inference.errors import InputError
from inference.strict_json import plain
from serving.protocol import load_json

HEADER_LENGTH = "inference-header-content-length"  # the binary tensor extension's header
EXTENSIONS = ["binary_tensor_data"]
PREDICTIONS, PROBABILITIES = "predictions", "probabilities"

# The datatype of each MLflow column type, as mlserver-mlflow maps a signature.
DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
# Fixed-size datatypes in the binary extension (little-endian, row-major).
BINARY_DTYPES = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
KNOWN_DATATYPES = (*BINARY_DTYPES, "BYTES")


@dataclass(frozen=True)
class ServedModel:
    """A model the protocol names: the BentoML tag's name and version, and which model of the
    service (``live`` or ``candidate``) answers for it."""

    name: str
    version: str
    role: str

    @classmethod
    def of(cls, tag: str, role: str) -> ServedModel:
        name, _, version = tag.partition(":")
        return cls(name, version, role)


# --- metadata ------------------------------------------------------------------------------


def label_datatype(classes: Sequence[Any] | None) -> str:
    """The datatype of a model's predictions: FP64 for a regressor, else its labels' type."""
    if not classes:
        return "FP64"
    if all(isinstance(c, bool | np.bool_) for c in classes):
        return "BOOL"
    if all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, int | float | np.number) for c in classes):
        return "FP64"
    return "BYTES"


def output_tensors(classes: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The outputs a model gives: its predictions, and a classifier's class probabilities
    (a column per class, in the order ``parameters.classes`` names them)."""
    outputs = [{"name": PREDICTIONS, "datatype": label_datatype(classes), "shape": [-1]}]
    if classes:
        outputs.append(
            {
                "name": PROBABILITIES,
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                "parameters": {"classes": [plain(c) for c in classes]},
            }
        )
    return outputs


def model_metadata(
    contract: Contract, name: str, version: str, classes: Sequence[Any] | None
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{version}]``: an input per column, shape ``[-1, 1]``,
    typed as mlserver-mlflow types a signature; the outputs named and typed."""
    inputs = []
    for col in contract.columns:
        datatype = DATATYPES[col.type]
        parameters = {"content_type": "str" if datatype == "BYTES" else "np"}
        if not col.required:
            parameters["optional"] = True
        inputs.append(
            {"name": col.name, "datatype": datatype, "shape": [-1, 1], "parameters": parameters}
        )
    return {
        "name": name,
        "versions": [version],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": output_tensors(classes if contract.task == "classification" else None),
        "parameters": {"content_type": "pd"},
    }


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": "tagserve", "version": version, "extensions": EXTENSIONS}


# --- requests -----------------------------------------------------------------------------


class InferRequest(NamedTuple):
    """A checked infer request: the model's input columns (checked, in the contract's order)
    and rows, the request's ``id`` (or None), and the outputs to answer, each with whether it
    is wanted in binary."""

    columns: dict[str, np.ndarray]
    rows: int
    request_id: str | None
    outputs: list[tuple[str, bool]]

    def frame(self) -> pd.DataFrame:
        """The model's input frame, as ``/invocations`` builds it."""
        import pandas as pd  # in a worker only: `bentoml serve` itself never needs pandas

        return pd.DataFrame(self.columns)

    def records(self) -> list[dict[str, Any]]:
        """The rows as records of Python values, as ``/predict``'s (no frame)."""
        return column_records(self.columns)


def split_body(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, bytes]:
    """The JSON header of a request and its binary tensors (empty without the extension)."""
    declared = headers.get(HEADER_LENGTH)
    if declared is None:
        return body, b""
    try:
        length = int(declared)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InputError(
            f"Inference-Header-Content-Length must be a whole number from 0 to the body's "
            f"length ({len(body)}), not {declared!r}"
        )
    return body[:length], body[length:]


def _object(holder: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    """``holder[key]``, a JSON object, or ``{}`` when absent or null (MLServer's types send
    their unset fields as null)."""
    if holder.get(key) is None:
        return {}
    if not isinstance(holder[key], dict):
        raise InputError(f"{what} must be a JSON object")
    return holder[key]


def parse_infer(
    body: bytes,
    headers: Mapping[str, str],
    contract: Contract,
    max_rows: int | None = None,
    output_names: Sequence[str] = (PREDICTIONS,),
) -> InferRequest:
    """An infer request (JSON, or with binary tensors) as the model's checked input columns.

    ``headers``: the request's, with lowercase names (Starlette's ``Headers`` are);
    ``output_names``: the outputs the model gives (:func:`output_tensors`).

    Raises:
        InputError: Not the protocol, or values the contract refuses (the input and the row).
    """
    head, binary = split_body(body, headers)
    if not head.strip():
        raise InputError('the body is empty: send an inference request, {"inputs": [...]}')
    payload = load_json(head)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InputError('the body must be a JSON object with "inputs": a list of tensors')
    request_id = payload.get("id")
    if request_id is not None and not _text(request_id):
        raise InputError('"id" must be a string (UTF-8 text)')
    parameters = _object(payload, "parameters", '"parameters"')
    columns, rows = input_columns(payload["inputs"], binary, contract, max_rows)
    checked = validated_columns(columns, rows, contract, max_rows)
    default_binary = bool(parameters.get("binary_data_output", False))
    wanted = requested_outputs(payload.get("outputs"), output_names, default_binary)
    return InferRequest(checked, rows, request_id, wanted)


def _text(value: Any) -> bool:
    """A string the answer can carry: lone surrogates (``"\\udb03"``) are not UTF-8."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def input_columns(
    tensors: list[Any], binary: bytes, contract: Contract, max_rows: int | None
) -> tuple[dict[str, Any], int]:
    """The tensors of a request as columns (name -> values) and their row count."""
    names = set(contract.features)
    columns: dict[str, Any] = {}
    rows: int | None = None
    offset = 0
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InputError(f"inputs[{index}] must be a tensor object with a name")
        name = tensor["name"]
        if name not in names:
            raise InputError(
                f"input {name!r} is not an input of the model (it takes {sorted(names)})"
            )
        if name in columns:
            raise InputError(f"input {name!r} appears more than once")
        count = tensor_rows(tensor, max_rows)
        if rows is not None and count != rows:
            raise InputError(f"input {name!r} has {count} rows, the inputs before it {rows}")
        rows = count
        size = _object(tensor, "parameters", f"input {name!r}: parameters").get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise InputError(f"input {name!r} has both data and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InputError(f"input {name!r}: binary_data_size must be a whole number")
            if offset + size > len(binary):
                raise InputError(
                    f"input {name!r}: binary_data_size {size} is beyond the body's binary "
                    f"data ({len(binary) - offset} bytes left)"
                )
            columns[name] = binary_values(name, tensor["datatype"], binary[offset : offset + size])
            offset += size
        else:
            columns[name] = json_values(name, tensor.get("data"))
        if len(columns[name]) != count:
            raise InputError(
                f"input {name!r}: shape {tensor['shape']} holds {count} values, "
                f"its data {len(columns[name])}"
            )
    if offset != len(binary):
        raise InputError(
            f"the body has {len(binary) - offset} bytes of binary data no input's "
            "binary_data_size accounts for"
        )
    absent = [name for name in contract.features if name not in columns]
    if absent:  # every input, as the metadata lists them: an optional one may hold nulls
        raise InputError(f"missing input(s): {', '.join(map(repr, absent))}")
    return columns, rows or 0


def tensor_rows(tensor: dict[str, Any], max_rows: int | None) -> int:
    """The rows of a tensor of shape ``[n]`` or ``[n, 1]``, with a known datatype."""
    name, shape, datatype = tensor["name"], tensor.get("shape"), tensor.get("datatype")
    if datatype not in KNOWN_DATATYPES:
        raise InputError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(KNOWN_DATATYPES)}"
        )
    whole = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not whole or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InputError(
            f"input {name!r}: shape must be [n] or [n, 1] (a value per row), not {shape!r}"
        )
    if max_rows is not None and shape[0] > max_rows:
        raise InputError(
            f"{shape[0]} rows is more than this service accepts in one request "
            f"({max_rows}, TAGSERVE_MAX_ROWS)"
        )
    return shape[0]


def json_values(name: str, data: Any) -> list[Any]:
    """A tensor's JSON data as a flat list: flat, or nested a value per row."""
    if not isinstance(data, list):
        raise InputError(f"input {name!r}: data must be a list of values")
    if data and isinstance(data[0], list):
        for row, value in enumerate(data):
            if not isinstance(value, list) or len(value) != 1:
                raise InputError(
                    f"input {name!r} in row {row}: nested data must hold one value per row"
                )
        return [value[0] for value in data]
    return data


def binary_values(name: str, datatype: str, raw: bytes) -> Any:
    """A tensor's binary data: an array of its datatype, or BYTES' strings."""
    if datatype == "BYTES":
        return bytes_elements(name, raw)
    dtype = BINARY_DTYPES[datatype]
    if len(raw) % dtype.itemsize:
        raise InputError(
            f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype)


def bytes_elements(name: str, raw: bytes) -> list[str]:
    """Length-prefixed BYTES (4-byte little-endian lengths), each as UTF-8 text."""
    out, offset, end = [], 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InputError(f"input {name!r} in row {len(out)}: a cut length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > end:
            raise InputError(f"input {name!r} in row {len(out)}: {size} bytes past the data")
        try:
            out.append(raw[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"input {name!r} in row {len(out)}: not UTF-8 text") from None
        offset += size
    return out


def requested_outputs(
    outputs: Any, names: Sequence[str], default_binary: bool
) -> list[tuple[str, bool]]:
    """The outputs a request asks for (all the model's when it names none), each with
    whether it is wanted in binary (its ``binary_data`` parameter, else the request's
    ``binary_data_output``)."""
    if outputs is None:
        return [(name, default_binary) for name in names]
    if not isinstance(outputs, list):
        raise InputError('"outputs" must be a list of {"name": ...} objects')
    wanted = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or output.get("name") not in names:
            raise InputError(
                f"outputs[{index}] must name an output of the model ({', '.join(names)})"
            )
        parameters = _object(output, "parameters", f"outputs[{index}].parameters")
        wanted.append((output["name"], bool(parameters.get("binary_data", default_binary))))
    return wanted


# --- answers ------------------------------------------------------------------------------


def output_tensor(name: str, datatype: str, values: np.ndarray) -> tuple[dict[str, Any], Any]:
    """An output's description (name, datatype, shape) and its values as a flat array."""
    return {"name": name, "datatype": datatype, "shape": list(values.shape)}, values.ravel()


def _json_data(datatype: str, values: np.ndarray) -> Any:
    if datatype in ("FP64", "FP32"):
        return values.astype(np.float64, copy=False)  # orjson writes NaN as null
    if datatype == "INT64" and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    return [plain(v) for v in values.tolist()]


def _binary_data(datatype: str, values: np.ndarray) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in values.tolist():
            text = str(plain(value)).encode("utf-8")
            parts.append(struct.pack("<I", len(text)) + text)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=BINARY_DTYPES[datatype]).tobytes()


def encode_answer(
    model: ServedModel,
    request_id: str | None,
    outputs: Sequence[tuple[str, bool]],
    values: Mapping[str, np.ndarray],
    classes: Sequence[Any] | None,
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: the outputs asked for, each in JSON or binary.

    ``values``: each output's array (predictions ``[n]``, probabilities ``[n, classes]``).
    """
    datatypes = {t["name"]: t["datatype"] for t in output_tensors(classes)}
    tensors, chunks = [], []
    for name, binary in outputs:
        tensor, flat = output_tensor(name, datatypes[name], values[name])
        if name == PROBABILITIES:
            tensor["parameters"] = {"classes": [plain(c) for c in classes or []]}
        if binary:
            chunk = _binary_data(tensor["datatype"], flat)
            tensor.setdefault("parameters", {})["binary_data_size"] = len(chunk)
            chunks.append(chunk)
        else:
            tensor["data"] = _json_data(tensor["datatype"], flat)
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = tensors
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(chunks), headers
