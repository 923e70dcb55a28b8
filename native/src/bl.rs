//! Baselines owned by Rust: the value types of the compiled engine.
//!
//! [`Bl`] holds exactly what a `detector.baseline.Baseline` holds, in Rust
//! types, mutated in place by the compiled engine (`blengine.rs`) instead of
//! being copied on every event. It converts to and from the Python named
//! tuple losslessly (`blcore.rs`): a baseline whose Python form holds anything
//! these types cannot represent exactly (an int past 64 bits, an int where a
//! float is expected, a foreign mapping type...) stays a Python value and the
//! engine hands its events to the Python pipeline.
//!
//! [`Ev`] is the read-only view of one `detector.events.Event` that the
//! update, the features and the policy gate read, and [`Cx`] that of its
//! `EventContext`. Both are built once per event with exact type checks
//! ([`Ev::from_py`], [`Cx::from_py`]): `None` means "not representable", and
//! the caller then uses the Python pipeline for that event.
//!
//! Insertion order is kept everywhere Python keeps it (dict order shows in
//! the serialised form and in some tie-breaks): every map here is a `Vec` in
//! the Python dict's insertion order. The maps are small (capped value sets,
//! at most 168 hours, 11 dimensions, 4 traffic keys), so a linear scan is as
//! fast as hashing.

use pyo3::prelude::*;
use pyo3::Borrowed;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString, PyTuple};

use crate::sstr::SStr;
use crate::layout::{
    EV_BYTES_IN, EV_BYTES_OUT, EV_DEVICE_ID, EV_DST_ASN, EV_DST_COUNTRY, EV_DST_HOSTNAME,
    EV_DST_INTERNAL, EV_DST_IP, EV_DST_PORT, EV_ENTITY_CLASS, EV_ENTITY_KIND, EV_IS_MFA, EV_KIND,
    EV_SERVICE, EV_SRC_ASN, EV_SRC_CITY, EV_SRC_COUNTRY, EV_SRC_LAT, EV_SRC_LON, EV_SRC_PREFIX,
    EV_SUCCESS, EV_TS_MS, EV_USER_AGENT, EVENT_FIELDS,
};

/// The keys of a Rust-held baseline's `seen`, `seen_totals` and `traffic`
/// maps: `detector.baseline.DIMENSIONS`, then `TRAFFIC_KEYS`. The update
/// only ever writes these; a baseline keyed by any other name (only a
/// foreign or hand-made state can be) stays a Python value.
pub const NAMES: [&str; 15] = [
    "country",
    "city",
    "asn",
    "prefix",
    "device",
    "ua",
    "service",
    "host",
    "port",
    "dst_country",
    "dst_asn",
    "int_out",
    "int_in",
    "ext_out",
    "ext_in",
];
/// Position of the first traffic key in [`NAMES`].
pub const FIRST_TRAFFIC_NAME: usize = 11;

/// `detector.baseline.DIMENSIONS`, in order (the head of [`NAMES`]): the `D_*` indices refer to it.
pub const DIMENSIONS: &[&str] = NAMES.split_at(FIRST_TRAFFIC_NAME).0;
/// `detector.baseline.TRAFFIC_KEYS`: int_out, int_in, ext_out, ext_in (the tail of [`NAMES`]).
pub const TRAFFIC_KEYS: &[&str] = NAMES.split_at(FIRST_TRAFFIC_NAME).1;
pub const D_COUNTRY: usize = 0;
pub const D_CITY: usize = 1;
pub const D_ASN: usize = 2;
pub const D_PREFIX: usize = 3;
pub const D_DEVICE: usize = 4;
pub const D_UA: usize = 5;
pub const D_SERVICE: usize = 6;
pub const D_HOST: usize = 7;
pub const D_PORT: usize = 8;
pub const D_DST_COUNTRY: usize = 9;
pub const D_DST_ASN: usize = 10;

/// One of [`NAMES`], by position: one byte where a `String` took 24 plus a
/// heap block (a baseline holds ~25 such keys).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name(u8);

