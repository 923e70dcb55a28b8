"""Compiled isolation forests: fast numpy scoring and a pickle-free artifact.

A fitted :class:`sklearn.ensemble.IsolationForest` is flattened by
:func:`compile_forest` into one node table covering all of its trees. The
resulting :class:`CompiledForest` scores rows with vectorized numpy only, and
is stored with :func:`save_forest` as an ``.npz`` of plain numeric arrays that
:func:`load_forest` reads back with ``allow_pickle=False`` after checking the
file's sha256. Loading and scoring never import scikit-learn.

Scores are **higher = more anomalous**: :meth:`CompiledForest.score` returns
``-IsolationForest.score_samples(X)`` (to within 1e-9; the only difference is
the order in which the trees' path lengths are summed). This module is the one
place where scikit-learn's sign convention is converted.

Node table
----------
All trees share one table of ``n_nodes`` entries; tree ``t`` starts at
``roots[t]``. For an internal node ``i``, a row goes to ``left[i]`` if
``float32(x[feature[i]]) <= threshold[i]`` and to ``right[i]`` otherwise
(``feature`` indexes the full input row). A leaf has
``left[i] == right[i] == i`` and ``value[i]`` is its path length: the leaf's
depth plus the average path length ``c(n)`` of the unbuilt subtree over the
``n`` training samples that reached it. Internal nodes have value 0. Every
internal node's children have larger indices than the node itself, every node
has at most one parent, and every node is reachable from a root.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FORMAT_VERSION",
    "CompiledForest",
    "ForestFormatError",
    "compile_forest",
    "load_forest",
    "save_forest",
]

#: Version of the array layout written by :func:`save_forest`.
FORMAT_VERSION: Final = 1

#: Every array of the artifact: name -> (dtype, number of dimensions).
_ARRAY_SPEC: Final[dict[str, tuple[np.dtype[Any], int]]] = {
    "format_version": (np.dtype(np.int64), 0),
    "feature": (np.dtype(np.int32), 1),
    "threshold": (np.dtype(np.float64), 1),
    "left": (np.dtype(np.int32), 1),
    "right": (np.dtype(np.int32), 1),
    "value": (np.dtype(np.float64), 1),
    "roots": (np.dtype(np.int32), 1),
    "max_depth": (np.dtype(np.int64), 0),
    "n_features": (np.dtype(np.int64), 0),
    "average_path_length_max_samples": (np.dtype(np.float64), 0),
    "offset": (np.dtype(np.float64), 0),
}

#: Largest node count (over all trees) of the complete-binary-tree layout used for
#: scoring; forests that would need more are scored by walking the node table.
_MAX_LAYOUT_NODES: Final = 1 << 21

#: Rows x trees evaluated at once: keeps the working buffers in cache.
_CHUNK_ELEMENTS: Final = 1 << 15

_HEX_DIGITS: Final = frozenset("0123456789abcdef")


class ForestFormatError(ValueError):
    """A compiled forest's arrays or artifact file are invalid or untrusted."""


