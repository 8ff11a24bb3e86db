"""The contract: one type table, strict validation for the service, lenient coercion for the
clients; tested on 3-row frames, failure cases included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.contract import (
    FEATURE_LIMIT,
    Column,
    Contract,
    coerce,
    contract_from_signature,
    dtype_for,
    json_records,
    parse_text,
    records_frame,
    validate,
    validate_columns,
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


NUMBERS = Contract(
    [
        Column("carat", "double"),
        Column("weight", "float", required=False),
        Column("year", "long", required=False),
        Column("count", "integer", required=False),
    ]
)
GOOD_NUMBERS = {"carat": 0.3, "weight": 1.0, "year": 2007, "count": 3}


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("carat", -1.7976931348623157e308, "outside the range"),
        ("carat", 1e300, "outside the range"),
        ("carat", float("inf"), "not a finite number"),
        ("carat", float("-inf"), "not a finite number"),
        ("weight", 3.5e38, "outside the range"),
        ("year", 2**63, "outside the range"),
        ("year", -(2**63) - 1, "outside the range"),
        ("year", 10**30, "outside the range"),
        ("count", 2**31, "outside the range"),
    ],
    ids=["-double-max", "1e300", "inf", "-inf", "float", "int64+1", "int64-1", "1e30", "int32+1"],
)
def test_validate_refuses_values_the_model_cannot_take(column, value, problem) -> None:
    """Finite floats beyond float32 (the trees' dtype), integers beyond their column's type:
    refused per record, naming the column and row, before any model call."""
    rows = [dict(GOOD_NUMBERS), {**GOOD_NUMBERS, column: value}, dict(GOOD_NUMBERS)]
    frame = pd.DataFrame(rows, dtype=object)  # as JSON gives them
    with pytest.raises(InputError, match=rf"column '{column}' in row 1: .*{problem}"):
        validate(frame, NUMBERS)
    typed = pd.DataFrame({k: [v[k] for v in rows] for k in GOOD_NUMBERS if k != column})
    if not isinstance(value, int) or -(2**63) <= value < 2**64:
        typed[column] = pd.Series([r[column] for r in rows])  # numpy dtypes, as CSV gives them
        with pytest.raises(InputError, match=rf"column '{column}' in row 1: .*{problem}"):
            validate(typed, NUMBERS)


def test_validate_takes_the_extremes_the_model_can_take() -> None:
    extremes = {
        "carat": -FEATURE_LIMIT,
        "weight": FEATURE_LIMIT,
        "year": 2**63 - 1,
        "count": -(2**31),
    }
    out = validate(pd.DataFrame([extremes], dtype=object), NUMBERS)
    assert out.iloc[0].tolist() == pytest.approx(list(extremes.values()))


def test_value_problem_is_the_one_rule_of_every_path() -> None:
    from inference.contract import value_problem

    assert value_problem("double", 0.5) is None and value_problem("string", "x") is None
    assert "outside the range" in value_problem("double", 1e300)
    assert "outside the range" in value_problem("long", 2**63)
    assert "not a finite number" in value_problem("float", float("nan"))
    # a file's row 7 (0-based, as the clients number them) is its 8th data row to a person
    with pytest.raises(InputError, match=r"column 'carat' in row 8: .*outside the range"):
        coerce(pd.DataFrame({"carat": ["1e300"], "cut": ["a"]}, index=[7]), CONTRACT)


WHOLE = Contract([Column("year", "long"), Column("count", "integer", required=False)])


def test_integer_columns_take_whole_numbers_as_the_integers_they_are() -> None:
    """JSON Schema's "integer" counts 3504.0; pandas writes an integer column with a missing
    value as floats: taken as 3504 (int64 without missing values, float64 with), 3.5 refused
    naming the column and row, on every entry (JSON values, arrays, files, text)."""
    out = validate_columns({"year": [2007.0, 2008], "count": [3.0, None]}, 2, WHOLE)
    assert out["year"].dtype == "int64" and out["year"].tolist() == [2007, 2008]
    assert out["count"].dtype == "float64" and out["count"][0] == 3.0
    mixed = validate_columns({"year": [27935, -14998.0, -(2**63) + 1]}, 3, WHOLE)["year"]
    assert mixed.tolist() == [27935, -14998, -(2**63) + 1]  # big ints stay exact beside floats
    typed = validate(pd.DataFrame({"year": [2007.0, 2008.0], "count": [1.0, np.nan]}), WHOLE)
    pd.testing.assert_frame_equal(typed, out.assign(count=[1.0, np.nan]))
    with pytest.raises(InputError, match=r"column 'year' in row 1: 2007.5 is not a whole number"):
        validate_columns({"year": [2007, 2007.5]}, 2, WHOLE)
    with pytest.raises(InputError, match=r"column 'year' in row 1: 2007.5 is not a whole"):
        validate(pd.DataFrame({"year": [2007.0, 2007.5]}), WHOLE)
    with pytest.raises(InputError, match=r"column 'year' expects long, got bool true in row 0"):
        validate_columns({"year": [True]}, 1, WHOLE)
    # a file's 4th data row (the clients count rows as a person does)
    with pytest.raises(InputError, match=r"column 'year' in row 4: 2.5 is not a whole number"):
        coerce(pd.DataFrame({"year": ["1", "2", "3", "2.5"]}), WHOLE)  # never truncated to 2
    assert coerce(pd.DataFrame({"year": ["3504.0"]}), WHOLE)["year"].tolist() == [3504]
    assert parse_text("long", "3504.0") == 3504 and parse_text("double", "1") == 1.0
    assert parse_text("long", "null") is None and parse_text("string", "null") == "null"
    with pytest.raises(ValueError, match="is not a long"):
        parse_text("long", "3.5")


def test_a_float_at_the_int64_edge_is_refused_as_it_may_stand_for_a_value_beyond() -> None:
    """-2**63 - 1 has no double of its own: JSON parsers read it (and any integer below) as the
    double -2**63, which is refused in a long column; -2**31 is a double of its own."""
    with pytest.raises(InputError, match="outside the range"):
        validate_columns({"year": [float(-(2**63))]}, 1, WHOLE)
    out = validate_columns({"year": [-(2**63)], "count": [float(-(2**31))]}, 1, WHOLE)
    assert out["year"][0] == -(2**63) and out["count"][0] == -(2**31)


def test_json_lists_are_never_guessed_by_numpy() -> None:
    """Text stays text, a boolean a boolean, a nested value a value of the wrong type."""
    for values, problem in (
        (["1.5"], r"expects double, got str \"1.5\""),
        ([True], "expects double, got bool true"),
        ([[1]], r"expects double, got list \[1\]"),
    ):
        with pytest.raises(InputError, match=problem):
            validate_columns({"carat": values, "cut": ["a"]}, 1, CONTRACT)


# --- the model's domain -----------------------------------------------------------------------

CUTS = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
DOMAIN = {
    "cut": {"categories": CUTS},
    "carat": {"minimum": 0.1, "maximum": 6.0},
    "x": {"exclusiveMinimum": 0},
}
DOMAIN_INPUTS = [
    {"name": "carat", "type": "double"},
    {"name": "x", "type": "double", "required": False},
    {"name": "cut", "type": "string", "required": False},
    {"name": "note", "type": "string"},  # free text: no domain
]


def domain_contract(**policy: bool) -> Contract:
    from inference.domain import Policy

    contract = contract_from_signature(DOMAIN_INPUTS, {"domain": DOMAIN})
    return contract.enforcing(Policy(**policy)) if policy else contract


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            "cut",
            "Superb",
            "column 'cut' in row 1: 'Superb' is not one of 'Fair', 'Good', "
            "'Very Good', 'Premium', 'Ideal'",
        ),
        ("cut", "ideal", "column 'cut' in row 1: 'ideal' is not one of 'Fair'"),
        (
            "carat",
            -5,
            "column 'carat' in row 1: -5 is out of the model's range "
            "(it takes at least 0.1 and at most 6)",
        ),
        ("carat", 6.5, "column 'carat' in row 1: 6.5 is out of the model's range"),
        ("x", 0, "column 'x' in row 1: 0 is out of the model's range (it takes more than 0)"),
    ],
    ids=["unknown", "wrong-case", "negative", "above", "exclusive"],
)
def test_a_value_outside_the_domain_is_refused_naming_column_value_and_domain(
    column: str, value: object, message: str
) -> None:
    """Every entry: JSON columns, frames (CSV counts rows from 1), and the clients' files."""
    import re

    good = {"carat": 0.5, "x": 4.0, "cut": "Ideal", "note": "free text, any words"}
    rows = [good, {**good, column: value}]
    contract = domain_contract()
    with pytest.raises(InputError, match=re.escape(message)):
        validate_columns({k: [r[k] for r in rows] for k in good}, 2, contract)
    with pytest.raises(InputError, match=re.escape(message)):
        validate(pd.DataFrame(rows), contract)
    csv_message = message.replace("in row 1", "in row 2")  # the 2nd data row of a CSV body
    with pytest.raises(InputError, match=re.escape(csv_message)):
        validate(pd.DataFrame(rows), contract, first_row=1)
    text = pd.DataFrame(rows).astype(str)  # a file read as text, 0-based index
    with pytest.raises(InputError, match=re.escape(csv_message)):
        coerce(text, contract)
    assert contract.columns[0].domain_problem(0.5) is None


def test_the_domain_allows_null_where_optional_and_is_served_when_accepted() -> None:
    """A null stays a null (optional columns); with both settings at accept, the values the
    domain refuses are typed and served as before."""
    from inference.domain import Policy

    rows = {"carat": [0.5, -5.0], "x": [None, 0.0], "cut": [None, "Superb"], "note": ["a", "b"]}
    accepting = domain_contract(refuse_unknown_categories=False, refuse_out_of_range=False)
    out = validate_columns(rows, 2, accepting)
    assert out["cut"].tolist()[1] == "Superb" and out["carat"].tolist() == [0.5, -5.0]
    assert accepting.domain == DOMAIN  # still recorded, for /metadata
    only_ranges = domain_contract().enforcing(Policy(refuse_unknown_categories=False))
    with pytest.raises(InputError, match="column 'carat' in row 1: -5 is out"):
        validate_columns(rows, 2, only_ranges)
    with pytest.raises(InputError, match="'Superb' is not one of"):
        validate_columns({**rows, "carat": [0.5, 0.5], "x": [None, 1.0]}, 2, domain_contract())
    fine = {"carat": [0.1, 6.0], "x": [None, 1e-9], "cut": [None, "Fair"], "note": ["a", "b"]}
    assert validate_columns(fine, 2, domain_contract())["x"].isna().tolist() == [True, False]


def test_the_domain_of_a_pipeline_and_its_rules() -> None:
    """Categories as the fitted encoders learnt them (case included, TF-IDF text left free);
    bounds the tightest of the preprocess's and the data checks' rules, target excluded."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder

    from inference.domain import config_bounds, model_domain

    frame = pd.DataFrame(
        {
            "cut": ["Ideal", "Fair", "Ideal"],
            "color": ["G", "D", "G"],
            "note": ["rough stone", "clean cut", "deep blue"],
            "carat": [0.3, 1.0, 2.0],
        }
    )
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("onehot", OneHotEncoder(handle_unknown="ignore"), ["cut"]),
                        ("ordinal", OrdinalEncoder(), ["color"]),
                        (
                            "text",
                            Pipeline(
                                [
                                    ("flat", FunctionTransformer(np.ravel)),
                                    ("tfidf", TfidfVectorizer()),
                                ]
                            ),
                            ["note"],
                        ),
                        ("numbers", "passthrough", ["carat"]),
                    ]
                ),
            ),
            ("model", LinearRegression()),
        ]
    ).fit(frame, [1.0, 2.0, 3.0])
    clean = {"positive": ["carat", "price"], "bounds": {"price": {"min": 1, "max": 10}}}
    checks = {"ranges": {"carat": [0.1, 6.0], "price": [1, 5]}}
    bounds = config_bounds(clean, checks, list(frame.columns))
    assert bounds == {"carat": {"minimum": 0.1, "maximum": 6.0}}
    assert config_bounds({"positive": ["carat"]}, {"ranges": {"carat": [0, 6]}}, ["carat"]) == {
        "carat": {"exclusiveMinimum": 0, "maximum": 6}
    }
    types = {"cut": "string", "color": "string", "note": "string", "carat": "double"}
    assert model_domain(pipeline, types, bounds) == {
        "cut": {"categories": ["Fair", "Ideal"]},
        "color": {"categories": ["D", "G"]},
        "carat": {"minimum": 0.1, "maximum": 6.0},
    }


@pytest.mark.parametrize(
    "bounds",
    [
        {"minimum": 0.1, "maximum": 6.0},
        {"minimum": 40, "maximum": 80},
        {"exclusiveMinimum": 0},
        {"exclusiveMinimum": 0, "exclusiveMaximum": 6},
        {"minimum": 0.25, "maximum": 5.5},
        {"minimum": 2000, "maximum": 7000},
    ],
)
@pytest.mark.parametrize("whole", [False, True])
def test_a_bounded_number_csv_pattern_takes_only_numbers_within_its_bounds(
    bounds: dict, whole: bool
) -> None:
    """The OpenAPI document's CSV pattern of a bounded column: every plain decimal it matches
    (of 20,000 drawn, seeded, around the bounds) lies within the bounds (and is whole in an
    integer column), and it matches the bounds themselves where inclusive."""
    import random
    import re

    from inference.domain import Range, range_csv_pattern

    found = Range.of(bounds)
    pattern = re.compile(f"^({range_csv_pattern(found, whole)})$")
    rng = random.Random(0)
    matched = 0
    for _ in range(20_000):
        top = int(bounds.get("maximum", bounds.get("exclusiveMaximum", 100)))
        text = str(rng.randint(0, 2 * top + 10) if rng.random() < 0.8 else rng.randint(0, 10))
        if rng.random() < 0.7:
            text += "." + "".join(rng.choices("0123456789", k=rng.randint(1, 8)))
        if pattern.match(text):
            matched += 1
            assert found.contains(float(text)) and (not whole or float(text).is_integer()), text
    assert matched > 100
    # Inclusive bounds as the shipped rules write them (a minimum of one decimal, a whole
    # maximum) are matched; near others the pattern takes a subset (no numeric order in a
    # regular expression).
    low, high = bounds.get("minimum"), bounds.get("maximum")
    if low is not None and float(low * 10).is_integer() and (not whole or float(low).is_integer()):
        assert pattern.match(f"{low:g}")
    if high is not None and float(high).is_integer():
        assert pattern.match(f"{high:g}")
    assert not pattern.match("-5")


def test_domain_mask_keeps_the_rows_the_contract_takes() -> None:
    """The rows a benchmark may send: inside the domain, or missing there."""
    from inference.contract import domain_mask

    frame = pd.DataFrame(
        {
            "carat": [0.5, -5.0, None, 0.5, 6.0],
            "x": [1.0, 1.0, 1.0, 0.0, None],
            "cut": ["Ideal", "Ideal", None, "Ideal", "ideal"],
            "note": ["a", "b", "c", "d", "e"],
        }
    )
    assert domain_mask(frame, domain_contract()).tolist() == [True, False, True, False, False]


def test_csv_rows_counted_from_one_keep_missing_values_in_place() -> None:
    """A CSV body's rows are named from 1; the missing values stay where they were."""
    frame = pd.DataFrame({"carat": [0.3, 1.0, 2.5], "year": [None, 2007.0, None], "cut": "a"})
    out = validate(frame, CONTRACT, first_row=1)
    assert out["year"].isna().tolist() == [True, False, True] and out["year"][1] == 2007.0
    with pytest.raises(InputError, match=r"column 'year' in row 3: 2007.5 is not a whole"):
        validate(frame.assign(year=[None, 2007.0, 2007.5]), CONTRACT, first_row=1)
    with pytest.raises(InputError, match=r"'cut' is required but null in row\(s\) \[2\]"):
        validate(frame.assign(cut=["a", None, "b"]), CONTRACT, first_row=1)


OPTIONAL_SIZE = Contract([Column("size", "double", required=False), Column("cut", "string")])


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([0.5, 2, 1.25], [0.5, 2.0, 1.25]),  # floats and ints, as JSON gives them
        ([0.5, float("nan"), 3], [0.5, np.nan, 3.0]),  # MLflow's bare NaN: a missing value
        ([None, 2.5, float("nan")], [np.nan, 2.5, np.nan]),  # None among them
        ([10**20, 1.0, 2], [1e20, 1.0, 2.0]),  # a big integer, as a double
    ],
    ids=["numbers", "nan", "none", "big-int"],
)
def test_a_json_number_column_reads_as_its_values_say(sizes: list, expected: list) -> None:
    """The columns of a JSON body, read once a column: what the values say, missing included,
    exactly what pandas makes of the same values."""
    columns = {"size": sizes, "cut": ["a", "b", "c"]}
    out = validate_columns(columns, 3, OPTIONAL_SIZE)
    np.testing.assert_array_equal(out["size"].to_numpy(), np.array(expected, dtype=np.float64))
    reference = pd.Series(sizes, dtype=object).astype(np.float64)
    np.testing.assert_array_equal(out["size"].to_numpy(), reference.to_numpy())
    assert out["cut"].tolist() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([0.5, float("nan"), 1.0], r"'carat' is required but null in row\(s\) \[1\]"),
        ([0.5, float("inf"), 1.0], r"column 'carat' in row 1: .*not a finite number"),
        ([0.5, 10**400, 1.0], r"column 'carat' in row 1"),
        ([0.5, True, 1.0], r"column 'carat' expects double, got bool true in row 1"),
    ],
    ids=["nan-required", "inf", "beyond-double", "bool"],
)
def test_a_json_number_column_names_its_first_bad_value(sizes: list, message: str) -> None:
    columns = {"carat": sizes, "cut": ["a", "b", "c"]}
    with pytest.raises(InputError, match=message):
        validate_columns(columns, 3, CONTRACT)