impl Name {
    /// The name `s`, if it is one of [`NAMES`].
    #[inline]
    pub fn of(s: &str) -> Option<Name> {
        NAMES.iter().position(|n| *n == s).map(|i| Name(i as u8))
    }

    /// `NAMES[i]` (`i` in range: a constant index of the caller's).
    #[inline]
    pub const fn at(i: usize) -> Name {
        assert!(i < NAMES.len());
        Name(i as u8)
    }

    #[inline]
    pub fn as_str(self) -> &'static str {
        NAMES[self.0 as usize]
    }
}

/// The [`Name`]s by what they stand for.
pub mod names {
    use super::Name;
    pub const COUNTRY: Name = Name::at(0);
    pub const CITY: Name = Name::at(1);
    pub const ASN: Name = Name::at(2);
    pub const PREFIX: Name = Name::at(3);
    pub const DEVICE: Name = Name::at(4);
    pub const UA: Name = Name::at(5);
    pub const SERVICE: Name = Name::at(6);
    pub const HOST: Name = Name::at(7);
    pub const PORT: Name = Name::at(8);
    pub const DST_COUNTRY: Name = Name::at(9);
    pub const DST_ASN: Name = Name::at(10);
    pub const INT_OUT: Name = Name::at(11);
    pub const INT_IN: Name = Name::at(12);
    pub const EXT_OUT: Name = Name::at(13);
    pub const EXT_IN: Name = Name::at(14);
}

impl std::ops::Deref for Name {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Name {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One `hours` item: hour of week -> weight. Packed (9 bytes, not 16): a
/// baseline holds up to 168 of them, and they are only ever copied out.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HourW {
    pub h: u8,
    pub w: i64,
}

/// One distinct value of a dimension: Python's `value -> (weight, last_seen_s)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub value: SStr,
    /// Landmark-scaled weight in thousandths (a Python int).
    pub w: i64,
    /// Last seen, epoch seconds (a Python int).
    pub last_s: i64,
}

/// One dimension's value set: Python's `seen[name]`, entries in insertion order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    pub name: Name,
    pub entries: Vec<Entry>,
}

/// `Baseline.last_success`: `(ts_ms, lat, lon, country)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LastSuccess {
    pub ts: i64,
    pub lat: f64,
    pub lon: f64,
    pub country: Option<SStr>,
}

/// One entity's baseline: the fields of `detector.baseline.Baseline`, in its order.
///
/// A mapping field is `None` when the Python value is the shared empty
/// `_NO_MAP` (a `MappingProxyType`, as in `EMPTY`), `Some(vec)` when it is a
/// plain `dict` (possibly empty: `_renormalise` and `from_dict` build empty
/// dicts), so that the round trip gives back the same Python types.
#[derive(Clone, Debug, PartialEq)]
pub struct Bl {
    pub n_seen: i64,
    pub n_learned: f64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub t0: i64,
    /// `hours`: hour of week (a Python int in 0..168) -> weight, insertion order.
    pub hours: Option<Vec<HourW>>,
    pub hours_total: i64,
    /// `seen`: dimension name -> values, insertion order of both levels.
    pub seen: Option<Vec<Dim>>,
    /// `seen_totals`: dimension name -> total weight, insertion order (its
    /// keys need not match `seen`'s: `from_dict` reads totals of dimensions
    /// without values).
    pub seen_totals: Option<Vec<(Name, i64)>>,
    pub last_success: Option<LastSuccess>,
    pub fail_rate: f64,
    /// `(decayed count, ts_ms)`: a Python (float, int).
    pub fail_burst: (f64, i64),
    /// `(decayed count, ts_ms)`: a Python (float, int).
    pub new_hosts: (f64, i64),
    /// `traffic`: key -> (n, mean, var), insertion order.
    pub traffic: Option<Vec<(Name, [f64; 3])>>,
    /// `signals`: (dedup key, level, ts_ms), oldest first.
    pub signals: Vec<(SStr, i64, i64)>,
}

