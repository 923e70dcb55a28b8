//! Cross-entity context (`detector.engine.Detector.ip_stats` and
//! `session_changes`) and the policy's allow gate (`detector.policy.Policy.decide`).
//!
//! * `IpStatsKernel` / `SessionKernel`: drop-ins for the two context loops. They
//!   advance the caller's `ips` / `sessions` dicts with new `IpContext` /
//!   `SessionContext` values equal to Python's and return the same lists. Any
//!   event the kernel does not recognise (odd types, huge ints, a foreign value
//!   in the table) is handed to the Python loop body for that one event, so
//!   results and exceptions are Python's.
//! * `PolicyGate`: evaluates the conditions of every rule of `Policy._rules` /
//!   `_unfamiliar` and the risk thresholds. When it proves the verdict is
//!   `allow` it returns the very `_ALLOW` object Python returns; otherwise (a
//!   rule may fire, the risk is at or above a threshold, or anything is
//!   unusual) it calls `Policy.decide` itself. Computed quantities (decayed
//!   counters, travel speed, `expm1`) are compared with a small safety margin
//!   so that a last-bit difference can only make the gate defer, never allow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::fnv::FnvMap;
use crate::layout::*;

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<IpStatsKernel>()?;
    m.add_class::<SessionKernel>()?;
    m.add_class::<PolicyGate>()?;
    m.add_class::<ContextCombiner>()?;
    Ok(())
}

// ------------------------------------------------------------------ helpers

/// Builds instances of a frozen, slotted dataclass without running its
/// Python-level `__init__` (which assigns through `object.__setattr__`, ~1 us).
///
/// It does what `object.__new__(cls)` followed by `object.__setattr__` per
/// field does: the type's `tp_alloc`, then each field's member descriptor's
/// `tp_descr_set` (the slot setter, which bypasses the frozen `__setattr__`).
struct SlotClass {
    cls: Py<PyType>,
    descrs: Vec<Py<PyAny>>,
}

impl SlotClass {
    /// Checks that `cls` is a plain slotted class whose `fields` are member descriptors.
    fn new(cls: &Bound<'_, PyType>, fields: &[&str]) -> PyResult<Self> {
        let py = cls.py();
        let dict = cls.getattr(intern!(py, "__dict__"))?;
        let member_type = py
            .import("types")?
            .getattr("MemberDescriptorType")?;
        let mut descrs = Vec::with_capacity(fields.len());
        for name in fields {
            let d = dict.get_item(*name)?;
            if !d.get_type().is(&member_type) {
                return Err(PyTypeError::new_err(format!(
                    "{}.{name} is not a slot",
                    cls.name()?
                )));
            }
            descrs.push(d.unbind());
        }
        let slots = dict.get_item("__slots__")?.len()?;
        if slots != fields.len() {
            return Err(PyTypeError::new_err("unexpected slots"));
        }
        Ok(Self { cls: cls.clone().unbind(), descrs })
    }

    /// Returns a new instance with `values` in the fields' order.
    fn build<'py>(&self, py: Python<'py>, values: &[&Bound<'py, PyAny>]) -> PyResult<Bound<'py, PyAny>> {
        debug_assert_eq!(values.len(), self.descrs.len());
        // SAFETY: `tp` is a live type object (held by `self.cls`); `tp_alloc`
        // is the allocator `object.__new__` itself calls for it (it returns a
        // new reference with every slot NULL, or NULL with an exception set,
        // both handled by `from_owned_ptr_or_err`). Each descriptor is a member
        // descriptor of this very class (checked in `new`), and its
        // `tp_descr_set` checks the instance's type and takes its own
        // reference to the value: this is `object.__setattr__`'s path.
        unsafe {
            let tp = self.cls.as_ptr() as *mut ffi::PyTypeObject;
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            let obj = Bound::from_owned_ptr_or_err(py, alloc(tp, 0))?;
            for (d, v) in self.descrs.iter().zip(values) {
                let dp = d.as_ptr();
                let set = (*ffi::Py_TYPE(dp))
                    .tp_descr_set
                    .ok_or_else(|| PyTypeError::new_err("slot without setter"))?;
                if set(dp, obj.as_ptr(), v.as_ptr()) != 0 {
                    return Err(PyErr::fetch(py));
                }
            }
            Ok(obj)
        }
    }

    fn is_instance_exact(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.get_type_ptr() == self.cls.as_ptr() as *mut ffi::PyTypeObject
    }
}

/// `obj` as a tuple when its type is exactly `cls` (the `Event` / `Baseline` named tuples).
#[inline]
fn typed_tuple<'a, 'py>(obj: &'a Bound<'py, PyAny>, cls: &Py<PyType>) -> Option<&'a Bound<'py, PyTuple>> {
    if obj.get_type_ptr() != cls.as_ptr() as *mut ffi::PyTypeObject {
        return None;
    }
    obj.cast::<PyTuple>().ok()
}

#[inline]
fn same(a: &Bound<'_, PyAny>, b: &Py<PyAny>) -> bool {
    a.as_ptr() == b.as_ptr()
}

#[inline]
fn item<'a, 'py>(t: &'a Bound<'py, PyTuple>, i: usize) -> Borrowed<'a, 'py, PyAny> {
    // SAFETY: every caller checked `t.len() > i` (events: `len >= EVENT_FIELDS.len()`).
    unsafe { t.get_borrowed_item_unchecked(i) }
}

/// `a != b` as Python evaluates it in `if a != b`, with a fast path for two strs.
fn py_ne(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    if a.as_ptr() == b.as_ptr() && a.is_exact_instance_of::<PyString>() {
        return Ok(false);
    }
    if let (Ok(x), Ok(y)) = (a.cast_exact::<PyString>(), b.cast_exact::<PyString>()) {
        if let (Ok(x), Ok(y)) = (x.to_str(), y.to_str()) {
            return Ok(x != y);
        }
    }
    a.ne(b)
}

/// An exact Python int that fits an i64.
#[inline]
fn as_i64(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.is_exact_instance_of::<PyInt>() {
        obj.extract::<i64>().ok()
    } else {
        None
    }
}

/// An exact Python float.
#[inline]
fn as_f64(obj: &Bound<'_, PyAny>) -> Option<f64> {
    obj.cast_exact::<PyFloat>().ok().map(|f| f.value())
}

// ---------------------------------------------------------------- ip stats

/// `Detector.ip_stats(events, ips)`: per source IP, the recent auth attempts
/// and each auth event's `IpStats`.
#[pyclass(frozen)]
pub struct IpStatsKernel {
    event_cls: Py<PyType>,
    auth: Py<PyAny>,
    ip_context: SlotClass,
    ip_stats: SlotClass,
    window_ms: i64,
    max_events: i64,
    /// Python's loop body for one event: `(event, ips) -> IpStats | None`.
    one: Py<PyAny>,
}

/// What the native path computed for one auth event, before the table is touched.
struct IpStep<'py> {
    ip: Bound<'py, PyAny>,
    ctx: Bound<'py, PyAny>,
    stats: Bound<'py, PyAny>,
}

