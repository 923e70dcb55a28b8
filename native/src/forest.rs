//! Forest scoring: `detector.model.KindModel.score` (matrix, imputation, `CompiledForest.score`, calibration).
//!
//! One `ForestScorer` per event kind holds Rust-owned copies of the compiled
//! forest's node table and of the kind's imputation and calibration arrays
//! (the artifacts were loaded and verified by `detector.model.load_model`; no
//! file is read here). Calling it with full feature rows returns
//! `(scores, risks)` as two lists of Python floats, bit for bit what
//! `KindModel.score(rows)` followed by `.tolist()` gives:
//!
//! * matrix: the kind's columns of each row, NaN replaced by the training
//!   median (`np.where(np.isnan(x), impute, x)`);
//! * `CompiledForest.score`: each value cast to float32 (round to nearest,
//!   overflow to infinity, as numpy's cast), routed left when
//!   `x32 <= threshold32` where `threshold32` is the largest float32 not above
//!   the float64 threshold (`detector.forest._round_down_float32`, passed in);
//!   the trees are walked in the implicit complete layout (`Complete`) when
//!   the forest is shallow enough, else in the node table, to the same leaves;
//!   the trees' leaf path lengths summed in tree order with numpy's pairwise
//!   summation (`np.add.reduce` over a contiguous axis, initial value 0.0);
//!   then `2 ** -(sum / denominator)` with libm's `pow` (numpy's scalar
//!   `npy_pow`), or 0.5 when the denominator is 0;
//! * `np.interp(scores, calib_scores, CALIBRATION_LEVELS)`: numpy's
//!   `arr_interp` (compiled_base.c), including its special cases.
//!
//! Anything unusual in the input (not a list of equally long lists of exact
//! floats, too short rows, an empty batch) is handed to the Python scorer
//! given at construction, so errors and odd conversions are Python's own.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyList, PyTuple};

/// Trees walked side by side: independent dependency chains keep the core busy
/// while one node load is in flight, also for a single row.
const LANES: usize = 8;

/// Deepest forest walked in the complete layout. A tree then takes at most
/// `2**10 - 1` splits and `2**10` leaf slots (16 KB; still faster than the
/// node table at depths 9 and 10 in bench/bench_forest_layout.py); deeper
/// forests keep the node table, whose size follows the real tree rather than
/// doubling per level.
const MAX_COMPLETE_DEPTH: usize = 10;

/// Trees walked together, level by level, in the complete layout: one block
/// of independent walks keeps many node loads in flight (measured best among
/// 16, 32, 64 and 128 for 100 trees), and its indices stay in L1.
const COMPLETE_BLOCK: usize = 64;

/// Input columns the complete layout takes: the row is copied into a
/// `[f32; 256]` and split features are `u8`, so indexing needs no bounds check.
const COMPLETE_MAX_FEATURES: usize = 256;

/// numpy's `PW_BLOCKSIZE` (loops_utils.h.src): the largest block summed with 8 accumulators.
const PW_BLOCKSIZE: usize = 128;

/// One node of the table. A leaf points to itself in `left` and `right`, so a
/// walk of `max_depth` steps that reaches it early stays there.
#[derive(Clone, Copy)]
struct Node {
    /// Largest float32 `<=` the float64 split threshold: `x32 > thr` goes right.
    thr: f32,
    /// Position of the split feature in the forest's input (the kind's columns).
    feat: u32,
    left: u32,
    right: u32,
}

/// One split of the complete layout: from slot `i`, go to slot
/// `2*i + (x[feat] > thr)` of the next level.
#[derive(Clone, Copy)]
struct Split {
    /// As `Node::thr`. Below an early leaf every bottom slot holds the leaf's
    /// value, so any route there is right; `+inf` sends every float32 (infinity
    /// and NaN included) left, down the slots next to the leaf's own.
    thr: f32,
    /// As `Node::feat` (0 below an early leaf: any column does).
    feat: u8,
}

