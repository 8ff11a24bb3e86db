"""The exact compiled forest: a random forest's trees as plain arrays, walked by a numba kernel
that gives scikit-learn's answers bit for bit (RandomForestRegressor.predict,
RandomForestClassifier.predict_proba with ``n_jobs=1``).

Why it is exact (the importer's check, ``importers.fast.check_exact``, proves it per model):

- **Comparisons.** sklearn casts the input to float32 and compares the widened value with the
  node's float64 threshold: ``float64(x32) <= t``. Here thresholds are stored rounded *down*
  to float32 (``t32``: the largest float32 not above ``t``) and compared with ``x32``
  directly. For any float32 ``x``: ``x <= t32`` implies ``x <= t``, and ``x <= t`` implies
  ``x <= t32`` (``t32`` is the largest float32 ``<= t``), so the two tests agree on every
  non-NaN input. Rounding to nearest would not (``x`` between ``t`` and a rounded-up ``t32``).
- **Missing values.** A NaN goes where the node's ``missing_go_to_left`` says, as in sklearn's
  tree walk (``isnan(x)`` is tested before ``x <= t``).
- **Accumulation.** Per row, the leaf values of the trees are added in tree order, starting
  from 0.0, then divided by the tree count: what ``_accumulate_prediction`` and ``/=
  len(estimators_)`` do with ``n_jobs=1``. A classifier's leaf value is what
  ``DecisionTreeClassifier.predict_proba`` returns for that leaf (scikit-learn >= 1.4 stores
  the class fractions in ``tree_.value``, and predict_proba returns them as they are).

Why it is fast: rows go through one tree together, a block at a time, with no branch in the
walk: a leaf points to itself, so every row takes the tree's ``max_depth`` steps and the inner
loop is the same for every row. A chunk of rows goes tree by tree (the tree stays in cache),
and the importer stores each tree's nodes breadth-first (the top levels share cache lines).
Each row is computed alone, so the result does not depend on the block or chunk size or on
how rows are shared between threads (``threads`` > 1, offline only).

Compiled code is cached on disk (``NUMBA_CACHE_DIR``, see :func:`cache_folder`): set before
numba is imported, so a read-only package folder (a bento, a container) still caches.

The arrays come from a file in the model folder (untrusted input): :meth:`Forest.__init__`
checks every index the kernel follows, so a damaged file is refused, never read out of bounds.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

CACHE_ENV = "NUMBA_CACHE_DIR"
# Rows walked through one tree together (their independent walks overlap in the CPU), and
# rows taken tree by tree (a tree stays in cache): measured for the diamonds forest in
# docs/fast-path-research.md.
BLOCK_ROWS = 64
CHUNK_ROWS = 16384
# The saved arrays: name -> (dtype, dimensions).
ARRAYS = {
    "nodes": (np.int32, 2),
    "missing_left": (np.uint8, 1),
    "value": (np.float64, 2),
    "roots": (np.int64, 1),
    "depths": (np.int32, 1),
}


def cache_folder() -> Path:
    """Where numba caches compiled code: ``$NUMBA_CACHE_DIR`` when set, else a folder of this
    user in the temp dir, which numba creates when it first saves code there. numba's cache
    files are pickles: an existing folder that is not this user's own, or that others may
    write, is never used; a fresh private folder is taken instead."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"tagserve-numba-{uid if uid is not None else 0}"
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return folder
    except OSError:
        info = None
    private = info is not None and stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o022
    if private and (uid is None or info.st_uid == uid):
        return folder
    return Path(tempfile.mkdtemp(prefix="tagserve-numba-"))


def _set_cache_folder() -> None:
    folder = str(cache_folder())
    os.environ[CACHE_ENV] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba imported before this module: it read the variable already
        config.CACHE_DIR = folder


_set_cache_folder()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is set)


