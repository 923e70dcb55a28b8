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

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::bl::{
    names, Bl, Dim, Entry, Ev, EvTypes, HourW, LastSuccess, Name, D_ASN, D_CITY, D_COUNTRY, D_DEVICE,
    D_DST_ASN, D_DST_COUNTRY, D_HOST, D_PORT, D_PREFIX, D_SERVICE, D_UA, DIMENSIONS, EK_USER,
    FIRST_TRAFFIC_NAME, TRAFFIC_KEYS,
};
use crate::update::py_round;
use crate::sstr::SStr;
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
        // `Name` positions stand for these names (the update writes
        // `Name::at(dimension)` and `Name::at(FIRST_TRAFFIC_NAME + key)`).
        let dims: Vec<String> = m.getattr("DIMENSIONS")?.extract()?;
        let traffic: Vec<String> = m.getattr("TRAFFIC_KEYS")?.extract()?;
        if dims != DIMENSIONS || traffic != TRAFFIC_KEYS {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "detector.baseline's DIMENSIONS/TRAFFIC_KEYS differ from the names blcore was built for",
            ));
        }
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
fn x_str(o: &Bound<'_, PyAny>) -> Option<SStr> {
    let s = o.cast_exact::<PyString>().ok()?;
    s.to_str().ok().map(SStr::new)
}

/// An exact `str` that is one of the map keys a Rust-held baseline models.
fn x_name(o: &Bound<'_, PyAny>) -> Option<Name> {
    Name::of(o.cast_exact::<PyString>().ok()?.to_str().ok()?)
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
            Some(HourW { h: h as u8, w: x_i64(v)? })
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
            Some(Dim { name: x_name(k)?, entries })
        })?;
        let seen_totals = x_vec(&f(BL_SEEN_TOTALS)?, no_map, |k, v| Some((x_name(k)?, x_i64(v)?)))?;
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
                x_name(k)?,
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
        let hours = map(py, no_map, &self.hours, |x, d| {
            let (h, w) = (x.h, x.w);
            d.set_item(h, w)
        })?;
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

// ------------------------------------------------------------------ update

/// The in-place update cannot reproduce Python for this input (Python would
/// raise, or an int would pass 64 bits): the baseline is untouched and the
/// caller runs `detector.baseline.update` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bail;

/// `detector.config.HOUR_MS`.
const HOUR_MS: i64 = 3_600_000;
/// `detector.baseline._RENORMALISE_AT`.
const RENORMALISE_AT: f64 = 16.0;
/// `detector.baseline._MILLI`.
const MILLI: f64 = 1000.0;
/// `dimension_values` returns at most 7 pairs (an auth event).
const MAX_PAIRS: usize = 7;
/// 2**63: the first float `int()` would turn into an int past i64.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// Python's `round(x, 3)`.
fn round3(x: f64) -> f64 {
    py_round(x, 3, 1000.0)
}

/// Python's `round(x, 4)`.
fn round4(x: f64) -> f64 {
    py_round(x, 4, 10000.0)
}

/// What `update()` reads from a `DetectorConfig`, read once.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdCfg {
    /// `profile_half_life_days * 86_400_000.0`.
    pub half_life_ms: f64,
    /// `failure_burst_half_life_s * 1000.0`.
    pub fail_hl_ms: f64,
    /// `new_host_burst_half_life_s * 1000.0`.
    pub host_hl_ms: f64,
    pub ew_alpha: f64,
    /// `cfg.caps.get(dim, 8)` for each of `DIMENSIONS`.
    pub caps: [i64; 11],
    /// `math.log(2.0)`.
    pub ln2: f64,
}

/// A finite number setting: an exact float, or an exact int (as Python's
/// mixed arithmetic converts it: correctly rounded).
fn number(cfg: &Bound<'_, PyAny>, name: &str) -> Option<f64> {
    let v = cfg.getattr(name).ok()?;
    let x = if let Some(x) = x_f64(&v) { x } else { x_i64(&v)? as f64 };
    x.is_finite().then_some(x)
}

