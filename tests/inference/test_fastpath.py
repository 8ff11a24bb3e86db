"""The exact fast path (inference.fastpath): bit for bit equal to scikit-learn on the models
the pipeline makes from both shipped data sets, or not used."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from importers.fast import FOREST_EDGE_ROWS, check_exact, edge_rows, forest_edge_rows, prepare
from importers.fast_build import build, save
from inference import fastpath
from inference.contract import read_contract, records_frame
from inference.loading import load_pipeline
from inference.model import load_model
from tests.helpers.project import PROJECT_ROOT
from tests.helpers.shipped_models import Shipped


def bits(values: np.ndarray) -> np.ndarray:
    """The float64 bit patterns of ``values``: equal means bit for bit equal."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def assert_same_predictions(got: tuple, pipeline, frame: pd.DataFrame, task: str) -> None:
    """``got`` (predictions, probabilities) equals sklearn's answer for ``frame``, bit for bit."""
    assert got is not None, "the fast path handed these rows to sklearn"
    predicted, proba = got
    if task == "classification":
        assert np.array_equal(predicted, pipeline.predict(frame))
        assert np.array_equal(bits(proba), bits(pipeline.predict_proba(frame)))
    else:
        assert np.array_equal(bits(predicted), bits(pipeline.predict(frame)))
        assert proba is None


# --- exactness on the shipped data sets ------------------------------------------------------


def test_exact_on_both_shipped_data_sets(shipped: Shipped) -> None:
    pipeline = shipped.pipeline()
    frames = {"test_data": shipped.test, "input_example": shipped.example}
    fast, report = prepare(pipeline, shipped.task, frames)
    assert fast is not None, report
    n = len(shipped.test) + len(shipped.example)
    assert report["exact"] and report["engine"] == fastpath.ENGINE_FAST
    assert report["checked_on"]["edge_cases"] == n
    assert report["checked_on"]["forest_edge_rows"] == 2 * FOREST_EDGE_ROWS
    assert report["rows_checked"] == 2 * n + 2 * FOREST_EDGE_ROWS

    # Independently of check_exact: the preprocessing, batch sizes, the record entry.
    edge = edge_rows(shipped.test, fast, pipeline[-1])
    dense = pipeline[0].transform(edge)
    dense = dense.toarray() if hasattr(dense, "toarray") else dense
    assert np.array_equal(bits(fast.transform(edge)), bits(dense))
    for size in (1, 7, 64, 65, len(shipped.test)):
        rows = edge.head(size)
        assert_same_predictions(fast.predict_arrays(rows), pipeline, rows, shipped.task)
    assert_same_predictions(fast.predict_arrays(edge, threads=2), pipeline, edge, shipped.task)
    served = fastpath.service_frame(edge.head(50))
    for i, record in enumerate(served.to_dict("records")):
        one = served.iloc[[i]]
        assert_same_predictions(
            fast.predict_arrays_of_records([record]), pipeline, one, shipped.task
        )


def test_the_forest_alone_on_threshold_nan_and_special_rows(shipped: Shipped) -> None:
    """At the forest's input: values on split thresholds and a float32/float64 step either
    side, NaN, subnormals, -0.0, +-1e37 and +-3.4e38."""
    pipeline = shipped.pipeline()
    fast = build(pipeline, shipped.task)
    forest = pipeline[-1]
    rows = forest_edge_rows(forest, fast.transform(shipped.test), rows=3000, seed=3)
    assert np.isnan(rows).any() and (np.signbit(rows) & (rows == 0)).any()
    got = fast.forest_output(rows)
    with np.errstate(over="ignore", invalid="ignore"):  # sklearn's check sums 3.4e38s
        want = fastpath.sklearn_predict_arrays(forest, rows, shipped.task)
    want = want[1] if shipped.task == "classification" else want[0]
    assert np.array_equal(bits(got), bits(want))