def _average_path_length(n_samples: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Return ``c(n)``, exactly as ``sklearn.ensemble._iforest._average_path_length``.

    The average path length of an unsuccessful binary-search-tree search over
    ``n`` keys: 0 for ``n <= 1``, 1 for ``n == 2``, else
    ``2 (ln(n - 1) + gamma) - 2 (n - 1) / n``.
    """
    n = np.asarray(n_samples)
    out = np.zeros(n.shape)
    mask_1 = n <= 1
    mask_2 = n == 2
    not_mask = ~np.logical_or(mask_1, mask_2)
    out[mask_1] = 0.0
    out[mask_2] = 1.0
    out[not_mask] = (
        2.0 * (np.log(n[not_mask] - 1.0) + np.euler_gamma) - 2.0 * (n[not_mask] - 1.0) / n[not_mask]
    )
    return out


def _round_down_float32(threshold: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Return the largest float32 ``<=`` each threshold.

    For any float32 ``x``: ``x <= t`` (compared in float64, as scikit-learn's
    trees do) if and only if ``x <= _round_down_float32(t)``, so rows can be
    compared in float32 without changing a single routing decision.
    """
    with np.errstate(over="ignore"):
        t32 = threshold.astype(np.float32)
    too_high = t32.astype(np.float64) > threshold
    t32[too_high] = np.nextafter(t32[too_high], np.float32(-np.inf))
    return t32


@dataclass(frozen=True, slots=True)
class _Plan:
    """Derived, read-only tables that :meth:`CompiledForest.score` walks.

    With ``complete`` set, every tree is padded to a complete binary tree of
    depth ``max_depth`` (a leaf above the bottom is copied into all of its
    padded descendants, whose splits are then irrelevant) and stored level by
    level: at level ``l``, node ``j`` of tree ``t`` has index ``t * 2**l + j``
    and its children at level ``l + 1`` are ``2 * index`` (left) and
    ``2 * index + 1`` (right). ``level_feature``/``level_threshold`` hold the
    splits of the ``max_depth`` routing levels and ``leaf_value`` the path
    lengths of the bottom level. Without it, ``node_*`` hold the node table.
    """

    n_trees: int
    n_features: int
    max_depth: int
    denominator: float
    complete: bool
    level_feature: tuple[npt.NDArray[np.intp], ...]
    level_threshold: tuple[npt.NDArray[np.float32], ...]
    leaf_value: npt.NDArray[np.float64]
    node_feature: npt.NDArray[np.intp]
    node_threshold: npt.NDArray[np.float32]
    node_left: npt.NDArray[np.intp]
    node_right: npt.NDArray[np.intp]
    node_value: npt.NDArray[np.float64]
    roots: npt.NDArray[np.intp]
    chunk_rows: int
    chunk_start: npt.NDArray[np.intp]  # roots (or 0..T-1), tiled for chunk_rows rows
    chunk_offset: npt.NDArray[np.intp]  # row * n_features, repeated per tree


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


def _array_field(name: str, value: object, n: int | None = None) -> npt.NDArray[Any]:
    """Check one 1-D array field's type, dtype and length; return a read-only copy."""
    dtype, ndim = _ARRAY_SPEC[name]
    if not isinstance(value, np.ndarray):
        raise ForestFormatError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise ForestFormatError(f"{name}: expected dtype {dtype}, got {value.dtype}")
    if value.ndim != ndim:
        raise ForestFormatError(f"{name}: expected {ndim} dimension(s), got shape {value.shape}")
    if n is not None and value.shape[0] != n:
        raise ForestFormatError(f"{name}: expected {n} entries, got {value.shape[0]}")
    return _readonly(np.array(value, copy=True))


def _int_field(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ForestFormatError(f"{name}: expected an int, got {type(value).__name__}")
    if int(value) < lo:
        raise ForestFormatError(f"{name}: must be >= {lo}, got {int(value)}")
    return int(value)


def _float_field(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int | np.floating | np.integer):
        raise ForestFormatError(f"{name}: expected a float, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ForestFormatError(f"{name}: must be finite, got {value}")
    return float(value)


@dataclass(frozen=True, eq=False, repr=False)
class CompiledForest:
    """A fitted isolation forest as one flat node table, scored with numpy.

    Build one with :func:`compile_forest`, :meth:`from_arrays` or
    :func:`load_forest`. Construction validates the whole table (dtypes,
    shapes, index ranges, tree structure, ``max_depth``) and raises
    :class:`ForestFormatError` on any problem; the arrays are copied and made
    read-only, so a constructed forest is always safe to score.

    Parameters
    ----------
    feature : ndarray of int32, shape (n_nodes,)
        Column of the full input row that each internal node splits on
        (already mapped through the forest's per-tree feature subsets); 0 for
        leaves.
    threshold : ndarray of float64, shape (n_nodes,)
        Split thresholds; rows with ``float32(x[feature]) <= threshold`` go
        left. Leaves carry scikit-learn's placeholder (-2).
    left, right : ndarray of int32, shape (n_nodes,)
        Global indices of the children; a leaf points to itself in both.
    value : ndarray of float64, shape (n_nodes,)
        Path length of each leaf (depth from the root + ``c(n_node_samples)``),
        0 for internal nodes.
    roots : ndarray of int32, shape (n_trees,)
        Root node of each tree.
    max_depth : int
        Depth of the deepest leaf over all trees (the number of routing steps).
    n_features : int
        Number of columns the forest expects in ``X``.
    average_path_length_max_samples : float
        ``c(max_samples_)``, the normalising constant of the anomaly score.
    offset : float
        scikit-learn's ``offset_`` (for information; not used by :meth:`score`).
    """

    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float64]
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    value: npt.NDArray[np.float64]
    roots: npt.NDArray[np.int32]
    max_depth: int
    n_features: int
    average_path_length_max_samples: float
    offset: float
    _plan: _Plan = field(init=False, compare=False)

    def __post_init__(self) -> None:
        n_features = _int_field("n_features", self.n_features, 1)
        max_depth = _int_field("max_depth", self.max_depth, 0)
        apl = _float_field("average_path_length_max_samples", self.average_path_length_max_samples)
        if apl < 0:
            raise ForestFormatError(f"average_path_length_max_samples: must be >= 0, got {apl}")
        offset = _float_field("offset", self.offset)
        feature = _array_field("feature", self.feature)
        n = feature.shape[0]
        if n == 0:
            raise ForestFormatError("feature: the node table is empty")
        threshold = _array_field("threshold", self.threshold, n)
        left = _array_field("left", self.left, n)
        right = _array_field("right", self.right, n)
        value = _array_field("value", self.value, n)
        roots = _array_field("roots", self.roots)
        if roots.shape[0] == 0:
            raise ForestFormatError("roots: the forest has no trees")
        _check_structure(feature, threshold, left, right, value, roots, max_depth, n_features)

        for name, val in (
            ("feature", feature),
            ("threshold", threshold),
            ("left", left),
            ("right", right),
            ("value", value),
            ("roots", roots),
            ("max_depth", max_depth),
            ("n_features", n_features),
            ("average_path_length_max_samples", apl),
            ("offset", offset),
        ):
            object.__setattr__(self, name, val)
        object.__setattr__(self, "_plan", _make_plan(self))

    @property
    def n_trees(self) -> int:
        """Number of trees in the forest."""
        return int(self.roots.shape[0])

    @property
    def n_nodes(self) -> int:
        """Number of nodes over all trees."""
        return int(self.feature.shape[0])

    def __repr__(self) -> str:
        return (
            f"CompiledForest(n_trees={self.n_trees}, n_nodes={self.n_nodes}, "
            f"max_depth={self.max_depth}, n_features={self.n_features})"
        )

    def score(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the anomaly score of each row: higher = more anomalous.

        Equal to ``-IsolationForest.score_samples(X)`` of the compiled model
        (to within 1e-9), i.e. ``2 ** (-mean_path_length / c(max_samples))``,
        in ``(0, 1]``; around 0.5 and below is normal.

        Like scikit-learn, ``X`` is cast to float32 before it is compared with
        the thresholds. Missing values are not supported: the caller must
        impute them, and a NaN anywhere in ``X`` raises ``ValueError``.
        Infinite values are routed like any other value.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score, with the same columns (and order) as the training
            data.

        Returns
        -------
        ndarray of float64, shape (n_samples,)
            The anomaly scores.

        Raises
        ------
        ValueError
            If ``X`` is not a 2-D numeric array with ``n_features`` columns,
            or contains NaN.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.ensemble import IsolationForest
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3))
        >>> model = IsolationForest(n_estimators=5, random_state=0).fit(X)
        >>> forest = compile_forest(model)
        >>> bool(np.allclose(forest.score(X), -model.score_samples(X), rtol=0, atol=1e-9))
        True
        >>> outlier = np.array([[8.0, -8.0, 8.0]])
        >>> bool(forest.score(outlier)[0] > forest.score(X).max())
        True
        >>> forest.score(np.zeros((1, 2)))
        Traceback (most recent call last):
        ...
        ValueError: X has 2 features, but the forest expects 3
        """
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(
                "X must be a 2-D array of shape (n_samples, n_features), "
                f"got an array of shape {arr.shape}"
            )
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"X must be numeric, got dtype {arr.dtype}")
        if arr.shape[1] != self.n_features:
            raise ValueError(
                f"X has {arr.shape[1]} features, but the forest expects {self.n_features}"
            )
        xf = np.ascontiguousarray(arr, dtype=np.float32)
        if np.isnan(xf).any():
            row = int(np.argmax(np.isnan(xf).any(axis=1)))
            raise ValueError(
                f"X contains NaN (first in row {row}); the forest does not handle missing "
                "values, impute them before scoring"
            )
        plan = self._plan
        n = xf.shape[0]
        depths = np.empty(n, dtype=np.float64)
        if n == 1:
            depths[:] = _path_lengths_one(plan, xf[0])
        else:
            for start in range(0, n, plan.chunk_rows):
                stop = min(start + plan.chunk_rows, n)
                depths[start:stop] = _path_lengths_chunk(plan, xf[start:stop].ravel(), stop - start)
        # As scikit-learn: with a single training sample the denominator and every path
        # length are 0, and the quotient is taken to be 1.
        if plan.denominator == 0.0:
            scores = np.full(n, 0.5)
        else:
            scores = np.power(2.0, -(depths / plan.denominator))
        return scores

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Return the forest as plain numeric arrays (scalars as 0-d arrays).

        Returns
        -------
        dict of str to ndarray
            Fresh copies, keyed by the artifact's array names, including
            ``format_version``; :meth:`from_arrays` is the inverse.

        Examples
        --------
        >>> arrays = _tiny_forest().to_arrays()
        >>> sorted(arrays)[:4]
        ['average_path_length_max_samples', 'feature', 'format_version', 'left']
        >>> arrays["max_depth"]
        array(1)
        """
        arrays: dict[str, npt.NDArray[Any]] = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "feature": self.feature.copy(),
            "threshold": self.threshold.copy(),
            "left": self.left.copy(),
            "right": self.right.copy(),
            "value": self.value.copy(),
            "roots": self.roots.copy(),
            "max_depth": np.array(self.max_depth, dtype=np.int64),
            "n_features": np.array(self.n_features, dtype=np.int64),
            "average_path_length_max_samples": np.array(
                self.average_path_length_max_samples, dtype=np.float64
            ),
            "offset": np.array(self.offset, dtype=np.float64),
        }
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> CompiledForest:
        """Build and validate a forest from the arrays of :meth:`to_arrays`.

        Parameters
        ----------
        arrays : mapping of str to ndarray
            Exactly the names of :meth:`to_arrays`, with the same dtypes and
            dimensions (scalars as 0-d arrays).

        Returns
        -------
        CompiledForest
            The validated forest.

        Raises
        ------
        ForestFormatError
            On a missing or unexpected name, a wrong dtype or shape, an
            unsupported format version, an index out of range, or a node table
            that is not a forest of binary trees of depth ``max_depth``.

        Examples
        --------
        >>> forest = _tiny_forest()
        >>> CompiledForest.from_arrays(forest.to_arrays())
        CompiledForest(n_trees=1, n_nodes=3, max_depth=1, n_features=2)
        >>> arrays = forest.to_arrays()
        >>> arrays["left"][0] = 7
        >>> CompiledForest.from_arrays(arrays)
        Traceback (most recent call last):
        ...
        detector.forest.ForestFormatError: left: index 7 out of range [0, 3) at node 0
        """
        names = set(arrays)
        missing = sorted(set(_ARRAY_SPEC) - names)
        unexpected = sorted(names - set(_ARRAY_SPEC))
        if missing:
            raise ForestFormatError(f"missing array(s): {', '.join(missing)}")
        if unexpected:
            raise ForestFormatError(f"unexpected array(s): {', '.join(unexpected)}")
        for name, (dtype, ndim) in _ARRAY_SPEC.items():
            value = arrays[name]
            if not isinstance(value, np.ndarray):
                raise ForestFormatError(
                    f"{name}: expected a numpy array, got {type(value).__name__}"
                )
            if value.dtype != dtype:
                raise ForestFormatError(f"{name}: expected dtype {dtype}, got {value.dtype}")
            if value.ndim != ndim:
                raise ForestFormatError(
                    f"{name}: expected {ndim} dimension(s), got shape {value.shape}"
                )
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ForestFormatError(
                f"format_version: unsupported version {version} (expected {FORMAT_VERSION})"
            )
        return cls(
            feature=arrays["feature"],
            threshold=arrays["threshold"],
            left=arrays["left"],
            right=arrays["right"],
            value=arrays["value"],
            roots=arrays["roots"],
            max_depth=int(arrays["max_depth"]),
            n_features=int(arrays["n_features"]),
            average_path_length_max_samples=float(arrays["average_path_length_max_samples"]),
            offset=float(arrays["offset"]),
        )