EVERY_TYPE = Contract(
    [
        Column("size", "double", required=False),
        Column("count", "long", required=False),
        Column("small", "integer", required=False),
        Column("flag", "boolean", required=False),
        Column("cut", "string", required=False),
        Column("grade", "string", required=False, categories=("a", "b", "c")),
    ]
)


@pytest.mark.parametrize(
    "values",
    [
        {"size": [0.5, 2, 1.25], "count": [1, 2, 3], "flag": [True, False, True]},
        {"size": [0.5, float("nan"), 3], "count": [1, None, 3], "cut": ["a", None, "c"]},
        {"count": [1, 2.0, 3], "small": [1, 2, 2**31], "cut": ["a", "b", "c"]},
        {"count": [2**63, 1, 2], "size": [10**400, 1, 2]},
        {"size": [0.5, True, 1], "cut": ["a", 1, "c"], "flag": [1, 0, 1]},
        {"size": [0.5, float("inf"), 1.0]},
        {"count": [1, [2], 3]},
        {"grade": ["a", "c", "a"], "cut": ["x", "y", "z"]},
        {"grade": ["a", "d", "c"]},
        {"grade": ["a", None, "c"]},
        {"grade": ["a", float("nan"), "c"]},
        {"grade": ["a", True, 1]},
        {"grade": ["a", ["b"], "c"]},
    ],
    ids=[
        "usual",
        "missing",
        "mixed",
        "huge",
        "wrong-types",
        "inf",
        "nested",
        "categories",
        "unknown-category",
        "missing-category",
        "nan-category",
        "category-of-other-type",
        "nested-category",
    ],
)
@pytest.mark.parametrize("first_row", [0, 7])
def test_json_lists_and_arrays_of_the_same_values_read_alike(values: dict, first_row: int) -> None:
    """A JSON body's columns come as lists, read straight where they hold one type the column
    takes; the same values as object arrays take the general path: the same frame, or the same
    error naming the same row."""

    def read(columns: dict) -> object:
        try:
            return validate_columns(columns, 3, EVERY_TYPE, first_row=first_row)
        except InputError as exc:
            return str(exc)

    as_lists = read(values)
    as_arrays = read({k: np.array(v + [None], dtype=object)[:-1] for k, v in values.items()})
    if isinstance(as_lists, str):
        assert as_lists == as_arrays
    else:
        pd.testing.assert_frame_equal(as_lists, as_arrays)