impl IpStatsKernel {
    /// `None`: not an auth event with an IP. `Some(None)`: hand the event to Python.
    fn step<'py>(
        &self,
        py: Python<'py>,
        e: &Bound<'py, PyAny>,
        ips: &Bound<'py, PyDict>,
    ) -> Option<Option<IpStep<'py>>> {
        let Some(t) = typed_tuple(e, &self.event_cls) else { return Some(None) };
        if t.len() < EVENT_FIELDS.len() {
            return Some(None);
        }
        if !same(&item(t, EV_KIND), &self.auth) {
            return None;
        }
        let ip = item(t, EV_SRC_IP);
        if ip.is_none() {
            return None;
        }
        Some(self.advance(py, t, &ip, ips))
    }

    fn advance<'py>(
        &self,
        py: Python<'py>,
        t: &Bound<'py, PyTuple>,
        ip: &Bound<'py, PyAny>,
        ips: &Bound<'py, PyDict>,
    ) -> Option<IpStep<'py>> {
        let ts_obj = item(t, EV_TS_MS);
        let ts = as_i64(&ts_obj)?;
        let horizon = ts.checked_sub(self.window_ms)?;
        let prev = ips.get_item(ip).ok()?;
        let recent_old;
        let old: &[Bound<'py, PyAny>] = match &prev {
            None => &[],
            Some(p) => {
                if !self.ip_context.is_instance_exact(p) {
                    return None;
                }
                let r = p.getattr(intern!(py, "recent")).ok()?;
                let r = r.cast_exact::<PyTuple>().ok()?.clone();
                recent_old = r.iter().collect::<Vec<_>>();
                &recent_old
            }
        };
        // update_ip: keep the window, append this attempt, keep the last
        // max_events. Each kept entry is read once: (entry, ts, user, failed).
        let mut kept: Vec<(Bound<'py, PyAny>, i64, Bound<'py, PyString>, bool)> =
            Vec::with_capacity(old.len() + 1);
        let py_true = PyBool::new(py, true);
        for r in old {
            let rt = r.cast_exact::<PyTuple>().ok()?;
            if rt.len() != 3 {
                return None;
            }
            let tt = as_i64(&item(rt, 0))?;
            if tt >= horizon {
                // IpContext.stats unpacks (t, user, failed): only strs and bools here.
                let u = item(rt, 1).cast_exact::<PyString>().ok()?.to_owned();
                let f = item(rt, 2);
                if !f.is_exact_instance_of::<PyBool>() {
                    return None;
                }
                kept.push((r.clone(), tt, u, f.as_ptr() == py_true.as_ptr()));
            }
        }
        let entity = item(t, EV_ENTITY).cast_exact::<PyString>().ok()?.to_owned();
        let failed = item(t, EV_SUCCESS).as_ptr() == PyBool::new(py, false).as_ptr();
        let entry = PyTuple::new(
            py,
            [ts_obj.to_owned(), entity.clone().into_any(), PyBool::new(py, failed).to_owned().into_any()],
        )
        .ok()?;
        kept.push((entry.into_any(), ts, entity, failed));
        let n = kept.len() as i64;
        let m = self.max_events;
        // kept[-m:] as Python slices it (m <= 0 included).
        let start = if m > 0 { (n - m).max(0) } else { (-m).min(n) } as usize;
        let kept = &kept[start..];
        let recent = PyTuple::new(py, kept.iter().map(|k| &k.0)).ok()?;
        // IpContext.stats(ts, window): distinct users, failures, distinct failing users.
        let mut users: Vec<(*mut ffi::PyObject, &str)> = Vec::new();
        let mut fail_users: Vec<(*mut ffi::PyObject, &str)> = Vec::new();
        let mut failures: i64 = 0;
        let seen = |v: &Vec<(*mut ffi::PyObject, &str)>, p: *mut ffi::PyObject, s: &str| {
            v.iter().any(|(q, x)| *q == p || *x == s)
        };
        for (_, tt, u, f) in kept {
            if *tt < horizon || *tt > ts {
                continue;
            }
            let s = u.to_str().ok()?;
            let p = u.as_ptr();
            if !seen(&users, p, s) {
                users.push((p, s));
            }
            if *f {
                failures += 1;
                if !seen(&fail_users, p, s) {
                    fail_users.push((p, s));
                }
            }
        }
        let ctx = self.ip_context.build(py, &[recent.as_any()]).ok()?;
        let stats = self
            .ip_stats
            .build(
                py,
                &[
                    &users.len().into_pyobject(py).ok()?.into_any(),
                    &failures.into_pyobject(py).ok()?.into_any(),
                    &fail_users.len().into_pyobject(py).ok()?.into_any(),
                ],
            )
            .ok()?;
        Some(IpStep { ip: ip.clone(), ctx, stats })
    }
}

