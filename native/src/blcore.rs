//! Rust-owned baselines: conversions and the in-place update.
//!
//! * [`Bl::from_py`] / [`Bl::to_py`]: a `detector.baseline.Baseline` to a
//!   [`Bl`] and back, losslessly. `from_py` accepts only what `Bl` models
//!   exactly (exact `int`s within 64 bits where Python has ints, exact
//!   `float`s, exact `str`s that encode to UTF-8, exact `dict`s or the shared
//!   `_NO_MAP` for the mappings, exact tuples of the right arity); anything
//!   else is `None` and the caller keeps the Python value. `to_py` gives back
//!   an equal `Baseline`: same field types, float bits, dict insertion orders,
//!   `_NO_MAP` itself for `None` maps, tuples.
//! * [`Bl::update`]: `detector.baseline.update(b, event, cfg, learn_weight)`
//!   (with `caps=None`) done in place, with the config read once into
//!   [`UpdCfg`]. On `Err(Bail)` the baseline is untouched, so that the caller
//!   can replay the event through Python.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::bl::{Bl, Dim, Entry, LastSuccess};
use crate::layout::{
    BASELINE_FIELDS, BL_FAIL_BURST, BL_FAIL_RATE, BL_FIRST_TS, BL_HOURS, BL_HOURS_TOTAL,
    BL_LAST_SUCCESS, BL_LAST_TS, BL_NEW_HOSTS, BL_N_LEARNED, BL_N_SEEN, BL_SEEN,
    BL_SEEN_TOTALS, BL_SIGNALS, BL_T0, BL_TRAFFIC,
};

// ------------------------------------------------------------------ conversions

/// The Python objects a [`Bl`] is recognised by and rebuilt with.
pub struct BlTypes {
    /// `detector.baseline.Baseline`.
    pub baseline_type: Py<PyAny>,
    /// `detector.baseline._NO_MAP`: the shared empty mapping of `EMPTY`.
    pub no_map: Py<PyAny>,
    /// `detector.baseline._new_baseline`: `tuple.__new__(Baseline, fields)`.
    pub new_baseline: Py<PyAny>,
}

impl BlTypes {
    /// Reads `Baseline`, `_NO_MAP` and `_new_baseline` from `detector.baseline`.
    pub fn new(py: Python<'_>) -> PyResult<BlTypes> {
        let m = py.import("detector.baseline")?;
        Ok(BlTypes {
            baseline_type: m.getattr("Baseline")?.unbind(),
            no_map: m.getattr("_NO_MAP")?.unbind(),
            new_baseline: m.getattr("_new_baseline")?.unbind(),
        })
    }
}

/// An exact `int` within i64.
fn x_i64(o: &Bound<'_, PyAny>) -> Option<i64> {
    if o.is_exact_instance_of::<PyInt>() {
        o.extract::<i64>().ok()
    } else {
        None
    }
}

/// `None` or an exact `int` within i64.
fn x_opt_i64(o: &Bound<'_, PyAny>) -> Option<Option<i64>> {
    if o.is_none() {
        Some(None)
    } else {
        x_i64(o).map(Some)
    }
}

/// An exact `float`.
fn x_f64(o: &Bound<'_, PyAny>) -> Option<f64> {
    o.cast_exact::<PyFloat>().ok().map(|f| f.value())
}

/// An exact `str` that encodes to UTF-8 (no lone surrogates).
fn x_str(o: &Bound<'_, PyAny>) -> Option<String> {
    let s = o.cast_exact::<PyString>().ok()?;
    s.to_str().ok().map(str::to_owned)
}

/// An exact tuple of `n` items.
fn x_tuple<'a, 'py>(o: &'a Bound<'py, PyAny>, n: usize) -> Option<&'a Bound<'py, PyTuple>> {
    let t = o.cast_exact::<PyTuple>().ok()?;
    if t.len() == n {
        Some(t)
    } else {
        None
    }
}

/// A mapping field: `Some(None)` for `_NO_MAP` itself, `Some(Some(d))` for an
/// exact dict, `None` otherwise.
fn x_map<'a, 'py>(
    o: &'a Bound<'py, PyAny>,
    no_map: &Py<PyAny>,
) -> Option<Option<&'a Bound<'py, PyDict>>> {
    if o.is(no_map) {
        Some(None)
    } else {
        o.cast_exact::<PyDict>().ok().map(Some)
    }
}

