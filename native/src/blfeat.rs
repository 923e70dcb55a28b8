//! Features on Rust-owned baselines: `detector.features.FeatureExtractor.extract`
//! computed from an [`Ev`], a [`Bl`] and a [`Cx`], with no Python object in the
//! per-event path.
//!
//! [`extract_bl`] is the arithmetic of `features.rs`' `FeatureKernel` (itself a
//! tested port of the Python method), rewritten on the Rust values: the same
//! operations in the same order (`-log10(share) + 0.0`, `log1p`, the haversine
//! formula as written, ints converted to floats where Python converts them),
//! so every value has the bits Python gives it. The extractor's configuration
//! is read once ([`FeatCfg::from_py`]).
//!
//! Where Python would raise (a math domain error or overflow, e.g. `log1p` of
//! a negative byte count) [`extract_bl`] returns `Err(Bail)` and leaves the
//! row untouched: the engine then runs that event through Python, which
//! raises (or not) as the specification says.

use std::hint::black_box;

use pyo3::prelude::*;

use crate::pynum::{float_lt_int, i2f, int_lt_float, square};
use pyo3::types::{PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyString};

use crate::bl::{names, Bl, Cx, Ev, HourW, Name, EvTypes, EC_ADMIN, EC_DEVICE, EC_SERVICE, EC_VENDOR};
use crate::fnv::FnvMap;
use crate::blcore::BlTypes;

/// Length of `FEATURE_NAMES` (checked against Python in [`FeatCfg::from_py`]).
pub const N_FEATURES: usize = 35;
/// `math.radians`'s factor: CPython's `degToRad = Py_MATH_PI / 180.0`.
const DEG_TO_RAD: f64 = std::f64::consts::PI / 180.0;

/// This event cannot be computed exactly here (Python would raise, or a value
/// is out of the modelled range): run it through Python.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bail;

type R<T> = Result<T, Bail>;

/// A configuration number Python may hold as an int or a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    I(i64),
    F(f64),
}

/// Reads an exact `int` fitting int64 or an exact `float`.
fn num(o: &Bound<'_, PyAny>) -> Option<Num> {
    if let Ok(f) = o.cast_exact::<PyFloat>() {
        Some(Num::F(f.value()))
    } else if o.is_exact_instance_of::<PyInt>() {
        o.extract::<i64>().ok().map(Num::I)
    } else {
        None
    }
}

/// Reads an exact `float`.
fn float(o: &Bound<'_, PyAny>) -> Option<f64> {
    o.cast_exact::<PyFloat>().ok().map(|f| f.value())
}

/// Python's `x < n` for a float x and a configuration number.
#[inline]
fn f_lt(x: f64, n: Num) -> bool {
    match n {
        Num::F(y) => x < y,
        Num::I(i) => float_lt_int(x, i128::from(i)),
    }
}

/// CPython's `math_1` error rule: a NaN from a non-NaN argument is a domain
/// error, an infinity from a finite one an overflow; Python raises, so bail.
#[inline]
fn m1(x: f64, r: f64) -> R<f64> {
    if (r.is_nan() && !x.is_nan()) || (r.is_infinite() && x.is_finite()) {
        Err(Bail)
    } else {
        Ok(r)
    }
}

#[inline]
fn log1p(x: f64) -> R<f64> {
    m1(x, x.ln_1p())
}

#[inline]
fn log10(x: f64) -> R<f64> {
    m1(x, x.log10())
}

#[inline]
fn exp(x: f64) -> R<f64> {
    m1(x, x.exp())
}

#[inline]
fn sqrt(x: f64) -> R<f64> {
    m1(x, x.sqrt())
}

/// The extractor's configuration and the module constants `extract` reads.
#[derive(Clone, Debug)]
pub struct FeatCfg {
    /// `FeatureExtractor._min_events` (== `cfg.min_events`).
    pub min_events: Num,
    /// `FeatureExtractor._half_life_ms`.
    pub half_life_ms: f64,
    /// `FeatureExtractor._min_delta`.
    pub min_delta: f64,
    /// `_fail_half_life_s * 1000.0`, as `decayed` computes it.
    pub fail_half_life_ms: f64,
    /// `_host_half_life_s * 1000.0`.
    pub host_half_life_ms: f64,
    /// `cfg.travel_min_km`.
    pub travel_min_km: Num,
    /// `FeatureExtractor._tiers`: service -> tier.
    pub tiers: FnvMap<Box<str>, i64>,
    /// `FeatureExtractor._hosting`, sorted.
    pub hosting: Vec<i64>,
    /// `-baseline._LN2`.
    pub neg_ln2: f64,
    /// `baseline._MILLI`.
    pub milli: f64,
    /// `features._RARITY_FLOOR`.
    pub rarity_floor: f64,
    /// `features._MAX_RARITY`.
    pub max_rarity: f64,
    /// `features._EARTH_KM`.
    pub earth_km: f64,
}

