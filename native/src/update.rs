//! Baseline update: `detector.baseline.update`.
//!
//! [`UpdateKernel`] is a drop-in for `update(b, event, cfg, learn_weight=1.0,
//! caps=None)`, bound to one `DetectorConfig`. It returns a new `Baseline` equal
//! to Python's in every respect: field types, float bits, dict contents and
//! insertion order. The input baseline is never modified: every dict the update
//! changes is a fresh copy, and unchanged values (dicts of untouched dimensions,
//! tuples, ints) are shared with the input, as Python shares them.
//!
//! Anything unusual (another config object, explicit `caps`, a baseline or event
//! that is not of the exact named-tuple type, a field of an unexpected type, an
//! int past 64 bits, a float operation Python would raise on) makes the kernel
//! call the Python `update` it was given and return that result (or exception):
//! the fast path only handles what it reproduces exactly.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyString, PyTuple, PyType};

use crate::bl::{
    D_ASN, D_CITY, D_COUNTRY, D_DEVICE, D_DST_ASN, D_DST_COUNTRY, D_HOST, D_PORT, D_PREFIX, D_SERVICE,
    D_UA, DIMENSIONS, TRAFFIC_KEYS,
};
use crate::layout::{
    BASELINE_FIELDS, EVENT_FIELDS, BL_FAIL_BURST, BL_FAIL_RATE, BL_FIRST_TS, BL_HOURS, BL_HOURS_TOTAL, BL_LAST_SUCCESS,
    BL_LAST_TS, BL_NEW_HOSTS, BL_N_LEARNED, BL_N_SEEN, BL_SEEN, BL_SEEN_TOTALS, BL_SIGNALS,
    BL_T0, BL_TRAFFIC, EV_BYTES_IN, EV_BYTES_OUT, EV_DEVICE_ID, EV_DST_ASN, EV_DST_COUNTRY,
    EV_DST_HOSTNAME, EV_DST_INTERNAL, EV_DST_IP, EV_DST_PORT, EV_ENTITY_KIND, EV_KIND,
    EV_SERVICE, EV_SRC_ASN, EV_SRC_CITY, EV_SRC_COUNTRY, EV_SRC_LAT, EV_SRC_LON, EV_SRC_PREFIX,
    EV_SUCCESS, EV_TS_MS, EV_USER_AGENT,
};

/// `detector.config.HOUR_MS`.
const HOUR_MS: i64 = 3_600_000;
/// `detector.baseline._RENORMALISE_AT`.
const RENORMALISE_AT: f64 = 16.0;
/// `detector.baseline._MILLI`.
const MILLI: f64 = 1000.0;
/// `dimension_values` returns at most 7 pairs (an auth event).
const MAX_PAIRS: usize = 7;

// DIMENSIONS, TRAFFIC_KEYS and the D_* indices: crate::bl (one list for both update kernels).

/// Bails out of the fast path: the caller then runs the Python original.
macro_rules! bail {
    () => {
        return Ok(None)
    };
}

/// Unwraps an `Option`, bailing out of the fast path on `None`.
macro_rules! want {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => bail!(),
        }
    };
}

/// Returns `x` rounded to `ndigits` decimals exactly as Python's `round(x, ndigits)`
/// (correctly rounded: ties to even on the exact binary value); `scale` is
/// `10**ndigits`, exact as a double (ndigits 3, 4 and 6 are used).
///
/// Fast path: the exact product `x * 10**n` is `p + e` (`e` from a fused
/// multiply-add, exact), so the nearest integer `n` of the exact product is
/// found without error; `n / 10**n` is then the double nearest the decimal
/// `n * 10**-n`, which is what Python's `round` (dtoa, then strtod) returns.
/// Outside the range where that argument holds, Rust's exact decimal
/// formatting (ties to even) and parsing do the same as Python's dtoa/strtod.
pub(crate) fn py_round(x: f64, ndigits: usize, scale: f64) -> f64 {
    if !x.is_finite() {
        return x; // Python returns inf and nan unchanged
    }
    let p = x * scale;
    let ap = p.abs();
    if ap < 4_503_599_627_370_496.0 && ap > 1e-200 {
        // |p| < 2**52: ulp(p) <= 0.5, so p - round(p) is exact and a multiple of
        // ulp(p), as is 0.5; |e| <= ulp(p) / 2 then moves the result only when
        // p sits exactly on a half.
        let e = x.mul_add(scale, -p);
        let n0 = p.round_ties_even();
        let r = p - n0;
        let n = if r == 0.5 && e > 0.0 {
            n0 + 1.0
        } else if r == -0.5 && e < 0.0 {
            n0 - 1.0
        } else {
            n0
        };
        return n / scale;
    }
    if ap <= 1e-200 {
        // Far below half a unit of the last decimal: a signed zero, as dtoa gives.
        return 0.0f64.copysign(x);
    }
    format!("{x:.ndigits$}").parse::<f64>().unwrap_or(x)
}

