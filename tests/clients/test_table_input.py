"""The fast path's input built from a chunk's Arrow columns (offline scoring): the very matrix
the frame's way builds (pandas' frame, the contract's coercion, the fast path's transform), bit
for bit, or None wherever the frame's way would refuse a value or take another path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from clients.arrow_input import TableChunk, csv_chunks
from clients.io import iter_chunks
from clients.model import OfflineModel, coerced, resolve
from clients.table_input import forest_input
from tests.helpers.client_models import FEATURE_COLUMNS, diamonds_sample, native_predictions

pytestmark = pytest.mark.timeout(300)


def offline_model(client_model: dict, **settings: str) -> OfflineModel:
    """The imported model (with its fast path) as ``clients score --model`` loads it, under
    the domain settings ``settings`` (TAGSERVE_UNKNOWN_CATEGORIES...)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", client_model["env"]["BENTOML_HOME"])
        for name, value in settings.items():
            patch.setenv(name, value)
        model = OfflineModel(resolve(client_model["tag"]))
        assert model.loaded.fast is not None
        return model


def table_chunks(frame: pd.DataFrame, path, chunk_size: int) -> list[TableChunk]:
    """The chunks of ``frame`` written to ``path`` (CSV or Parquet) as score reads them."""
    model_types = {c: "object" if c in ("cut", "color", "clarity") else "float64" for c in frame}
    names = [c for c in frame.columns if c in FEATURE_COLUMNS]
    if path.suffix == ".parquet":
        frame.to_parquet(path, row_group_size=450)  # groups cut across chunks
        chunks = list(iter_chunks(path, chunk_size, columns=names, tables=True))
    else:
        frame.to_csv(path, index=False)
        chunks = list(csv_chunks(path, chunk_size, names, model_types, 0, tables=True))
    assert chunks and all(isinstance(c, TableChunk) for c in chunks)
    return chunks


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a.view(np.int64), b.view(np.int64))
    )


@pytest.mark.parametrize("source", ["rows.csv", "rows.parquet"])
def test_the_matrix_and_predictions_are_the_frames_bit_for_bit(client_model, tmp_path, source):
    """Missing numbers and text (the imputers' fill; a missing text is NaN in a CSV file's
    frame and None in a Parquet file's), a category the model never learnt (accepted by the
    setting: the encoder's unknown), chunks cut anywhere."""
    model = offline_model(client_model, TAGSERVE_UNKNOWN_CATEGORIES="accept")
    rows = diamonds_sample(3000, seed=3).drop(columns=["sku"])
    rows = rows.astype({"cut": object, "color": object})
    rows.loc[5::41, "depth"] = np.nan
    rows.loc[7::53, "cut"] = np.nan
    rows.loc[11::97, "color"] = "Z"  # never learnt
    fast, contract = model.loaded.fast, model.info.contract
    predictions = []
    for chunk in table_chunks(rows, tmp_path / source, 700):
        got = forest_input(chunk.table, contract, fast, chunk.text_missing)
        want = fast.transform(coerced(chunk.frame(), contract))
        assert got is not None and want is not None
        assert same_bits(got, want)
        predicted = model.predict_table(chunk.table, chunk.text_missing)
        assert same_bits(predicted, model.predict(chunk.frame()))
        predictions.append(predicted)
    expected = native_predictions(client_model["model_dir"], rows)
    assert same_bits(np.concatenate(predictions), np.asarray(expected, dtype=np.float64))


@pytest.mark.parametrize(("column", "value"), [("cut", "Superb"), ("carat", -5.0)])
def test_a_value_the_contract_refuses_leaves_it_to_the_frame(client_model, tmp_path, column, value):
    """Outside the domain (refused by default): None, so that the frame's way raises its own
    error (tests/clients/test_offline.py)."""
    model = offline_model(client_model)
    rows = diamonds_sample(200, seed=4).drop(columns=["sku"]).astype({column: object})
    (chunk,) = table_chunks(rows, tmp_path / "good.csv", 1000)
    assert forest_input(chunk.table, model.info.contract, model.loaded.fast) is not None
    rows.loc[150, column] = value
    (chunk,) = table_chunks(rows, tmp_path / "bad.csv", 1000)
    assert forest_input(chunk.table, model.info.contract, model.loaded.fast) is None
    assert model.predict_table(chunk.table) is None


def test_a_missing_column_another_type_or_a_huge_number_leaves_it_to_the_frame(client_model):
    """(A CSV file never gives a number beyond what a double column takes here: its reader
    hands such a file to pandas.)"""
    model = offline_model(client_model)
    rows = diamonds_sample(100, seed=5).drop(columns=["sku"])
    table = pa.Table.from_pandas(rows, preserve_index=False)
    fast, contract = model.loaded.fast, model.info.contract
    at = table.schema.get_field_index
    assert forest_input(table, contract, fast) is not None
    assert forest_input(table.drop_columns(["carat"]), contract, fast) is None
    whole = table.set_column(at("depth"), "depth", pa.array(rows["depth"].round().astype("int64")))
    assert forest_input(whole, contract, fast) is None
    large = table.set_column(at("cut"), "cut", table.column("cut").cast(pa.large_string()))
    assert forest_input(large, contract, fast) is None
    huge = table.set_column(
        at("depth"), "depth", pa.array(rows["depth"].where(rows.index != 7, 1e31))
    )
    assert forest_input(huge, contract, fast) is None