impl UpdCfg {
    /// Reads a `DetectorConfig`; `None` when a setting is not a finite
    /// number, a half-life is not positive, or a cap is not an exact int
    /// within i64 (the caller then keeps the Python update).
    pub fn from_py(cfg: &Bound<'_, PyAny>) -> Option<UpdCfg> {
        // Same arithmetic as Python's at call time.
        let half_life_ms = number(cfg, "profile_half_life_days")? * 86_400_000.0;
        let fail_hl_ms = number(cfg, "failure_burst_half_life_s")? * 1000.0;
        let host_hl_ms = number(cfg, "new_host_burst_half_life_s")? * 1000.0;
        for x in [half_life_ms, fail_hl_ms, host_hl_ms] {
            if !(x.is_finite() && x > 0.0) {
                return None;
            }
        }
        let ew_alpha = number(cfg, "ew_alpha")?;
        let caps_o = cfg.getattr("caps").ok()?;
        let mut caps = [8i64; 11];
        for (cap, dim) in caps.iter_mut().zip(DIMENSIONS) {
            *cap = x_i64(&caps_o.call_method1("get", (dim, 8)).ok()?)?;
        }
        Some(UpdCfg { half_life_ms, fail_hl_ms, host_hl_ms, ew_alpha, caps, ln2: 2.0f64.ln() })
    }
}

/// `decayed(count_ts, ts, half_life_s)` with `hl_ms = half_life_s * 1000.0`.
fn decayed(count_ts: (f64, i64), ts: i64, hl_ms: f64, ln2: f64) -> Result<f64, Bail> {
    let (count, last) = count_ts;
    if count == 0.0 {
        return Ok(0.0);
    }
    let dt = ts.checked_sub(last).ok_or(Bail)?.max(0);
    Ok(count * ((-ln2 * dt as f64) / hl_ms).exp())
}

/// `(round(decayed(count_ts) + 1.0, 3), ts if ts > last else last)`.
fn bump(count_ts: (f64, i64), ts: i64, hl_ms: f64, ln2: f64) -> Result<(f64, i64), Bail> {
    let burst = decayed(count_ts, ts, hl_ms, ln2)?;
    Ok((round3(burst + 1.0), if ts > count_ts.1 { ts } else { count_ts.1 }))
}

/// `_ew(stat, x, alpha)`; `Err` where Python divides by zero (n == -1).
fn ew(stat: Option<&[f64; 3]>, x: f64, alpha: f64) -> Result<[f64; 3], Bail> {
    let Some(&[n, mean, var]) = stat else {
        return Ok([1.0, round4(x), 0.0]);
    };
    let a = if alpha * (n + 1.0) > 1.0 {
        alpha
    } else {
        if n + 1.0 == 0.0 {
            return Err(Bail); // ZeroDivisionError in Python
        }
        1.0 / (n + 1.0)
    };
    let diff = x - mean;
    let incr = a * diff;
    Ok([
        if n < 1e6 { n + 1.0 } else { n },
        round4(mean + incr),
        round4((1.0 - a) * (var + diff * incr)),
    ])
}

/// `int(x)` of `float(w) * f` for 0 <= f < 1: never overflows.
#[inline]
fn scale(w: i64, f: f64) -> i64 {
    ((w as f64) * f) as i64
}

/// `_renormalise`'s result: fresh maps at the new landmark.
struct Renorm {
    hours: Vec<HourW>,
    hours_total: i64,
    seen: Vec<Dim>,
    totals: Vec<(Name, i64)>,
}

/// What one (dimension, value) pair does to `seen`, decided before any change.
#[derive(Clone, Copy, Default)]
struct PairPlan {
    dim: usize,
    /// Position of the dimension in `seen`, None to append it.
    dim_pos: Option<usize>,
    /// Some((entry position, new weight, new last seen)) for a known value.
    bump: Option<(usize, i64, i64)>,
    /// Position of the entry to evict before appending a new value.
    evict: Option<usize>,
    /// Position of the dimension in `seen_totals`, None to append it.
    total_pos: Option<usize>,
    total: i64,
}