/// Python's `round(x, 3)`.
fn round3(x: f64) -> f64 {
    py_round(x, 3, 1000.0)
}

/// Python's `round(x, 4)`.
fn round4(x: f64) -> f64 {
    py_round(x, 4, 10000.0)
}

/// Exposes `py_round` for the tests (hypothesis against Python's `round`).
#[pyfunction]
fn _round_for_test(x: f64, ndigits: usize) -> PyResult<f64> {
    match ndigits {
        3 => Ok(round3(x)),
        4 => Ok(round4(x)),
        6 => Ok(py_round(x, 6, 1e6)), // the decision record's (decision.rs)
        _ => Err(pyo3::exceptions::PyValueError::new_err("ndigits must be 3, 4 or 6")),
    }
}

/// The value of an exact `int` that fits 64 bits, else `None`.
fn exact_i64(o: &Bound<'_, PyAny>) -> Option<i64> {
    if o.is_exact_instance_of::<PyInt>() {
        o.extract::<i64>().ok()
    } else {
        None
    }
}

/// The value of an exact `float`, else `None`.
fn exact_f64(o: &Bound<'_, PyAny>) -> Option<f64> {
    o.cast_exact::<PyFloat>().ok().map(|f| f.value())
}

/// The truth value of a `bool` or `None`; `None` for anything else (which
/// goes to Python: its truth value could run arbitrary code).
fn truth(o: &Bound<'_, PyAny>) -> Option<bool> {
    if o.is_none() {
        Some(false)
    } else if let Ok(b) = o.cast_exact::<pyo3::types::PyBool>() {
        Some(b.is_true())
    } else {
        None
    }
}

/// An optional string field: `Some(None)` for `None`, `Some(Some(s))` for an exact str.
fn opt_str<'py>(o: &Bound<'py, PyAny>) -> Option<Option<Bound<'py, PyString>>> {
    if o.is_none() {
        Some(None)
    } else {
        o.cast_exact::<PyString>().ok().map(|s| Some(s.clone()))
    }
}

/// An optional int field as its `str()`: `Some(None)` for `None`.
fn opt_int_str<'py>(py: Python<'py>, o: &Bound<'py, PyAny>) -> Option<Option<Bound<'py, PyString>>> {
    if o.is_none() {
        return Some(None);
    }
    let v = exact_i64(o)?;
    Some(Some(PyString::new(py, &v.to_string())))
}

/// A (weight, last seen) entry: an exact tuple of two exact ints.
fn entry(o: &Bound<'_, PyAny>) -> Option<(i64, i64)> {
    let t = o.cast_exact::<PyTuple>().ok()?;
    if t.len() != 2 {
        return None;
    }
    Some((exact_i64(&t.get_item(0).ok()?)?, exact_i64(&t.get_item(1).ok()?)?))
}

/// `_victim(entries)`: least weight, then oldest, then smallest value.
/// `None` when unusual (odd entry, a tie on a key Rust cannot read) or empty.
fn victim<'py>(entries: &Bound<'py, PyDict>) -> Option<Bound<'py, PyAny>> {
    let mut best: Option<(i64, i64, Bound<'py, PyAny>)> = None;
    for (k, v) in entries.iter() {
        let (w, s) = entry(&v)?;
        let better = match &best {
            None => true,
            Some((bw, bs, bk)) => {
                if (w, s) != (*bw, *bs) {
                    (w, s) < (*bw, *bs)
                } else {
                    // Code-point order of str equals byte order of their UTF-8.
                    let a = k.cast_exact::<PyString>().ok()?.to_str().ok()?;
                    let b = bk.cast_exact::<PyString>().ok()?.to_str().ok()?;
                    a < b
                }
            }
        };
        if better {
            best = Some((w, s, k));
        }
    }
    best.map(|(_, _, k)| k)
}

/// `_ew(stat, x, alpha)` as a new tuple; `None` when `stat` is unusual (or
/// n == -1, where Python divides by zero).
fn ew<'py>(
    py: Python<'py>,
    stat: Option<Bound<'py, PyAny>>,
    x: f64,
    alpha: f64,
) -> Option<Bound<'py, PyTuple>> {
    let stat = match stat {
        Some(s) if !s.is_none() => s,
        _ => {
            let t = (1.0f64, round4(x), 0.0f64).into_pyobject(py).ok()?;
            return Some(fresh(t));
        }
    };
    let t = stat.cast_exact::<PyTuple>().ok()?;
    if t.len() != 3 {
        return None;
    }
    let n = exact_f64(&t.get_item(0).ok()?)?;
    let mean = exact_f64(&t.get_item(1).ok()?)?;
    let var = exact_f64(&t.get_item(2).ok()?)?;
    let a = if alpha * (n + 1.0) > 1.0 {
        alpha
    } else {
        if n + 1.0 == 0.0 {
            return None; // ZeroDivisionError in Python: its update raises it
        }
        1.0 / (n + 1.0)
    };
    let diff = x - mean;
    let incr = a * diff;
    let n2 = if n < 1e6 { n + 1.0 } else { n };
    let out = (n2, round4(mean + incr), round4((1.0 - a) * (var + diff * incr)));
    out.into_pyobject(py).ok().map(fresh)
}

