"""The compiled forest (inference.forest) on its own: bit for bit equal to scikit-learn's
forests, missing values and ties included, and its compiled code cached where the service
may write, even when the package folder is read-only."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from importers.fast import forest_edge_rows
from importers.fast_build import forest_arrays
from inference.forest import Forest, cache_folder, round_down_to_float32
from tests.helpers.project import PROJECT_ROOT


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def compiled(forest) -> Forest:
    return Forest(forest_arrays(forest), forest.n_features_in_)


def test_rounding_thresholds_down_makes_float32_comparisons_exact() -> None:
    """sklearn: float64(x32) <= t. Here: x32 <= t32 with t32 rounded down. Equal on every
    float32 near the thresholds; rounding to nearest is not."""
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(0, 10, 5000), rng.normal(0, 1e-30, 500), [0.0, -0.0]])
    t32 = round_down_to_float32(t)
    assert (t32.astype(np.float64) <= t).all()
    assert (np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t).all()
    x = np.concatenate(
        [
            np.nextafter(t32, np.float32(-np.inf)),
            t32,
            np.nextafter(t32, np.float32(np.inf)),
            t.astype(np.float32),
        ]
    )
    tt, tt32 = np.tile(t, 4), np.tile(t32, 4)
    assert np.array_equal(x.astype(np.float64) <= tt, x <= tt32)
    nearest = t.astype(np.float32)
    assert not np.array_equal(x.astype(np.float64) <= tt, x <= np.tile(nearest, 4))


def test_a_forest_trained_with_missing_values() -> None:
    """sklearn 1.7 forests learn where NaN goes at each split: the engine routes it there."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 5))
    y = X[:, 0] * 3 + np.where(np.isnan(X[:, 1]), 5.0, X[:, 1]) + rng.normal(size=len(X))
    X[rng.random(X.shape) < 0.25] = np.nan
    y = y + np.isnan(X[:, 2]) * 4.0  # missingness that matters
    forest = RandomForestRegressor(n_estimators=12, max_depth=10, random_state=0).fit(X, y)
    left = np.concatenate([e.tree_.missing_go_to_left for e in forest.estimators_])
    assert left.any() and not left.all()  # both directions occur
    engine = compiled(forest)
    rows = np.vstack([X, forest_edge_rows(forest, X[~np.isnan(X).any(axis=1)], rows=2000)])
    with np.errstate(over="ignore", invalid="ignore"):  # sklearn's check sums 3.4e38s
        want = forest.predict(rows)
    assert np.array_equal(bits(engine.output(rows)[:, 0]), bits(want))
    assert np.array_equal(bits(engine.output(rows, threads=2)[:, 0]), bits(want))


def test_a_classifier_with_string_labels_and_ties() -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3))
    y = np.array(["owl", "cat", "ant"], dtype=object)[rng.integers(0, 3, len(X))]
    # Two trees grown to pure leaves: each votes 1.0 for a class, so where they disagree two
    # classes tie at 0.5.
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    proba = forest.predict_proba(X)
    ties = (proba == proba.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert ties.any()  # the argmax rule is exercised: the first highest class wins
    engine = compiled(forest)
    got = engine.output(X)
    assert np.array_equal(bits(got), bits(proba))
    assert np.array_equal(forest.classes_.take(np.argmax(got, axis=1)), forest.predict(X))


def test_any_block_split_gives_the_same_rows() -> None:
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 4))
    forest = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, X.sum(axis=1))
    engine = compiled(forest)
    whole = engine.output(X)
    # 500 rows: whole blocks, then a block's eight-row walks and its last rows one by one.
    assert np.array_equal(bits(whole[:, 0]), bits(forest.predict(X)))
    parts = np.vstack([engine.output(X[i : i + 37]) for i in range(0, len(X), 37)])
    assert np.array_equal(bits(whole), bits(parts))
    assert np.array_equal(bits(whole), bits(engine.output(X, threads=2)))
    assert engine._shift > 0  # rows with no value missing walk the packed nodes
    with pytest.raises(ValueError, match="infinity"):
        engine.output(np.full((1, 4), 1e39))
    with pytest.raises(ValueError, match="takes 4 columns"):
        engine.output(np.zeros((1, 3)))