/// The path lengths of the complete layout's bottom slots.
enum Leaves {
    /// Per slot, an index into `values`: a forest has few distinct path
    /// lengths (depth plus `c(n)` of the leaf's sample count; 141 and 127 in
    /// the shipped model), so one byte a slot instead of eight: the layout
    /// then takes about as much memory as the node table (the shipped
    /// 100-tree forests: 230 KB each instead of 409 KB with `Direct`; 213 and
    /// 234 KB as node tables), at the speed of `Direct` (within noise) in
    /// bench/bench_forest_layout.py.
    Table { slot: Vec<u8>, values: Box<[f64; 256]> },
    /// The path length of each slot, for forests with more than 256 distinct values.
    Direct(Vec<f64>),
}

/// The forest as complete binary trees of depth `max_depth`, stored level by
/// level across trees (as `detector.forest._Plan` with `complete`): slot
/// `t * 2**l + j` of level `l` is node `j` of tree `t` at depth `l`, and its
/// children are slots `2*s` and `2*s + 1` of level `l + 1`. A leaf above the
/// bottom is continued by always-left splits and its path length copied into
/// every bottom slot below it, so each walk takes exactly `max_depth` steps
/// and ends on the value of the leaf the node table leads to. The walk needs
/// no child indices (8 instead of 16 bytes a node, no value per inner node),
/// the top levels of all trees share a few cache lines, and each step is the
/// same branch-free arithmetic.
struct Complete {
    /// The splits of all levels, level 0 first.
    splits: Vec<Split>,
    /// Start of each level in `splits`, and the end: `max_depth + 1` entries.
    level_start: Vec<usize>,
    /// Path length of each bottom slot: `n_trees * 2**max_depth`, tree by tree.
    leaves: Leaves,
}

impl Complete {
    /// The complete layout of a checked node table (leaves self-looping,
    /// every leaf at most `max_depth` deep, features below `n_features`), or
    /// None when the forest is too deep or has too many input columns.
    fn build(nodes: &[Node], value: &[f64], roots: &[u32], max_depth: usize, n_features: usize) -> Option<Complete> {
        // (slot indices are u32)
        if max_depth > MAX_COMPLETE_DEPTH
            || n_features > COMPLETE_MAX_FEATURES
            || (roots.len() as u64) << (max_depth + 1) > u64::from(u32::MAX)
        {
            return None;
        }
        let mut splits = Vec::with_capacity(roots.len() * ((1 << max_depth) - 1));
        let mut level_start = Vec::with_capacity(max_depth + 1);
        let mut current: Vec<u32> = roots.to_vec();
        for _ in 0..max_depth {
            level_start.push(splits.len());
            let mut next = Vec::with_capacity(current.len() * 2);
            for &i in &current {
                let node = nodes[i as usize];
                let split = if node.left == i {
                    Split { thr: f32::INFINITY, feat: 0 }
                } else {
                    Split { thr: node.thr, feat: u8::try_from(node.feat).ok()? }
                };
                splits.push(split);
                // A leaf's children are itself: the slots below it copy it down.
                next.push(node.left);
                next.push(node.right);
            }
            current = next;
        }
        level_start.push(splits.len());
        // Same bits, same index: a table lookup gives back the exact value.
        let mut index: HashMap<u64, u8> = HashMap::new();
        let mut values = Box::new([0.0f64; 256]);
        let mut slot = Vec::with_capacity(current.len());
        let mut fits = true;
        for &i in &current {
            let v = value[i as usize];
            let k = match index.get(&v.to_bits()) {
                Some(&k) => k,
                None => {
                    let Ok(k) = u8::try_from(index.len()) else {
                        fits = false;
                        break;
                    };
                    index.insert(v.to_bits(), k);
                    values[usize::from(k)] = v;
                    k
                }
            };
            slot.push(k);
        }
        let leaves = if fits {
            Leaves::Table { slot, values }
        } else {
            Leaves::Direct(current.iter().map(|&i| value[i as usize]).collect())
        };
        Some(Complete { splits, level_start, leaves })
    }