// ------------------------------------------------------------------ GC tracking
//
// Why the kernel untracks what it builds (measured: with every baseline tracked,
// CPython's cyclic GC took ~26 % of `Detector.process` on the all-native replay,
// walking millions of baseline tuples and dicts at every gen-2 collection).
//
// Soundness: the cyclic GC only frees objects it proves unreachable; a reference
// *from* an untracked object is never subtracted, so whatever an untracked
// object refers to looks externally referenced and is kept. Untracking can
// therefore never free a live object; the only possible harm is a leak, when a
// garbage cycle passes through an untracked object. No cycle can pass through
// the objects untracked here, because an object is untracked only when every
// object it refers to is atomic (not a GC type: int, float, str, bool, None,
// bytes) or itself untracked (checked with `PyObject_GC_IsTracked` at that
// moment, never assumed), so everything reachable from it is atomic or
// untracked, recursively, and never leads back to it. The exceptions are the
// two objects every baseline may refer to that are GC types but outlive any
// cycle: `_NO_MAP` (a module-level, empty, read-only mapping the kernel also
// holds) and, for the `Baseline` tuple itself, its class (a heap type, referred
// to by every instance): a cycle through the class is garbage only once the
// class is, i.e. never while the `detector.baseline` module lives.
// Later mutation cannot break this silently: CPython re-tracks a dict as soon as
// a trackable key or value is inserted (MAINTAIN_TRACKING), and tuples are
// immutable. Baseline dicts are never mutated after the update that built them
// (both `update`s copy before changing). This is what CPython does itself,
// lazily, at collections (`_PyTuple_MaybeUntrack`, `_PyDict_MaybeUntrack`),
// except that CPython keeps a container of an (untracked) dict tracked because
// the dict *could* be mutated and re-tracked; the baseline dicts are not.

/// Nesting the kernel will inspect: Baseline -> seen -> entries -> (w, s).
const SETTLE_DEPTH: u32 = 3;

/// True when `o` is atomic (not a GC type) or not tracked by the cyclic GC.
fn gc_clean(o: *mut ffi::PyObject) -> bool {
    // SAFETY: `o` is a live object (borrowed from a live container or owned);
    // both calls only read its type flags and GC header.
    unsafe { ffi::PyObject_IS_GC(o) == 0 || ffi::PyObject_GC_IsTracked(o) == 0 }
}

/// Untracks `o` when it is an exact tuple or dict whose every item (key and
/// value) is atomic or untracked, settling tracked tuple/dict items first (up to
/// `depth` levels). Returns whether `o` is now atomic or untracked. `no_map`
/// counts as clean (see the soundness note above).
fn settle(o: *mut ffi::PyObject, no_map: *mut ffi::PyObject, depth: u32) -> bool {
    if o == no_map || gc_clean(o) {
        return true;
    }
    let item_ok = |x: *mut ffi::PyObject| x == no_map || gc_clean(x) || (depth > 0 && settle(x, no_map, depth - 1));
    // SAFETY: `o` is live; items are read as borrowed references while `o`
    // holds them (nothing here runs Python code: no __eq__/__hash__, no
    // allocation), and untracking an object whose items are all atomic or
    // untracked is sound (see above).
    unsafe {
        if ffi::PyTuple_CheckExact(o) != 0 {
            let n = ffi::PyTuple_GET_SIZE(o);
            for i in 0..n {
                if !item_ok(ffi::PyTuple_GET_ITEM(o, i)) {
                    return false;
                }
            }
        } else if ffi::PyDict_CheckExact(o) != 0 {
            let mut pos: ffi::Py_ssize_t = 0;
            let mut k: *mut ffi::PyObject = std::ptr::null_mut();
            let mut v: *mut ffi::PyObject = std::ptr::null_mut();
            while ffi::PyDict_Next(o, &mut pos, &mut k, &mut v) != 0 {
                if !item_ok(k) || !item_ok(v) {
                    return false;
                }
            }
        } else {
            return false;
        }
        ffi::PyObject_GC_UnTrack(o.cast());
    }
    true
}