def test_shipped_models_read_none_and_nan_alike(shipped: Shipped) -> None:
    """Training and serving agree on a missing category: penguins' `sex=None` rows are
    imputed in training, not learned as a third sex."""
    pipeline = shipped.pipeline()
    for _, step, _ in pipeline[0].transformers_:
        encoder = getattr(step, "steps", [[None, None]])[-1][1]
        for categories in getattr(encoder, "categories_", []):
            assert None not in list(categories)
    text = [c for c in shipped.example.columns if shipped.example[c].dtype == object]
    three = pd.concat([shipped.example.head(1)] * 3, ignore_index=True)
    three[text[-1]] = pd.Series([None, np.nan, np.nan], dtype=object)
    proba = pipeline.predict_proba(three) if shipped.task == "classification" else None
    predicted = pipeline.predict(three)
    assert predicted[0] == predicted[1] == predicted[2]
    if proba is not None:
        assert np.array_equal(bits(proba[0]), bits(proba[1]))


# --- saved, loaded, re-checked ---------------------------------------------------------------


def test_saved_fast_path_loads_and_serves_every_entry(exported: Path, tmp_path: Path) -> None:
    pipeline = load_pipeline(exported)
    contract = read_contract(exported)
    fast, report = prepare(pipeline, contract.task, {"input_example": example_of(exported)})
    assert fast is not None, report
    assert sorted(p.name for p in save(fast, tmp_path / "fp")) == sorted(fastpath.FILES)

    model = load_model(exported, contract, tmp_path / "fp")
    assert model.fast is not None and model.fast_report["exact"]
    assert model.engine == fastpath.ENGINE_FAST
    frame = example_of(exported)
    assert np.array_equal(bits(model.predict(frame)), bits(pipeline.predict(frame)))
    records = frame.to_dict("records")
    answers = model.predict_records(records)
    expected = pipeline.predict(records_frame(records, contract))
    assert [a["prediction"] for a in answers] == expected.tolist()


def test_the_saved_form_is_plain_arrays_and_json(exported: Path, tmp_path: Path) -> None:
    fast = build(load_pipeline(exported), "regression")
    save(fast, tmp_path / "fp")
    spec = json.loads((tmp_path / "fp" / "fastpath.json").read_text())
    assert spec["version"] == fastpath.VERSION
    with np.load(tmp_path / "fp" / "fastpath.npz", allow_pickle=False) as saved:
        assert all(saved[name].dtype != object for name in saved.files)
    shutil.copytree(tmp_path / "fp", tmp_path / "copy")
    again = fastpath.load(tmp_path / "copy")
    assert again.spec == fast.spec
    frame = example_of(exported)
    assert np.array_equal(bits(again.predict_arrays(frame)[0]), bits(fast.predict_arrays(frame)[0]))