/// `(float, int)`: `fail_burst`, `new_hosts`.
fn x_pair(o: &Bound<'_, PyAny>) -> Option<(f64, i64)> {
    let t = x_tuple(o, 2)?;
    Some((x_f64(&t.get_item(0).ok()?)?, x_i64(&t.get_item(1).ok()?)?))
}

/// Reads a mapping field with `item(key, value)` per entry, in dict order.
fn x_vec<T>(
    o: &Bound<'_, PyAny>,
    no_map: &Py<PyAny>,
    item: impl Fn(&Bound<'_, PyAny>, &Bound<'_, PyAny>) -> Option<T>,
) -> Option<Option<Vec<T>>> {
    match x_map(o, no_map)? {
        None => Some(None),
        Some(d) => {
            let mut v = Vec::with_capacity(d.len());
            // Exact dicts of exact keys: iterating runs no Python code, so
            // the dict cannot change under the iterator.
            for (k, x) in d.iter() {
                v.push(item(&k, &x)?);
            }
            Some(Some(v))
        }
    }
}

impl Bl {
    /// Reads an exact `Baseline` whose every field has exactly the type `Bl`
    /// models; `None` for anything else (the caller keeps the Python value).
    pub fn from_py(b: &Bound<'_, PyAny>, t: &BlTypes) -> Option<Bl> {
        if b.get_type().as_ptr() != t.baseline_type.as_ptr() {
            return None;
        }
        let tup = b.cast::<PyTuple>().ok()?;
        if tup.len() != BASELINE_FIELDS.len() {
            return None;
        }
        let f = |i: usize| tup.get_item(i).ok();
        let no_map = &t.no_map;
        let hours = x_vec(&f(BL_HOURS)?, no_map, |k, v| {
            let h = x_i64(k)?;
            if !(0..168).contains(&h) {
                return None;
            }
            Some((h as u8, x_i64(v)?))
        })?;
        let seen = x_vec(&f(BL_SEEN)?, no_map, |k, v| {
            let d = v.cast_exact::<PyDict>().ok()?;
            let mut entries = Vec::with_capacity(d.len());
            for (value, e) in d.iter() {
                let e = x_tuple(&e, 2)?;
                entries.push(Entry {
                    value: x_str(&value)?,
                    w: x_i64(&e.get_item(0).ok()?)?,
                    last_s: x_i64(&e.get_item(1).ok()?)?,
                });
            }
            Some(Dim { name: x_str(k)?, entries })
        })?;
        let seen_totals = x_vec(&f(BL_SEEN_TOTALS)?, no_map, |k, v| Some((x_str(k)?, x_i64(v)?)))?;
        let ls = f(BL_LAST_SUCCESS)?;
        let last_success = if ls.is_none() {
            None
        } else {
            let l = x_tuple(&ls, 4)?;
            let country = l.get_item(3).ok()?;
            Some(LastSuccess {
                ts: x_i64(&l.get_item(0).ok()?)?,
                lat: x_f64(&l.get_item(1).ok()?)?,
                lon: x_f64(&l.get_item(2).ok()?)?,
                country: if country.is_none() { None } else { Some(x_str(&country)?) },
            })
        };
        let traffic = x_vec(&f(BL_TRAFFIC)?, no_map, |k, v| {
            let s = x_tuple(v, 3)?;
            Some((
                x_str(k)?,
                [
                    x_f64(&s.get_item(0).ok()?)?,
                    x_f64(&s.get_item(1).ok()?)?,
                    x_f64(&s.get_item(2).ok()?)?,
                ],
            ))
        })?;
        let sig = f(BL_SIGNALS)?;
        let sig = sig.cast_exact::<PyTuple>().ok()?;
        let mut signals = Vec::with_capacity(sig.len());
        for s in sig.iter() {
            let s = x_tuple(&s, 3)?;
            signals.push((
                x_str(&s.get_item(0).ok()?)?,
                x_i64(&s.get_item(1).ok()?)?,
                x_i64(&s.get_item(2).ok()?)?,
            ));
        }
        Some(Bl {
            n_seen: x_i64(&f(BL_N_SEEN)?)?,
            n_learned: x_f64(&f(BL_N_LEARNED)?)?,
            first_ts: x_opt_i64(&f(BL_FIRST_TS)?)?,
            last_ts: x_opt_i64(&f(BL_LAST_TS)?)?,
            t0: x_i64(&f(BL_T0)?)?,
            hours,
            hours_total: x_i64(&f(BL_HOURS_TOTAL)?)?,
            seen,
            seen_totals,
            last_success,
            fail_rate: x_f64(&f(BL_FAIL_RATE)?)?,
            fail_burst: x_pair(&f(BL_FAIL_BURST)?)?,
            new_hosts: x_pair(&f(BL_NEW_HOSTS)?)?,
            traffic,
            signals,
        })
    }