#[pymethods]
impl IpStatsKernel {
    #[new]
    #[pyo3(signature = (event_cls, auth, ip_context_cls, ip_stats_cls, window_s, max_events, one))]
    fn new(
        event_cls: Py<PyType>,
        auth: Py<PyAny>,
        ip_context_cls: &Bound<'_, PyType>,
        ip_stats_cls: &Bound<'_, PyType>,
        window_s: i64,
        max_events: i64,
        one: Py<PyAny>,
    ) -> PyResult<Self> {
        let window_ms = window_s
            .checked_mul(1000)
            .ok_or_else(|| PyTypeError::new_err("ip_window_s out of range"))?;
        Ok(Self {
            event_cls,
            auth,
            ip_context: SlotClass::new(ip_context_cls, &["recent"])?,
            ip_stats: SlotClass::new(ip_stats_cls, &["users", "failures", "fail_users"])?,
            window_ms,
            max_events,
            one,
        })
    }

    /// `Detector.ip_stats(events, ips)`: returns one `IpStats | None` per event.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        ips: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let Ok(table) = ips.cast_exact::<PyDict>() else {
            for e in events.try_iter()? {
                out.append(self.one.call1(py, (e?, ips))?)?;
            }
            return Ok(out);
        };
        for e in events.try_iter()? {
            let e = e?;
            match self.step(py, &e, table) {
                None => out.append(py.None())?,
                Some(Some(s)) => {
                    table.set_item(&s.ip, &s.ctx)?;
                    out.append(&s.stats)?;
                }
                Some(None) => out.append(self.one.call1(py, (&e, ips))?)?,
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- combined

/// `detector.engine.combine_context(ip, sessions)`: each event's
/// `EventContext(ip, session_changes)`, or the shared `_NO_CTX` when both
/// are None. Builds each one through its slots (see [`SlotClass`]) instead
/// of the dataclass's Python `__init__`. Anything but two lists of one
/// length goes to the Python function, so its results and errors are Python's.
#[pyclass(frozen)]
pub struct ContextCombiner {
    event_context: SlotClass,
    no_ctx: Py<PyAny>,
    python: Py<PyAny>,
}

#[pymethods]
impl ContextCombiner {
    #[new]
    fn new(event_context_cls: &Bound<'_, PyType>, no_ctx: Py<PyAny>, python: Py<PyAny>) -> PyResult<Self> {
        Ok(Self {
            event_context: SlotClass::new(event_context_cls, &["ip", "session_changes"])?,
            no_ctx,
            python,
        })
    }

    /// Returns one `EventContext` per event, as `combine_context` does.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        ip: &Bound<'py, PyAny>,
        sessions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (Ok(a), Ok(b)) = (ip.cast_exact::<PyList>(), sessions.cast_exact::<PyList>()) else {
            return self.python.bind(py).call1((ip, sessions));
        };
        if a.len() != b.len() {
            return self.python.bind(py).call1((ip, sessions));
        }
        let no_ctx = self.no_ctx.bind(py);
        let mut out = Vec::with_capacity(a.len());
        // Indexed reads, bounds-checked each time: should a list change
        // meanwhile (a finalizer run by the collector during an allocation),
        // a read past its end raises instead of reading freed memory.
        for i in 0..a.len() {
            let (x, y) = (a.get_item(i)?, b.get_item(i)?);
            out.push(if x.is_none() && y.is_none() {
                no_ctx.clone()
            } else {
                self.event_context.build(py, &[&x, &y])?
            });
        }
        Ok(PyList::new(py, out)?.into_any())
    }
}

// ---------------------------------------------------------------- sessions

/// `Detector.session_changes(events, sessions)`.
#[pyclass(frozen)]
pub struct SessionKernel {
    event_cls: Py<PyType>,
    auth: Py<PyAny>,
    session: SlotClass,
    ttl_ms: i64,
    /// Python's loop body for one event: `(event, sessions) -> tuple | None`.
    one: Py<PyAny>,
}

impl SessionKernel {
    /// `None`: hand the event to Python. Otherwise the changes (None, () or a tuple).
    fn step<'py>(
        &self,
        py: Python<'py>,
        e: &Bound<'py, PyAny>,
        sessions: &Bound<'py, PyDict>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(t) = typed_tuple(e, &self.event_cls) else { return Ok(None) };
        if t.len() < EVENT_FIELDS.len() {
            return Ok(None);
        }
        let sid = item(t, EV_SESSION_ID);
        if sid.is_none() || !same(&item(t, EV_KIND), &self.auth) {
            return Ok(Some(py.None().into_bound(py)));
        }
        let Some(ts) = as_i64(&item(t, EV_TS_MS)) else { return Ok(None) };
        let Ok(opener) = sessions.get_item(sid) else { return Ok(None) };
        if let Some(op) = opener {
            if !self.session.is_instance_exact(&op) {
                return Ok(None);
            }
            let Some(opened) = as_i64(&op.getattr(intern!(py, "opened_ts"))?) else {
                return Ok(None);
            };
            let Some(age) = ts.checked_sub(opened) else { return Ok(None) };
            if 0 <= age && age <= self.ttl_ms {
                return self.changes(py, t, &op).map(Some);
            }
        }
        let ctx = self.session.build(
            py,
            &[
                &item(t, EV_TS_MS),
                &item(t, EV_ENTITY),
                &item(t, EV_SRC_COUNTRY),
                &item(t, EV_SRC_ASN),
                &item(t, EV_DEVICE_ID),
                &item(t, EV_USER_AGENT),
                &item(t, EV_SRC_PREFIX),
            ],
        )?;
        sessions.set_item(sid, ctx)?;
        Ok(Some(PyTuple::empty(py).into_any()))
    }

    /// `tuple(SessionContext.changes(event))`.
    fn changes<'py>(
        &self,
        py: Python<'py>,
        t: &Bound<'py, PyTuple>,
        op: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut out: Vec<Bound<'py, PyAny>> = Vec::new();
        let mut push = |name: &Bound<'py, PyString>, was: Bound<'py, PyAny>, now: Bound<'py, PyAny>| -> PyResult<()> {
            out.push(PyTuple::new(py, [name.clone().into_any(), was, now])?.into_any());
            Ok(())
        };
        let entity = op.getattr(intern!(py, "entity"))?;
        let ev_entity = item(t, EV_ENTITY).to_owned();
        if py_ne(&ev_entity, &entity)? {
            push(intern!(py, "entity"), entity, ev_entity)?;
        }
        let country = op.getattr(intern!(py, "country"))?;
        let ev_country = item(t, EV_SRC_COUNTRY).to_owned();
        if country.is_truthy()? && ev_country.is_truthy()? && py_ne(&ev_country, &country)? {
            push(intern!(py, "country"), country, ev_country)?;
        }
        let asn = op.getattr(intern!(py, "asn"))?;
        let ev_asn = item(t, EV_SRC_ASN).to_owned();
        if !asn.is_none() && !ev_asn.is_none() && py_ne(&ev_asn, &asn)? {
            push(intern!(py, "asn"), asn.str()?.into_any(), ev_asn.str()?.into_any())?;
        }
        let device = op.getattr(intern!(py, "device"))?;
        let ev_device = item(t, EV_DEVICE_ID).to_owned();
        if device.is_truthy()? && ev_device.is_truthy()? && py_ne(&ev_device, &device)? {
            push(intern!(py, "device"), device, ev_device)?;
        }
        let ua = op.getattr(intern!(py, "user_agent"))?;
        let ev_ua = item(t, EV_USER_AGENT).to_owned();
        if ua.is_truthy()? && ev_ua.is_truthy()? && py_ne(&ev_ua, &ua)? {
            push(intern!(py, "user_agent"), ua, ev_ua)?;
        }
        Ok(PyTuple::new(py, out)?.into_any())
    }
}

