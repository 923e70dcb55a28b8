//! Feature extraction: `detector.features.FeatureExtractor.extract`.
//!
//! [`FeatureKernel::extract`] is a drop-in for the Python method: the same
//! 35-float list, every value with the same bits, computed with the same
//! arithmetic in the same order (`-log10(share) + 0.0`, `log1p`, the
//! haversine formula as written, ints converted to floats where Python
//! converts them). Event and baseline fields are read by position
//! (`crate::layout`); the baseline's mappings are read with dict lookups on
//! the very objects Python reads, so hashing and equality are Python's.
//!
//! Anything unusual (a field of an unexpected type, a math domain error that
//! Python would raise, a mapping that is not a dict) is handed to the Python
//! method given at construction, whose result (or exception) is returned:
//! the kernel never has to reproduce Python's rarer behaviour itself.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::pynum::{float_lt_int, i2f, int_lt_float, square, I128_SAFE};
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::CastError;

use crate::layout::*;

/// Length of `FEATURE_NAMES`.
const N_FEATURES: usize = 35;
const N_EVENT_FIELDS: usize = EVENT_FIELDS.len();
const N_BASELINE_FIELDS: usize = BASELINE_FIELDS.len();
/// `math.radians`'s factor: CPython's `degToRad = Py_MATH_PI / 180.0`.
const DEG_TO_RAD: f64 = std::f64::consts::PI / 180.0;

/// Marker: this call goes to the Python implementation.
struct Fallback;

impl From<PyErr> for Fallback {
    fn from(_: PyErr) -> Self {
        Fallback
    }
}

impl<'a, 'py> From<CastError<'a, 'py>> for Fallback {
    fn from(_: CastError<'a, 'py>) -> Self {
        Fallback
    }
}

type R<T> = Result<T, Fallback>;

/// A Python number the arithmetic accepts: an exact `int` (held wide enough
/// that sums and differences of int64 values stay exact) or an exact `float`.
#[derive(Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

/// Reads an exact `int` (fitting int64) or `float`; anything else falls back.
fn num(o: &Bound<'_, PyAny>) -> R<Num> {
    if o.is_exact_instance_of::<PyFloat>() {
        Ok(Num::F(o.cast_exact::<PyFloat>()?.value()))
    } else if o.is_exact_instance_of::<PyInt>() {
        Ok(Num::I(i128::from(o.extract::<i64>()?)))
    } else {
        Err(Fallback)
    }
}

/// Reads an exact `int` fitting int64; anything else falls back.
fn int(o: &Bound<'_, PyAny>) -> R<i128> {
    if o.is_exact_instance_of::<PyInt>() {
        Ok(i128::from(o.extract::<i64>()?))
    } else {
        Err(Fallback)
    }
}

/// `float(n)`: Python converts an int correctly rounded, ties to even, as `as` does.
fn to_f(n: Num) -> f64 {
    match n {
        Num::I(i) => i2f(i),
        Num::F(f) => f,
    }
}

/// Python's `a < b` on two numbers.
fn lt(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x < y,
        (Num::F(x), Num::F(y)) => x < y,
        (Num::I(x), Num::F(y)) => int_lt_float(x, y),
        (Num::F(x), Num::I(y)) => float_lt_int(x, y),
    }
}

/// Python's `a == b` on two numbers.
fn eq(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x == y,
        (Num::F(x), Num::F(y)) => x == y,
        (Num::I(i), Num::F(f)) | (Num::F(f), Num::I(i)) => {
            f.is_finite() && f.abs() < I128_SAFE && f.trunc() == f && f as i128 == i
        }
    }
}

/// Python's `a + b`.
fn add(a: Num, b: Num) -> R<Num> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x.checked_add(y).map(Num::I).ok_or(Fallback),
        _ => Ok(Num::F(to_f(a) + to_f(b))),
    }
}

/// Python's `a - b`.
fn sub(a: Num, b: Num) -> R<Num> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x.checked_sub(y).map(Num::I).ok_or(Fallback),
        _ => Ok(Num::F(to_f(a) - to_f(b))),
    }
}

/// CPython's `math_1` error rule: a NaN from a non-NaN argument is a domain
/// error, an infinity from a finite one an overflow; Python raises, so fall back.
#[inline]
fn m1(x: f64, r: f64) -> R<f64> {
    if (r.is_nan() && !x.is_nan()) || (r.is_infinite() && x.is_finite()) {
        Err(Fallback)
    } else {
        Ok(r)
    }
}