/// A positive finite float, as the kernel requires of a half-life.
fn half_life(o: &Bound<'_, PyAny>) -> Option<f64> {
    float(o).filter(|h| h.is_finite() && *h > 0.0)
}

impl FeatCfg {
    /// Reads an exact `detector.features.FeatureExtractor` once; `None` when
    /// a setting has a type or value this port does not model (the caller
    /// then keeps the Python `extract`).
    pub fn from_py(fx: &Bound<'_, PyAny>) -> Option<FeatCfg> {
        let py = fx.py();
        let features = py.import("detector.features").ok()?;
        let baseline = py.import("detector.baseline").ok()?;
        if fx.get_type().as_ptr() != features.getattr("FeatureExtractor").ok()?.as_ptr() {
            return None;
        }
        if features.getattr("FEATURE_NAMES").ok()?.len().ok()? != N_FEATURES {
            return None;
        }
        let attr = |name: &str| fx.getattr(name).ok();
        let cfg = attr("cfg")?;
        let min_events_obj = attr("_min_events")?;
        let min_events = num(&min_events_obj)?;
        // extract() reads _min_events, is_cold() cfg.min_events: one value for both.
        if !min_events_obj.eq(cfg.getattr("min_events").ok()?).ok()? {
            return None;
        }
        // decayed()'s `half_life_s * 1000.0`, evaluated by Python itself.
        let times_1000 = |name: &str| -> Option<f64> {
            half_life(&attr(name)?.mul(PyFloat::new(py, 1000.0)).ok()?)
        };
        let tiers_obj = attr("_tiers")?;
        let tiers_dict = tiers_obj.cast_exact::<PyDict>().ok()?;
        let mut tiers = FnvMap::default();
        for (k, v) in tiers_dict.iter() {
            let k = k.cast_exact::<PyString>().ok()?.to_str().ok()?.into();
            if !v.is_exact_instance_of::<PyInt>() {
                return None;
            }
            tiers.insert(k, v.extract::<i64>().ok()?);
        }
        let hosting_obj = attr("_hosting")?;
        let hosting_set = hosting_obj.cast_exact::<PyFrozenSet>().ok()?;
        let mut hosting = Vec::with_capacity(hosting_set.len());
        for a in hosting_set.iter() {
            if !a.is_exact_instance_of::<PyInt>() {
                return None;
            }
            hosting.push(a.extract::<i64>().ok()?);
        }
        hosting.sort_unstable();
        let module_float = |m: &Bound<'_, PyModule>, name: &str| float(&m.getattr(name).ok()?);
        Some(FeatCfg {
            min_events,
            half_life_ms: half_life(&attr("_half_life_ms")?)?,
            min_delta: float(&attr("_min_delta")?)?,
            fail_half_life_ms: times_1000("_fail_half_life_s")?,
            host_half_life_ms: times_1000("_host_half_life_s")?,
            travel_min_km: num(&cfg.getattr("travel_min_km").ok()?)?,
            tiers,
            hosting,
            neg_ln2: -module_float(&baseline, "_LN2")?,
            milli: module_float(&baseline, "_MILLI")?,
            rarity_floor: module_float(&features, "_RARITY_FLOOR")?,
            max_rarity: module_float(&features, "_MAX_RARITY")?,
            earth_km: module_float(&features, "_EARTH_KM")?,
        })
    }

    /// `b.n_learned < self._min_events`, as Python compares a float with an int or a float.
    #[inline]
    pub fn is_cold(&self, b: &Bl) -> bool {
        f_lt(b.n_learned, self.min_events)
    }

    /// `_rarity_of(prof.seen, prof.seen_totals, dim, value, f)`.
    fn rarity_of(&self, prof: &Bl, dim: Name, value: &str, f: f64) -> R<f64> {
        if let Some(d) = prof.dim(dim) {
            // `if entries:` an empty dict is false (and holds no value anyway).
            if let Some(entry) = d.get(value) {
                let share = entry.w as f64 * f / (prof.total(dim) as f64 * f + 1.0);
                if share > self.rarity_floor {
                    return Ok(-log10(share)? + 0.0);
                }
            }
        }
        Ok(self.max_rarity)
    }