impl Default for Bl {
    /// `detector.baseline.EMPTY`.
    fn default() -> Self {
        Bl {
            n_seen: 0,
            n_learned: 0.0,
            first_ts: None,
            last_ts: None,
            t0: 0,
            hours: None,
            hours_total: 0,
            seen: None,
            seen_totals: None,
            last_success: None,
            fail_rate: 0.0,
            fail_burst: (0.0, 0),
            new_hosts: (0.0, 0),
            traffic: None,
            signals: Vec::new(),
        }
    }
}

impl Bl {
    /// `hours.get(h, 0)`.
    #[inline]
    pub fn hour(&self, h: u8) -> i64 {
        match &self.hours {
            Some(v) => v.iter().find(|x| x.h == h).map_or(0, |x| x.w),
            None => 0,
        }
    }

    /// `seen.get(name)`: the dimension's values, if any.
    #[inline]
    pub fn dim(&self, name: Name) -> Option<&Dim> {
        self.seen.as_ref()?.iter().find(|d| d.name == name)
    }

    /// `seen_totals.get(name, 0)`.
    #[inline]
    pub fn total(&self, name: Name) -> i64 {
        match &self.seen_totals {
            Some(v) => v.iter().find(|(k, _)| *k == name).map_or(0, |(_, t)| *t),
            None => 0,
        }
    }

    /// `traffic.get(key)`.
    #[inline]
    pub fn traffic_of(&self, key: Name) -> Option<&[f64; 3]> {
        self.traffic.as_ref()?.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }
}

impl Dim {
    /// `entries.get(value)`.
    #[inline]
    pub fn get(&self, value: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.value == value)
    }
}

/// `EntityKind` members, in declaration order.
pub const EK_USER: u8 = 0;
pub const EK_DEVICE: u8 = 1;
/// `EntityClass` members, in declaration order.
pub const EC_EMPLOYEE: u8 = 0;
pub const EC_ADMIN: u8 = 1;
pub const EC_VENDOR: u8 = 2;
pub const EC_SERVICE: u8 = 3;
pub const EC_DEVICE: u8 = 4;

/// The enum members an [`Ev`] is recognised by (identity comparisons).
pub struct EvTypes {
    pub event_type: Py<PyAny>,
    pub auth: Py<PyAny>,
    pub network: Py<PyAny>,
    /// `EntityKind` members in declaration order (index = `EK_*`).
    pub entity_kinds: Vec<Py<PyAny>>,
    /// `EntityClass` members in declaration order (index = `EC_*`).
    pub entity_classes: Vec<Py<PyAny>>,
}

impl EvTypes {
    /// Reads `detector.events`' `Event`, `EventKind`, `EntityKind` and `EntityClass`.
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        let events = py.import("detector.events")?;
        let kind = events.getattr("EventKind")?;
        let members = |cls: &str, names: &[&str]| -> PyResult<Vec<Py<PyAny>>> {
            let c = events.getattr(cls)?;
            names.iter().map(|n| Ok(c.getattr(*n)?.unbind())).collect()
        };
        Ok(EvTypes {
            event_type: events.getattr("Event")?.unbind(),
            auth: kind.getattr("AUTH")?.unbind(),
            network: kind.getattr("NETWORK")?.unbind(),
            entity_kinds: members("EntityKind", &["USER", "DEVICE"])?,
            entity_classes: members(
                "EntityClass",
                &["EMPLOYEE", "ADMIN", "VENDOR", "SERVICE", "DEVICE"],
            )?,
        })
    }
}