fn log1p(x: f64) -> R<f64> {
    m1(x, x.ln_1p())
}

fn log10(x: f64) -> R<f64> {
    m1(x, x.log10())
}

fn exp(x: f64) -> R<f64> {
    m1(x, x.exp())
}

fn sqrt(x: f64) -> R<f64> {
    m1(x, x.sqrt())
}

/// `features.haversine_km`, the formula as written there.
fn haversine_km(earth_km: f64, lat1: Num, lon1: Num, lat2: Num, lon2: Num) -> R<f64> {
    let p1 = to_f(lat1) * DEG_TO_RAD;
    let p2 = to_f(lat2) * DEG_TO_RAD;
    let dp = p2 - p1;
    let dl = to_f(sub(lon2, lon1)?) * DEG_TO_RAD;
    let half_dp = dp / 2.0;
    let half_dl = dl / 2.0;
    let s1 = square(m1(half_dp, half_dp.sin())?);
    let c1 = m1(p1, p1.cos())?;
    let c2 = m1(p2, p2.cos())?;
    let s2 = square(m1(half_dl, half_dl.sin())?);
    let a = s1 + c1 * c2 * s2;
    let root = sqrt(a)?;
    // min(1.0, root): the later argument wins only when strictly smaller.
    let capped = if root < 1.0 { root } else { 1.0 };
    let arc = m1(capped, capped.asin())?;
    Ok(2.0 * earth_km * arc)
}

/// Interned keys of the baseline's mappings.
struct Keys {
    country: Py<PyString>,
    city: Py<PyString>,
    asn: Py<PyString>,
    prefix: Py<PyString>,
    device: Py<PyString>,
    ua: Py<PyString>,
    service: Py<PyString>,
    host: Py<PyString>,
    port: Py<PyString>,
    dst_country: Py<PyString>,
    dst_asn: Py<PyString>,
    int_out: Py<PyString>,
    int_in: Py<PyString>,
    ext_out: Py<PyString>,
    ext_in: Py<PyString>,
    ip: Py<PyString>,
    session_changes: Py<PyString>,
    users: Py<PyString>,
    failures: Py<PyString>,
    fail_users: Py<PyString>,
}

impl Keys {
    fn new(py: Python<'_>) -> Self {
        let k = |s: &str| PyString::intern(py, s).unbind();
        Keys {
            country: k("country"),
            city: k("city"),
            asn: k("asn"),
            prefix: k("prefix"),
            device: k("device"),
            ua: k("ua"),
            service: k("service"),
            host: k("host"),
            port: k("port"),
            dst_country: k("dst_country"),
            dst_asn: k("dst_asn"),
            int_out: k("int_out"),
            int_in: k("int_in"),
            ext_out: k("ext_out"),
            ext_in: k("ext_in"),
            ip: k("ip"),
            session_changes: k("session_changes"),
            users: k("users"),
            failures: k("failures"),
            fail_users: k("fail_users"),
        }
    }
}

/// The compiled `FeatureExtractor.extract`, bound to one extractor's
/// configuration, peers and constants (see `detector.native.extract_kernel`).
#[pyclass(frozen, module = "detector._native")]
pub struct FeatureKernel {
    /// The Python `extract` (bound method): the specification and the fallback.
    python: Py<PyAny>,
    event_type: Py<PyAny>,
    baseline_type: Py<PyAny>,
    /// `FeatureExtractor.peers`, read on every cold call (not copied).
    peers: Py<PyDict>,
    /// `FeatureExtractor._tiers`.
    tiers: Py<PyDict>,
    /// `FeatureExtractor._hosting` (a frozenset).
    hosting: Py<PyAny>,
    auth: Py<PyAny>,
    admin: Py<PyAny>,
    vendor: Py<PyAny>,
    service_class: Py<PyAny>,
    device_class: Py<PyAny>,
    /// The empty read-only mappings a Baseline holds by default.
    no_map: Py<PyAny>,
    no_values: Py<PyAny>,
    /// `features.NAN` and shared floats for the commonest values.
    nan: Py<PyAny>,
    zero: Py<PyAny>,
    one: Py<PyAny>,
    max_rarity_obj: Py<PyAny>,
    keys: Keys,
    min_events: Num,
    neg_ln2: f64,
    milli: f64,
    rarity_floor: f64,
    max_rarity: f64,
    earth_km: f64,
    half_life_ms: f64,
    min_delta: f64,
    fail_half_life_ms: f64,
    host_half_life_ms: f64,
    travel_min_km: Num,
    /// Calls handed to the Python method (tests check the fast path ran).
    fallbacks: AtomicU64,
}