/// Untracks a tuple or dict the kernel has just built when its items are all
/// atomic or untracked (checked, not assumed); returns it.
fn fresh<T>(o: Bound<'_, T>) -> Bound<'_, T> {
    settle(o.as_ptr(), std::ptr::null_mut(), 0);
    o
}

/// The compiled `update`, bound to one `DetectorConfig` (see the module doc).
///
/// Call: `kernel(b, event, cfg, learn_weight=1.0, caps=None) -> Baseline`.
#[pyclass(frozen, module = "detector._native")]
pub struct UpdateKernel {
    cfg: Py<PyAny>,
    caps: Py<PyAny>,
    baseline_type: Py<PyType>,
    event_type: Py<PyType>,
    py_update: Py<PyAny>,
    auth: Py<PyAny>,
    user: Py<PyAny>,
    no_map: Py<PyAny>,
    half_life_ms: f64,
    fail_hl_ms: f64,
    host_hl_ms: f64,
    ew_alpha: f64,
    ln2: f64,
    dims: Vec<Py<PyString>>,
    traffic_keys: Vec<Py<PyString>>,
}

/// A mapping field of the baseline: `Some(None)` for the shared empty proxy
/// (`_NO_MAP`), `Some(Some(d))` for an exact dict, `None` for anything else.
fn mapping<'py>(o: &Bound<'py, PyAny>, no_map: &Py<PyAny>) -> Option<Option<Bound<'py, PyDict>>> {
    if o.is(no_map) {
        Some(None)
    } else {
        o.cast_exact::<PyDict>().ok().map(|d| Some(d.clone()))
    }
}

/// `count_ts` advanced by one at `ts`: `(round(decayed(count_ts) + 1.0, 3), max(ts, last))`.
fn bump<'py>(
    py: Python<'py>,
    pair: &Bound<'py, PyAny>,
    ts_o: &Bound<'py, PyAny>,
    ts: i64,
    hl_ms: f64,
    ln2: f64,
) -> Option<Bound<'py, PyAny>> {
    let t = pair.cast_exact::<PyTuple>().ok()?;
    if t.len() != 2 {
        return None;
    }
    let count = exact_f64(&t.get_item(0).ok()?)?;
    let last_o = t.get_item(1).ok()?;
    let last = exact_i64(&last_o)?;
    let burst = if count == 0.0 {
        0.0
    } else {
        let dt = ts.checked_sub(last)?.max(0);
        count * ((-ln2 * dt as f64) / hl_ms).exp()
    };
    let keep = if ts > last { ts_o.clone() } else { last_o };
    let out = PyTuple::new(py, [PyFloat::new(py, round3(burst + 1.0)).into_any(), keep]).ok()?;
    Some(fresh(out).into_any())
}

/// `_renormalise(b, ts, half_life_ms)`: (hours, hours_total, seen, totals).
#[allow(clippy::type_complexity)]
fn renormalise<'py>(
    py: Python<'py>,
    hours: &Option<Bound<'py, PyDict>>,
    hours_total: i64,
    seen: &Option<Bound<'py, PyDict>>,
    totals: &Option<Bound<'py, PyDict>>,
    f: f64,
) -> Option<(Bound<'py, PyDict>, i64, Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    // int(w * f) of a non-negative or negative int weight: float(w) * f, truncated.
    let scale = |w: i64| -> Option<i64> {
        let x = (w as f64) * f;
        // Python's int() of a finite float; outside i64 (never, as f < 1) go to Python.
        if x.is_finite() && x.abs() < 9.2e18 {
            Some(x as i64)
        } else {
            None
        }
    };
    let new_hours = PyDict::new(py);
    if let Some(h) = hours {
        for (k, v) in h.iter() {
            let w = scale(exact_i64(&v)?)?;
            if w > 0 {
                new_hours.set_item(k, w).ok()?;
            }
        }
    }
    let new_seen = PyDict::new(py);
    let new_totals = PyDict::new(py);
    if let Some(s) = seen {
        for (dim, entries) in s.iter() {
            let entries = entries.cast_exact::<PyDict>().ok()?;
            let kept = PyDict::new(py);
            for (k, v) in entries.iter() {
                let t = v.cast_exact::<PyTuple>().ok()?;
                if t.len() != 2 {
                    return None;
                }
                let w = scale(exact_i64(&t.get_item(0).ok()?)?)?;
                if w > 0 {
                    let s_o = t.get_item(1).ok()?;
                    let e = PyTuple::new(py, [w.into_pyobject(py).ok()?.into_any(), s_o]).ok()?;
                    kept.set_item(k, fresh(e)).ok()?;
                }
            }
            if !kept.is_empty() {
                let total = match totals {
                    Some(t) => match t.get_item(&dim).ok()? {
                        Some(v) => exact_i64(&v)?,
                        None => 0,
                    },
                    None => 0,
                };
                new_seen.set_item(&dim, kept).ok()?;
                new_totals.set_item(&dim, scale(total)?).ok()?;
            }
        }
    }
    // A dict of dicts is tracked on insertion; its entries are settled now.
    settle(new_seen.as_ptr(), std::ptr::null_mut(), 1);
    Some((new_hours, scale(hours_total)?, new_seen, new_totals))
}