    /// Path length of every tree for one row of float32 inputs (at most
    /// `COMPLETE_MAX_FEATURES`), into `out` (one per tree, in tree order).
    fn leaf_values(&self, x: &[f32], out: &mut [f64]) {
        let mut xa = [0f32; COMPLETE_MAX_FEATURES];
        xa[..x.len()].copy_from_slice(x);
        let mut first = 0u32;
        for dst in out.chunks_mut(COMPLETE_BLOCK) {
            let lanes = dst.len();
            // Level 0: tree t's root is slot t.
            let mut idx = [0u32; COMPLETE_BLOCK];
            for (k, i) in idx[..lanes].iter_mut().enumerate() {
                *i = first + k as u32;
            }
            for w in self.level_start.windows(2) {
                let level = &self.splits[w[0]..w[1]];
                for i in idx[..lanes].iter_mut() {
                    let s = level[*i as usize];
                    *i = 2 * *i + u32::from(xa[usize::from(s.feat)] > s.thr);
                }
            }
            match &self.leaves {
                Leaves::Table { slot, values } => {
                    for (d, &i) in dst.iter_mut().zip(idx[..lanes].iter()) {
                        *d = values[usize::from(slot[i as usize])];
                    }
                }
                Leaves::Direct(leaf) => {
                    for (d, &i) in dst.iter_mut().zip(idx[..lanes].iter()) {
                        *d = leaf[i as usize];
                    }
                }
            }
            first += lanes as u32;
        }
    }
}

/// numpy's `pairwise_sum` for float64 (loops_utils.h.src), the order in which
/// `np.add.reduce` adds a contiguous run of values.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= PW_BLOCKSIZE {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let mut i = 8;
        let end = n - (n % 8);
        while i < end {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `binary_search_with_guess` of numpy's interp, for a sorted `xp` of at
/// least two values and a non-NaN key: -1 below `xp[0]`, `len` above the
/// last value, else the last index `j` with `xp[j] <= key`. (numpy's guess
/// only speeds the search up: for sorted `xp` the index is this one.)
fn interp_index(key: f64, xp: &[f64]) -> isize {
    let len = xp.len();
    if key > xp[len - 1] {
        return len as isize;
    }
    if key < xp[0] {
        return -1;
    }
    xp.partition_point(|&v| key >= v) as isize - 1
}

/// numpy's `arr_interp` for one value, with the default left/right fill values.
fn interp_one(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let lenxp = xp.len();
    if lenxp == 1 {
        // (left and right fill values are fp[0] and fp[-1], i.e. fp[0] too)
        return fp[0];
    }
    if x.is_nan() {
        return x;
    }
    let j = interp_index(x, xp);
    if j == -1 {
        return fp[0];
    }
    if j == lenxp as isize {
        return fp[lenxp - 1];
    }
    let j = j as usize;
    if j == lenxp - 1 || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let mut res = slope * (x - xp[j]) + fp[j];
    if res.is_nan() {
        res = slope * (x - xp[j + 1]) + fp[j + 1];
        if res.is_nan() && fp[j] == fp[j + 1] {
            res = fp[j];
        }
    }
    res
}

/// The compiled `KindModel.score` of one event kind: `scorer(rows) -> (scores, risks)`.
#[pyclass(frozen, module = "detector._native")]
pub struct ForestScorer {
    /// Row position of each forest input column (`KindModel.columns`).
    columns: Vec<usize>,
    /// Training median of each input column, replacing NaN.
    impute: Vec<f64>,
    /// The node table (empty when `complete` is set).
    nodes: Vec<Node>,
    /// Path length of each leaf (0 for internal nodes; empty when `complete` is set).
    value: Vec<f64>,
    roots: Vec<u32>,
    /// The forest in the complete layout, walked instead of `nodes` when
    /// present (shallow forests, unless the constructor's `layout` says "nodes").
    complete: Option<Complete>,
    max_depth: usize,
    /// `n_trees * c(max_samples)`, as `CompiledForest._plan.denominator`.
    denominator: f64,
    /// `KindModel.calib_scores` (sorted) and `CALIBRATION_LEVELS`.
    calib_x: Vec<f64>,
    calib_y: Vec<f64>,
    /// Smallest row length the columns allow (largest column + 1).
    min_row_len: usize,
    /// The Python scorer, for input the fast path does not take.
    fallback: Py<PyAny>,
}

fn check_index(what: &str, i: i64, n: usize, at: usize) -> PyResult<u32> {
    if i < 0 || i as u64 >= n as u64 || i > u32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "{what}: index {i} out of range [0, {n}) at {at}"
        )));
    }
    Ok(i as u32)
}