fn float_of(spec: &Bound<'_, PyDict>, name: &str) -> PyResult<f64> {
    item(spec, name)?.cast_exact::<PyFloat>().map(|f| f.value()).map_err(PyErr::from)
}

fn item<'py>(spec: &Bound<'py, PyDict>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    spec.get_item(name)?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
}

fn num_of(spec: &Bound<'_, PyDict>, name: &str) -> PyResult<Num> {
    num(&item(spec, name)?).map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!("{name}: expected an int64 or a float"))
    })
}

impl FeatureKernel {
    /// Returns the Python float for `v`, sharing the commonest ones.
    fn float<'py>(&self, py: Python<'py>, v: f64) -> Bound<'py, PyAny> {
        let bits = v.to_bits();
        if bits == f64::NAN.to_bits() {
            self.nan.bind(py).clone()
        } else if bits == 0.0f64.to_bits() {
            self.zero.bind(py).clone()
        } else if bits == 1.0f64.to_bits() {
            self.one.bind(py).clone()
        } else if bits == self.max_rarity.to_bits() {
            self.max_rarity_obj.bind(py).clone()
        } else {
            PyFloat::new(py, v).into_any()
        }
    }

    /// A baseline mapping as a dict: `None` for the shared empty read-only
    /// ones, a fallback for anything else.
    fn mapping<'a, 'py>(&self, o: &'a Bound<'py, PyAny>) -> R<Option<&'a Bound<'py, PyDict>>> {
        if let Ok(d) = o.cast_exact::<PyDict>() {
            Ok(Some(d))
        } else if o.as_ptr() == self.no_map.as_ptr() || o.as_ptr() == self.no_values.as_ptr() {
            Ok(None)
        } else {
            Err(Fallback)
        }
    }

    /// `mapping.get(key)`, with None for an absent key (as `dict.get`).
    fn get<'py>(&self, m: &Bound<'py, PyAny>, key: &Bound<'py, PyAny>) -> R<Option<Bound<'py, PyAny>>> {
        match self.mapping(m)? {
            Some(d) => Ok(d.get_item(key)?.filter(|v| !v.is_none())),
            None => Ok(None),
        }
    }

    /// `mapping.get(key, 0)` as a number.
    fn get_num<'py>(&self, m: &Bound<'py, PyAny>, key: &Bound<'py, PyAny>) -> R<Num> {
        match self.mapping(m)? {
            Some(d) => match d.get_item(key)? {
                Some(v) => num(&v),
                None => Ok(Num::I(0)),
            },
            None => Ok(Num::I(0)),
        }
    }

    /// `_rarity_of(seen, totals, dim, value, f)`.
    fn rarity_of<'py>(
        &self,
        seen: &Bound<'py, PyAny>,
        totals: &Bound<'py, PyAny>,
        dim: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
        f: f64,
    ) -> R<f64> {
        if let Some(entries) = self.get(seen, dim.as_any())? {
            if entries.is_truthy()? {
                if let Some(entry) = self.get(&entries, value)? {
                    let entry = entry.cast_exact::<PyTuple>()?;
                    let weight = num(&*entry.get_borrowed_item(0)?)?;
                    let total = self.get_num(totals, dim.as_any())?;
                    let share = to_f(weight) * f / (to_f(total) * f + 1.0);
                    if share > self.rarity_floor {
                        return Ok(-log10(share)? + 0.0);
                    }
                }
            }
        }
        Ok(self.max_rarity)
    }

    /// `hour_share(prof, ts_ms, factor)` for a non-empty `hours` dict.
    fn hour_share(&self, prof: &Bound<'_, PyTuple>, hours: &Bound<'_, PyDict>, ts: i128, factor: f64) -> R<f64> {
        let py = prof.py();
        let get = |h: i128| -> R<Num> {
            let key = PyInt::new(py, i64::try_from(h).map_err(|_| Fallback)?);
            match hours.get_item(key)? {
                Some(v) => num(&v),
                None => Ok(Num::I(0)),
            }
        };
        let h = (ts.div_euclid(3_600_000) + 72).rem_euclid(168);
        let week = 0.25 * to_f(get((h - 1).rem_euclid(168))?)
            + 0.5 * to_f(get(h)?)
            + 0.25 * to_f(get((h + 1).rem_euclid(168))?);
        let hod = h % 24;
        let mut day = get(hod)?;
        for k in 1..7 {
            day = add(day, get(hod + 24 * k)?)?;
        }
        let day = to_f(day) / 7.0;
        let total = to_f(num(&*prof.get_borrowed_item(BL_HOURS_TOTAL)?)?) * factor + 1.0;
        Ok((0.6 * week + 0.4 * day) * factor / total)
    }

    /// `decayed(count_ts, ts_ms, half_life_s) if count_ts[0] != 0.0 else 0.0`,
    /// with the half-life already in ms.
    fn decayed(&self, pair: &Bound<'_, PyAny>, ts: i128, half_life_ms: f64) -> R<f64> {
        let pair = pair.cast_exact::<PyTuple>()?;
        if pair.len() != 2 {
            return Err(Fallback);
        }
        let count = num(&*pair.get_borrowed_item(0)?)?;
        if eq(count, Num::F(0.0)) {
            return Ok(0.0);
        }
        let last = int(&*pair.get_borrowed_item(1)?)?;
        let dt = ts - last;
        let dt = if 0 > dt { 0 } else { dt };
        Ok(to_f(count) * exp(self.neg_ln2 * i2f(dt) / half_life_ms)?)
    }

    /// `_zscore(stat, x)`.
    fn zscore(&self, stat: Option<Bound<'_, PyAny>>, x: f64) -> R<f64> {
        let Some(stat) = stat else { return Ok(f64::NAN) };
        let stat = stat.cast_exact::<PyTuple>()?;
        if stat.len() != 3 {
            return Err(Fallback);
        }
        let n = num(&*stat.get_borrowed_item(0)?)?;
        if lt(n, Num::F(5.0)) {
            return Ok(f64::NAN);
        }
        let mean = to_f(num(&*stat.get_borrowed_item(1)?)?);
        let var = to_f(num(&*stat.get_borrowed_item(2)?)?);
        let dev = sqrt(var)?;
        let dev = if 0.5 > dev { 0.5 } else { dev };
        Ok((x - mean) / dev)
    }

    /// The whole of `extract`, or a fallback.
    fn fast<'py>(
        &self,
        event: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
    ) -> R<Bound<'py, PyAny>> {
        let py = event.py();
        if event.get_type_ptr() as *mut ffi::PyObject != self.event_type.as_ptr()
            || b.get_type_ptr() as *mut ffi::PyObject != self.baseline_type.as_ptr()
        {
            return Err(Fallback);
        }
        let ev = event.cast::<PyTuple>()?;
        let bl = b.cast::<PyTuple>()?;
        if ev.len() != N_EVENT_FIELDS || bl.len() != N_BASELINE_FIELDS {
            return Err(Fallback);
        }
        let k = &self.keys;

        // is_cold() and profile_for(), as extract inlines them.
        let n_learned = num(&*bl.get_borrowed_item(BL_N_LEARNED)?)?;
        let cold = lt(n_learned, self.min_events);
        let mut prof_obj = b.clone();
        if cold {
            let kind = ev.get_borrowed_item(EV_ENTITY_KIND)?;
            if let Some(peer) = self.peers.bind(py).get_item(&*kind)? {
                prof_obj = peer;
            }
        }
        let same = prof_obj.as_ptr() == b.as_ptr();
        if !same && prof_obj.get_type_ptr() as *mut ffi::PyObject != self.baseline_type.as_ptr() {
            return Err(Fallback);
        }
        let prof = prof_obj.cast::<PyTuple>()?;
        if prof.len() != N_BASELINE_FIELDS {
            return Err(Fallback);
        }
        let ts = int(&*ev.get_borrowed_item(EV_TS_MS)?)?;
        // prof.decay_factor(), as of the peer's own last event.
        let as_of = if same {
            ts
        } else {
            let last = prof.get_borrowed_item(BL_LAST_TS)?;
            if last.is_none() {
                ts
            } else {
                match int(&last)? {
                    0 => ts,
                    v => v,
                }
            }
        };
        let delta_int = as_of
            .checked_sub(int(&*prof.get_borrowed_item(BL_T0)?)?)
            .ok_or(Fallback)?;
        let delta = if int_lt_float(delta_int, self.min_delta) {
            self.min_delta
        } else {
            i2f(delta_int)
        };
        let f = exp(self.neg_ln2 * delta / self.half_life_ms)? / self.milli;
        let mut row = [f64::NAN; N_FEATURES];
        let mut fail_rate: Option<Bound<'py, PyAny>> = None;

        let hours = prof.get_borrowed_item(BL_HOURS)?;
        if let Some(hours) = self.mapping(&hours)? {
            if !hours.is_empty() {
                let share = self.hour_share(prof, hours, ts, f)?;
                row[1] = if share <= self.rarity_floor {
                    self.max_rarity
                } else {
                    -log10(share)? + 0.0
                };
            }
        }
        let last_ts = bl.get_borrowed_item(BL_LAST_TS)?;
        if !last_ts.is_none() {
            let last_ts = int(&last_ts)?;
            let idle = if ts > last_ts { ts - last_ts } else { 0 };
            row[2] = log1p(i2f(idle) / 86_400_000.0)?;
        }
        row[3] = log1p(to_f(n_learned))?;
        let cls = ev.get_borrowed_item(EV_ENTITY_CLASS)?.as_ptr();
        row[21] = if cls == self.admin.as_ptr() { 1.0 } else { 0.0 };
        row[22] = if cls == self.vendor.as_ptr() { 1.0 } else { 0.0 };
        row[23] = if cls == self.service_class.as_ptr() { 1.0 } else { 0.0 };
        row[24] = if cls == self.device_class.as_ptr() { 1.0 } else { 0.0 };

        let seen = prof.get_borrowed_item(BL_SEEN)?;
        let totals = prof.get_borrowed_item(BL_SEEN_TOTALS)?;
        if ev.get_borrowed_item(EV_KIND)?.as_ptr() == self.auth.as_ptr() {
            // _auth()
            let success = ev.get_borrowed_item(EV_SUCCESS)?;
            if !success.is_none() {
                row[0] = if success.is_truthy()? { 0.0 } else { 1.0 };
            }
            let country = ev.get_borrowed_item(EV_SRC_COUNTRY)?;
            if !country.is_none() {
                row[4] = self.rarity_of(&seen, &totals, k.country.bind(py), &country, f)?;
            }
            let city = ev.get_borrowed_item(EV_SRC_CITY)?;
            if !city.is_none() {
                row[5] = self.rarity_of(&seen, &totals, k.city.bind(py), &city, f)?;
            }
            let asn = ev.get_borrowed_item(EV_SRC_ASN)?;
            if !asn.is_none() {
                let text = asn.str()?;
                row[6] = self.rarity_of(&seen, &totals, k.asn.bind(py), text.as_any(), f)?;
                row[19] = if self.hosting.bind(py).contains(&*asn)? { 1.0 } else { 0.0 };
            }
            let prefix = ev.get_borrowed_item(EV_SRC_PREFIX)?;
            if !prefix.is_none() {
                row[7] = self.rarity_of(&seen, &totals, k.prefix.bind(py), &prefix, f)?;
            }
            let src_lat = ev.get_borrowed_item(EV_SRC_LAT)?;
            let last_success = bl.get_borrowed_item(BL_LAST_SUCCESS)?;
            if !src_lat.is_none() && !last_success.is_none() {
                // travel()
                let src_lon = ev.get_borrowed_item(EV_SRC_LON)?;
                if !src_lon.is_none() {
                    let ls = last_success.cast_exact::<PyTuple>()?;
                    if ls.len() != 4 {
                        return Err(Fallback);
                    }
                    let ls_ts = int(&*ls.get_borrowed_item(0)?)?;
                    let lat = num(&*ls.get_borrowed_item(1)?)?;
                    let lon = num(&*ls.get_borrowed_item(2)?)?;
                    let elat = num(&src_lat)?;
                    let elon = num(&src_lon)?;
                    let km = if eq(lat, elat) && eq(lon, elon) {
                        0.0
                    } else {
                        haversine_km(self.earth_km, lat, lon, elat, elon)?
                    };
                    let speed = if lt(Num::F(km), self.travel_min_km) {
                        0.0
                    } else {
                        let elapsed = i2f(ts - ls_ts) / 3_600_000.0;
                        let floor = 1.0 / 60.0;
                        // max(elapsed, floor): the later argument wins only when strictly larger.
                        let hours = if floor > elapsed { floor } else { elapsed };
                        km / hours
                    };
                    row[8] = log1p(speed)?;
                }
            }
            let device = ev.get_borrowed_item(EV_DEVICE_ID)?;
            if !device.is_none() && !cold {
                row[9] = self.rarity_of(&seen, &totals, k.device.bind(py), &device, f)?;
            }
            let ua = ev.get_borrowed_item(EV_USER_AGENT)?;
            if !ua.is_none() {
                row[10] = self.rarity_of(&seen, &totals, k.ua.bind(py), &ua, f)?;
            }
            let service = ev.get_borrowed_item(EV_SERVICE)?;
            if !service.is_none() {
                row[11] = self.rarity_of(&seen, &totals, k.service.bind(py), &service, f)?;
                row[25] = match self.tiers.bind(py).get_item(&*service)? {
                    None => 0.0,
                    Some(tier) => to_f(num(&tier)?),
                };
            } else {
                row[25] = 0.0;
            }
            let burst =
                self.decayed(&*bl.get_borrowed_item(BL_FAIL_BURST)?, ts, self.fail_half_life_ms)?;
            row[12] = log1p(burst)?;
            if bl.get_borrowed_item(BL_N_SEEN)?.is_truthy()? {
                // Python puts the object itself in the row.
                fail_rate = Some(bl.get_borrowed_item(BL_FAIL_RATE)?.to_owned());
            }
            if !success.is_none() {
                row[14] = if success.is_truthy()? { log1p(burst)? } else { 0.0 };
            }
            let ip = ctx.getattr(k.ip.bind(py))?;
            if !ip.is_none() {
                row[15] = log1p(to_f(num(&ip.getattr(k.users.bind(py))?)?))?;
                row[16] = log1p(to_f(num(&ip.getattr(k.failures.bind(py))?)?))?;
                row[17] = log1p(to_f(num(&ip.getattr(k.fail_users.bind(py))?)?))?;
            }
            let changes = ctx.getattr(k.session_changes.bind(py))?;
            if !changes.is_none() {
                row[18] = changes.len()? as f64;
            }
            let mfa = ev.get_borrowed_item(EV_IS_MFA)?;
            if !mfa.is_none() {
                row[20] = if mfa.is_truthy()? { 1.0 } else { 0.0 };
            }
        } else {
            // _network()
            let internal_obj = ev.get_borrowed_item(EV_DST_INTERNAL)?;
            let internal = if internal_obj.is_none() {
                None
            } else {
                Some(internal_obj.cast_exact::<PyBool>()?.is_true())
            };
            if internal == Some(true) {
                row[26] = 1.0;
                let hostname = ev.get_borrowed_item(EV_DST_HOSTNAME)?;
                let host = if hostname.is_truthy()? {
                    hostname
                } else {
                    ev.get_borrowed_item(EV_DST_IP)?
                };
                let fresh = if !host.is_none() {
                    row[27] = self.rarity_of(&seen, &totals, k.host.bind(py), &host, f)?;
                    let b_seen = bl.get_borrowed_item(BL_SEEN)?;
                    let known = match self.get(&b_seen, k.host.bind(py).as_any())? {
                        Some(hosts) if hosts.is_truthy()? => hosts.contains(&*host)?,
                        _ => false, // _NO_VALUES is empty
                    };
                    if known { 0.0 } else { 1.0 }
                } else {
                    0.0
                };
                let port = ev.get_borrowed_item(EV_DST_PORT)?;
                if !port.is_none() {
                    let text = port.str()?;
                    row[28] = self.rarity_of(&seen, &totals, k.port.bind(py), text.as_any(), f)?;
                }
                let burst =
                    self.decayed(&*bl.get_borrowed_item(BL_NEW_HOSTS)?, ts, self.host_half_life_ms)?;
                row[29] = log1p(burst + fresh)?;
            } else if internal == Some(false) {
                row[26] = 0.0;
                let country = ev.get_borrowed_item(EV_DST_COUNTRY)?;
                if !country.is_none() {
                    row[30] = self.rarity_of(&seen, &totals, k.dst_country.bind(py), &country, f)?;
                }
                let asn = ev.get_borrowed_item(EV_DST_ASN)?;
                if !asn.is_none() {
                    let text = asn.str()?;
                    row[31] = self.rarity_of(&seen, &totals, k.dst_asn.bind(py), text.as_any(), f)?;
                }
            }
            let bytes_out = ev.get_borrowed_item(EV_BYTES_OUT)?;
            if let Some(internal) = internal {
                let own = bl.get_borrowed_item(BL_TRAFFIC)?;
                let stats = if own.is_truthy()? { own } else { prof.get_borrowed_item(BL_TRAFFIC)? };
                let (out_key, in_key) = if internal {
                    (&k.int_out, &k.int_in)
                } else {
                    (&k.ext_out, &k.ext_in)
                };
                if !bytes_out.is_none() {
                    let stat = self.get(&stats, out_key.bind(py).as_any())?;
                    row[32] = self.zscore(stat, log1p(to_f(num(&bytes_out)?))?)?;
                }
                let bytes_in = ev.get_borrowed_item(EV_BYTES_IN)?;
                if !bytes_in.is_none() {
                    let stat = self.get(&stats, in_key.bind(py).as_any())?;
                    row[33] = self.zscore(stat, log1p(to_f(num(&bytes_in)?))?)?;
                }
            }
            if !bytes_out.is_none() {
                row[34] = log1p(to_f(num(&bytes_out)?))?;
            }
        }

        let list = PyList::new(
            py,
            row.iter().enumerate().map(|(i, &v)| match (i, &fail_rate) {
                (13, Some(obj)) => obj.clone(),
                _ => self.float(py, v),
            }),
        )?;
        Ok(list.into_any())
    }
}