/// The fields of one `Event` that the update, the features and the gate read.
///
/// Strings borrow the event's own `str` objects. Python truthiness is the
/// reader's business: `event.dst_hostname or event.dst_ip` skips an empty
/// hostname (`""` is false), `if event.dst_internal:` is `Some(true)` only.
#[derive(Clone, Debug)]
pub struct Ev<'a> {
    pub is_auth: bool,
    pub ts_ms: i64,
    /// `EK_*`.
    pub entity_kind: u8,
    /// `EC_*`.
    pub entity_class: u8,
    pub success: Option<bool>,
    pub is_mfa: Option<bool>,
    pub service: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub src_prefix: Option<&'a str>,
    pub src_country: Option<&'a str>,
    pub src_city: Option<&'a str>,
    pub src_lat: Option<f64>,
    pub src_lon: Option<f64>,
    pub src_asn: Option<i64>,
    pub device_id: Option<&'a str>,
    pub dst_ip: Option<&'a str>,
    pub dst_hostname: Option<&'a str>,
    pub dst_port: Option<i64>,
    pub dst_country: Option<&'a str>,
    pub dst_asn: Option<i64>,
    pub dst_internal: Option<bool>,
    pub bytes_in: Option<i64>,
    pub bytes_out: Option<i64>,
}

/// The UTF-8 text of the `str` object at `ptr`, or `None` for a string with
/// lone surrogates (no UTF-8 form; the error is cleared).
///
/// # Safety
///
/// `ptr` points to a live `str` (or an instance of a `str` subclass) that
/// outlives `'a`. CPython caches a string's UTF-8 form inside the object, so
/// the returned bytes live as long as the object, and they are valid UTF-8
/// whenever the call succeeds.
pub(crate) unsafe fn utf8_of<'a>(ptr: *mut pyo3::ffi::PyObject) -> Option<&'a str> {
    let mut size: pyo3::ffi::Py_ssize_t = 0;
    let data = pyo3::ffi::PyUnicode_AsUTF8AndSize(ptr, &mut size);
    if data.is_null() {
        pyo3::ffi::PyErr_Clear();
        return None;
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
    Some(std::str::from_utf8_unchecked(bytes))
}

/// `None` -> `Some(None)`, an exact `str` -> `Some(Some(s))`, else `None`.
fn opt_str<'a>(o: Borrowed<'a, '_, PyAny>) -> Option<Option<&'a str>> {
    if o.is_none() {
        return Some(None);
    }
    if !o.is_exact_instance_of::<PyString>() {
        return None;
    }
    // SAFETY: `o` is an exact `str`, which the event tuple holds for 'a (the
    // lifetime of the `Borrowed`).
    unsafe { utf8_of(o.as_ptr()) }.map(Some)
}

/// `None` -> `Some(None)`, an exact int within i64 -> `Some(Some(i))`, else `None`.
fn opt_i64(o: Borrowed<'_, '_, PyAny>) -> Option<Option<i64>> {
    if o.is_none() {
        return Some(None);
    }
    if !o.is_exact_instance_of::<PyInt>() {
        return None;
    }
    o.extract::<i64>().ok().map(Some)
}

/// `None` -> `Some(None)`, an exact float -> `Some(Some(x))`, else `None`.
fn opt_f64(o: Borrowed<'_, '_, PyAny>) -> Option<Option<f64>> {
    if o.is_none() {
        return Some(None);
    }
    let f = o.cast_exact::<PyFloat>().ok()?;
    Some(Some(f.value()))
}

/// `None` -> `Some(None)`, `True`/`False` -> `Some(Some(b))`, else `None`.
fn opt_bool(o: Borrowed<'_, '_, PyAny>) -> Option<Option<bool>> {
    if o.is_none() {
        return Some(None);
    }
    let b = o.cast_exact::<PyBool>().ok()?;
    Some(Some(b.is_true()))
}

fn member_index(o: Borrowed<'_, '_, PyAny>, members: &[Py<PyAny>]) -> Option<u8> {
    members.iter().position(|m| m.as_ptr() == o.as_ptr()).map(|i| i as u8)
}

impl<'a> Ev<'a> {
    /// Reads an exact `Event`; `None` when it is anything else or a field has
    /// a type the compiled engine does not model (the caller uses Python).
    pub fn from_py<'py>(event: &'a Bound<'py, PyAny>, t: &EvTypes) -> Option<Ev<'a>> {
        if event.get_type().as_ptr() != t.event_type.as_ptr() {
            return None;
        }
        let tup: &'a Bound<'py, PyTuple> = event.cast::<PyTuple>().ok()?;
        if tup.len() != EVENT_FIELDS.len() {
            return None;
        }
        let get = |i: usize| -> Option<Borrowed<'a, 'py, PyAny>> { tup.get_borrowed_item(i).ok() };
        let kind = get(EV_KIND)?;
        let is_auth = if kind.as_ptr() == t.auth.as_ptr() {
            true
        } else if kind.as_ptr() == t.network.as_ptr() {
            false
        } else {
            return None;
        };
        Some(Ev {
            is_auth,
            ts_ms: opt_i64(get(EV_TS_MS)?)??,
            entity_kind: member_index(get(EV_ENTITY_KIND)?, &t.entity_kinds)?,
            entity_class: member_index(get(EV_ENTITY_CLASS)?, &t.entity_classes)?,
            success: opt_bool(get(EV_SUCCESS)?)?,
            is_mfa: opt_bool(get(EV_IS_MFA)?)?,
            service: opt_str(get(EV_SERVICE)?)?,
            user_agent: opt_str(get(EV_USER_AGENT)?)?,
            src_prefix: opt_str(get(EV_SRC_PREFIX)?)?,
            src_country: opt_str(get(EV_SRC_COUNTRY)?)?,
            src_city: opt_str(get(EV_SRC_CITY)?)?,
            src_lat: opt_f64(get(EV_SRC_LAT)?)?,
            src_lon: opt_f64(get(EV_SRC_LON)?)?,
            src_asn: opt_i64(get(EV_SRC_ASN)?)?,
            device_id: opt_str(get(EV_DEVICE_ID)?)?,
            dst_ip: opt_str(get(EV_DST_IP)?)?,
            dst_hostname: opt_str(get(EV_DST_HOSTNAME)?)?,
            dst_port: opt_i64(get(EV_DST_PORT)?)?,
            dst_country: opt_str(get(EV_DST_COUNTRY)?)?,
            dst_asn: opt_i64(get(EV_DST_ASN)?)?,
            dst_internal: opt_bool(get(EV_DST_INTERNAL)?)?,
            bytes_in: opt_i64(get(EV_BYTES_IN)?)?,
            bytes_out: opt_i64(get(EV_BYTES_OUT)?)?,
        })
    }
}

/// An event's `EventContext`, as the features and the gate read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cx {
    /// `ctx.ip`: `(users, failures, fail_users)` of the `IpStats`, or None.
    pub ip: Option<(i64, i64, i64)>,
    /// `len(ctx.session_changes)`, or None when `ctx.session_changes` is None.
    pub session_changes: Option<usize>,
}