impl ForestScorer {
    /// `(score, risk)` of one full feature row, as `__call__` computes each
    /// row (the compiled engine scores one event at a time with it); `None`
    /// when the row is shorter than the forest's columns need. `x` and
    /// `lengths` are scratch buffers reused across calls.
    pub(crate) fn score_row(&self, row: &[f64], x: &mut Vec<f32>, lengths: &mut Vec<f64>) -> Option<(f64, f64)> {
        if row.len() < self.min_row_len {
            return None;
        }
        x.clear();
        for (&c, &med) in self.columns.iter().zip(self.impute.iter()) {
            let v = row[c];
            let v = if v.is_nan() { med } else { v };
            x.push(v as f32); // numpy's cast: nearest float32, overflow to infinity
        }
        let score = if self.denominator == 0.0 {
            0.5
        } else {
            lengths.resize(self.roots.len(), 0.0);
            self.leaf_values(x, lengths);
            let depth = 0.0 + pairwise_sum(lengths);
            std::hint::black_box(2.0f64).powf(-(depth / self.denominator))
        };
        Some((score, interp_one(score, &self.calib_x, &self.calib_y)))
    }

    /// Path length of every tree for one row of float32 inputs, into `out`.
    fn leaf_values(&self, x: &[f32], out: &mut [f64]) {
        match &self.complete {
            Some(c) => c.leaf_values(x, out),
            None => self.leaf_values_nodes(x, out),
        }
    }

    /// `leaf_values` in the node table: `LANES` trees side by side, `max_depth` steps.
    fn leaf_values_nodes(&self, x: &[f32], out: &mut [f64]) {
        let nodes = &self.nodes[..];
        for (roots, dst) in self.roots.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let mut idx = [0u32; LANES];
            idx[..roots.len()].copy_from_slice(roots);
            let lanes = roots.len();
            for _ in 0..self.max_depth {
                for slot in idx[..lanes].iter_mut() {
                    let node = nodes[*slot as usize];
                    *slot = if x[node.feat as usize] > node.thr { node.right } else { node.left };
                }
            }
            for (d, &i) in dst.iter_mut().zip(idx[..lanes].iter()) {
                *d = self.value[i as usize];
            }
        }
    }

    /// Read the rows' input columns as float32 (NaN imputed) into `x`; false if
    /// the input is not a list of equally long lists of exact floats.
    fn read_rows(&self, rows: &Bound<'_, PyAny>, x: &mut Vec<f32>) -> bool {
        let Ok(rows) = rows.cast_exact::<PyList>() else {
            return false;
        };
        let n = rows.len();
        if n == 0 {
            return false;
        }
        let mut full: Vec<f64> = Vec::with_capacity(64);
        let mut width = usize::MAX;
        x.clear();
        x.reserve(n * self.columns.len());
        for row in rows.iter() {
            let Ok(row) = row.cast_exact::<PyList>() else {
                return false;
            };
            let len = row.len();
            if width == usize::MAX {
                width = len;
                if len < self.min_row_len {
                    return false;
                }
            } else if len != width {
                return false;
            }
            full.clear();
            for item in row.iter() {
                let Ok(f) = item.cast_exact::<PyFloat>() else {
                    return false;
                };
                full.push(f.value());
            }
            if full.len() != width {
                return false; // the list changed size while read
            }
            for (&c, &med) in self.columns.iter().zip(self.impute.iter()) {
                let v = full[c];
                let v = if v.is_nan() { med } else { v };
                // Round to nearest float32, overflow to infinity: numpy's cast.
                x.push(v as f32);
            }
        }
        true
    }
}