impl UpdateKernel {
    /// Returns `tuple.__new__(Baseline, fields)`, built as CPython's
    /// `tuple_subtype_new` builds it: the subtype's `tp_alloc` for 15 items,
    /// then each item stored (its reference moved in).
    fn make_baseline<'py>(
        &self,
        py: Python<'py>,
        fields: [Bound<'py, PyAny>; 15],
    ) -> PyResult<Bound<'py, PyAny>> {
        let tp: *mut ffi::PyTypeObject = self.baseline_type.as_ptr().cast();
        // SAFETY: `new` checked that `baseline_type` is a subclass of tuple
        // with tuple's item and basic sizes (a NamedTuple: `__slots__ = ()`),
        // so its `tp_alloc` returns a zeroed tuple object of 15 item slots
        // (or NULL with an exception set) and PyTuple_SET_ITEM writes within
        // it. Every slot is filled before the object is handed out; each
        // item's owned reference moves into the tuple (`into_ptr`).
        // Measured (timeit, same loaded machine): calling `_new_baseline(t)`
        // costs ~0.29 us, about 30% of the kernel's whole no-learning path.
        unsafe {
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            let obj = alloc(tp, 15);
            if obj.is_null() {
                return Err(PyErr::fetch(py));
            }
            let mut clean = true;
            for (i, f) in fields.into_iter().enumerate() {
                // Fields the update left tracked (a dict of dicts, containers
                // reused from a baseline Python built) are settled here; a
                // field that stays tracked keeps the Baseline tracked.
                clean &= settle(f.as_ptr(), self.no_map.as_ptr(), SETTLE_DEPTH - 1);
                ffi::PyTuple_SET_ITEM(obj, i as ffi::Py_ssize_t, f.into_ptr());
            }
            if clean {
                // Every item is atomic, untracked or `_NO_MAP`; the class is
                // immortal for our purpose (see "GC tracking" above).
                ffi::PyObject_GC_UnTrack(obj.cast());
            }
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }

    /// The fast path; `Ok(None)` means "run the Python original instead".
    #[allow(clippy::too_many_lines)]
    fn fast<'py>(
        &self,
        py: Python<'py>,
        b: &Bound<'py, PyAny>,
        event: &Bound<'py, PyAny>,
        lw: f64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if b.get_type_ptr() != self.baseline_type.as_ptr().cast()
            || event.get_type_ptr() != self.event_type.as_ptr().cast()
        {
            bail!();
        }
        let bt = b.cast::<PyTuple>()?;
        let et = event.cast::<PyTuple>()?;
        if bt.len() != BASELINE_FIELDS.len() || et.len() != EVENT_FIELDS.len() {
            bail!();
        }
        // Fields by position; both lengths were checked just above, so the
        // EV_* and BL_* indices are in bounds.
        let ef = et.as_slice();
        let ev = |i: usize| -> &Bound<'py, PyAny> { &ef[i] };
        let ts_o = ev(EV_TS_MS).clone();
        let ts = want!(exact_i64(&ts_o));
        let is_auth = ev(EV_KIND).is(&self.auth);

        let n_seen_o = bt.get_item(BL_N_SEEN)?;
        let n_seen = want!(exact_i64(&n_seen_o));
        let mut n_learned_o = bt.get_item(BL_N_LEARNED)?;
        let first_o = bt.get_item(BL_FIRST_TS)?;
        let last_o = bt.get_item(BL_LAST_TS)?;
        let mut t0_o = bt.get_item(BL_T0)?;
        let mut hours_o = bt.get_item(BL_HOURS)?;
        let mut hours_total_o = bt.get_item(BL_HOURS_TOTAL)?;
        let mut seen_o = bt.get_item(BL_SEEN)?;
        let mut totals_o = bt.get_item(BL_SEEN_TOTALS)?;
        let mut last_success_o = bt.get_item(BL_LAST_SUCCESS)?;
        let mut fail_rate_o = bt.get_item(BL_FAIL_RATE)?;
        let mut fail_burst_o = bt.get_item(BL_FAIL_BURST)?;
        let mut new_hosts_o = bt.get_item(BL_NEW_HOSTS)?;
        let mut traffic_o = bt.get_item(BL_TRAFFIC)?;
        let signals_o = bt.get_item(BL_SIGNALS)?;

        let seen = want!(mapping(&seen_o, &self.no_map));
        let dims = &self.dims;

        // Risk counters first: they read the profile as it was before the event.
        let mut internal: Option<bool> = None; // dst_internal of a network event
        let mut host: Option<Bound<'py, PyString>> = None;
        if is_auth {
            // `event.success is False`: False is the only exact bool that is false.
            let failed = ev(EV_SUCCESS)
                .cast_exact::<pyo3::types::PyBool>()
                .is_ok_and(|s| !s.is_true());
            if failed {
                fail_burst_o = want!(bump(py, &fail_burst_o, &ts_o, ts, self.fail_hl_ms, self.ln2));
            }
        } else {
            let internal_o = ev(EV_DST_INTERNAL);
            if !internal_o.is_none() {
                internal = Some(want!(truth(internal_o)));
            }
            if internal == Some(true) {
                // host = dst_hostname or dst_ip
                host = match want!(opt_str(ev(EV_DST_HOSTNAME))) {
                    Some(s) if s.len()? > 0 => Some(s),
                    _ => want!(opt_str(ev(EV_DST_IP))),
                };
                if let Some(h) = &host {
                    let known = match &seen {
                        None => false,
                        Some(s) => match s.get_item(&dims[D_HOST])? {
                            None => false,
                            Some(hosts) => want!(mapping(&hosts, &self.no_map))
                                .map_or(Ok(false), |d| d.contains(h))?,
                        },
                    };
                    if !known {
                        new_hosts_o =
                            want!(bump(py, &new_hosts_o, &ts_o, ts, self.host_hl_ms, self.ln2));
                    }
                }
            }
        }