#[pymethods]
impl SessionKernel {
    #[new]
    #[pyo3(signature = (event_cls, auth, session_cls, ttl_s, one))]
    fn new(
        event_cls: Py<PyType>,
        auth: Py<PyAny>,
        session_cls: &Bound<'_, PyType>,
        ttl_s: i64,
        one: Py<PyAny>,
    ) -> PyResult<Self> {
        let ttl_ms = ttl_s
            .checked_mul(1000)
            .ok_or_else(|| PyTypeError::new_err("session_ttl_s out of range"))?;
        let fields = ["opened_ts", "entity", "country", "asn", "device", "user_agent", "prefix"];
        Ok(Self { event_cls, auth, session: SlotClass::new(session_cls, &fields)?, ttl_ms, one })
    }

    /// `Detector.session_changes(events, sessions)`: one changes tuple or None per event.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        sessions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let table = sessions.cast_exact::<PyDict>().ok();
        for e in events.try_iter()? {
            let e = e?;
            let got = match table {
                Some(tb) => self.step(py, &e, tb)?,
                None => None,
            };
            match got {
                Some(v) => out.append(v)?,
                None => out.append(self.one.call1(py, (&e, sessions))?)?,
            }
        }
        Ok(out)
    }
}

// ------------------------------------------------------------- policy gate

/// Effective thresholds of one (service, peer group) and the service's tier.
#[derive(Clone, Copy)]
struct Thr {
    step: f64,
    revoke: f64,
    /// `None` when the tier is not a small int: the tier rule then "may fire".
    tier: Option<i64>,
}