def _first_bad(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_structure(
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float64],
    left: npt.NDArray[np.int32],
    right: npt.NDArray[np.int32],
    value: npt.NDArray[np.float64],
    roots: npt.NDArray[np.int32],
    max_depth: int,
    n_features: int,
) -> None:
    """Raise :class:`ForestFormatError` unless the table is a valid forest."""
    n = feature.shape[0]
    for name, idx in (("left", left), ("right", right), ("roots", roots)):
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            i = _first_bad(bad)
            where = "tree" if name == "roots" else "node"
            raise ForestFormatError(
                f"{name}: index {int(idx[i])} out of range [0, {n}) at {where} {i}"
            )
    bad = (feature < 0) | (feature >= n_features)
    if bad.any():
        i = _first_bad(bad)
        raise ForestFormatError(
            f"feature: column {int(feature[i])} out of range [0, {n_features}) at node {i}"
        )
    for name, arr in (("threshold", threshold), ("value", value)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ForestFormatError(f"{name}: non-finite value at node {_first_bad(bad)}")

    node = np.arange(n)
    leaf = (left == node) & (right == node)
    internal = ~leaf
    bad = internal & ((left <= node) | (right <= node) | (left == right))
    if bad.any():
        i = _first_bad(bad)
        raise ForestFormatError(
            f"node {i}: an internal node needs two distinct children with larger indices "
            f"(left={int(left[i])}, right={int(right[i])}); a leaf points to itself twice"
        )
    bad = internal & (value != 0.0)
    if bad.any():
        raise ForestFormatError(f"value: internal node {_first_bad(bad)} has a non-zero value")
    # Each node has at most one parent, and roots have none: together with the
    # children-after-parent rule this makes the table a forest of binary trees.
    targets = np.concatenate([roots, left[internal], right[internal]])
    counts = np.bincount(targets, minlength=n)
    if (counts > 1).any():
        raise ForestFormatError(
            f"node {_first_bad(counts > 1)} is referenced more than once (as a child or root)"
        )
    if (counts == 0).any():
        raise ForestFormatError(f"node {_first_bad(counts == 0)} is not reachable from any root")
    # Depth of the deepest leaf: every node is visited exactly once.
    frontier = roots[internal[roots]]
    depth = 0
    while frontier.size:
        depth += 1
        children = np.concatenate([left[frontier], right[frontier]])
        frontier = children[internal[children]]
    if depth != max_depth:
        raise ForestFormatError(
            f"max_depth: the deepest leaf is at depth {depth}, but max_depth is {max_depth}"
        )


def _make_plan(forest: CompiledForest) -> _Plan:
    """Derive the scoring tables of a validated forest."""
    n_trees = forest.n_trees
    depth = forest.max_depth
    n_features = forest.n_features
    leaf = forest.left == np.arange(forest.n_nodes)
    threshold = _round_down_float32(forest.threshold)
    threshold[leaf] = np.inf  # never go right at a leaf (moot: both children are itself)
    feature = forest.feature.astype(np.intp)
    left = forest.left.astype(np.intp)
    right = forest.right.astype(np.intp)
    roots = forest.roots.astype(np.intp)
    complete = n_trees * ((1 << (depth + 1)) - 1) <= _MAX_LAYOUT_NODES
    chunk_rows = max(1, _CHUNK_ELEMENTS // n_trees)
    empty_i = np.empty(0, dtype=np.intp)
    level_feature: list[npt.NDArray[np.intp]] = []
    level_threshold: list[npt.NDArray[np.float32]] = []
    if complete:
        current = roots
        for _ in range(depth):
            level_feature.append(_readonly(feature[current]))
            level_threshold.append(_readonly(threshold[current]))
            current = np.stack([left[current], right[current]], axis=1).ravel()
        leaf_value = _readonly(forest.value[current])
        start = np.arange(n_trees, dtype=np.intp)
    else:
        leaf_value = np.empty(0, dtype=np.float64)
        start = roots
    return _Plan(
        n_trees=n_trees,
        n_features=n_features,
        max_depth=depth,
        denominator=n_trees * forest.average_path_length_max_samples,
        complete=complete,
        level_feature=tuple(level_feature),
        level_threshold=tuple(level_threshold),
        leaf_value=leaf_value,
        node_feature=_readonly(feature) if not complete else empty_i,
        node_threshold=_readonly(threshold) if not complete else np.empty(0, np.float32),
        node_left=_readonly(left) if not complete else empty_i,
        node_right=_readonly(right) if not complete else empty_i,
        node_value=forest.value if not complete else np.empty(0, np.float64),
        roots=_readonly(roots),
        chunk_rows=chunk_rows,
        chunk_start=_readonly(np.tile(start, chunk_rows)),
        chunk_offset=_readonly(
            np.repeat(np.arange(chunk_rows, dtype=np.intp) * n_features, n_trees)
        ),
    )


def _path_lengths_one(plan: _Plan, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Summed path length over all trees for one row (shape (1,))."""
    # Plain fancy indexing: on arrays of n_trees entries it has the least call overhead.
    if plan.complete:
        node = plan.chunk_start[: plan.n_trees]
        for feat, thr in zip(plan.level_feature, plan.level_threshold, strict=True):
            go_right = x[feat[node]] > thr[node]
            node = node + node
            node += go_right
        values = plan.leaf_value[node]
    else:
        node = plan.roots
        for _ in range(plan.max_depth):
            go_right = x[plan.node_feature[node]] > plan.node_threshold[node]
            node = np.where(go_right, plan.node_right[node], plan.node_left[node])
        values = plan.node_value[node]
    lengths: npt.NDArray[np.float64] = values.reshape(1, plan.n_trees).sum(axis=1)
    return lengths


def _path_lengths_chunk(
    plan: _Plan, x: npt.NDArray[np.float32], n_rows: int
) -> npt.NDArray[np.float64]:
    """Summed path length over all trees for ``n_rows`` rows (``x`` flattened).

    Works on ``n_rows * n_trees`` (row, tree) pairs at once, row-major, with
    preallocated buffers. Every index is in range by construction (validated
    table, in-range columns), so ``take(mode="clip")`` only skips bounds checks.
    """
    m = n_rows * plan.n_trees
    node = plan.chunk_start[:m].copy()
    offset = plan.chunk_offset[:m]
    col = np.empty(m, dtype=np.intp)
    xv = np.empty(m, dtype=np.float32)
    thr = np.empty(m, dtype=np.float32)
    go_right = np.empty(m, dtype=np.bool_)
    if plan.complete:
        for feat, level_thr in zip(plan.level_feature, plan.level_threshold, strict=True):
            feat.take(node, out=col, mode="clip")
            np.add(col, offset, out=col)
            x.take(col, out=xv, mode="clip")
            level_thr.take(node, out=thr, mode="clip")
            np.greater(xv, thr, out=go_right)
            np.add(node, node, out=node)
            np.add(node, go_right, out=node)
        values = plan.leaf_value.take(node, mode="clip")
    else:
        child = np.empty(m, dtype=np.intp)
        for _ in range(plan.max_depth):
            plan.node_feature.take(node, out=col, mode="clip")
            np.add(col, offset, out=col)
            x.take(col, out=xv, mode="clip")
            plan.node_threshold.take(node, out=thr, mode="clip")
            np.greater(xv, thr, out=go_right)
            plan.node_left.take(node, out=child, mode="clip")
            plan.node_right.take(node, out=node, mode="clip")
            np.copyto(node, child, where=~go_right)
        values = plan.node_value.take(node, mode="clip")
    lengths: npt.NDArray[np.float64] = values.reshape(n_rows, plan.n_trees).sum(axis=1)
    return lengths


def compile_forest(model: Any) -> CompiledForest:
    """Compile a fitted :class:`sklearn.ensemble.IsolationForest`.

    This is the only function of the module that imports scikit-learn.

    Parameters
    ----------
    model : sklearn.ensemble.IsolationForest
        A fitted model (dense or sparse training data alike).

    Returns
    -------
    CompiledForest
        The validated forest; its :meth:`~CompiledForest.score` equals
        ``-model.score_samples(X)`` to within 1e-9.

    Raises
    ------
    TypeError
        If ``model`` is not an ``IsolationForest``.
    sklearn.exceptions.NotFittedError
        If ``model`` has not been fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import IsolationForest
    >>> X = np.random.default_rng(0).normal(size=(100, 4))
    >>> model = IsolationForest(n_estimators=5, random_state=0).fit(X)
    >>> forest = compile_forest(model)
    >>> forest.n_trees, forest.n_features
    (5, 4)
    >>> bool(np.allclose(forest.score(X), -model.score_samples(X), rtol=0, atol=1e-9))
    True
    """
    from sklearn.ensemble import IsolationForest
    from sklearn.exceptions import NotFittedError

    if not isinstance(model, IsolationForest):
        raise TypeError(f"expected a fitted IsolationForest, got {type(model).__name__}")
    if not hasattr(model, "estimators_"):
        raise NotFittedError("the IsolationForest is not fitted: call fit() first")
    n_features = int(model.n_features_in_)
    features_of: list[npt.NDArray[np.intp]] = [
        np.asarray(f, dtype=np.intp) for f in model.estimators_features_
    ]
    feature, threshold, left, right, value, roots = [], [], [], [], [], []
    max_depth = 0
    base = 0
    for estimator, columns in zip(model.estimators_, features_of, strict=True):
        tree = estimator.tree_
        n = int(tree.node_count)
        is_leaf = np.asarray(tree.children_left) == -1
        node = np.arange(n, dtype=np.intp)
        tree_feature = np.where(is_leaf, 0, np.asarray(tree.feature, dtype=np.intp))
        # scikit-learn indexes X by the tree's feature subset only when the subset is
        # smaller than X (IsolationForest never bootstraps features); same here.
        if columns.shape[0] != n_features:
            tree_feature = np.where(is_leaf, 0, columns[tree_feature])
        # Path length of a leaf, in scikit-learn's order of operations
        # (IsolationForest._compute_score_samples): depth (root = 1) + c(n) - 1.
        depths = np.asarray(tree.compute_node_depths())
        apl = _average_path_length(np.asarray(tree.n_node_samples))
        path = depths + apl - 1.0
        feature.append(tree_feature)
        threshold.append(np.asarray(tree.threshold, dtype=np.float64))
        left.append(np.where(is_leaf, node, np.asarray(tree.children_left)) + base)
        right.append(np.where(is_leaf, node, np.asarray(tree.children_right)) + base)
        value.append(np.where(is_leaf, path, 0.0))
        roots.append(base)
        max_depth = max(max_depth, int(tree.max_depth))
        base += n
    if base > np.iinfo(np.int32).max:
        raise ValueError(f"the forest has {base} nodes, more than an int32 index can address")
    return CompiledForest(
        feature=np.concatenate(feature).astype(np.int32),
        threshold=np.concatenate(threshold),
        left=np.concatenate(left).astype(np.int32),
        right=np.concatenate(right).astype(np.int32),
        value=np.concatenate(value).astype(np.float64),
        roots=np.asarray(roots, dtype=np.int32),
        max_depth=max_depth,
        n_features=n_features,
        average_path_length_max_samples=float(
            _average_path_length(np.asarray([model.max_samples_]))[0]
        ),
        offset=float(model.offset_),
    )


def save_forest(forest: CompiledForest, path: Path) -> str:
    """Write ``forest`` to ``path`` as a compressed ``.npz``; return its sha256.

    The file holds only plain numeric arrays (see
    :meth:`CompiledForest.to_arrays`) and is written atomically (temporary
    file in the same directory, then rename). Its bytes depend only on the
    forest, so saving the same forest twice gives the same digest.

    Parameters
    ----------
    forest : CompiledForest
        The forest to store.
    path : Path
        Destination file; written as given (no suffix is appended).

    Returns
    -------
    str
        The sha256 hex digest of the written file, to pass to
        :func:`load_forest`.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> forest = _tiny_forest()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     digest = save_forest(forest, Path(tmp) / "forest.npz")
    ...     loaded = load_forest(Path(tmp) / "forest.npz", digest)
    >>> len(digest), loaded
    (64, CompiledForest(n_trees=1, n_nodes=3, max_depth=1, n_features=2))
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **forest.to_arrays())
    data = buffer.getvalue()
    path = Path(path)
    # A fresh name next to the target ("x": never reuse a file), created with the usual
    # permissions (0o666 & ~umask), then renamed over the target.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def load_forest(path: Path, expected_sha256: str) -> CompiledForest:
    """Load a forest written by :func:`save_forest`, verifying its sha256 first.

    The file is read once; its digest is checked before any parsing, then the
    same bytes are parsed with ``np.load(..., allow_pickle=False)``: no pickle
    and no code on this path. The archive must hold exactly the expected array
    names with the expected dtypes and shapes.

    Parameters
    ----------
    path : Path
        The ``.npz`` file.
    expected_sha256 : str
        Hex digest the file must have (as returned by :func:`save_forest`);
        case-insensitive.

    Returns
    -------
    CompiledForest
        The validated forest.

    Raises
    ------
    ForestFormatError
        On a digest mismatch, a malformed digest, a file that is not a
        pickle-free ``.npz``, a missing or unexpected array, a wrong dtype or
        shape, or an invalid node table.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = Path(tmp) / "forest.npz"
    ...     _ = save_forest(_tiny_forest(), target)
    ...     load_forest(target, "0" * 64)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    detector.forest.ForestFormatError: sha256 mismatch for ...forest.npz: expected 000...0, got ...
    """
    path = Path(path)
    expected = expected_sha256.strip().lower()
    if len(expected) != 64 or not set(expected) <= _HEX_DIGITS:
        raise ForestFormatError(
            f"expected_sha256 for {path} must be 64 hex digits, got {expected_sha256!r}"
        )
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise ForestFormatError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ForestFormatError(f"{path} is not a pickle-free .npz archive: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ForestFormatError(f"{path} is not an .npz archive")
    arrays: dict[str, npt.NDArray[Any]] = {}
    with loaded:
        names = set(loaded.files)
        missing = sorted(set(_ARRAY_SPEC) - names)
        unexpected = sorted(names - set(_ARRAY_SPEC))
        if missing:
            raise ForestFormatError(f"{path}: missing array(s): {', '.join(missing)}")
        if unexpected:
            raise ForestFormatError(f"{path}: unexpected array(s): {', '.join(unexpected)}")
        for name, (dtype, _) in _ARRAY_SPEC.items():
            try:
                arr = loaded[name]
            except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
                # Object arrays end up here: numpy refuses them before unpickling.
                raise ForestFormatError(f"{path}: cannot load array {name!r}: {exc}") from exc
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ForestFormatError(f"{path}: {name}: expected dtype {dtype}, got {got}")
            arrays[name] = arr
    try:
        return CompiledForest.from_arrays(arrays)
    except ForestFormatError as exc:
        raise ForestFormatError(f"{path}: {exc}") from exc


def _tiny_forest() -> CompiledForest:
    """A one-split forest over two columns, for the examples."""
    return CompiledForest(
        feature=np.array([1, 0, 0], dtype=np.int32),
        threshold=np.array([0.5, -2.0, -2.0]),
        left=np.array([1, 1, 2], dtype=np.int32),
        right=np.array([2, 1, 2], dtype=np.int32),
        value=np.array([0.0, 1.0, 1.0]),
        roots=np.array([0], dtype=np.int32),
        max_depth=1,
        n_features=2,
        average_path_length_max_samples=1.0,
        offset=-0.5,
    )