        if lw > 0.0 {
            let hl = self.half_life_ms;
            let mut hours = want!(mapping(&hours_o, &self.no_map));
            let mut seen = seen;
            let mut totals = want!(mapping(&totals_o, &self.no_map));
            let mut hours_total = want!(exact_i64(&hours_total_o));
            let mut t0 = want!(exact_i64(&t0_o));
            let hours_empty = hours.as_ref().is_none_or(|d| d.is_empty());
            let seen_empty = seen.as_ref().is_none_or(|d| d.is_empty());
            if hours_empty && seen_empty {
                t0 = ts; // nothing learned yet: the first learned event anchors the landmark
                t0_o = ts_o.clone();
            } else if (want!(ts.checked_sub(t0)) as f64) / hl > RENORMALISE_AT {
                let f = ((-self.ln2 * (ts - t0) as f64) / hl).exp();
                let (h, ht, s, st) = want!(renormalise(py, &hours, hours_total, &seen, &totals, f));
                hours = Some(h);
                hours_total = ht;
                seen = Some(s);
                totals = Some(st);
                t0 = ts;
                t0_o = ts_o.clone();
            }
            let wf = lw * MILLI * ((self.ln2 * want!(ts.checked_sub(t0)) as f64) / hl).exp();
            if !(wf.is_finite() && wf.abs() < 9.2e18) {
                bail!(); // int() would overflow 64 bits or raise: Python decides
            }
            let w = wf as i64; // int(): truncation toward zero

            let n_learned = want!(exact_f64(&n_learned_o));
            let nl = if lw == 1.0 && n_learned % 1.0 == 0.0 {
                n_learned + 1.0 // whole counts stay exact
            } else {
                round3(n_learned + lw)
            };
            n_learned_o = PyFloat::new(py, nl).into_any();

            let how = (ts.div_euclid(HOUR_MS) + 72).rem_euclid(168);
            let new_hours = match &hours {
                Some(d) => d.copy()?,
                None => PyDict::new(py),
            };
            let old = match new_hours.get_item(how)? {
                None => 0,
                Some(v) => want!(exact_i64(&v)),
            };
            new_hours.set_item(how, want!(old.checked_add(w)))?;
            hours_o = new_hours.into_any();
            hours_total_o = want!(hours_total.checked_add(w)).into_pyobject(py)?.into_any();

            // dimension_values(event), inlined.
            let mut pairs: [(usize, Option<Bound<'py, PyString>>); MAX_PAIRS] = Default::default();
            let mut np = 0usize;
            let mut push = |d: usize, v: Option<Bound<'py, PyString>>| {
                if v.is_some() {
                    pairs[np] = (d, v);
                    np += 1;
                }
            };
            if is_auth {
                push(D_COUNTRY, want!(opt_str(ev(EV_SRC_COUNTRY))));
                push(D_CITY, want!(opt_str(ev(EV_SRC_CITY))));
                push(D_ASN, want!(opt_int_str(py, ev(EV_SRC_ASN))));
                push(D_PREFIX, want!(opt_str(ev(EV_SRC_PREFIX))));
                push(D_DEVICE, want!(opt_str(ev(EV_DEVICE_ID))));
                push(D_UA, want!(opt_str(ev(EV_USER_AGENT))));
                push(D_SERVICE, want!(opt_str(ev(EV_SERVICE))));
            } else {
                if internal == Some(true) {
                    push(D_HOST, host.clone());
                    push(D_PORT, want!(opt_int_str(py, ev(EV_DST_PORT))));
                } else if internal == Some(false) {
                    push(D_DST_COUNTRY, want!(opt_str(ev(EV_DST_COUNTRY))));
                    push(D_DST_ASN, want!(opt_int_str(py, ev(EV_DST_ASN))));
                }
                let device = want!(opt_str(ev(EV_DEVICE_ID)));
                if device.is_some() && ev(EV_ENTITY_KIND).is(&self.user) {
                    push(D_DEVICE, device);
                }
            }

            if np > 0 {
                let new_seen = match &seen {
                    Some(d) => d.copy()?,
                    None => PyDict::new(py),
                };
                let new_totals = match &totals {
                    Some(d) => d.copy()?,
                    None => PyDict::new(py),
                };
                let ts_s = ts.div_euclid(1000);
                let caps = want!(self.caps.bind(py).cast_exact::<PyDict>().ok());
                for (d, value) in pairs.iter().take(np) {
                    let value = want!(value.as_ref());
                    let dim = dims[*d].bind(py);
                    let entries = match new_seen.get_item(dim)? {
                        None => PyDict::new(py),
                        Some(e) => want!(e.cast_exact::<PyDict>().ok()).copy()?,
                    };
                    match entries.get_item(value)? {
                        None => {
                            let cap = match caps.get_item(dim)? {
                                None => 8,
                                Some(c) => want!(exact_i64(&c)),
                            };
                            if (entries.len() as i64) >= cap {
                                let v = want!(victim(&entries));
                                entries.del_item(v)?;
                            }
                            entries.set_item(value, fresh((w, ts_s).into_pyobject(py)?))?;
                        }
                        Some(old) => {
                            let t = want!(old.cast_exact::<PyTuple>().ok());
                            if t.len() != 2 {
                                bail!();
                            }
                            let ow = want!(exact_i64(&t.get_item(0)?));
                            let os_o = t.get_item(1)?;
                            let os = want!(exact_i64(&os_o));
                            let nw = want!(ow.checked_add(w)).into_pyobject(py)?.into_any();
                            let ns = if ts_s > os { ts_s.into_pyobject(py)?.into_any() } else { os_o };
                            entries.set_item(value, fresh(PyTuple::new(py, [nw, ns])?))?;
                        }
                    }
                    new_seen.set_item(dim, entries)?;
                    let tot = match new_totals.get_item(dim)? {
                        None => 0,
                        Some(v) => want!(exact_i64(&v)),
                    };
                    new_totals.set_item(dim, want!(tot.checked_add(w)))?;
                }
                seen_o = new_seen.into_any();
                totals_o = new_totals.into_any();
            } else {
                if let Some(s) = seen {
                    seen_o = s.into_any();
                }
                if let Some(t) = totals {
                    totals_o = t.into_any();
                }
            }

            if is_auth {
                let success_o = ev(EV_SUCCESS);
                if !success_o.is_none() {
                    let success = want!(truth(success_o));
                    let fr = want!(exact_f64(&fail_rate_o));
                    let alpha = self.ew_alpha;
                    let ns1 = n_seen as f64 + 1.0;
                    let a = if alpha * ns1 > 1.0 { alpha } else { 1.0 / ns1 };
                    let target = if success { 0.0 } else { 1.0 };
                    fail_rate_o = PyFloat::new(py, round4(fr + a * (target - fr))).into_any();
                    if success {
                        let lat = ev(EV_SRC_LAT);
                        let lon = ev(EV_SRC_LON);
                        if !lat.is_none() && !lon.is_none() {
                            last_success_o = fresh(PyTuple::new(
                                py,
                                [ts_o.clone(), lat.clone(), lon.clone(), ev(EV_SRC_COUNTRY).clone()],
                            )?)
                            .into_any();
                        }
                    }
                }
            } else if let Some(int) = internal {
                let bo = ev(EV_BYTES_OUT);
                let bi = ev(EV_BYTES_IN);
                if !bo.is_none() || !bi.is_none() {
                    let traffic = want!(mapping(&traffic_o, &self.no_map));
                    let new_traffic = match &traffic {
                        Some(d) => d.copy()?,
                        None => PyDict::new(py),
                    };
                    let keys = &self.traffic_keys;
                    for (bytes, key) in [
                        (&bo, if int { &keys[0] } else { &keys[2] }),
                        (&bi, if int { &keys[1] } else { &keys[3] }),
                    ] {
                        if bytes.is_none() {
                            continue;
                        }
                        let n = want!(exact_i64(bytes));
                        if n < 0 {
                            bail!(); // log1p of -1 or less raises: Python decides
                        }
                        let old = match &traffic {
                            Some(d) => d.get_item(key)?,
                            None => None,
                        };
                        let stat = want!(ew(py, old, (n as f64).ln_1p(), self.ew_alpha));
                        new_traffic.set_item(key, stat)?;
                    }
                    traffic_o = new_traffic.into_any();
                }
            }
        }

        let first_ts = if first_o.is_none() { None } else { Some(want!(exact_i64(&first_o))) };
        let last_ts = if last_o.is_none() { None } else { Some(want!(exact_i64(&last_o))) };
        let first = match first_ts {
            Some(f) if ts >= f => first_o,
            _ => ts_o.clone(),
        };
        let last = match last_ts {
            Some(l) if ts <= l => last_o,
            _ => ts_o.clone(),
        };
        let fields = [
                want!(n_seen.checked_add(1)).into_pyobject(py)?.into_any(),
                n_learned_o,
                first,
                last,
                t0_o,
                hours_o,
                hours_total_o,
                seen_o,
                totals_o,
                last_success_o,
                fail_rate_o,
                fail_burst_o,
                new_hosts_o,
                traffic_o,
                signals_o,
            ];
        Ok(Some(self.make_baseline(py, fields)?))
    }
}