    /// `decayed((count, last), ts, half_life) if count != 0.0 else 0.0`, with
    /// the half-life already in ms.
    #[inline]
    fn decayed(&self, pair: (f64, i64), ts: i64, half_life_ms: f64) -> R<f64> {
        let (count, last) = pair;
        if count == 0.0 {
            return Ok(0.0);
        }
        let dt = i128::from(ts) - i128::from(last);
        // max(dt, 0): the later argument wins only when strictly larger.
        let dt = if 0 > dt { 0 } else { dt };
        Ok(count * exp(self.neg_ln2 * i2f(dt) / half_life_ms)?)
    }

    /// `features.haversine_km`, the formula as written there.
    fn haversine_km(&self, lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> R<f64> {
        let p1 = lat1 * DEG_TO_RAD;
        let p2 = lat2 * DEG_TO_RAD;
        let dp = p2 - p1;
        let dl = (lon2 - lon1) * DEG_TO_RAD;
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
        Ok(2.0 * self.earth_km * arc)
    }
}

/// `hour_share(prof, ts_ms, factor)` for a non-empty `hours`.
///
/// One pass over the hours instead of ten lookups: the seven hour-of-day
/// bins are the keys in 0..168 congruent to `hod` mod 24, and an int sum
/// does not depend on its order.
fn hour_share(hours: &[HourW], hours_total: i64, ts: i64, factor: f64) -> f64 {
    let h = (i128::from(ts).div_euclid(3_600_000) + 72).rem_euclid(168) as i64;
    let hm = (h - 1).rem_euclid(168);
    let hp = (h + 1).rem_euclid(168);
    let hod = h % 24;
    let (mut wm, mut w0, mut wp) = (0i64, 0i64, 0i64);
    let mut day: i128 = 0;
    for x in hours {
        let (k, w) = (i64::from(x.h), x.w);
        if k == hm {
            wm = w;
        }
        if k == h {
            w0 = w;
        }
        if k == hp {
            wp = w;
        }
        if k < 168 && k % 24 == hod {
            day += i128::from(w);
        }
    }
    let week = 0.25 * wm as f64 + 0.5 * w0 as f64 + 0.25 * wp as f64;
    let day = i2f(day) / 7.0;
    let total = hours_total as f64 * factor + 1.0;
    (0.6 * week + 0.4 * day) * factor / total
}

/// `_zscore(stat, x)`.
#[inline]
fn zscore(stat: Option<&[f64; 3]>, x: f64) -> R<f64> {
    let Some(&[n, mean, var]) = stat else { return Ok(f64::NAN) };
    if n < 5.0 {
        return Ok(f64::NAN);
    }
    let dev = sqrt(var)?;
    // max(sqrt(var), 0.5): the later argument wins only when strictly larger.
    let dev = if 0.5 > dev { 0.5 } else { dev };
    Ok((x - mean) / dev)
}

/// `FeatureExtractor.extract(event, b, ctx)` into `row` (all `N_FEATURES`
/// slots written, NaN where Python leaves NaN).
///
/// The caller chose `prof` (the peer baseline of a cold entity's kind when
/// the model has one, else `b`), `prof_is_b` (Python's `prof is b`) and
/// `cold` (`c.is_cold(b)`), as `extract` does. `Err(Bail)` (row untouched)
/// where Python would raise or a value is out of range.
#[allow(clippy::too_many_arguments)]
pub fn extract_bl(
    c: &FeatCfg,
    ev: &Ev,
    b: &Bl,
    prof: &Bl,
    prof_is_b: bool,
    cold: bool,
    cx: &Cx,
    row: &mut [f64],
) -> Result<(), Bail> {
    if row.len() != N_FEATURES {
        return Err(Bail);
    }
    let mut r = [f64::NAN; N_FEATURES];
    let ts = ev.ts_ms;
    // prof.decay_factor(), as of the peer's own last event.
    let as_of = if prof_is_b {
        ts
    } else {
        match prof.last_ts {
            None | Some(0) => ts,
            Some(v) => v,
        }
    };
    let delta_int = i128::from(as_of) - i128::from(prof.t0);
    let delta = if int_lt_float(delta_int, c.min_delta) { c.min_delta } else { i2f(delta_int) };
    let f = exp(c.neg_ln2 * delta / c.half_life_ms)? / c.milli;

    if let Some(hours) = &prof.hours {
        if !hours.is_empty() {
            let share = hour_share(hours, prof.hours_total, ts, f);
            r[1] = if share <= c.rarity_floor { c.max_rarity } else { -log10(share)? + 0.0 };
        }
    }
    if let Some(last_ts) = b.last_ts {
        let idle = if ts > last_ts { i128::from(ts) - i128::from(last_ts) } else { 0 };
        r[2] = log1p(i2f(idle) / 86_400_000.0)?;
    }
    r[3] = log1p(b.n_learned)?;
    let cls = ev.entity_class;
    r[21] = if cls == EC_ADMIN { 1.0 } else { 0.0 };
    r[22] = if cls == EC_VENDOR { 1.0 } else { 0.0 };
    r[23] = if cls == EC_SERVICE { 1.0 } else { 0.0 };
    r[24] = if cls == EC_DEVICE { 1.0 } else { 0.0 };

    if ev.is_auth {
        auth(c, ev, b, prof, f, cold, cx, &mut r)?;
    } else {
        network(c, ev, b, prof, f, &mut r)?;
    }
    row.copy_from_slice(&r);
    Ok(())
}

/// `FeatureExtractor._auth`.
#[allow(clippy::too_many_arguments)]
fn auth(
    c: &FeatCfg,
    ev: &Ev,
    b: &Bl,
    prof: &Bl,
    f: f64,
    cold: bool,
    cx: &Cx,
    r: &mut [f64; N_FEATURES],
) -> R<()> {
    let ts = ev.ts_ms;
    if let Some(success) = ev.success {
        r[0] = if success { 0.0 } else { 1.0 };
    }
    if let Some(v) = ev.src_country {
        r[4] = c.rarity_of(prof, names::COUNTRY, v, f)?;
    }
    if let Some(v) = ev.src_city {
        r[5] = c.rarity_of(prof, names::CITY, v, f)?;
    }
    if let Some(asn) = ev.src_asn {
        r[6] = c.rarity_of(prof, names::ASN, &asn.to_string(), f)?;
        r[19] = if c.hosting.binary_search(&asn).is_ok() { 1.0 } else { 0.0 };
    }
    if let Some(v) = ev.src_prefix {
        r[7] = c.rarity_of(prof, names::PREFIX, v, f)?;
    }
    if let (Some(elat), Some(ls)) = (ev.src_lat, &b.last_success) {
        // travel(): None without a longitude.
        if let Some(elon) = ev.src_lon {
            let km = if ls.lat == elat && ls.lon == elon {
                0.0
            } else {
                c.haversine_km(ls.lat, ls.lon, elat, elon)?
            };
            let speed = if f_lt(km, c.travel_min_km) {
                0.0
            } else {
                let elapsed = i2f(i128::from(ts) - i128::from(ls.ts)) / 3_600_000.0;
                let floor = 1.0 / 60.0;
                // max(elapsed, floor): the later argument wins only when strictly larger.
                let hours = if floor > elapsed { floor } else { elapsed };
                km / hours
            };
            r[8] = log1p(speed)?;
        }
    }
    if let Some(v) = ev.device_id {
        if !cold {
            r[9] = c.rarity_of(prof, names::DEVICE, v, f)?;
        }
    }
    if let Some(v) = ev.user_agent {
        r[10] = c.rarity_of(prof, names::UA, v, f)?;
    }
    if let Some(service) = ev.service {
        r[11] = c.rarity_of(prof, names::SERVICE, service, f)?;
        r[25] = c.tiers.get(service).map_or(0.0, |t| *t as f64);
    } else {
        r[25] = 0.0;
    }
    let burst = c.decayed(b.fail_burst, ts, c.fail_half_life_ms)?;
    r[12] = log1p(burst)?;
    if b.n_seen != 0 {
        r[13] = b.fail_rate;
    }
    if let Some(success) = ev.success {
        r[14] = if success { log1p(burst)? } else { 0.0 };
    }
    if let Some((users, failures, fail_users)) = cx.ip {
        r[15] = log1p(users as f64)?;
        r[16] = log1p(failures as f64)?;
        r[17] = log1p(fail_users as f64)?;
    }
    if let Some(n) = cx.session_changes {
        r[18] = n as f64;
    }
    if let Some(mfa) = ev.is_mfa {
        r[20] = if mfa { 1.0 } else { 0.0 };
    }
    Ok(())
}

/// `FeatureExtractor._network`.
fn network(
    c: &FeatCfg,
    ev: &Ev,
    b: &Bl,
    prof: &Bl,
    f: f64,
    r: &mut [f64; N_FEATURES],
) -> R<()> {
    let internal = ev.dst_internal;
    if internal == Some(true) {
        r[26] = 1.0;
        // `event.dst_hostname or event.dst_ip`: an empty hostname is false.
        let host = match ev.dst_hostname {
            Some(h) if !h.is_empty() => Some(h),
            _ => ev.dst_ip,
        };
        let fresh = if let Some(host) = host {
            r[27] = c.rarity_of(prof, names::HOST, host, f)?;
            // `b.seen.get("host") or _NO_VALUES`: the entity's own hosts.
            let known = b.dim(names::HOST).is_some_and(|d| d.get(host).is_some());
            if known { 0.0 } else { 1.0 }
        } else {
            0.0
        };
        if let Some(port) = ev.dst_port {
            r[28] = c.rarity_of(prof, names::PORT, &port.to_string(), f)?;
        }
        let burst = c.decayed(b.new_hosts, ev.ts_ms, c.host_half_life_ms)?;
        r[29] = log1p(burst + fresh)?;
    } else if internal == Some(false) {
        r[26] = 0.0;
        if let Some(v) = ev.dst_country {
            r[30] = c.rarity_of(prof, names::DST_COUNTRY, v, f)?;
        }
        if let Some(asn) = ev.dst_asn {
            r[31] = c.rarity_of(prof, names::DST_ASN, &asn.to_string(), f)?;
        }
    }
    if let Some(internal) = internal {
        // `b.traffic if b.traffic else prof.traffic`.
        let own = matches!(&b.traffic, Some(t) if !t.is_empty());
        let stats = if own { b } else { prof };
        let (out_key, in_key) =
            if internal { (names::INT_OUT, names::INT_IN) } else { (names::EXT_OUT, names::EXT_IN) };
        if let Some(bo) = ev.bytes_out {
            r[32] = zscore(stats.traffic_of(out_key), log1p(bo as f64)?)?;
        }
        if let Some(bi) = ev.bytes_in {
            r[33] = zscore(stats.traffic_of(in_key), log1p(bi as f64)?)?;
        }
    }
    if let Some(bo) = ev.bytes_out {
        r[34] = log1p(bo as f64)?;
    }
    Ok(())
}

// ------------------------------------------------------------- test hooks

/// Python's `fx.peers.get(event.entity_kind)`, or None.
fn peer_of<'py>(fx: &Bound<'py, PyAny>, event: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = fx.py();
    let peers = fx.getattr(pyo3::intern!(py, "peers"))?;
    let kind = event.getattr(pyo3::intern!(py, "entity_kind"))?;
    let peer = peers.call_method1(pyo3::intern!(py, "get"), (kind,))?;
    Ok(if peer.is_none() { None } else { Some(peer) })
}