#[derive(Default)]
struct ClassThr {
    none: Option<Thr>,
    by_service: FnvMap<Box<str>, Thr>,
}

/// The peer groups (EntityClass members) and their thresholds by service.
struct ThrCache {
    classes: Vec<(usize, ClassThr)>,
}

// Rule constants of detector/policy.py (SPRAY_FAIL_USERS ... _RARE_HOUR), passed
// by the builder from the module so they cannot drift.
struct Consts {
    spray_fail_users: i64,
    brute_step_up: f64,
    lateral_step_up: f64,
    exfil_z: f64,
    exfil_min_bytes: i64,
    dormant_days: f64,
    fail_burst_step_up: f64,
    sensitive_tier: i64,
    new: f64,
    rare_hour: f64,
}

/// Feature positions read by the rules.
struct Idx {
    asn: usize,
    bytes_out_z: usize,
    country: usize,
    days_idle_log: usize,
    device: usize,
    hosting_asn: usize,
    hour: usize,
    new_hosts_burst_log: usize,
    service: usize,
    ua: usize,
    max: usize,
}

/// Margin for values the gate recomputes (decayed counts, speeds, expm1):
/// within it of a rule's threshold, the gate defers to Python.
const MARGIN: f64 = 1e-6;

#[inline]
fn maybe_ge(x: f64, thr: f64) -> bool {
    // NaN: `x >= thr` is False in Python too; still defer (unusual input).
    x.is_nan() || x >= thr - MARGIN * thr.abs().max(1.0)
}

/// The allow gate in front of `Policy.decide` (see the module docs).
#[pyclass(frozen)]
pub struct PolicyGate {
    event_cls: Py<PyType>,
    baseline_cls: Py<PyType>,
    decide_py: Py<PyAny>,
    thresholds_for: Py<PyAny>,
    tiers: Py<PyDict>,
    allow: Py<PyAny>,
    auth: Py<PyAny>,
    no_ctx: Py<PyAny>,
    vendor: Py<PyAny>,
    /// Keeps the EntityClass members alive: the cache is keyed by their address.
    _classes: Vec<Py<PyAny>>,
    cache: Mutex<ThrCache>,
    half_life_ms: f64,
    travel_min_km: f64,
    impossible_kmh: f64,
    min_events: f64,
    c: Consts,
    i: Idx,
    calls: AtomicU64,
    deferred: AtomicU64,
}

const LN2: f64 = std::f64::consts::LN_2;
const EARTH_KM: f64 = 6371.0088;

fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let p1 = lat1.to_radians();
    let p2 = lat2.to_radians();
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_KM * a.sqrt().min(1.0).asin()
}