#[pymethods]
impl FeatureKernel {
    /// Binds the kernel to one extractor: `python` is its `extract` (the
    /// fallback), `spec` a dict of what extract reads (built by
    /// `detector.native.extract_kernel`).
    #[new]
    fn new(python: Bound<'_, PyAny>, spec: Bound<'_, PyDict>) -> PyResult<Self> {
        let py = python.py();
        let obj = |name: &str| item(&spec, name).map(Bound::unbind);
        let nan = item(&spec, "nan")?;
        let max_rarity = float_of(&spec, "max_rarity")?;
        Ok(FeatureKernel {
            python: python.clone().unbind(),
            event_type: obj("event_type")?,
            baseline_type: obj("baseline_type")?,
            peers: item(&spec, "peers")?.cast_exact::<PyDict>()?.clone().unbind(),
            tiers: item(&spec, "tiers")?.cast_exact::<PyDict>()?.clone().unbind(),
            hosting: obj("hosting")?,
            auth: obj("auth")?,
            admin: obj("admin")?,
            vendor: obj("vendor")?,
            service_class: obj("service_class")?,
            device_class: obj("device_class")?,
            no_map: obj("no_map")?,
            no_values: obj("no_values")?,
            nan: nan.unbind(),
            zero: PyFloat::new(py, 0.0).into_any().unbind(),
            one: PyFloat::new(py, 1.0).into_any().unbind(),
            max_rarity_obj: PyFloat::new(py, max_rarity).into_any().unbind(),
            keys: Keys::new(py),
            min_events: num_of(&spec, "min_events")?,
            neg_ln2: -float_of(&spec, "ln2")?,
            milli: float_of(&spec, "milli")?,
            rarity_floor: float_of(&spec, "rarity_floor")?,
            max_rarity,
            earth_km: float_of(&spec, "earth_km")?,
            half_life_ms: float_of(&spec, "half_life_ms")?,
            min_delta: float_of(&spec, "min_delta")?,
            fail_half_life_ms: float_of(&spec, "fail_half_life_ms")?,
            host_half_life_ms: float_of(&spec, "host_half_life_ms")?,
            travel_min_km: num_of(&spec, "travel_min_km")?,
            fallbacks: AtomicU64::new(0),
        })
    }

    /// `extract(event, b, ctx) -> list[float]`: the feature row, as the
    /// Python `FeatureExtractor.extract` returns it (which it calls for
    /// anything unusual).
    fn extract<'py>(
        &self,
        event: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.fast(event, b, ctx) {
            Ok(row) => Ok(row),
            Err(Fallback) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.python.bind(event.py()).call1((event, b, ctx))
            }
        }
    }

    /// Number of calls handed to the Python `extract` so far.
    #[getter]
    fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FeatureKernel>()?;
    Ok(())
}
