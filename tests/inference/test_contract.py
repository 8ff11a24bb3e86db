"""The contract: one type table, strict validation for the service, lenient coercion for the
clients; tested on 3-row frames, failure cases included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.contract import (
    Column,
    Contract,
    coerce,
    contract_from_signature,
    dtype_for,
    json_records,
    records_frame,
    validate,
)
from inference.errors import InputError, ModelRefused

CONTRACT = Contract(
    [Column("carat", "double"), Column("year", "long", required=False), Column("cut", "string")]
)


def test_one_rule_for_missing_values_in_integer_and_boolean_columns() -> None:
    assert dtype_for("long", missing=False) == "int64" and dtype_for("long", True) == "float64"
    assert dtype_for("boolean", False) == "bool" and dtype_for("boolean", True) == "object"
    assert dtype_for("double", True) == "float64"


def test_signature_columns_follow_feature_columns_and_unknown_types_are_refused() -> None:
    inputs = [{"name": "b", "type": "string"}, {"name": "a", "type": "double"}]
    contract = contract_from_signature(inputs, {"feature_columns": ["a", "b"], "task": "x"})
    assert contract.features == ["a", "b"] and contract.task == "x"
    with pytest.raises(ModelRefused, match=r"d \(datetime\)"):
        contract_from_signature([{"name": "d", "type": "datetime"}])
    with pytest.raises(ModelRefused, match="no column-based"):
        contract_from_signature(None)


def test_validate_is_strict_and_types_as_training_did() -> None:
    years = pd.Series([2007, None, 2009], dtype=object)  # as JSON gives them
    frame = pd.DataFrame({"carat": [0.3, 1, 2.5], "year": years, "cut": list("abc")})
    out = validate(frame.assign(extra=1), CONTRACT)
    assert list(out.columns) == ["carat", "year", "cut"]
    assert out["year"].dtype == "float64" and np.isnan(out["year"][1])
    with pytest.raises(
        InputError, match=r"column 'carat' expects double, got str \"0.3\" in row 1"
    ):
        validate(frame.assign(carat=[0.3, "0.3", 1.0]), CONTRACT)
    with pytest.raises(InputError, match=r"'cut' is required but null in row\(s\) \[2\]"):
        validate(frame.assign(cut=["a", "b", None]), CONTRACT)
    with pytest.raises(InputError, match="more than this service accepts"):
        validate(frame, CONTRACT, max_rows=2)


def test_coerce_is_lenient_and_names_what_cannot_be_converted() -> None:
    frame = pd.DataFrame({"carat": ["0.3", "1", "2.5"], "cut": [1.0, None, 3.0]})
    out = coerce(frame, CONTRACT)
    assert out["carat"].tolist() == [0.3, 1.0, 2.5] and out["year"].isna().all()
    assert out["cut"].tolist() == ["1.0", None, "3.0"]
    assert json_records(out, CONTRACT)[0] == {"carat": 0.3, "year": None, "cut": "1.0"}
    with pytest.raises(InputError, match="column 'carat' must hold double values, got 'heavy'"):
        coerce(frame.assign(carat=["0.3", "heavy", "1"]), CONTRACT)
    with pytest.raises(InputError, match="lacks model column.*cut"):
        coerce(frame.drop(columns="cut"), CONTRACT)


def test_records_frame_matches_validate() -> None:
    rows = [{"carat": 0.3, "year": 2007, "cut": "a"}, {"carat": 1.0, "year": None, "cut": "b"}]
    built = records_frame(rows, CONTRACT)
    pd.testing.assert_frame_equal(built, validate(pd.DataFrame(rows, dtype=object), CONTRACT))