    /// Builds the Python `Baseline` equal to `self` in every respect (field
    /// types, float bits, dict insertion orders, `_NO_MAP` for `None` maps).
    pub fn to_py<'py>(&self, py: Python<'py>, t: &BlTypes) -> PyResult<Bound<'py, PyAny>> {
        fn map<'py, T>(
            py: Python<'py>,
            no_map: &Py<PyAny>,
            v: &Option<Vec<T>>,
            item: impl Fn(&T, &Bound<'py, PyDict>) -> PyResult<()>,
        ) -> PyResult<Bound<'py, PyAny>> {
            match v {
                None => Ok(no_map.bind(py).clone()),
                Some(v) => {
                    let d = PyDict::new(py);
                    for x in v {
                        item(x, &d)?;
                    }
                    Ok(d.into_any())
                }
            }
        }
        fn opt_int<'py>(py: Python<'py>, v: Option<i64>) -> Bound<'py, PyAny> {
            match v {
                None => py.None().into_bound(py),
                Some(x) => x.into_pyobject(py).map_or_else(|e| match e {}, |o| o.into_any()),
            }
        }
        let int = |x: i64| opt_int(py, Some(x));
        let flt = |x: f64| PyFloat::new(py, x).into_any();
        let str_ = |s: &str| PyString::new(py, s).into_any();
        let no_map = &t.no_map;
        let hours = map(py, no_map, &self.hours, |(h, w), d| d.set_item(*h, *w))?;
        let seen = map(py, no_map, &self.seen, |dim, d| {
            let entries = PyDict::new(py);
            for e in &dim.entries {
                entries.set_item(e.value.as_str(), (e.w, e.last_s))?;
            }
            d.set_item(dim.name.as_str(), entries)
        })?;
        let totals = map(py, no_map, &self.seen_totals, |(k, v), d| d.set_item(k.as_str(), *v))?;
        let traffic = map(py, no_map, &self.traffic, |(k, s), d| {
            d.set_item(k.as_str(), (s[0], s[1], s[2]))
        })?;
        let last_success = match &self.last_success {
            None => py.None().into_bound(py),
            Some(l) => PyTuple::new(
                py,
                [
                    int(l.ts),
                    flt(l.lat),
                    flt(l.lon),
                    match &l.country {
                        None => py.None().into_bound(py),
                        Some(c) => str_(c),
                    },
                ],
            )?
            .into_any(),
        };
        let pair = |p: (f64, i64)| PyTuple::new(py, [flt(p.0), int(p.1)]).map(Bound::into_any);
        let signals = PyTuple::new(
            py,
            self.signals
                .iter()
                .map(|(k, l, ts)| PyTuple::new(py, [str_(k), int(*l), int(*ts)]))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let fields = PyTuple::new(
            py,
            [
                int(self.n_seen),
                flt(self.n_learned),
                opt_int(py, self.first_ts),
                opt_int(py, self.last_ts),
                int(self.t0),
                hours,
                int(self.hours_total),
                seen,
                totals,
                last_success,
                flt(self.fail_rate),
                pair(self.fail_burst)?,
                pair(self.new_hosts)?,
                traffic,
                signals.into_any(),
            ],
        )?;
        t.new_baseline.bind(py).call1((fields,))
    }
}

/// Test hook: `Baseline -> Bl -> Baseline`, or None when not representable.
#[pyfunction]
fn _bl_roundtrip<'py>(py: Python<'py>, b: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let t = BlTypes::new(py)?;
    match Bl::from_py(b, &t) {
        None => Ok(None),
        Some(bl) => {
            Ok(Some(bl.to_py(py, &t)?))
        }
    }
}

/// Registers this file's classes and functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_bl_roundtrip, m)?)?;
    Ok(())
}
