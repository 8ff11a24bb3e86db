"""MLServer's own V2 requests for the tests: run with MLServer installed (its own venv,
``benchmarks/mlserver/requirements.txt``; it pins its own fastapi, so it cannot share the
project's), on the rows ``python -m tests.helpers.mlserver_rows ROWS`` wrote:

    /tmp/mlsv/bin/python benchmarks/mlserver/encode_requests.py ROWS tests/serving/mlserver_requests

For each ``<key>.parquet`` it writes ``<key>.json``: ``{"rows": <the frame as pandas' split
orient>, "request": <mlserver.codecs.PandasCodec.encode_request(frame), as MLServer's types
serialise it to JSON>}``. The service must answer the request as /invocations answers the rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from mlserver.codecs import PandasCodec


def encodable(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The frame as an MLServer user must give it to the codec, and the rows left out.

    MLServer 1.7.1's codec fails on pandas' nullable integers (``KeyError: 'i'``) and on a
    text column holding a missing value (``np.isnan`` on a string): integers become floats
    (as pandas reads an integer column with a missing value from CSV), and rows with missing
    text are left out (no form of them reaches the codec).
    """
    frame = frame.copy()
    for name in frame:
        if isinstance(frame[name].dtype, pd.Int64Dtype):
            frame[name] = frame[name].astype("float64")
    text = [name for name in frame if frame[name].dtype == object]
    kept = frame.dropna(subset=text).reset_index(drop=True)
    return kept, len(frame) - len(kept)


def encode(frame: pd.DataFrame) -> dict:
    frame, left_out = encodable(frame)
    request = PandasCodec.encode_request(frame)
    return {
        "rows": json.loads(frame.to_json(orient="split", index=False)),
        "left_out": left_out,
        "request": json.loads(request.model_dump_json()),
    }


def main(rows: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(rows.glob("*.parquet")):
        encoded = encode(pd.read_parquet(path))
        (out / f"{path.stem}.json").write_text(json.dumps(encoded, indent=1) + "\n")
        print(f"{path.stem}: {len(encoded['rows']['data'])} rows ({encoded['left_out']} left out)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