impl PolicyGate {
    /// The effective thresholds for the event's (service, peer group).
    fn thresholds<'py>(
        &self,
        event: &Bound<'py, PyAny>,
        service: &Bound<'py, PyAny>,
        class: &Bound<'py, PyAny>,
    ) -> Option<Thr> {
        let cls_ptr = class.as_ptr() as usize;
        let svc: Option<&str> = if service.is_none() {
            None
        } else {
            Some(service.cast_exact::<PyString>().ok()?.to_str().ok()?)
        };
        {
            let cache = self.cache.lock().ok()?;
            let (_, ct) = cache.classes.iter().find(|(p, _)| *p == cls_ptr)?;
            let hit = match svc {
                None => ct.none,
                Some(s) => ct.by_service.get(s).copied(),
            };
            if hit.is_some() {
                return hit;
            }
        }
        // A miss (a handful per run): ask Python, as thresholds_for() would.
        let got = self.thresholds_for.bind(event.py()).call1((event,)).ok()?;
        let got = got.cast_exact::<PyTuple>().ok()?;
        if got.len() != 2 {
            return None;
        }
        let step = as_f64(&item(got, 0))?;
        let revoke = as_f64(&item(got, 1))?;
        let tier = match svc {
            None => Some(0),
            Some(_) => {
                let t = self.tiers.bind(event.py()).get_item(service).ok()?;
                match t {
                    None => Some(0),
                    Some(t) => as_i64(&t),
                }
            }
        };
        let thr = Thr { step, revoke, tier };
        let mut cache = self.cache.lock().ok()?;
        let (_, ct) = cache.classes.iter_mut().find(|(p, _)| *p == cls_ptr)?;
        match svc {
            None => ct.none = Some(thr),
            Some(s) => {
                ct.by_service.insert(s.into(), thr);
            }
        }
        Some(thr)
    }

    /// `Some(())` when the verdict is proven to be `allow`; `None`: ask Python.
    #[allow(clippy::too_many_arguments)]
    fn proves_allow<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        row: &Bound<'py, PyAny>,
        risk: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
    ) -> Option<()> {
        let risk = as_f64(risk)?;
        let e = typed_tuple(event, &self.event_cls)?;
        if e.len() < EVENT_FIELDS.len() {
            return None;
        }
        let class = item(e, EV_ENTITY_CLASS);
        let service = item(e, EV_SERVICE);
        let thr = self.thresholds(event, &service, &class)?;
        if !(risk < thr.step && risk < thr.revoke) {
            return None;
        }
        let row = row.cast_exact::<PyList>().ok()?;
        if row.len() <= self.i.max {
            return None;
        }
        let feat = |i: usize| -> Option<f64> {
            // SAFETY: i <= self.i.max < row.len(), checked above; the list is
            // not mutated while the gate runs (no Python code runs in between).
            as_f64(&unsafe { row.get_item_unchecked(i) })
        };
        let c = &self.c;
        let b = typed_tuple(b, &self.baseline_cls)?;
        if b.len() < BASELINE_FIELDS.len() {
            return None;
        }
        if same(&item(e, EV_KIND), &self.auth) {
            if !same(ctx, &self.no_ctx) {
                let ip = ctx.getattr(intern!(py, "ip")).ok()?;
                if !ip.is_none() {
                    let fu = as_i64(&ip.getattr(intern!(py, "fail_users")).ok()?)?;
                    if fu >= c.spray_fail_users {
                        return None;
                    }
                }
                let changes = ctx.getattr(intern!(py, "session_changes")).ok()?;
                if !changes.is_none() {
                    match changes.cast_exact::<PyTuple>() {
                        Ok(t) if t.is_empty() => {}
                        _ => return None,
                    }
                }
            }
            let success = item(e, EV_SUCCESS);
            let is_true = success.as_ptr() == PyBool::new(py, true).as_ptr();
            let is_false = success.as_ptr() == PyBool::new(py, false).as_ptr();
            if !is_true && !is_false && !success.is_none() {
                return None;
            }
            let fb = item(b, BL_FAIL_BURST);
            let fb = fb.cast_exact::<PyTuple>().ok()?;
            if fb.len() != 2 {
                return None;
            }
            let count = as_f64(&item(&fb, 0))?;
            let burst = if count != 0.0 {
                let last = as_i64(&item(&fb, 1))?;
                let ts = as_i64(&item(e, EV_TS_MS))?;
                let dt = ts.checked_sub(last)?.max(0);
                count * (-LN2 * dt as f64 / self.half_life_ms).exp()
            } else {
                0.0
            };
            if is_false && maybe_ge(burst + 1.0, c.fail_burst_step_up) {
                return None;
            }
            if !is_true {
                return Some(());
            }
            if maybe_ge(burst, c.brute_step_up) {
                return None;
            }
            self.no_travel(py, e, b)?;
            let country_r = feat(self.i.country)?;
            let asn_r = feat(self.i.asn)?;
            let new_place = country_r >= c.new || asn_r >= c.new;
            if feat(self.i.hosting_asn)? == 1.0 && country_r >= c.new {
                return None;
            }
            let service_r = feat(self.i.service)?;
            if asn_r >= c.new || service_r >= c.new {
                // _unfamiliar, exactly (comparisons of row values only).
                let device_r = feat(self.i.device)?;
                let ua_r = feat(self.i.ua)?;
                let new_location = asn_r >= c.new && country_r + asn_r >= 2.0 * c.new;
                let new_client = device_r >= c.new || ua_r >= c.new;
                let n_learned = item(b, BL_N_LEARNED);
                let n_learned = match as_f64(&n_learned) {
                    Some(x) => x,
                    None => as_i64(&n_learned)? as f64,
                };
                let cold = n_learned < self.min_events;
                let no_client_history = cold || same(&class, &self.vendor);
                let stranger = cold && asn_r >= c.new && ua_r >= c.new;
                if (new_location && (new_client || no_client_history)) || stranger {
                    return None;
                }
                let hour_r = feat(self.i.hour)?;
                let odd_context = hour_r >= c.rare_hour || country_r >= c.new;
                let tier_hi = thr.tier.is_none_or(|t| t >= c.sensitive_tier);
                if tier_hi && service_r >= c.new && odd_context {
                    return None;
                }
            }
            if new_place {
                let idle = feat(self.i.days_idle_log)?;
                if !idle.is_nan() && maybe_ge(idle.exp_m1(), c.dormant_days) {
                    return None;
                }
            }
            Some(())
        } else {
            let nb = feat(self.i.new_hosts_burst_log)?;
            if !nb.is_nan() && maybe_ge(nb.exp_m1(), c.lateral_step_up) {
                return None;
            }
            if item(e, EV_DST_INTERNAL).as_ptr() == PyBool::new(py, false).as_ptr() {
                let z = feat(self.i.bytes_out_z)?;
                if z >= c.exfil_z {
                    let bo = item(e, EV_BYTES_OUT);
                    if !bo.is_none() && as_i64(&bo)? >= c.exfil_min_bytes {
                        return None;
                    }
                }
            }
            Some(())
        }
    }

    /// `Some(())` when impossible_travel cannot fire.
    fn no_travel<'py>(
        &self,
        py: Python<'py>,
        e: &Bound<'py, PyTuple>,
        b: &Bound<'py, PyTuple>,
    ) -> Option<()> {
        let _ = py;
        let lat = item(e, EV_SRC_LAT);
        let lon = item(e, EV_SRC_LON);
        let ls = item(b, BL_LAST_SUCCESS);
        if lat.is_none() || lon.is_none() || ls.is_none() {
            return Some(());
        }
        let lim = self.impossible_kmh;
        if lim.is_nan() || lim <= MARGIN {
            return None; // a speed of 0.0 would fire: let Python decide
        }
        let ls = ls.cast_exact::<PyTuple>().ok()?;
        if ls.len() != 4 {
            return None;
        }
        let (lat, lon) = (as_f64(&lat)?, as_f64(&lon)?);
        let (lat0, lon0) = (as_f64(&item(&ls, 1))?, as_f64(&item(&ls, 2))?);
        let ts0 = as_i64(&item(&ls, 0))?;
        let km = if lat0 == lat && lon0 == lon {
            0.0
        } else {
            haversine_km(lat0, lon0, lat, lon)
        };
        let min_km = self.travel_min_km;
        if km < min_km - MARGIN * min_km.abs().max(1.0) {
            return Some(()); // no travel: speed 0.0
        }
        let ts = as_i64(&item(e, EV_TS_MS))?;
        let hours = ((ts.checked_sub(ts0)? as f64) / 3_600_000.0).max(1.0 / 60.0);
        let kmh = km / hours;
        // Python fires on kmh > lim: prove kmh clearly below it.
        if kmh < lim - MARGIN * lim.abs().max(1.0) {
            Some(())
        } else {
            None
        }
    }

    /// The thresholds of `ev`'s (service, peer group) from the cache, asking
    /// Python (`thresholds_for`, through [`Self::thresholds`]) on a miss.
    fn thresholds_bl<'py>(&self, event: &Bound<'py, PyAny>, e: &Bound<'py, PyTuple>, ev: &crate::bl::Ev) -> Option<Thr> {
        let class = item(e, EV_ENTITY_CLASS);
        let cls_ptr = class.as_ptr() as usize;
        {
            let cache = self.cache.lock().ok()?;
            let (_, ct) = cache.classes.iter().find(|(p, _)| *p == cls_ptr)?;
            let hit = match ev.service {
                None => ct.none,
                Some(s) => ct.by_service.get(s).copied(),
            };
            if hit.is_some() {
                return hit;
            }
        }
        self.thresholds(event, &item(e, EV_SERVICE), &class)
    }

    /// [`Self::proves_allow`] on Rust values: the event's fields from `ev`,
    /// the feature row from `row`, the baseline from `b`, the context from
    /// `cx` (`event` is read only for the thresholds cache, which may call
    /// Python's `thresholds_for` on a miss). `Some(())` only when
    /// `Policy.decide` surely returns the plain allow verdict; `None`: ask Python.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn proves_allow_bl(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        ev: &crate::bl::Ev,
        row: &[f64],
        risk: f64,
        cx: &crate::bl::Cx,
        b: &crate::bl::Bl,
    ) -> Option<()> {
        let _ = py;
        let e = typed_tuple(event, &self.event_cls)?;
        if e.len() < EVENT_FIELDS.len() {
            return None;
        }
        let thr = self.thresholds_bl(event, e, ev)?;
        if !(risk < thr.step && risk < thr.revoke) {
            return None;
        }
        if row.len() <= self.i.max {
            return None;
        }
        let feat = |i: usize| row[i];
        let c = &self.c;
        if ev.is_auth {
            if let Some((_, _, fail_users)) = cx.ip {
                if fail_users >= c.spray_fail_users {
                    return None;
                }
            }
            // `if changes:` a non-empty tuple always adds a rule.
            if cx.session_changes.is_some_and(|n| n != 0) {
                return None;
            }
            let is_true = ev.success == Some(true);
            let is_false = ev.success == Some(false);
            let (count, last) = b.fail_burst;
            let burst = if count != 0.0 {
                let dt = ev.ts_ms.checked_sub(last)?.max(0);
                count * (-LN2 * dt as f64 / self.half_life_ms).exp()
            } else {
                0.0
            };
            if is_false && maybe_ge(burst + 1.0, c.fail_burst_step_up) {
                return None;
            }
            if !is_true {
                return Some(());
            }
            if maybe_ge(burst, c.brute_step_up) {
                return None;
            }
            self.no_travel_bl(ev, b)?;
            let country_r = feat(self.i.country);
            let asn_r = feat(self.i.asn);
            let new_place = country_r >= c.new || asn_r >= c.new;
            if feat(self.i.hosting_asn) == 1.0 && country_r >= c.new {
                return None;
            }
            let service_r = feat(self.i.service);
            if asn_r >= c.new || service_r >= c.new {
                // _unfamiliar, exactly (comparisons of row values only).
                let device_r = feat(self.i.device);
                let ua_r = feat(self.i.ua);
                let new_location = asn_r >= c.new && country_r + asn_r >= 2.0 * c.new;
                let new_client = device_r >= c.new || ua_r >= c.new;
                // min_events is an int below 2**53 (checked by the builder):
                // as a float it is exact, so this is Python's float < int.
                let cold = b.n_learned < self.min_events;
                let no_client_history = cold || ev.entity_class == crate::bl::EC_VENDOR;
                let stranger = cold && asn_r >= c.new && ua_r >= c.new;
                if (new_location && (new_client || no_client_history)) || stranger {
                    return None;
                }
                let hour_r = feat(self.i.hour);
                let odd_context = hour_r >= c.rare_hour || country_r >= c.new;
                let tier_hi = thr.tier.is_none_or(|t| t >= c.sensitive_tier);
                if tier_hi && service_r >= c.new && odd_context {
                    return None;
                }
            }
            if new_place {
                let idle = feat(self.i.days_idle_log);
                if !idle.is_nan() && maybe_ge(idle.exp_m1(), c.dormant_days) {
                    return None;
                }
            }
            Some(())
        } else {
            let nb = feat(self.i.new_hosts_burst_log);
            if !nb.is_nan() && maybe_ge(nb.exp_m1(), c.lateral_step_up) {
                return None;
            }
            if ev.dst_internal == Some(false) {
                let z = feat(self.i.bytes_out_z);
                if z >= c.exfil_z {
                    if let Some(bo) = ev.bytes_out {
                        if bo >= c.exfil_min_bytes {
                            return None;
                        }
                    }
                }
            }
            Some(())
        }
    }

    /// [`Self::no_travel`] on Rust values: `Some(())` when impossible_travel cannot fire.
    fn no_travel_bl(&self, ev: &crate::bl::Ev, b: &crate::bl::Bl) -> Option<()> {
        let (Some(lat), Some(lon), Some(ls)) = (ev.src_lat, ev.src_lon, &b.last_success) else {
            return Some(());
        };
        let lim = self.impossible_kmh;
        if lim.is_nan() || lim <= MARGIN {
            return None; // a speed of 0.0 would fire: let Python decide
        }
        let km = if ls.lat == lat && ls.lon == lon {
            0.0
        } else {
            haversine_km(ls.lat, ls.lon, lat, lon)
        };
        let min_km = self.travel_min_km;
        if km < min_km - MARGIN * min_km.abs().max(1.0) {
            return Some(()); // no travel: speed 0.0
        }
        let hours = ((ev.ts_ms.checked_sub(ls.ts)? as f64) / 3_600_000.0).max(1.0 / 60.0);
        let kmh = km / hours;
        // Python fires on kmh > lim: prove kmh clearly below it.
        if kmh < lim - MARGIN * lim.abs().max(1.0) {
            Some(())
        } else {
            None
        }
    }
}