/// The converted inputs of one `extract` call.
struct Inputs {
    b: Bl,
    /// The peer baseline when `extract` would use one.
    peer: Option<Bl>,
    /// Python's `prof is b` (a peer that is the very object `b`).
    peer_is_b: bool,
    cx: Cx,
}

fn ip_stats_type(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.import("detector.context")?.getattr("IpStats")?.unbind())
}

fn inputs(
    c: &FeatCfg,
    fx: &Bound<'_, PyAny>,
    event: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    ctx: &Bound<'_, PyAny>,
    bt: &BlTypes,
    ip_type: &Py<PyAny>,
) -> PyResult<Option<Inputs>> {
    let Some(cx) = Cx::from_py(ctx, ip_type) else { return Ok(None) };
    let Some(bl) = Bl::from_py(b, bt) else { return Ok(None) };
    let (mut peer, mut peer_is_b) = (None, false);
    if c.is_cold(&bl) {
        if let Some(p) = peer_of(fx, event)? {
            peer_is_b = p.as_ptr() == b.as_ptr();
            let Some(pb) = Bl::from_py(&p, bt) else { return Ok(None) };
            peer = Some(pb);
        }
    }
    Ok(Some(Inputs { b: bl, peer, peer_is_b, cx }))
}

fn run(c: &FeatCfg, ev: &Ev, x: &Inputs, row: &mut [f64]) -> Result<(), Bail> {
    let cold = c.is_cold(&x.b);
    let (prof, prof_is_b) = match &x.peer {
        Some(p) => (p, x.peer_is_b),
        None => (&x.b, true),
    };
    extract_bl(c, ev, &x.b, prof, prof_is_b, cold, &x.cx, row)
}