/// Reads a positive, finite float setting (an int is converted as Python's
/// arithmetic converts it); `None` when absent or odd.
fn setting(cfg: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<f64>> {
    let v = cfg.getattr(name)?;
    if v.is_exact_instance_of::<PyFloat>() || v.is_exact_instance_of::<PyInt>() {
        let x: f64 = v.extract()?;
        if x.is_finite() {
            return Ok(Some(x));
        }
    }
    Ok(None)
}

fn default_one() -> Py<PyAny> {
    Python::attach(|py| PyFloat::new(py, 1.0).into_any().unbind())
}

#[pymethods]
impl UpdateKernel {
    /// Builds the kernel for `cfg` (a `DetectorConfig`).
    ///
    /// `baseline_type`, `event_type`: the named-tuple classes (results are
    /// built as `detector.baseline._new_baseline` builds them); `py_update`: `detector.baseline.update`
    /// (the fallback); `auth`, `user`: `EventKind.AUTH`, `EntityKind.USER`;
    /// `no_map`: `detector.baseline._NO_MAP`. Raises `ValueError` when a
    /// setting is not a finite number (half-lives must also be positive).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cfg: Bound<'_, PyAny>,
        baseline_type: Bound<'_, PyType>,
        event_type: Bound<'_, PyType>,
        py_update: Bound<'_, PyAny>,
        auth: Bound<'_, PyAny>,
        user: Bound<'_, PyAny>,
        no_map: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let bad = || pyo3::exceptions::PyValueError::new_err("unsupported detector settings");
        let days = setting(&cfg, "profile_half_life_days")?.ok_or_else(bad)?;
        let fail_s = setting(&cfg, "failure_burst_half_life_s")?.ok_or_else(bad)?;
        let host_s = setting(&cfg, "new_host_burst_half_life_s")?.ok_or_else(bad)?;
        let alpha = setting(&cfg, "ew_alpha")?.ok_or_else(bad)?;
        // Same arithmetic as Python's at call time.
        let half_life_ms = days * 86_400_000.0;
        let fail_hl_ms = fail_s * 1000.0;
        let host_hl_ms = host_s * 1000.0;
        for x in [half_life_ms, fail_hl_ms, host_hl_ms] {
            if !(x.is_finite() && x > 0.0) {
                return Err(bad());
            }
        }
        let caps = cfg.getattr("caps")?.unbind();
        // make_baseline() relies on this layout: a plain tuple subclass.
        let tuple_type = py.get_type::<PyTuple>();
        // SAFETY: both are live type objects; reading two size fields.
        let same_layout = unsafe {
            let tp: *mut ffi::PyTypeObject = baseline_type.as_ptr().cast();
            let tt: *mut ffi::PyTypeObject = tuple_type.as_ptr().cast();
            (*tp).tp_basicsize == (*tt).tp_basicsize && (*tp).tp_itemsize == (*tt).tp_itemsize
        };
        if !baseline_type.is_subclass(&tuple_type)? || !same_layout {
            return Err(pyo3::exceptions::PyTypeError::new_err("Baseline must be a NamedTuple"));
        }
        Ok(UpdateKernel {
            cfg: cfg.unbind(),
            caps,
            baseline_type: baseline_type.unbind(),
            event_type: event_type.unbind(),
            py_update: py_update.unbind(),
            auth: auth.unbind(),
            user: user.unbind(),
            no_map: no_map.unbind(),
            half_life_ms,
            fail_hl_ms,
            host_hl_ms,
            ew_alpha: alpha,
            ln2: 2.0f64.ln(),
            dims: DIMENSIONS.iter().map(|d| PyString::intern(py, d).unbind()).collect(),
            traffic_keys: TRAFFIC_KEYS.iter().map(|d| PyString::intern(py, d).unbind()).collect(),
        })
    }

    /// `update(b, event, cfg, learn_weight=1.0, caps=None)`: the new baseline.
    #[pyo3(signature = (b, event, cfg, learn_weight=default_one(), caps=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        b: &Bound<'py, PyAny>,
        event: &Bound<'py, PyAny>,
        cfg: &Bound<'py, PyAny>,
        learn_weight: Py<PyAny>,
        caps: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let learn_weight = learn_weight.into_bound(py);
        if caps.is_none() && cfg.is(&self.cfg) {
            if let Some(lw) = exact_f64(&learn_weight) {
                // Any error on the fast path is left to Python to raise (or not):
                // nothing was modified, so running it from scratch is exact.
                if let Ok(Some(out)) = self.fast(py, b, event, lw) {
                    return Ok(out);
                }
            }
        }
        self.py_update.bind(py).call1((b, event, cfg, learn_weight, caps))
    }
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<UpdateKernel>()?;
    m.add_function(wrap_pyfunction!(_round_for_test, m)?)?;
    Ok(())
}