def test_a_fast_path_that_differs_at_start_up_is_not_used(exported: Path, tmp_path: Path) -> None:
    pipeline = load_pipeline(exported)
    contract = read_contract(exported)
    save(build(pipeline, contract.task), tmp_path / "fp")
    # A damaged (or foreign) saved fast path: the scaler's statistics are off.
    with np.load(tmp_path / "fp" / "fastpath.npz") as saved:
        arrays = {k: saved[k] * 3 + 1 if k[0].isdigit() else saved[k] for k in saved.files}
    np.savez(tmp_path / "fp" / "fastpath.npz", **arrays)

    model = load_model(exported, contract, tmp_path / "fp")
    assert model.fast is None and model.engine == fastpath.ENGINE_SKLEARN
    assert "differs from scikit-learn" in model.fast_report["reason"]
    frame = example_of(exported)
    assert np.array_equal(bits(model.predict(frame)), bits(pipeline.predict(frame)))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("children", "index out of range"),
        ("features", "index out of range"),
        ("dtype", "not 2-d int32"),
        ("version", "fast path version 1 is not"),
        ("pickle", "Object arrays cannot be loaded"),
        ("missing", "fastpath.npz"),
    ],
)
def test_a_damaged_or_old_fast_path_means_sklearn(
    exported: Path, tmp_path: Path, damage: str, reason: str
) -> None:
    """The saved arrays are untrusted input: an index the kernel would follow out of bounds,
    a wrong dtype, an old version, a pickle: refused with the reason, sklearn serves."""
    contract = read_contract(exported)
    folder = tmp_path / "fp"
    save(build(load_pipeline(exported), contract.task), folder)
    with np.load(folder / "fastpath.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    nodes = arrays["forest_nodes"].copy()
    if damage == "children":
        nodes[5, 3] = len(nodes) + 10
    elif damage == "features":
        nodes[0, 0] = 10_000
    elif damage == "dtype":
        nodes = nodes.astype(np.int64)
    arrays["forest_nodes"] = nodes
    if damage == "pickle":
        arrays["forest_roots"] = np.array([object()], dtype=object)
    np.savez(folder / "fastpath.npz", **arrays)
    if damage == "version":
        spec = json.loads((folder / "fastpath.json").read_text())
        (folder / "fastpath.json").write_text(json.dumps({**spec, "version": 1}))
    if damage == "missing":
        (folder / "fastpath.npz").unlink()
    model = load_model(exported, contract, folder)
    assert model.fast is None and reason in model.fast_report["reason"]
    frame = example_of(exported)
    assert np.array_equal(bits(model.predict(frame)), bits(load_pipeline(exported).predict(frame)))


# --- what it does not reproduce --------------------------------------------------------------


def test_inputs_it_cannot_reproduce_go_to_sklearn(exported: Path, tmp_path: Path) -> None:
    pipeline = load_pipeline(exported)
    contract = read_contract(exported)
    fast = build(pipeline, contract.task)
    save(fast, tmp_path / "fp")
    model = load_model(exported, contract, tmp_path / "fp")
    odd = example_of(exported)
    number = next(c for c in odd.columns if odd[c].dtype == np.float64)
    odd[number] = odd[number].astype(np.float32)  # sklearn imputes and scales in float32
    assert fast.predict_arrays(odd) is None
    assert np.array_equal(bits(model.predict(odd)), bits(pipeline.predict(odd)))
    text = next(c for c in odd.columns if odd[c].dtype == object)
    assert fast.predict_arrays_of_records([{**odd.iloc[0].to_dict(), text: 7}]) is None
    frame = example_of(exported)
    for value in (7, b"Ideal", pd.NA):  # not a string, not NaN or None: sklearn answers
        values = frame[text].to_numpy(dtype=object).copy()
        values[-1] = value
        assert fast.predict_arrays(frame.assign(**{text: pd.Series(values, dtype=object)})) is None


def test_text_columns_are_coded_alike_whichever_way_they_are_looked_up(exported: Path) -> None:
    """A text column whose values are all known categories is coded by one table lookup a
    value; any other column the careful way: the same codes, or the same hand-over to
    sklearn, for known, unknown, missing, numpy and non-text values."""
    fast = build(load_pipeline(exported), read_contract(exported).task)
    b, block = next((b, k) for b, k in enumerate(fast.spec["blocks"]) if k["kind"] != "numeric")
    categories = block["categories"][0]
    known = np.array(categories * 3, dtype=object)
    cases = {
        "known": known,
        "numpy text": np.array([np.str_(c) for c in categories], dtype=object),
        "unknown": np.append(known, "no such category"),
        "none": np.append(known, None),
        "nan": np.append(known, np.nan),
        "not text": np.append(known, 7),
        "unhashable": np.array([categories[0], [categories[0]]], dtype=object),
        "empty": np.array([], dtype=object),
    }
    careful = pd.Index(categories, dtype=object)
    for name, values in cases.items():
        got = fast.category_codes(b, 0, values)
        expected = fastpath._codes(block, 0, careful, values)
        if expected is None:
            assert got is None, name
        else:
            assert got is not None and got.dtype == expected.dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
    assert (fast.category_codes(b, 0, known) >= 0).all()


def test_a_model_it_cannot_reproduce_is_served_by_sklearn(exported: Path) -> None:
    """A model whose inputs are float32 columns: the fast path would hand every call to
    sklearn, so the import-time check reports it unused, with the reason."""
    pipeline = load_pipeline(exported)
    frame = example_of(exported)
    numbers = [c for c in frame.columns if frame[c].dtype == np.float64]
    float32 = frame.astype({c: np.float32 for c in numbers})
    fast, report = prepare(pipeline, "regression", {"example": float32})
    assert fast is None and report["engine"] == fastpath.ENGINE_SKLEARN
    assert not report["exact"] and "cannot take these inputs" in report["reason"]


def test_unsupported_models_say_why() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipeline.train import build_model

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.random(60),
            "c": rng.choice(["x", "y"], 60).astype(object),
            "t": rng.choice(["red fox", "blue cat"], 60).astype(object),
        }
    )
    y = rng.random(60)
    boosted = Pipeline(
        [
            ("preprocess", ColumnTransformer([("n", StandardScaler(), ["a"])])),
            ("model", GradientBoostingRegressor(n_estimators=3)),
        ]
    ).fit(frame, y)
    assert "GradientBoostingRegressor" in build(boosted, "regression")
    dropped = Pipeline(
        [
            ("preprocess", ColumnTransformer([("c", OneHotEncoder(drop="first"), ["c"])])),
            ("model", RandomForestRegressor(n_estimators=3)),
        ]
    ).fit(frame, y)
    assert "NaN imputer" in build(dropped, "regression")
    features = {"numeric": ["a"], "categorical": ["c"], "ordinal": {}, "text": "t"}
    estimator = {"_target_": "sklearn.ensemble.RandomForestRegressor", "n_estimators": 3}
    with_text = build_model(features, {"estimator": estimator}).fit(frame, y)
    assert "TfidfVectorizer" in build(with_text, "regression")
    fast, report = prepare(with_text, "regression", {"frame": frame})
    assert fast is None and report == {
        "engine": "sklearn",
        "rows_checked": 0,
        "exact": False,
        "checked_on": {},
        "reason": build(with_text, "regression"),
    }


