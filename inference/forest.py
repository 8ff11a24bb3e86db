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
Rows with no value missing take a leaner walk (:func:`pack_nodes`, :func:`_packed_walks`):
8-byte nodes (left child and feature in one word, the threshold in the other; the right child
follows the left one, and a leaf's threshold is +inf so that a finite value stays there), half
the memory per step, and eight walks at once with their nodes in registers. The comparisons
and the sums are the same. Each row is computed alone, so the result does not depend on the
block or chunk size or on how rows are shared between threads (``threads`` > 1, offline
only).

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
def _walk(
    X, nodes, thresholds, missing_left, value, roots, depths, packed, shift, out, start, stop
):
    """Rows ``start:stop`` of ``X`` (float32) -> ``out`` (float64, rows x outputs).

    ``nodes[n]``: feature, threshold (float32 bits; ``thresholds`` is the same memory seen as
    float32), left, right: one 16-byte record, so a step reads one cache line. Tree by tree
    over a chunk of rows (the tree stays in cache), a block of rows at a time (independent
    walks the CPU overlaps). A chunk with no value missing walks the packed nodes instead
    where they pack (``shift`` > 0: :func:`pack_nodes`, :func:`_packed_walks`)."""
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
        if shift > 0 and not has_nan:
            _packed_walks(X, packed, shift, value, roots, depths, out, chunk, end)
        else:
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
                        for _ in range(depths[t]):
                            for j in range(rows):
                                n = node[j]
                                right = X[first + j, nodes[n, 0]] > thresholds[n, 1]
                                node[j] = nodes[n, 2 + np.int64(right)]
                    # Per row, the trees' values are added in tree order (t is the outer loop).
                    for j in range(rows):
                        for c in range(k):
                            out[first + j, c] += value[node[j], c]
        for r in range(chunk, end):
            for c in range(k):
                out[r, c] /= n_trees


@numba.njit(cache=True, nogil=True)
def _packed_walks(X, packed, shift, value, roots, depths, out, first, end):
    """Rows ``first:end`` (none missing a value) tree by tree, their leaf values added to
    ``out`` in tree order, on the packed nodes (:func:`pack_nodes`): eight walks at once,
    their nodes in registers, independent walks the CPU overlaps; then the rows left one by
    one. ``out`` is divided by the tree count by the caller."""
    n_trees, k = roots.shape[0], value.shape[1]
    mask = (1 << shift) - 1
    limits = packed.view(np.float32)
    for t in range(n_trees):
        root, depth = roots[t], depths[t]
        r = first
        while r + 8 <= end:
            n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
            for _ in range(depth):
                p = packed[n0, 0]
                n0 = (p >> shift) + np.int64(X[r, p & mask] > limits[n0, 1])
                p = packed[n1, 0]
                n1 = (p >> shift) + np.int64(X[r + 1, p & mask] > limits[n1, 1])
                p = packed[n2, 0]
                n2 = (p >> shift) + np.int64(X[r + 2, p & mask] > limits[n2, 1])
                p = packed[n3, 0]
                n3 = (p >> shift) + np.int64(X[r + 3, p & mask] > limits[n3, 1])
                p = packed[n4, 0]
                n4 = (p >> shift) + np.int64(X[r + 4, p & mask] > limits[n4, 1])
                p = packed[n5, 0]
                n5 = (p >> shift) + np.int64(X[r + 5, p & mask] > limits[n5, 1])
                p = packed[n6, 0]
                n6 = (p >> shift) + np.int64(X[r + 6, p & mask] > limits[n6, 1])
                p = packed[n7, 0]
                n7 = (p >> shift) + np.int64(X[r + 7, p & mask] > limits[n7, 1])
            for c in range(k):
                out[r, c] += value[n0, c]
                out[r + 1, c] += value[n1, c]
                out[r + 2, c] += value[n2, c]
                out[r + 3, c] += value[n3, c]
                out[r + 4, c] += value[n4, c]
                out[r + 5, c] += value[n5, c]
                out[r + 6, c] += value[n6, c]
                out[r + 7, c] += value[n7, c]
            r += 8
        for row in range(r, end):
            n = root
            for _ in range(depth):
                p = packed[n, 0]
                n = (p >> shift) + np.int64(X[row, p & mask] > limits[n, 1])
            for c in range(k):
                out[row, c] += value[n, c]


@numba.njit(cache=True, nogil=True, parallel=True)
def _walk_parallel(
    X, nodes, thresholds, missing_left, value, roots, depths, packed, shift, out, pieces
):
    """:func:`_walk` over all rows, ``pieces`` ranges of rows shared between threads (never
    trees: each row is computed by one thread, as :func:`_walk` computes it)."""
    n = X.shape[0]
    size = (n + pieces - 1) // pieces
    for p in numba.prange(pieces):
        start = p * size
        stop = min(start + size, n)
        _walk(
            X,
            nodes,
            thresholds,
            missing_left,
            value,
            roots,
            depths,
            packed,
            shift,
            out,
            start,
            stop,
        )


def pack_nodes(nodes: np.ndarray, n_features: int) -> tuple[np.ndarray, int]:
    """The nodes as 8-byte records for the walk of rows with no value missing, half the
    memory a step reads: ``(left << shift) | feature`` and the threshold (float32 bits). The
    right child must follow the left one (the importer's breadth-first order stores them so),
    so that a step goes to ``left + (x > threshold)``; a leaf (its own children) gets the
    threshold +inf, so that a finite ``x`` stays there as in the 16-byte walk. Returns
    ``(packed, shift)``, or a dummy and shift 0 where the nodes do not pack (then the 16-byte
    walk serves)."""
    count = len(nodes)
    index = np.arange(count)
    leaf = nodes[:, 2] == index
    shift = max(1, (int(n_features) - 1).bit_length())
    adjacent = np.array_equal(nodes[~leaf, 3], nodes[~leaf, 2] + 1)
    if not adjacent or not np.array_equal(nodes[leaf, 3], index[leaf]) or count << shift >= 2**31:
        return np.zeros((1, 2), np.int32), 0
    packed = np.empty((count, 2), np.int32)
    packed[:, 0] = (nodes[:, 2].astype(np.int64) << shift) | nodes[:, 0]
    limits = nodes.view(np.float32)[:, 1].copy()
    limits[leaf] = np.inf
    packed[:, 1] = limits.view(np.int32)
    return packed, shift


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
        self._packed, self._shift = pack_nodes(checked["nodes"], self.n_features)
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
        args += (a["depths"], self._packed, self._shift)
        if threads > 1 and len(X32) > BLOCK_ROWS:
            with _numba_threads(threads) as used:
                pieces = max(used, -(-len(X32) // CHUNK_ROWS))
                _walk_parallel(X32, *args, out, pieces)
        else:
            _walk(X32, *args, out, 0, X32.shape[0])
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