#[pymethods]
impl PolicyGate {
    /// Built by `detector.native.policy_kernel`; every argument comes from the
    /// Python policy and its module so that the two cannot drift apart.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (event_cls, baseline_cls, decide, thresholds_for, tiers, allow, auth, no_ctx, vendor, classes,
                        half_life_s, travel_min_km, impossible_kmh, min_events, consts, idx))]
    fn new(
        event_cls: Py<PyType>,
        baseline_cls: Py<PyType>,
        decide: Py<PyAny>,
        thresholds_for: Py<PyAny>,
        tiers: Py<PyDict>,
        allow: Py<PyAny>,
        auth: Py<PyAny>,
        no_ctx: Py<PyAny>,
        vendor: Py<PyAny>,
        classes: Vec<Py<PyAny>>,
        half_life_s: f64,
        travel_min_km: f64,
        impossible_kmh: f64,
        min_events: i64,
        consts: (i64, f64, f64, f64, i64, f64, f64, i64, f64, f64),
        idx: (usize, usize, usize, usize, usize, usize, usize, usize, usize, usize),
    ) -> PyResult<Self> {
        let (spray, brute, lateral, exfil_z, exfil_min, dormant, fail_burst, tier, new, rare) =
            consts;
        let (asn, boz, country, idle, device, hosting, hour, nhb, service, ua) = idx;
        let max = [asn, boz, country, idle, device, hosting, hour, nhb, service, ua]
            .into_iter()
            .max()
            .unwrap_or(0);
        let cache = ThrCache {
            classes: classes
                .iter()
                .map(|c| (c.as_ptr() as usize, ClassThr::default()))
                .collect(),
        };
        Ok(Self {
            event_cls,
            baseline_cls,
            decide_py: decide,
            thresholds_for,
            tiers,
            allow,
            auth,
            no_ctx,
            vendor,
            _classes: classes,
            cache: Mutex::new(cache),
            half_life_ms: half_life_s * 1000.0,
            travel_min_km,
            impossible_kmh,
            min_events: min_events as f64,
            c: Consts {
                spray_fail_users: spray,
                brute_step_up: brute,
                lateral_step_up: lateral,
                exfil_z,
                exfil_min_bytes: exfil_min,
                dormant_days: dormant,
                fail_burst_step_up: fail_burst,
                sensitive_tier: tier,
                new,
                rare_hour: rare,
            },
            i: Idx {
                asn,
                bytes_out_z: boz,
                country,
                days_idle_log: idle,
                device,
                hosting_asn: hosting,
                hour,
                new_hosts_burst_log: nhb,
                service,
                ua,
                max,
            },
            calls: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
        })
    }

    /// `Policy.decide(event, row, risk, cold, ctx, b, profile) -> Verdict`.
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        row: &Bound<'py, PyAny>,
        risk: &Bound<'py, PyAny>,
        cold: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
        profile: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.proves_allow(py, event, row, risk, ctx, b).is_some() {
            return Ok(self.allow.clone_ref(py));
        }
        self.deferred.fetch_add(1, Ordering::Relaxed);
        self.decide_py
            .call1(py, (event, row, risk, cold, ctx, b, profile))
    }

    /// `(calls, deferred)`: how often the gate was asked and handed over to Python.
    fn counts(&self) -> (u64, u64) {
        (self.calls.load(Ordering::Relaxed), self.deferred.load(Ordering::Relaxed))
    }
}