/// Test hook: `FeatureExtractor.extract(event, b, ctx)` through [`extract_bl`]
/// on converted values; None when anything is not representable (or Python
/// would raise).
#[pyfunction]
fn _bl_extract(
    fx: &Bound<'_, PyAny>,
    event: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    ctx: &Bound<'_, PyAny>,
) -> PyResult<Option<Vec<f64>>> {
    let py = fx.py();
    let Some(c) = FeatCfg::from_py(fx) else { return Ok(None) };
    let types = EvTypes::new(py)?;
    let Some(ev) = Ev::from_py(event, &types) else { return Ok(None) };
    let bt = BlTypes::new(py)?;
    let Some(x) = inputs(&c, fx, event, b, ctx, &bt, &ip_stats_type(py)?)? else {
        return Ok(None);
    };
    let mut row = vec![f64::NAN; N_FEATURES];
    Ok(run(&c, &ev, &x, &mut row).ok().map(|()| row))
}

/// Test hook for timing: converts every (event, b, ctx) once, then runs
/// [`extract_bl`] over all of them `n` times. Returns the sum of the non-NaN
/// values of the last pass (so the work cannot be optimised away), or None
/// when an input is not representable.
#[pyfunction]
fn _bl_extract_bench(
    fx: &Bound<'_, PyAny>,
    events: &Bound<'_, PyList>,
    bs: &Bound<'_, PyList>,
    ctxs: &Bound<'_, PyList>,
    n: usize,
) -> PyResult<Option<f64>> {
    let py = fx.py();
    let Some(c) = FeatCfg::from_py(fx) else { return Ok(None) };
    let types = EvTypes::new(py)?;
    let bt = BlTypes::new(py)?;
    let ip_type = ip_stats_type(py)?;
    let events: Vec<Bound<'_, PyAny>> = events.iter().collect();
    let mut evs = Vec::with_capacity(events.len());
    let mut xs = Vec::with_capacity(events.len());
    for ((e, b), ctx) in events.iter().zip(bs.iter()).zip(ctxs.iter()) {
        let Some(ev) = Ev::from_py(e, &types) else { return Ok(None) };
        let Some(x) = inputs(&c, fx, e, &b, &ctx, &bt, &ip_type)? else { return Ok(None) };
        evs.push(ev);
        xs.push(x);
    }
    let mut row = [f64::NAN; N_FEATURES];
    let mut sum = 0.0;
    for pass in 0..n {
        for (ev, x) in evs.iter().zip(&xs) {
            if run(&c, black_box(ev), black_box(x), &mut row).is_err() {
                return Ok(None);
            }
            if pass + 1 == n {
                sum += row.iter().filter(|v| !v.is_nan()).sum::<f64>();
            }
            black_box(&row);
        }
    }
    Ok(Some(sum))
}

/// Test hook: [`crate::context::PolicyGate::proves_allow_bl`] on converted
/// values: True when it proves the plain allow verdict, False when it would
/// ask Python, None when an input is not representable.
#[pyfunction]
fn _gate_bl(
    gate: &Bound<'_, crate::context::PolicyGate>,
    event: &Bound<'_, PyAny>,
    row: Vec<f64>,
    risk: f64,
    ctx: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
) -> PyResult<Option<bool>> {
    let py = gate.py();
    let types = EvTypes::new(py)?;
    let Some(ev) = Ev::from_py(event, &types) else { return Ok(None) };
    let Some(cx) = Cx::from_py(ctx, &ip_stats_type(py)?) else { return Ok(None) };
    let bt = BlTypes::new(py)?;
    let Some(bl) = Bl::from_py(b, &bt) else { return Ok(None) };
    let g = gate.get();
    Ok(Some(g.proves_allow_bl(py, event, &ev, &row, risk, &cx, &bl).is_some()))
}

/// Registers this file's test hooks.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_bl_extract, m)?)?;
    m.add_function(wrap_pyfunction!(_bl_extract_bench, m)?)?;
    m.add_function(wrap_pyfunction!(_gate_bl, m)?)?;
    Ok(())
}