def test_nodes_that_do_not_pack_walk_the_records_with_the_same_answers() -> None:
    """The same trees with their nodes numbered backwards: a right child no longer follows
    its left one, so the nodes do not pack (pack_nodes), and the 16-byte walk gives the very
    answers of the packed one, and sklearn's."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    forest = RandomForestRegressor(n_estimators=4, random_state=0).fit(X, X[:, 0] - X[:, 2])
    arrays = forest_arrays(forest)
    last = len(arrays["nodes"]) - 1
    backwards = dict(arrays, roots=last - arrays["roots"])
    nodes = arrays["nodes"][::-1].copy()
    nodes[:, 2:] = last - nodes[:, 2:]
    backwards.update(
        nodes=nodes, missing_left=arrays["missing_left"][::-1].copy(), value=arrays["value"][::-1]
    )
    packed, unpacked = Forest(arrays, 3), Forest(backwards, 3)
    assert packed._shift > 0 and unpacked._shift == 0
    want = bits(forest.predict(X))
    assert np.array_equal(bits(packed.output(X)[:, 0]), want)
    assert np.array_equal(bits(unpacked.output(X)[:, 0]), want)


CACHE_PROBE = """
import json, os, numpy as np
from inference import forest
arrays = {
    "nodes": np.array([[0, np.float32(0.5).view(np.int32), 1, 2], [0, 0, 1, 1], [0, 0, 2, 2]],
                      dtype=np.int32),
    "missing_left": np.zeros(3, np.uint8),
    "value": np.array([[0.0], [1.0], [2.0]]),
    "roots": np.array([0], np.int64),
    "depths": np.array([1], np.int32),
}
out = forest.Forest(arrays, 1).output(np.array([[0.25], [0.75], [np.nan]]))
stats = forest._walk.stats
print(json.dumps({
    "out": out[:, 0].tolist(),
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "cache": os.environ["NUMBA_CACHE_DIR"],
    "module": forest.__file__,
}))
"""


def test_compiled_code_is_cached_outside_a_read_only_package(tmp_path: Path) -> None:
    """A copy of the package in a read-only folder (as in a bento or an image): numba's cache
    goes to the private temp folder, the package folder gets no file, and a second process
    loads the compiled kernel from the cache instead of compiling it. (As root the folder's
    mode does not stop writes: the check that nothing was written there does.)"""
    site = tmp_path / "site"
    shutil.copytree(
        PROJECT_ROOT / "inference",
        site / "inference",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in [site, *site.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = sorted(site.rglob("*"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), TMPDIR=str(temp), PYTHONDONTWRITEBYTECODE="1")
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["module"].startswith(str(site))
    assert first["out"] == second["out"] == [1.0, 2.0, 2.0]  # NaN: missing_left 0, right
    assert first["cache"] == str(temp / f"tagserve-numba-{os.getuid()}")
    assert first["misses"] >= 1 and second["misses"] == 0 and second["hits"] >= 1
    assert sorted(site.rglob("*")) == before
    cached = list(Path(first["cache"]).rglob("*.nbi"))
    assert cached and not stat.S_IMODE(Path(first["cache"]).stat().st_mode) & 0o022
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755)


def test_a_cache_folder_others_can_write_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numba's cache files are pickles: a shared folder someone else could write is not
    trusted; a fresh private one is taken."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    shared = tmp_path / f"tagserve-numba-{os.getuid()}"
    assert cache_folder() == shared and not shared.exists()  # numba creates it when it saves
    shared.mkdir()
    shared.chmod(0o777)
    chosen = cache_folder()
    assert chosen != shared and chosen.parent == tmp_path
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o700
    shared.chmod(0o700)
    assert cache_folder() == shared
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "given"))
    assert cache_folder() == tmp_path / "given"