#[pymethods]
impl ForestScorer {
    /// Build a scorer from a `CompiledForest`'s node table and a `KindModel`'s arrays.
    ///
    /// `threshold32` are the float32 thresholds rounded down
    /// (`detector.forest._round_down_float32`), `denominator` is
    /// `n_trees * average_path_length_max_samples`, `calib_x`/`calib_y` are
    /// `calib_scores` and `CALIBRATION_LEVELS`, `fallback` the Python scorer.
    /// `layout` (a test and benchmark hook) picks the walked layout: "auto"
    /// the complete one when the forest allows it (`max_depth <= 10`, at most
    /// 256 columns) else the node table, "nodes" the node table, "complete"
    /// the complete one or ValueError. Raises ValueError on inconsistent arrays.
    #[new]
    #[pyo3(signature = (columns, impute, feature, threshold32, left, right, value, roots, max_depth, denominator, calib_x, calib_y, fallback, layout = "auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        columns: Vec<i64>,
        impute: Vec<f64>,
        feature: Vec<i64>,
        threshold32: Vec<f32>,
        left: Vec<i64>,
        right: Vec<i64>,
        value: Vec<f64>,
        roots: Vec<i64>,
        max_depth: usize,
        denominator: f64,
        calib_x: Vec<f64>,
        calib_y: Vec<f64>,
        fallback: Py<PyAny>,
        layout: &str,
    ) -> PyResult<Self> {
        let n_features = columns.len();
        if n_features == 0 || impute.len() != n_features {
            return Err(PyValueError::new_err("columns and impute must have the same, non-zero length"));
        }
        let mut cols = Vec::with_capacity(n_features);
        for &c in &columns {
            if c < 0 || c > (1 << 20) {
                return Err(PyValueError::new_err(format!("columns: bad column {c}")));
            }
            cols.push(c as usize);
        }
        let n = feature.len();
        if n == 0
            || threshold32.len() != n
            || left.len() != n
            || right.len() != n
            || value.len() != n
        {
            return Err(PyValueError::new_err("the node arrays must have the same, non-zero length"));
        }
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let feat = check_index("feature", feature[i], n_features, i)?;
            let l = check_index("left", left[i], n, i)?;
            let r = check_index("right", right[i], n, i)?;
            let leaf = l as usize == i && r as usize == i;
            if !leaf && (l as usize <= i || r as usize <= i) {
                return Err(PyValueError::new_err(format!("node {i}: children must come after it")));
            }
            nodes.push(Node { thr: threshold32[i], feat, left: l, right: r });
        }
        if roots.is_empty() {
            return Err(PyValueError::new_err("roots: the forest has no trees"));
        }
        let mut root_idx = Vec::with_capacity(roots.len());
        for (t, &r) in roots.iter().enumerate() {
            root_idx.push(check_index("roots", r, n, t)?);
        }
        // Every walk of max_depth steps must end on a leaf (children come after
        // their parent, so this terminates).
        let mut depth = vec![0usize; n];
        let mut deepest = 0usize;
        let mut stack: Vec<u32> = root_idx.clone();
        while let Some(i) = stack.pop() {
            let node = nodes[i as usize];
            if node.left != i {
                for child in [node.left, node.right] {
                    depth[child as usize] = depth[i as usize] + 1;
                    deepest = deepest.max(depth[child as usize]);
                    if deepest > max_depth {
                        return Err(PyValueError::new_err(format!(
                            "a leaf is deeper than max_depth {max_depth}"
                        )));
                    }
                    stack.push(child);
                }
            }
        }
        if !denominator.is_finite() || denominator < 0.0 {
            return Err(PyValueError::new_err("denominator must be finite and >= 0"));
        }
        if calib_x.is_empty() || calib_x.len() != calib_y.len() {
            return Err(PyValueError::new_err("calib_x and calib_y must have the same, non-zero length"));
        }
        if calib_x.iter().any(|v| v.is_nan()) || calib_x.windows(2).any(|w| w[1] < w[0]) {
            return Err(PyValueError::new_err("calib_x must be sorted"));
        }
        let complete = match layout {
            "auto" => Complete::build(&nodes, &value, &root_idx, max_depth, n_features),
            "nodes" => None,
            "complete" => Some(Complete::build(&nodes, &value, &root_idx, max_depth, n_features).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "layout: the complete layout takes max_depth <= {MAX_COMPLETE_DEPTH} and at most \
                     {COMPLETE_MAX_FEATURES} columns, not {max_depth} and {n_features}"
                ))
            })?),
            _ => return Err(PyValueError::new_err(format!("layout: {layout:?} is not auto, nodes or complete"))),
        };
        // The node table is walked only without the complete layout.
        let (nodes, value) = if complete.is_some() { (Vec::new(), Vec::new()) } else { (nodes, value) };
        let min_row_len = cols.iter().max().map_or(0, |&m| m + 1);
        Ok(ForestScorer {
            complete,
            columns: cols,
            impute,
            nodes,
            value,
            roots: root_idx,
            max_depth,
            denominator,
            calib_x,
            calib_y,
            min_row_len,
            fallback,
        })
    }

    /// Score full feature rows: `(scores, risks)`, two lists of floats.
    fn __call__<'py>(&self, py: Python<'py>, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let mut x: Vec<f32> = Vec::new();
        if !self.read_rows(rows, &mut x) {
            return self.fallback.bind(py).call1((rows,));
        }
        let nf = self.columns.len();
        let n = x.len() / nf;
        let mut lengths = vec![0.0f64; self.roots.len()];
        let mut scores = Vec::with_capacity(n);
        let mut risks = Vec::with_capacity(n);
        // An opaque base: LLVM would otherwise turn pow(2.0, e) into exp2(e),
        // which need not round like numpy's pow.
        let two = std::hint::black_box(2.0f64);
        for row in x.chunks_exact(nf) {
            let score = if self.denominator == 0.0 {
                0.5
            } else {
                self.leaf_values(row, &mut lengths);
                // np.add.reduce: the identity 0.0 plus the pairwise sum.
                let depth = 0.0 + pairwise_sum(&lengths);
                two.powf(-(depth / self.denominator))
            };
            scores.push(score);
            risks.push(interp_one(score, &self.calib_x, &self.calib_y));
        }
        let scores = PyList::new(py, scores)?;
        let risks = PyList::new(py, risks)?;
        Ok(PyTuple::new(py, [scores.into_any(), risks.into_any()])?.into_any())
    }

    /// `2.0 ** e` for each `e`, as the scorer computes it (to check it against `np.power`).
    #[staticmethod]
    fn pow2(exponents: Vec<f64>) -> Vec<f64> {
        let two = std::hint::black_box(2.0f64);
        exponents.into_iter().map(|e| two.powf(e)).collect()
    }

    /// numpy's pairwise sum of `values` (to check it against `np.add.reduce`).
    #[staticmethod]
    fn pairwise_sum(values: Vec<f64>) -> f64 {
        0.0 + pairwise_sum(&values)
    }

    /// `np.interp(x, xp, fp)` as the scorer computes it (to check it against numpy).
    /// `xp` must be sorted and as long as `fp`, non-empty.
    #[staticmethod]
    fn interp(x: Vec<f64>, xp: Vec<f64>, fp: Vec<f64>) -> PyResult<Vec<f64>> {
        if xp.is_empty() || xp.len() != fp.len() {
            return Err(PyValueError::new_err("xp and fp must have the same, non-zero length"));
        }
        Ok(x.into_iter().map(|v| interp_one(v, &xp, &fp)).collect())
    }

    /// Number of trees.
    #[getter]
    fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// The walked layout: "complete" or "nodes".
    #[getter]
    fn layout(&self) -> &'static str {
        if self.complete.is_some() {
            "complete"
        } else {
            "nodes"
        }
    }

    /// Test hook: the number of distinct path lengths in the complete
    /// layout's leaf table, None without one (node table, or over 256 values).
    #[getter]
    fn _leaf_table(&self) -> Option<usize> {
        match self.complete.as_ref().map(|c| &c.leaves) {
            Some(Leaves::Table { slot, .. }) => Some(slot.iter().map(|&k| usize::from(k) + 1).max().unwrap_or(0)),
            _ => None,
        }
    }

    /// Test hook: `(score, risk)` of one full feature row through `score_row`
    /// (the compiled engine's path), None when the row is too short.
    fn _score_row(&self, row: Vec<f64>) -> Option<(f64, f64)> {
        self.score_row(&row, &mut Vec::new(), &mut Vec::new())
    }

    /// Benchmark hook: seconds per row of `score_row` with the engine's use
    /// of it: `rows[k]` (full feature rows) scored by `scorers[k]`, event
    /// kinds interleaved row by row (row 0 of each scorer, then row 1, ...),
    /// `reps` times over, scratch buffers reused. Rows are cut to the
    /// shortest list. Raises ValueError if a row is too short for its scorer
    /// or `rows` does not hold one list per scorer.
    #[staticmethod]
    fn _bench_score_row(scorers: Vec<PyRef<'_, ForestScorer>>, rows: Vec<Vec<Vec<f64>>>, reps: usize) -> PyResult<f64> {
        if scorers.len() != rows.len() {
            return Err(PyValueError::new_err("one list of rows per scorer"));
        }
        let n = rows.iter().map(Vec::len).min().unwrap_or(0);
        let (mut x, mut lengths) = (Vec::new(), Vec::new());
        let mut acc = 0.0;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            for i in 0..n {
                for (s, r) in scorers.iter().zip(rows.iter()) {
                    let (score, _) = s
                        .score_row(std::hint::black_box(&r[i]), &mut x, &mut lengths)
                        .ok_or_else(|| PyValueError::new_err("row too short"))?;
                    acc += score;
                }
            }
        }
        std::hint::black_box(acc);
        Ok(t0.elapsed().as_secs_f64() / (reps * n * scorers.len()).max(1) as f64)
    }
}

/// Adds this file's kernels to the module.
/// A scorer that gives every row the same `(score, risk)`: the model taken
/// out of the pipeline, for the benchmark's "without model" floor. The
/// compiled engine recognises it and does not call back into Python.
#[pyclass(frozen, module = "detector._native")]
pub struct ConstantScorer {
    pub(crate) score: f64,
    pub(crate) risk: f64,
}

#[pymethods]
impl ConstantScorer {
    #[new]
    fn new(score: f64, risk: f64) -> Self {
        ConstantScorer { score, risk }
    }

    /// `(scores, risks)`: two lists of `len(rows)` constants.
    fn __call__<'py>(&self, py: Python<'py>, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let n = rows.len()?;
        let scores = PyList::new(py, vec![self.score; n])?;
        let risks = PyList::new(py, vec![self.risk; n])?;
        Ok(PyTuple::new(py, [scores.into_any(), risks.into_any()])?.into_any())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ConstantScorer>()?;
    m.add_class::<ForestScorer>()?;
    Ok(())
}