def test_check_exact_catches_a_fast_path_of_another_model(exported: Path) -> None:
    from sklearn.base import clone

    pipeline = load_pipeline(exported)
    frame = example_of(exported)
    data = edge_rows(pd.concat([frame] * 20, ignore_index=True), share=0.1)
    other = clone(pipeline).set_params(model__random_state=7, model__n_estimators=2)
    other.fit(data, np.arange(len(data), dtype=float))
    fast = build(other, "regression")
    assert check_exact(fast, pipeline, {"data": data})["exact"] is False


def test_concurrent_calls_agree(exported: Path) -> None:
    """The service calls the model from a thread pool: the kernel (nogil) on one forest from
    many threads gives every caller its own exact answer."""
    pipeline = load_pipeline(exported)
    fast = build(pipeline, "regression")
    frame = edge_rows(pd.concat([example_of(exported)] * 10, ignore_index=True))
    rows = [frame.iloc[[i]] for i in range(len(frame))]
    want = [bits(pipeline.predict(r)) for r in rows]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda r: bits(fast.predict_arrays(r)[0]), rows * 5))
    assert all(np.array_equal(g, w) for g, w in zip(got, want * 5, strict=True))


def example_of(folder: Path) -> pd.DataFrame:
    from inference.model import input_example

    return input_example(folder, read_contract(folder))


LAZY_PROBE = """
import sys
from pathlib import Path
from inference.contract import read_contract
from inference.model import input_example, load_model
folder = Path(sys.argv[1])
model = load_model(folder, fast_folder=sys.argv[2], lazy=True)
model.predict(input_example(folder, read_contract(folder)))
print(model.engine, "sklearn" in sys.modules, "skops" in sys.modules)
"""