impl Cx {
    /// Reads an `EventContext` (its `ip` an exact `IpStats` of ints, its
    /// `session_changes` None or a tuple); `None` for anything else.
    pub fn from_py(ctx: &Bound<'_, PyAny>, ip_stats_type: &Py<PyAny>) -> Option<Cx> {
        let py = ctx.py();
        let ip = ctx.getattr(pyo3::intern!(py, "ip")).ok()?;
        let ip = if ip.is_none() {
            None
        } else {
            if ip.get_type().as_ptr() != ip_stats_type.as_ptr() {
                return None;
            }
            let field = |name: &Bound<'_, PyString>| -> Option<i64> {
                let v = ip.getattr(name).ok()?;
                if !v.is_exact_instance_of::<PyInt>() {
                    return None;
                }
                v.extract::<i64>().ok()
            };
            Some((
                field(pyo3::intern!(py, "users"))?,
                field(pyo3::intern!(py, "failures"))?,
                field(pyo3::intern!(py, "fail_users"))?,
            ))
        };
        let changes = ctx.getattr(pyo3::intern!(py, "session_changes")).ok()?;
        let session_changes = if changes.is_none() {
            None
        } else {
            Some(changes.cast_exact::<PyTuple>().ok()?.len())
        };
        Some(Cx { ip, session_changes })
    }
}