def _numba_without_scipy_linalg() -> None:
    """numba imports ``scipy.linalg`` (for ``np.dot`` and ``np.linalg`` in kernels) when it
    first compiles or loads a kernel: a large import that the forest's kernels never use, on
    the start-up of every command and worker that walks a forest. Here that import fails
    while numba loads its array functions (numba then leaves its BLAS support out), and works
    again afterwards for whoever needs scipy."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    blocked = "scipy.linalg.cython_blas"
    sys.modules[blocked] = None  # type: ignore[assignment]  (None: "cannot be imported")
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        if blocked in sys.modules and sys.modules[blocked] is None:
            del sys.modules[blocked]


_numba_without_scipy_linalg()


@numba.njit(cache=True, nogil=True)
def _walk(X, nodes, thresholds, missing_left, value, roots, depths, out, start, stop):
    """Rows ``start:stop`` of ``X`` (float32) -> ``out`` (float64, rows x outputs).

    ``nodes[n]``: feature, threshold (float32 bits; ``thresholds`` is the same memory seen as
    float32), left, right: one 16-byte record, so a step reads one cache line. Tree by tree
    over a chunk of rows (the tree stays in cache), a block of rows at a time (independent
    walks the CPU overlaps), eight walks at once where no value is missing
    (:func:`_eight_walks`)."""
    n_trees, k = roots.shape[0], value.shape[1]
    node = np.empty(BLOCK_ROWS, np.int32)
    for chunk in range(start, stop, CHUNK_ROWS):
        end = min(chunk + CHUNK_ROWS, stop)
        has_nan = False
        for r in range(chunk, end):
            for c in range(X.shape[1]):
                if np.isnan(X[r, c]):
                    has_nan = True
        for r in range(chunk, end):
            for c in range(k):
                out[r, c] = 0.0
        for t in range(n_trees):
            for first in range(chunk, end, BLOCK_ROWS):
                rows = min(BLOCK_ROWS, end - first)
                for j in range(rows):
                    node[j] = roots[t]
                if has_nan:
                    for _ in range(depths[t]):
                        for j in range(rows):
                            n = node[j]
                            x = X[first + j, nodes[n, 0]]
                            # NaN: x > t is False: right unless missing_left says left.
                            right = (x > thresholds[n, 1]) | ((x != x) & (missing_left[n] == 0))
                            node[j] = nodes[n, 2 + np.int64(right)]
                else:
                    eights = rows - rows % 8
                    for j in range(0, eights, 8):
                        _eight_walks(X, nodes, thresholds, roots[t], depths[t], node, first, j)
                    for j in range(eights, rows):
                        n = roots[t]
                        for _ in range(depths[t]):
                            n = nodes[n, 2 + np.int64(X[first + j, nodes[n, 0]] > thresholds[n, 1])]
                        node[j] = n
                # Per row, the trees' values are added in tree order (t is the outer loop).
                for j in range(rows):
                    for c in range(k):
                        out[first + j, c] += value[node[j], c]
        for r in range(chunk, end):
            for c in range(k):
                out[r, c] /= n_trees


@numba.njit(cache=True, nogil=True)
def _eight_walks(X, nodes, thresholds, root, depth, node, first, j):
    """Rows ``first + j`` to ``first + j + 7`` (none missing a value) from ``root`` down
    ``depth`` steps, their leaves into ``node[j:j + 8]``. The eight walks are independent, and
    their nodes held in registers (not in ``node``, read and written at every step) let the
    CPU overlap them best."""
    n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
    r = first + j
    for _ in range(depth):
        n0 = nodes[n0, 2 + np.int64(X[r, nodes[n0, 0]] > thresholds[n0, 1])]
        n1 = nodes[n1, 2 + np.int64(X[r + 1, nodes[n1, 0]] > thresholds[n1, 1])]
        n2 = nodes[n2, 2 + np.int64(X[r + 2, nodes[n2, 0]] > thresholds[n2, 1])]
        n3 = nodes[n3, 2 + np.int64(X[r + 3, nodes[n3, 0]] > thresholds[n3, 1])]
        n4 = nodes[n4, 2 + np.int64(X[r + 4, nodes[n4, 0]] > thresholds[n4, 1])]
        n5 = nodes[n5, 2 + np.int64(X[r + 5, nodes[n5, 0]] > thresholds[n5, 1])]
        n6 = nodes[n6, 2 + np.int64(X[r + 6, nodes[n6, 0]] > thresholds[n6, 1])]
        n7 = nodes[n7, 2 + np.int64(X[r + 7, nodes[n7, 0]] > thresholds[n7, 1])]
    node[j], node[j + 1], node[j + 2], node[j + 3] = n0, n1, n2, n3
    node[j + 4], node[j + 5], node[j + 6], node[j + 7] = n4, n5, n6, n7


@numba.njit(cache=True, nogil=True, parallel=True)
def _walk_parallel(X, nodes, thresholds, missing_left, value, roots, depths, out, pieces):
    """:func:`_walk` over all rows, ``pieces`` ranges of rows shared between threads (never
    trees: each row is computed by one thread, as :func:`_walk` computes it)."""
    n = X.shape[0]
    size = (n + pieces - 1) // pieces
    for p in numba.prange(pieces):
        start = p * size
        stop = min(start + size, n)
        _walk(X, nodes, thresholds, missing_left, value, roots, depths, out, start, stop)


def round_down_to_float32(thresholds: np.ndarray) -> np.ndarray:
    """Each float64 threshold as the largest float32 not above it (see the module docstring)."""
    t64 = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t64.astype(np.float32)
    above = t32.astype(np.float64) > t64
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


class Forest:
    """A forest's nodes as flat arrays (what ``importers.fast`` reads from sklearn's trees).

    Args:
        arrays: ``nodes``: int32 (nodes, 4): per node the input column it tests, its
            threshold rounded down to float32 (the bits, as int32), its left and right child
            (a leaf: 0, 0, itself, itself); ``missing_left``: uint8 per node, 1 when a NaN goes
            left; ``value``: float64 (nodes, outputs), a leaf's prediction or class fractions;
            ``roots``: int64 per tree, its root, in the forest's tree order; ``depths``: int32
            per tree, its ``max_depth`` (steps to reach any of its leaves).
        n_features: Columns of the input.

    Raises:
        ValueError: Arrays of the wrong type or shape, or an index out of range.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], n_features: int):
        self.n_features = int(n_features)
        checked = {}
        for name, (dtype, ndim) in ARRAYS.items():
            array = arrays.get(name)
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
                raise ValueError(f"forest array {name}: not {ndim}-d {np.dtype(dtype).name}")
            checked[name] = np.ascontiguousarray(array)
        nodes = len(checked["nodes"])
        if nodes == 0 or any(len(checked[k]) != nodes for k in ("missing_left", "value")):
            raise ValueError("forest arrays: node arrays of different lengths")
        if checked["nodes"].shape[1] != 4 or checked["value"].shape[1] < 1:
            raise ValueError("forest arrays: nodes or value of the wrong shape")
        trees = len(checked["roots"])
        if trees == 0 or len(checked["depths"]) != trees:
            raise ValueError("forest arrays: roots and depths differ")
        in_range = (
            _within(checked["nodes"][:, 2:], nodes)
            and _within(checked["roots"], nodes)
            and _within(checked["nodes"][:, 0], self.n_features)
            and bool((checked["depths"] >= 0).all() and (checked["depths"] <= nodes).all())
        )
        if not in_range:
            raise ValueError("forest arrays: an index out of range")
        self.arrays = checked
        self._thresholds = checked["nodes"].view(np.float32)
        self.n_outputs = int(checked["value"].shape[1])
        self.n_trees = trees
        self.n_nodes = nodes

    def output(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """(rows, outputs) float64: the forest's mean leaf value per row, as sklearn computes
        it for ``X`` (any float dtype: cast to float32 first, as sklearn does).

        ``threads`` > 1 shares blocks of rows between numba threads (each row still computed
        alone, so the answer is the same).

        Raises:
            ValueError: A value that is infinite in float32 (sklearn's forest refuses it), or
                a wrong number of columns.
        """
        with np.errstate(over="ignore"):
            X32 = np.ascontiguousarray(X, dtype=np.float32)
        if X32.ndim != 2 or X32.shape[1] != self.n_features:
            raise ValueError(f"the forest takes {self.n_features} columns, not {X32.shape[1:]}")
        if np.isinf(X32).any():
            raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
        out = np.empty((X32.shape[0], self.n_outputs), dtype=np.float64)
        a = self.arrays
        args = (a["nodes"], self._thresholds, a["missing_left"], a["value"], a["roots"])
        if threads > 1 and len(X32) > BLOCK_ROWS:
            with _numba_threads(threads) as used:
                pieces = max(used, -(-len(X32) // CHUNK_ROWS))
                _walk_parallel(X32, *args, a["depths"], out, pieces)
        else:
            _walk(X32, *args, a["depths"], out, 0, X32.shape[0])
        return out


def _within(array: np.ndarray, bound: int) -> bool:
    return bool(array.size == 0 or (array.min() >= 0 and array.max() < bound))


class _numba_threads:
    """numba's thread count for a block (at most what it started with)."""

    def __init__(self, threads: int):
        self.threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))

    def __enter__(self) -> int:
        self.saved = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        return self.threads

    def __exit__(self, *exc: object) -> None:
        numba.set_num_threads(self.saved)