def test_offline_loads_sklearn_only_when_a_call_needs_it(exported: Path, tmp_path: Path) -> None:
    """``lazy=True`` (clients score, Spark): the fast path is re-checked against the answers
    sklearn gave at import, and scikit-learn is not even imported unless a call needs it."""
    import subprocess
    import sys

    pipeline = load_pipeline(exported)
    contract = read_contract(exported)
    fast = build(pipeline, contract.task)
    example = example_of(exported)
    fast.spec["expected"] = fastpath.recorded_predictions(pipeline, example, contract.task)
    save(fast, tmp_path / "fp")

    done = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE, str(exported), str(tmp_path / "fp")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.split() == [fastpath.ENGINE_FAST, "False", "False"], done.stderr

    model = load_model(exported, contract, tmp_path / "fp", lazy=True)
    assert model.fast is not None and model.loaded_pipeline is None
    assert np.array_equal(bits(model.predict(example)), bits(pipeline.predict(example)))
    assert model.loaded_pipeline is None
    number = next(c for c in example.columns if example[c].dtype == np.float64)
    odd = example.astype({number: np.float32})  # delegated: sklearn is loaded for it
    assert np.array_equal(bits(model.predict(odd)), bits(pipeline.predict(odd)))
    assert model.loaded_pipeline is not None

    # Recorded answers the fast path does not give: checked against sklearn itself instead.
    spec = json.loads((tmp_path / "fp" / "fastpath.json").read_text())
    spec["expected"]["frame"]["predictions"][0] += 1.0
    (tmp_path / "fp" / "fastpath.json").write_text(json.dumps(spec))
    model = load_model(exported, contract, tmp_path / "fp", lazy=True)
    assert model.loaded_pipeline is not None and model.fast is not None
    assert model.fast_report["checked_on"] == {"input_example": len(example)}


@pytest.mark.parametrize(
    ("shape", "task"),
    [
        ({"rows": 900, "numbers": 14, "categories": 0, "levels": 0}, "regression"),
        ({"rows": 600, "numbers": 0, "categories": 4, "levels": 30}, "regression"),
        ({"rows": 700, "numbers": 3, "categories": 2, "levels": 5}, "classification"),
        ({"rows": 400, "numbers": 1, "categories": 1, "levels": 2}, "classification"),
    ],
)
def test_exact_on_generated_data_of_other_shapes(shape: dict[str, int], task: str) -> None:
    """Models the pipeline builds from generated data: many numbers, only categories (wide
    one-hot), more classes (integer labels), a tiny one; with missing values everywhere."""
    from pipeline.train import build_model

    rng = np.random.default_rng(shape["rows"])
    n = shape["rows"]
    frame = pd.DataFrame({f"n{i}": rng.normal(i, 1 + i, n) for i in range(shape["numbers"])})
    for i in range(shape["categories"]):
        levels = [f"c{i}-{k}" for k in range(shape["levels"])]
        frame[f"k{i}"] = pd.Series(rng.choice(levels, n), dtype=object)
    frame["o"] = pd.Series(rng.choice(["lo", "mid", "hi"], n), dtype=object)
    signal = frame.select_dtypes("number").sum(axis=1).to_numpy() + (frame["o"] == "hi") * 3
    for column in frame.columns:
        # Fewer holes than any level's share: a missing value that is the most frequent
        # "category" makes the imputer's fill None, which the fast path leaves to sklearn.
        hole = rng.random(n) < (0.1 if frame[column].dtype != object else 0.02)
        missing = None if frame[column].dtype == object else np.nan
        frame[column] = frame[column].where(~hole, missing)
    y = signal + rng.normal(0, 1, n)
    if task == "classification":
        y = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8]))  # 5 integer classes
    features = {
        "numeric": [c for c in frame.columns if c.startswith("n")],
        "categorical": [c for c in frame.columns if c.startswith("k")],
        "ordinal": {"o": ["lo", "mid", "hi"]},
        "text": None,
    }
    target = "RandomForestClassifier" if task == "classification" else "RandomForestRegressor"
    estimator = {"_target_": f"sklearn.ensemble.{target}", "n_estimators": 15, "random_state": 0}
    model = build_model(features, {"estimator": estimator}).fit(frame, y)
    model[-1].set_params(n_jobs=1)
    fast, report = prepare(model, task, {"data": frame})
    assert fast is not None and report["exact"], report.get("reason")
    assert_same_predictions(fast.predict_arrays(frame), model, frame, task)