/// `_victim(entries)`: least weight, then oldest, then smallest value (str
/// order = byte order of UTF-8); the first of equals. None when empty.
fn victim(entries: &[Entry]) -> Option<usize> {
    let mut best: Option<(usize, (i64, i64, &str))> = None;
    for (i, e) in entries.iter().enumerate() {
        let key = (e.w, e.last_s, e.value.as_str());
        if best.as_ref().is_none_or(|(_, b)| key < *b) {
            best = Some((i, key));
        }
    }
    best.map(|(i, _)| i)
}

/// `dimension_values(event)` as (dimension index, value), at most 7.
fn dimension_values<'a>(ev: &Ev<'a>, host: Option<&'a str>) -> ([(usize, Cow<'a, str>); MAX_PAIRS], usize) {
    let mut pairs: [(usize, Cow<'a, str>); MAX_PAIRS] = Default::default();
    let mut np = 0usize;
    let mut push = |d: usize, v: Option<Cow<'a, str>>| {
        if let Some(v) = v {
            pairs[np] = (d, v);
            np += 1;
        }
    };
    let int = |x: Option<i64>| x.map(|x| Cow::Owned(x.to_string()));
    if ev.is_auth {
        push(D_COUNTRY, ev.src_country.map(Cow::Borrowed));
        push(D_CITY, ev.src_city.map(Cow::Borrowed));
        push(D_ASN, int(ev.src_asn));
        push(D_PREFIX, ev.src_prefix.map(Cow::Borrowed));
        push(D_DEVICE, ev.device_id.map(Cow::Borrowed));
        push(D_UA, ev.user_agent.map(Cow::Borrowed));
        push(D_SERVICE, ev.service.map(Cow::Borrowed));
    } else {
        if ev.dst_internal == Some(true) {
            push(D_HOST, host.map(Cow::Borrowed));
            push(D_PORT, int(ev.dst_port));
        } else if ev.dst_internal == Some(false) {
            push(D_DST_COUNTRY, ev.dst_country.map(Cow::Borrowed));
            push(D_DST_ASN, int(ev.dst_asn));
        }
        if ev.entity_kind == EK_USER {
            push(D_DEVICE, ev.device_id.map(Cow::Borrowed));
        }
    }
    (pairs, np)
}

impl Bl {
    /// `_renormalise(b, ts, half_life_ms)` with `f` its factor.
    fn renormalised(&self, f: f64) -> Renorm {
        let hours = self
            .hours
            .iter()
            .flatten()
            .map(|x| HourW { h: x.h, w: scale(x.w, f) })
            .filter(|x| { let w = x.w; w > 0 })
            .collect();
        let mut seen = Vec::new();
        let mut totals = Vec::new();
        for dim in self.seen.iter().flatten() {
            let kept: Vec<Entry> = dim
                .entries
                .iter()
                .map(|e| Entry { value: e.value.clone(), w: scale(e.w, f), last_s: e.last_s })
                .filter(|e| e.w > 0)
                .collect();
            if !kept.is_empty() {
                totals.push((dim.name, scale(self.total(dim.name), f)));
                seen.push(Dim { name: dim.name, entries: kept });
            }
        }
        Renorm { hours, hours_total: scale(self.hours_total, f), seen, totals }
    }

    /// `detector.baseline.update(b, event, cfg, learn_weight)` (with
    /// `caps=None`: `cfg.caps`), in place. On `Err(Bail)` `self` is
    /// unchanged: every fallible step runs before the first change.
    #[allow(clippy::too_many_lines)]
    pub fn update(&mut self, ev: &Ev<'_>, cfg: &UpdCfg, learn_weight: f64) -> Result<(), Bail> {
        let ts = ev.ts_ms;
        let ln2 = cfg.ln2;
        let lw = learn_weight;

        // ---- Everything that can fail, into locals; `self` is only read.
        let n_seen = self.n_seen.checked_add(1).ok_or(Bail)?;
        // Risk counters first: they read the profile as it was before the event.
        let mut fail_burst = self.fail_burst;
        let mut new_hosts = self.new_hosts;
        let mut host: Option<&str> = None;
        if ev.is_auth {
            if ev.success == Some(false) {
                fail_burst = bump(self.fail_burst, ts, cfg.fail_hl_ms, ln2)?;
            }
        } else if ev.dst_internal == Some(true) {
            // `dst_hostname or dst_ip`: "" is false.
            host = match ev.dst_hostname {
                Some(h) if !h.is_empty() => Some(h),
                _ => ev.dst_ip,
            };
            if let Some(h) = host {
                if !self.dim(names::HOST).is_some_and(|d| d.get(h).is_some()) {
                    new_hosts = bump(self.new_hosts, ts, cfg.host_hl_ms, ln2)?;
                }
            }
        }

        struct Learn<'a> {
            renorm: Option<Renorm>,
            t0: i64,
            w: i64,
            n_learned: f64,
            how: u8,
            hour_pos: Option<usize>,
            hour: i64,
            hours_total: i64,
            pairs: [(usize, Cow<'a, str>); MAX_PAIRS],
            plans: [PairPlan; MAX_PAIRS],
            np: usize,
            ts_s: i64,
            fail_rate: Option<f64>,
            last_success: Option<LastSuccess>,
            /// (TRAFFIC_KEYS index, new stat), out before in.
            traffic: [Option<(usize, [f64; 3])>; 2],
            traffic_touched: bool,
        }
        let mut learn: Option<Learn<'_>> = None;
        if lw > 0.0 {
            let hl = cfg.half_life_ms;
            let hours_empty = self.hours.as_ref().is_none_or(Vec::is_empty);
            let seen_empty = self.seen.as_ref().is_none_or(Vec::is_empty);
            let mut renorm = None;
            let t0 = if hours_empty && seen_empty {
                ts // nothing learned yet: the first learned event anchors the landmark
            } else {
                let d = ts.checked_sub(self.t0).ok_or(Bail)?;
                if (d as f64) / hl > RENORMALISE_AT {
                    renorm = Some(self.renormalised(((-ln2 * d as f64) / hl).exp()));
                    ts
                } else {
                    self.t0
                }
            };
            let d = ts.checked_sub(t0).ok_or(Bail)?;
            let wf = lw * MILLI * ((ln2 * d as f64) / hl).exp();
            // int() raises on inf/nan; past 2**63 the int leaves i64.
            if !(wf < I64_END && wf >= 0.0) {
                return Err(Bail);
            }
            let w = wf as i64; // int(): truncation toward zero
            let n_learned = if lw == 1.0 && self.n_learned % 1.0 == 0.0 {
                self.n_learned + 1.0 // whole counts stay exact
            } else {
                round3(self.n_learned + lw)
            };
            let how = (ts.div_euclid(HOUR_MS) + 72).rem_euclid(168) as u8;

            // The maps the event is folded into: renormalised, or self's.
            let (b_hours, b_ht, b_seen, b_totals): (&[HourW], i64, &[Dim], &[(Name, i64)]) =
                match &renorm {
                    Some(r) => (&r.hours, r.hours_total, &r.seen, &r.totals),
                    None => (
                        self.hours.as_deref().unwrap_or(&[]),
                        self.hours_total,
                        self.seen.as_deref().unwrap_or(&[]),
                        self.seen_totals.as_deref().unwrap_or(&[]),
                    ),
                };
            let hour_pos = b_hours.iter().position(|x| x.h == how);
            let hour = hour_pos.map_or(0, |i| b_hours[i].w).checked_add(w).ok_or(Bail)?;
            let hours_total = b_ht.checked_add(w).ok_or(Bail)?;

            let (pairs, np) = dimension_values(ev, host);
            let ts_s = ts.div_euclid(1000);
            let mut plans = [PairPlan::default(); MAX_PAIRS];
            // Each dimension appears at most once in `pairs`, so every plan
            // reads the maps as they were before the event.
            for ((d, value), plan) in pairs.iter().zip(plans.iter_mut()).take(np) {
                let name = DIMENSIONS[*d];
                plan.dim = *d;
                plan.dim_pos = b_seen.iter().position(|x| x.name == Name::at(*d));
                let entries: &[Entry] = plan.dim_pos.map_or(&[], |i| &b_seen[i].entries);
                match entries.iter().position(|e| e.value.as_str() == &**value) {
                    Some(i) => {
                        let old = &entries[i];
                        let nw = old.w.checked_add(w).ok_or(Bail)?;
                        plan.bump = Some((i, nw, if ts_s > old.last_s { ts_s } else { old.last_s }));
                    }
                    None => {
                        if entries.len() as i64 >= cfg.caps[*d] {
                            // `del entries[_victim({})]` raises KeyError.
                            plan.evict = Some(victim(entries).ok_or(Bail)?);
                        }
                    }
                }
                plan.total_pos = b_totals.iter().position(|(k, _)| k == name);
                let old_total = plan.total_pos.map_or(0, |i| b_totals[i].1);
                plan.total = old_total.checked_add(w).ok_or(Bail)?;
            }

            let mut fail_rate = None;
            let mut last_success = None;
            let mut traffic = [None, None];
            let mut traffic_touched = false;
            if ev.is_auth {
                if let Some(success) = ev.success {
                    let alpha = cfg.ew_alpha;
                    let ns1 = self.n_seen as f64 + 1.0;
                    let a = if alpha * ns1 > 1.0 {
                        alpha
                    } else {
                        if ns1 == 0.0 {
                            return Err(Bail); // ZeroDivisionError in Python
                        }
                        1.0 / ns1
                    };
                    let fr = self.fail_rate;
                    let target = if success { 0.0 } else { 1.0 };
                    fail_rate = Some(round4(fr + a * (target - fr)));
                    if success {
                        if let (Some(lat), Some(lon)) = (ev.src_lat, ev.src_lon) {
                            last_success = Some(LastSuccess {
                                ts,
                                lat,
                                lon,
                                country: ev.src_country.map(SStr::new),
                            });
                        }
                    }
                }
            } else if let Some(internal) = ev.dst_internal {
                if ev.bytes_out.is_some() || ev.bytes_in.is_some() {
                    traffic_touched = true;
                    let (k_out, k_in) = if internal { (0, 1) } else { (2, 3) };
                    for (slot, (bytes, k)) in
                        traffic.iter_mut().zip([(ev.bytes_out, k_out), (ev.bytes_in, k_in)])
                    {
                        if let Some(n) = bytes {
                            if n < 0 {
                                return Err(Bail); // log1p(n <= -1) raises ValueError
                            }
                            let stat = ew(self.traffic_of(Name::at(FIRST_TRAFFIC_NAME + k)), (n as f64).ln_1p(), cfg.ew_alpha)?;
                            *slot = Some((k, stat));
                        }
                    }
                }
            }
            learn = Some(Learn {
                renorm,
                t0,
                w,
                n_learned,
                how,
                hour_pos,
                hour,
                hours_total,
                pairs,
                plans,
                np,
                ts_s,
                fail_rate,
                last_success,
                traffic,
                traffic_touched,
            });
        }

        // ---- Commit: nothing below can fail.
        if let Some(l) = learn {
            if let Some(r) = l.renorm {
                self.hours = Some(r.hours);
                self.hours_total = r.hours_total;
                self.seen = Some(r.seen);
                self.seen_totals = Some(r.totals);
            }
            self.t0 = l.t0;
            self.n_learned = l.n_learned;
            let hours = self.hours.get_or_insert_with(Vec::new);
            match l.hour_pos {
                Some(i) => hours[i].w = l.hour,
                None => hours.push(HourW { h: l.how, w: l.hour }),
            }
            self.hours_total = l.hours_total;
            if l.np > 0 {
                let seen = self.seen.get_or_insert_with(Vec::new);
                let totals = self.seen_totals.get_or_insert_with(Vec::new);
                for ((_, value), plan) in l.pairs.into_iter().zip(l.plans).take(l.np) {
                    let di = match plan.dim_pos {
                        Some(i) => i,
                        None => {
                            seen.push(Dim { name: Name::at(plan.dim), entries: Vec::new() });
                            seen.len() - 1
                        }
                    };
                    let entries = &mut seen[di].entries;
                    match plan.bump {
                        Some((i, nw, ns)) => {
                            entries[i].w = nw;
                            entries[i].last_s = ns;
                        }
                        None => {
                            // Python deletes the victim, then inserts the new
                            // value at the end of the dict.
                            if let Some(v) = plan.evict {
                                entries.remove(v);
                            }
                            entries.push(Entry { value: SStr::new(&value), w: l.w, last_s: l.ts_s });
                        }
                    }
                    match plan.total_pos {
                        Some(i) => totals[i].1 = plan.total,
                        None => totals.push((Name::at(plan.dim), plan.total)),
                    }
                }
            }
            if let Some(fr) = l.fail_rate {
                self.fail_rate = fr;
            }
            if l.last_success.is_some() {
                self.last_success = l.last_success;
            }
            if l.traffic_touched {
                let traffic = self.traffic.get_or_insert_with(Vec::new);
                for (k, stat) in l.traffic.into_iter().flatten() {
                    let key = TRAFFIC_KEYS[k];
                    match traffic.iter().position(|(x, _)| x == key) {
                        Some(i) => traffic[i].1 = stat,
                        None => traffic.push((Name::at(FIRST_TRAFFIC_NAME + k), stat)),
                    }
                }
            }
        }
        self.n_seen = n_seen;
        self.fail_burst = fail_burst;
        self.new_hosts = new_hosts;
        if self.first_ts.is_none_or(|f| ts < f) {
            self.first_ts = Some(ts);
        }
        if self.last_ts.is_none_or(|l| ts > l) {
            self.last_ts = Some(ts);
        }
        Ok(())
    }
}

/// Test hook: `detector.baseline.update(b, event, cfg, learn_weight)` through
/// `Bl` (from_py, update in place, to_py); None when a step is not
/// representable or the update bails.
#[pyfunction]
fn _bl_update<'py>(
    py: Python<'py>,
    b: &Bound<'py, PyAny>,
    event: &Bound<'py, PyAny>,
    cfg: &Bound<'py, PyAny>,
    learn_weight: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let t = BlTypes::new(py)?;
    let et = EvTypes::new(py)?;
    let (Some(mut bl), Some(ev), Some(c), Some(lw)) =
        (Bl::from_py(b, &t), Ev::from_py(event, &et), UpdCfg::from_py(cfg), x_f64(learn_weight))
    else {
        return Ok(None);
    };
    let before = bl.clone();
    match bl.update(&ev, &c, lw) {
        Ok(()) => Ok(Some(bl.to_py(py, &t)?)),
        Err(Bail) => {
            // The contract: a bail leaves the baseline untouched (bit for bit:
            // compared through the Python form, which shows float bits).
            let same = bl.to_py(py, &t)?.repr()?.to_str()? == before.to_py(py, &t)?.repr()?.to_str()?;
            if !same {
                return Err(pyo3::exceptions::PyAssertionError::new_err("bail modified the baseline"));
            }
            Ok(None)
        }
    }
}

/// Benchmark hook: converts `b` and `events` once, then runs `n` times, from
/// `b`, `update(.., learn_weight=1.0)` over `events` in order, all in Rust.
/// Returns the baseline after the last pass (None when anything is not
/// representable or an update bails), so callers can check it too.
#[pyfunction]
fn _bl_update_bench<'py>(
    py: Python<'py>,
    b: &Bound<'py, PyAny>,
    events: Vec<Bound<'py, PyAny>>,
    cfg: &Bound<'py, PyAny>,
    n: usize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let t = BlTypes::new(py)?;
    let et = EvTypes::new(py)?;
    let (Some(start), Some(c)) = (Bl::from_py(b, &t), UpdCfg::from_py(cfg)) else {
        return Ok(None);
    };
    let mut evs = Vec::with_capacity(events.len());
    for e in &events {
        match Ev::from_py(e, &et) {
            Some(ev) => evs.push(ev),
            None => return Ok(None),
        }
    }
    let mut bl = start.clone();
    for _ in 0..n {
        bl.clone_from(&start);
        for ev in &evs {
            if bl.update(ev, &c, 1.0).is_err() {
                return Ok(None);
            }
        }
    }
    Ok(Some(bl.to_py(py, &t)?))
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
    m.add_function(wrap_pyfunction!(_bl_update, m)?)?;
    m.add_function(wrap_pyfunction!(_bl_update_bench, m)?)?;
    Ok(())
}
