//! Parser fast path: `detector.events._fast_ocsf` (and later `_fast_ecs`, `_fast_native`).
//!
//! `ParseKernels(events_module)` binds the kernels to the Python parser's own
//! objects (the `Event` class, the enum members, the IP memo and the helpers it
//! calls for the uncommon parts), so a kernel returns exactly what the Python
//! fast path returns: the same `Event` values, of the same types, with the very
//! enum members. Like the Python fast path, a kernel never reports an error: at
//! the first doubt (an unusual shape, a fault, an internal error) it returns
//! `None`, and `parse_event` runs the careful Python parser, which either
//! accepts the document after all or names the reject reason. So returning
//! `None` is always safe, only slower.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::jparse::StrCache;
use crate::layout::*;

/// Longest accepted string, in characters (`events.MAX_STR_LEN`).
pub(crate) const MAX_STR_LEN: usize = 1024;
/// A document of at most this many bytes cannot hold a too-long string (`events._NO_LONG_STRINGS`).
const NO_LONG_STRINGS: usize = MAX_STR_LEN + 2;
/// `events.MAX_TS_MS`: 2100-01-01T00:00:00Z, excluded.
pub(crate) const MAX_TS_MS: i64 = 4_102_444_800_000;
/// `events._MAX_CODE`: a non-negative int32.
pub(crate) const MAX_CODE: i64 = 2_147_483_647;
/// `events._MAX_ASN`.
pub(crate) const MAX_ASN: i64 = 4_294_967_295;
/// 2**63 as a float: `0 <= v <= 2**63 - 1` for a float `v` is `0.0 <= v < 2**63`
/// (Python compares floats and ints exactly; no float lies in (2**63 - 1, 2**63)).
pub(crate) const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// Why a kernel gives up: always "ask the careful parser" (`None`).
pub(crate) struct Doubt;

impl From<std::convert::Infallible> for Doubt {
    fn from(x: std::convert::Infallible) -> Self {
        match x {}
    }
}

impl From<PyErr> for Doubt {
    fn from(_: PyErr) -> Self {
        // An internal error (overflow, memory...) is a doubt too: the careful
        // parser decides, and raises what it raises.
        Doubt
    }
}

pub(crate) type R<T> = Result<T, Doubt>;

/// Binds the values of an object's keys, by one pass over its items.
///
/// `scan!(obj; "a" => a, "b" => b)` declares `a` and `b` as
/// `Option<Bound<PyAny>>`: the value of that key, `None` when the object is
/// absent, the key is absent or its value is null, exactly as
/// `obj.get(key)` with null as absent. One pass over a JSON object's few keys
/// costs less than a hash lookup per wanted key (most of which are absent).
/// A key that is not a str cannot come from orjson: a doubt.
macro_rules! scan {
    ($parent:expr; $($name:literal => $var:ident),+ $(,)?) => {
        $(let mut $var: Option<Bound<'_, PyAny>> = None;)+
        if let Some(parent) = $parent {
            for (key, value) in parent.iter() {
                if value.is_none() {
                    continue;
                }
                let key = key.cast_into_exact::<PyString>().map_err(|_| Doubt)?;
                match key.to_str()?.as_bytes() {
                    $($name => $var = Some(value),)+
                    _ => {}
                }
            }
        }
    };
}

/// True when `cls` is a tuple subtype with tuple's instance layout (same basic
/// and item sizes), so that its instances can be filled in place
/// ([`tuple_in_place`]).
pub(crate) fn plain_tuple_subtype(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let tuple_type = cls.py().get_type::<PyTuple>();
    let same = |attr: &str| -> PyResult<bool> {
        Ok(cls.getattr(attr)?.extract::<isize>()? == tuple_type.getattr(attr)?.extract::<isize>()?)
    };
    Ok(cls.is_subclass(&tuple_type)? && same("__basicsize__")? && same("__itemsize__")?)
}

/// An instance of the tuple subtype `cls` holding `items`, allocated with its
/// `tp_alloc` and filled in place, as CPython's own `tuple_subtype_new` does.
///
/// # Safety
///
/// `cls` must be a type for which [`plain_tuple_subtype`] is true. Each slot
/// is filled once with an owned reference (`PyTuple_SET_ITEM` steals it);
/// nothing else can see the object before it is filled, as no Python code
/// runs in between.
pub(crate) unsafe fn tuple_in_place<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyType>,
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
) -> R<Bound<'py, PyAny>> {
    let tp = cls.as_ptr() as *mut ffi::PyTypeObject;
    let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
    let obj = alloc(tp, items.len() as ffi::Py_ssize_t);
    if obj.is_null() {
        return Err(PyErr::fetch(py).into());
    }
    for (i, item) in items.enumerate() {
        ffi::PyTuple_SET_ITEM(obj, i as ffi::Py_ssize_t, item.into_ptr());
    }
    Ok(Bound::from_owned_ptr(py, obj))
}

/// The parser's fast paths, bound to `detector.events`' own objects.
#[pyclass(frozen, module = "detector._native")]
pub struct ParseKernels {
    pub(crate) event_type: Py<PyType>,
    /// True when `Event` is a plain tuple subtype whose instances can be
    /// allocated with `tp_alloc` and filled in place (checked at construction).
    pub(crate) alloc_in_place: bool,
    pub(crate) tuple_new: Py<PyAny>,
    pub(crate) auth: Py<PyAny>,
    pub(crate) network: Py<PyAny>,
    pub(crate) user_kind: Py<PyAny>,
    pub(crate) device_kind: Py<PyAny>,
    pub(crate) employee: Py<PyAny>,
    pub(crate) device_class: Py<PyAny>,
    pub(crate) ocsf: Py<PyString>,
    pub(crate) native: Py<PyString>,
    pub(crate) ms_from_iso: Py<PyAny>,
    /// `_OCSF_USER_TYPE_BY_ID` as (id, caption).
    pub(crate) user_type_by_id: Vec<(i64, Py<PyAny>)>,
    /// `_CLASS_BY_TAG` as (tag, class), for ASCII tags.
    pub(crate) class_by_tag: Vec<(String, Py<PyAny>)>,
    pub(crate) class_by_tag_dict: Py<PyDict>,
    pub(crate) ip_memo: Py<PyDict>,
    pub(crate) ip_info: Py<PyAny>,
    pub(crate) derived_id: Py<PyAny>,
    pub(crate) lower_name: Py<PyString>,
    /// The reader's string cache (`jparse::StrCache`). Taken with `try_lock`:
    /// a call made while another holds it (another thread, between the GIL
    /// switches of a Python helper) reads without it.
    pub(crate) str_cache: Mutex<StrCache>,
}

/// A nested object: `None` when absent or null, a doubt when not a dict.
#[inline]
fn obj<'py>(v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyDict>>> {
    match v {
        None => Ok(None),
        Some(v) => v.cast_into_exact::<PyDict>().map(Some).map_err(|_| Doubt),
    }
}

/// Reads strings and checks their length when the document is long.
struct Strs {
    long_doc: bool,
}

impl Strs {
    /// A string field as sent (`None` when absent); a doubt when not a str or too long.
    #[inline]
    fn string<'py>(&self, v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyString>>> {
        match v {
            None => Ok(None),
            Some(v) => {
                let s = v.cast_into_exact::<PyString>().map_err(|_| Doubt)?;
                // Python checks lengths only in long documents: a short one cannot
                // hold a too-long string, so checking there too would change nothing.
                if self.long_doc && s.len()? > MAX_STR_LEN {
                    return Err(Doubt);
                }
                Ok(Some(s))
            }
        }
    }

    /// An identifier: like `string`, but an empty string counts as missing.
    #[inline]
    fn ident<'py>(&self, v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyString>>> {
        Ok(self.string(v)?.filter(|s| !is_empty(s)))
    }
}

#[inline]
pub(crate) fn is_empty(s: &Bound<'_, PyString>) -> bool {
    // SAFETY: `s` is a live str object; PyUnicode_GET_LENGTH reads its length field.
    unsafe { ffi::PyUnicode_GET_LENGTH(s.as_ptr()) == 0 }
}

/// An exact int within `lo..=hi`, or `None` for anything else (other types, out of range).
#[inline]
fn int_in(v: &Bound<'_, PyAny>, lo: i64, hi: i64) -> Option<i64> {
    let i = v.cast_exact::<PyInt>().ok()?;
    let x: i64 = i.extract().ok()?; // beyond int64 is beyond every range here
    (lo..=hi).contains(&x).then_some(x)
}

/// An optional code (`activity_id` and friends): a non-negative int32, else a doubt.
#[inline]
fn code(v: Option<&Bound<'_, PyAny>>) -> R<Option<i64>> {
    match v {
        None => Ok(None),
        Some(v) => int_in(v, 0, MAX_CODE).map(Some).ok_or(Doubt),
    }
}

/// A counter (`_count`): an int in 0..=2**63-1 as is, a float in range truncated.
#[inline]
fn count<'py>(v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyAny>>> {
    let Some(v) = v else { return Ok(None) };
    if int_in(&v, 0, i64::MAX).is_some() {
        return Ok(Some(v));
    }
    if let Ok(f) = v.cast_exact::<PyFloat>() {
        let x = f.value();
        if (0.0..TWO_63).contains(&x) {
            // int(x) truncates toward zero; x < 2**63 fits an i64.
            return Ok(Some((x.trunc() as i64).into_pyobject(v.py())?.into_any()));
        }
    }
    Err(Doubt)
}

/// An AS number: an int in 0..=MAX_ASN as is; anything else (a string of digits,
/// or a fault) is the careful parser's.
#[inline]
fn asn<'py>(v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyAny>>> {
    match v {
        None => Ok(None),
        Some(n) => {
            int_in(&n, 0, MAX_ASN).ok_or(Doubt)?;
            Ok(Some(n))
        }
    }
}

/// A coordinate in -limit..=limit as a float (`float(v)`), else a doubt (NaN fails too).
#[inline]
fn coord<'py>(v: Option<Bound<'py, PyAny>>, limit: f64) -> R<Option<Bound<'py, PyAny>>> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(f) = v.cast_exact::<PyFloat>() {
        let x = f.value();
        if -limit <= x && x <= limit {
            return Ok(Some(v)); // float(v) is v itself
        }
        return Err(Doubt);
    }
    let lim = limit as i64; // 90 or 180: exact
    match int_in(&v, -lim, lim) {
        Some(x) => Ok(Some(PyFloat::new(v.py(), x as f64).into_any())),
        None => Err(Doubt),
    }
}

/// A country code (`_ALPHA2`): two ASCII upper-case letters, else a doubt.
#[inline]
fn country<'py>(v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyAny>>> {
    let Some(v) = v else { return Ok(None) };
    let s = v.cast_exact::<PyString>().map_err(|_| Doubt)?;
    let b = s.to_str()?.as_bytes();
    if b.len() == 2 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() {
        Ok(Some(v))
    } else {
        Err(Doubt)
    }
}

/// An optional bool, else a doubt.
#[inline]
fn boolean<'py>(v: Option<Bound<'py, PyAny>>) -> R<Option<Bound<'py, PyAny>>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_exact_instance_of::<PyBool>() => Ok(Some(v)),
        Some(_) => Err(Doubt),
    }
}

/// An int value, as a new Python int.
#[inline]
pub(crate) fn int_obj(py: Python<'_>, x: i64) -> R<Bound<'_, PyAny>> {
    Ok(x.into_pyobject(py)?.into_any())
}

fn opt_int(py: Python<'_>, x: Option<i64>) -> R<Option<Bound<'_, PyAny>>> {
    x.map(|x| int_obj(py, x)).transpose()
}

pub(crate) fn py_bool(py: Python<'_>, b: bool) -> Bound<'_, PyAny> {
    PyBool::new(py, b).to_owned().into_any()
}

impl ParseKernels {
    /// `x.lower()` for a str: ASCII in Rust, anything else by Python's own `str.lower`.
    pub(crate) fn lower<'py>(&self, s: Bound<'py, PyString>) -> R<Bound<'py, PyAny>> {
        let py = s.py();
        let text = s.to_str()?;
        if text.is_ascii() {
            if !text.bytes().any(|b| b.is_ascii_uppercase()) {
                return Ok(s.into_any()); // already lower case: an equal str
            }
            return Ok(PyString::new(py, &text.to_ascii_lowercase()).into_any());
        }
        Ok(s.call_method0(self.lower_name.bind(py))?)
    }

    /// `_CLASS_BY_TAG.get(tag.lower(), _EMPLOYEE) if tag else _EMPLOYEE`.
    pub(crate) fn classify<'py>(&self, py: Python<'py>, tag: Option<&Bound<'py, PyString>>) -> R<Bound<'py, PyAny>> {
        let employee = || self.employee.bind(py).clone();
        let Some(tag) = tag else { return Ok(employee()) };
        let text = tag.to_str()?;
        if text.is_empty() {
            return Ok(employee());
        }
        if text.is_ascii() {
            for (name, cls) in &self.class_by_tag {
                if name.len() == text.len() && name.as_bytes().eq_ignore_ascii_case(text.as_bytes()) {
                    return Ok(cls.bind(py).clone());
                }
            }
            return Ok(employee());
        }
        // Non-ASCII: Python's full Unicode lower case (e.g. the Kelvin sign lowers to "k").
        let lowered = tag.call_method0(self.lower_name.bind(py))?;
        Ok(self.class_by_tag_dict.bind(py).get_item(lowered)?.unwrap_or_else(employee))
    }

    /// The memoised `(normalized, prefix, internal)` of an IP text, or a doubt.
    pub(crate) fn ip<'py>(&self, v: Option<Bound<'py, PyAny>>) -> R<Option<[Bound<'py, PyAny>; 3]>> {
        let Some(v) = v else { return Ok(None) };
        let py = v.py();
        if !v.is_exact_instance_of::<PyString>() {
            return Err(Doubt);
        }
        let info = match self.ip_memo.bind(py).get_item(&v)? {
            Some(info) => info,
            None => self.ip_info.bind(py).call1((&v,))?,
        };
        if info.is_none() {
            return Err(Doubt);
        }
        let t = info.cast_into_exact::<PyTuple>().map_err(|_| Doubt)?;
        if t.len() != 3 {
            return Err(Doubt);
        }
        Ok(Some([t.get_item(0)?, t.get_item(1)?, t.get_item(2)?]))
    }

    /// Builds an `Event` from its 39 values in field order.
    pub(crate) fn new_event<'py>(&self, py: Python<'py>, items: [Option<Bound<'py, PyAny>>; 39]) -> R<Bound<'py, PyAny>> {
        let values = items.into_iter().map(|x| x.unwrap_or_else(|| py.None().into_bound(py)));
        if self.alloc_in_place {
            // SAFETY: `Event` was checked at construction to have tuple's layout.
            return unsafe { tuple_in_place(py, self.event_type.bind(py), values) };
        }
        let t = PyTuple::new(py, values.collect::<Vec<_>>())?;
        Ok(self.tuple_new.bind(py).call1((self.event_type.bind(py), t))?)
    }

    fn ocsf_impl<'py>(
        &self,
        doc: &Bound<'py, PyDict>,
        raw: &Bound<'py, PyAny>,
        is_auth: bool,
    ) -> R<Bound<'py, PyAny>> {
        let py = doc.py();
        let s = Strs { long_doc: raw.len()? > NO_LONG_STRINGS };
        scan!(Some(doc);
            b"time" => time, b"metadata" => metadata, b"src_endpoint" => src_endpoint,
            b"device" => device_v, b"dst_endpoint" => dst_endpoint, b"user" => user_v,
            b"status_id" => status_id, b"status_detail" => status_detail_v,
            b"is_mfa" => is_mfa_v, b"service" => service_v, b"actor" => actor_v,
            b"connection_info" => connection_info, b"traffic" => traffic_v,
            b"duration" => duration_v, b"session" => session_v,
            b"activity_id" => activity_v, b"http_request" => http_request,
        );

        // time: an int, or a float truncated, in 0..MAX_TS_MS
        let t = time.ok_or(Doubt)?;
        let ts_ms: Bound<'py, PyAny> = if int_in(&t, 0, MAX_TS_MS - 1).is_some() {
            t
        } else if let Ok(f) = t.cast_exact::<PyFloat>() {
            let x = f.value();
            if !(0.0 <= x && x < MAX_TS_MS as f64) {
                return Err(Doubt);
            }
            int_obj(py, x.trunc() as i64)?
        } else {
            return Err(Doubt);
        };

        let meta = obj(metadata)?;
        scan!(meta.as_ref(); b"uid" => meta_uid);
        let event_id: Option<Bound<'py, PyAny>> = match meta_uid {
            Some(v) if v.is_exact_instance_of::<PyInt>() => Some(v.str()?.into_any()), // str(int)
            v => s.ident(v)?.map(Bound::into_any),
        };

        let src = obj(src_endpoint)?;
        scan!(src.as_ref();
            b"ip" => src_ip_v, b"uid" => src_uid_v, b"hostname" => src_hostname_v,
            b"location" => src_loc_v, b"autonomous_system" => src_as_v,
        );
        let src_ip = self.ip(src_ip_v)?;
        let src_uid = s.ident(src_uid_v)?;
        let src_hostname = s.ident(src_hostname_v)?;
        let src_loc = obj(src_loc_v)?;
        let src_as = obj(src_as_v)?;
        let device = obj(device_v)?;
        scan!(device.as_ref(); b"uid" => device_uid_v);
        let device_uid = s.ident(device_uid_v)?;
        let dst = obj(dst_endpoint)?;
        scan!(dst.as_ref();
            b"ip" => dst_ip_v, b"hostname" => dst_hostname_v, b"port" => dst_port_v,
            b"location" => dst_loc_v, b"autonomous_system" => dst_as_v,
        );
        let dst_ip = self.ip(dst_ip_v)?;

        let mut success: Option<Bound<'py, PyAny>> = None;
        let mut is_mfa: Option<Bound<'py, PyAny>> = None;
        let mut status_detail: Option<Bound<'py, PyString>> = None;
        let mut service: Option<Bound<'py, PyString>> = None;
        let mut protocol: Option<Bound<'py, PyAny>> = None;
        let mut dst_country: Option<Bound<'py, PyAny>> = None;
        let mut direction: Option<i64> = None;
        let mut dst_asn: Option<Bound<'py, PyAny>> = None;
        let mut bytes_in = None;
        let mut bytes_out = None;
        let mut packets_in = None;
        let mut packets_out = None;
        let mut duration_ms = None;
        let mut actor_session_v: Option<Bound<'py, PyAny>> = None;
        let kind;
        let user;
        let user_type: Option<Bound<'py, PyString>>;
        let device_id;
        let entity: Bound<'py, PyString>;
        let mut entity_is_user = true;

        if is_auth {
            kind = &self.auth;
            let user_obj = obj(user_v)?;
            scan!(user_obj.as_ref();
                b"uid" => uid_v, b"name" => name_v, b"email_addr" => email_v,
                b"type" => type_v, b"type_id" => type_id_v,
            );
            let uid = s.ident(uid_v)?;
            let name = s.ident(name_v)?;
            let email = s.ident(email_v)?;
            user_type = self.ocsf_user_type(&s, type_v, type_id_v)?;
            user = uid.or(name).or(email);
            if let Some(sid) = code(status_id.as_ref())? {
                success = match sid {
                    1 => Some(py_bool(py, true)),
                    2 => Some(py_bool(py, false)),
                    _ => None,
                };
            }
            status_detail = s.string(status_detail_v)?;
            is_mfa = boolean(is_mfa_v)?;
            let service_obj = obj(service_v)?;
            scan!(service_obj.as_ref(); b"name" => service_name_v);
            service = s.string(service_name_v)?;
            device_id = device_uid.clone().or_else(|| src_uid.clone());
            entity = user.clone().ok_or(Doubt)?;
        } else {
            kind = &self.network;
            let actor = obj(actor_v)?;
            scan!(actor.as_ref(); b"user" => actor_user_v, b"session" => actor_session);
            actor_session_v = actor_session;
            let actor_user = obj(actor_user_v)?;
            scan!(actor_user.as_ref();
                b"uid" => uid_v, b"name" => name_v, b"type" => type_v, b"type_id" => type_id_v,
            );
            let uid = s.ident(uid_v)?;
            let name = s.ident(name_v)?;
            user_type = self.ocsf_user_type(&s, type_v, type_id_v)?;
            user = uid.or(name);
            let conn = obj(connection_info)?;
            scan!(conn.as_ref(); b"protocol_name" => protocol_v, b"direction_id" => direction_v);
            if let Some(p) = s.string(protocol_v)? {
                protocol = Some(self.lower(p)?);
            }
            direction = code(direction_v.as_ref())?.filter(|x| (1..=3).contains(x)); // 0 unknown, 99 other
            let traffic = obj(traffic_v)?;
            scan!(traffic.as_ref();
                b"bytes_in" => bytes_in_v, b"bytes_out" => bytes_out_v,
                b"packets_in" => packets_in_v, b"packets_out" => packets_out_v,
            );
            bytes_in = count(bytes_in_v)?;
            bytes_out = count(bytes_out_v)?;
            packets_in = count(packets_in_v)?;
            packets_out = count(packets_out_v)?;
            duration_ms = count(duration_v)?;
            let dst_loc = obj(dst_loc_v)?;
            scan!(dst_loc.as_ref(); b"country" => dst_country_v);
            dst_country = country(dst_country_v)?;
            let dst_as = obj(dst_as_v)?;
            scan!(dst_as.as_ref(); b"number" => dst_asn_v);
            // anything but an int in range (e.g. a string) is the careful parser's
            dst_asn = asn(dst_asn_v)?;
            device_id = src_uid.clone().or_else(|| device_uid.clone());
            entity = match user.clone() {
                Some(u) => u,
                None => {
                    entity_is_user = false;
                    match src_uid.clone().or_else(|| src_hostname.clone()) {
                        Some(e) => e,
                        None => match src_ip.as_ref() {
                            Some(ip) => ip[0].clone().cast_into_exact::<PyString>().map_err(|_| Doubt)?,
                            None => return Err(Doubt),
                        },
                    }
                }
            };
        }

        let session = obj(session_v)?;
        scan!(session.as_ref(); b"uid" => session_uid_v);
        let mut session_id = s.string(session_uid_v)?;
        if !is_auth && session_id.as_ref().is_none_or(is_empty) {
            // OCSF puts the session under the actor for Network Activity.
            let actor_session = obj(actor_session_v)?;
            scan!(actor_session.as_ref(); b"uid" => actor_session_uid_v);
            session_id = s.string(actor_session_uid_v)?;
        }
        let session_id = session_id.filter(|x| !is_empty(x));

        let entity_class = if entity_is_user {
            self.classify(py, user_type.as_ref())?
        } else {
            self.device_class.bind(py).clone()
        };
        let activity = code(activity_v.as_ref())?;
        let http = obj(http_request)?;
        scan!(http.as_ref(); b"user_agent" => user_agent_v);
        let user_agent = s.string(user_agent_v)?;
        scan!(src_loc.as_ref();
            b"country" => src_country_v, b"city" => src_city_v, b"lat" => src_lat_v,
            b"long" => src_lon_v,
        );
        let src_country = country(src_country_v)?;
        let src_city = s.string(src_city_v)?;
        let src_lat = coord(src_lat_v, 90.0)?;
        let src_lon = coord(src_lon_v, 180.0)?;
        scan!(src_as.as_ref(); b"number" => src_asn_v, b"name" => src_as_name_v);
        let src_asn = asn(src_asn_v)?;
        let src_as_name = s.string(src_as_name_v)?;
        let dst_hostname = s.ident(dst_hostname_v)?;
        let dst_port = match dst_port_v {
            None => None,
            Some(p) => {
                int_in(&p, 0, 65535).ok_or(Doubt)?;
                Some(p)
            }
        };

        let dst_internal: Option<Bound<'py, PyAny>> = if direction == Some(3) {
            Some(py_bool(py, true))
        } else {
            match dst_ip.as_ref() {
                None => None,
                Some(ip) => Some(ip[2].clone()).filter(|x| !x.is_none()),
            }
        };
        let event_id = match event_id {
            Some(e) => e,
            None => self.derived_id.bind(py).call1((doc, raw))?,
        };
        let (src_ip_text, src_prefix) = match src_ip {
            Some([a, b, _]) => (Some(a), Some(b)),
            None => (None, None),
        };
        let dst_ip_text = dst_ip.map(|[a, _, _]| a);

        let any = |x: Option<Bound<'py, PyString>>| x.map(Bound::into_any);
        let mut items: [Option<Bound<'py, PyAny>>; 39] = std::array::from_fn(|_| None);
        items[EV_EVENT_ID] = Some(event_id);
        items[EV_KIND] = Some(kind.bind(py).clone());
        items[EV_TS_MS] = Some(ts_ms);
        items[EV_ENTITY] = Some(entity.into_any());
        items[EV_ENTITY_KIND] =
            Some(if entity_is_user { &self.user_kind } else { &self.device_kind }.bind(py).clone());
        items[EV_ENTITY_CLASS] = Some(entity_class);
        items[EV_SOURCE_FORMAT] = Some(self.ocsf.bind(py).clone().into_any());
        items[EV_USER] = any(user);
        items[EV_USER_TYPE] = any(user_type);
        items[EV_ACTIVITY] = opt_int(py, activity)?;
        items[EV_SUCCESS] = success;
        items[EV_STATUS_DETAIL] = any(status_detail);
        items[EV_IS_MFA] = is_mfa;
        items[EV_SESSION_ID] = any(session_id);
        items[EV_SERVICE] = any(service);
        items[EV_USER_AGENT] = any(user_agent);
        items[EV_SRC_IP] = src_ip_text;
        items[EV_SRC_PREFIX] = src_prefix;
        items[EV_SRC_COUNTRY] = src_country;
        items[EV_SRC_CITY] = any(src_city);
        items[EV_SRC_LAT] = src_lat;
        items[EV_SRC_LON] = src_lon;
        items[EV_SRC_ASN] = src_asn;
        items[EV_SRC_AS_NAME] = any(src_as_name);
        items[EV_DEVICE_ID] = any(device_id);
        items[EV_SRC_HOSTNAME] = any(src_hostname);
        items[EV_DST_IP] = dst_ip_text;
        items[EV_DST_HOSTNAME] = any(dst_hostname);
        items[EV_DST_PORT] = dst_port;
        items[EV_DST_COUNTRY] = dst_country;
        items[EV_DST_ASN] = dst_asn;
        items[EV_DST_INTERNAL] = dst_internal;
        items[EV_PROTOCOL] = protocol;
        items[EV_DIRECTION] = opt_int(py, direction)?;
        items[EV_BYTES_IN] = bytes_in;
        items[EV_BYTES_OUT] = bytes_out;
        items[EV_PACKETS_IN] = packets_in;
        items[EV_PACKETS_OUT] = packets_out;
        items[EV_DURATION_MS] = duration_ms;
        self.new_event(py, items)
    }

    fn native_impl<'py>(
        &self,
        doc: &Bound<'py, PyDict>,
        raw: &Bound<'py, PyAny>,
        kind: &Bound<'py, PyAny>,
    ) -> R<Bound<'py, PyAny>> {
        let py = doc.py();
        let s = Strs { long_doc: raw.len()? > NO_LONG_STRINGS };
        let is_auth = kind.is(self.auth.bind(py));
        if !is_auth && !kind.is(self.network.bind(py)) {
            return Err(Doubt);
        }
        scan!(Some(doc);
            b"ts" => ts_v, b"id" => id_v, b"user" => user_v, b"user_type" => user_type_v,
            b"device" => device_v, b"host" => host_v, b"ip" => ip_v, b"dst_ip" => dst_ip_v,
            b"direction" => direction_v, b"activity" => activity_v, b"ok" => ok_v,
            b"mfa" => mfa_v, b"session" => session_v, b"service" => service_v, b"ua" => ua_v,
            b"country" => country_v, b"city" => city_v, b"lat" => lat_v, b"lon" => lon_v,
            b"asn" => asn_v, b"as_name" => as_name_v, b"dst_host" => dst_host_v,
            b"dst_port" => dst_port_v, b"dst_country" => dst_country_v, b"dst_asn" => dst_asn_v,
            b"proto" => proto_v, b"bytes_in" => bytes_in_v, b"bytes_out" => bytes_out_v,
            b"packets_in" => packets_in_v, b"packets_out" => packets_out_v,
            b"duration_ms" => duration_v,
        );

        // ts: epoch ms (an int, or a float truncated) or ISO 8601 (Python's own _ms_from_iso)
        let t = ts_v.ok_or(Doubt)?;
        let ts_ms: Bound<'py, PyAny> = if int_in(&t, 0, MAX_TS_MS - 1).is_some() {
            t
        } else if let Ok(f) = t.cast_exact::<PyFloat>() {
            let x = f.value();
            if !(0.0 <= x && x < MAX_TS_MS as f64) {
                return Err(Doubt);
            }
            int_obj(py, x.trunc() as i64)?
        } else if t.is_exact_instance_of::<PyString>() {
            let ms = self.ms_from_iso.bind(py).call1((&t,))?;
            if ms.is_none() {
                return Err(Doubt);
            }
            ms
        } else {
            return Err(Doubt);
        };
        let event_id: Option<Bound<'py, PyAny>> = match id_v {
            Some(v) if v.is_exact_instance_of::<PyInt>() => Some(v.str()?.into_any()), // str(int)
            v => s.ident(v)?.map(Bound::into_any),
        };
        let user = s.ident(user_v)?;
        let user_type = s.string(user_type_v)?;
        let device_id = s.ident(device_v)?;
        let src_hostname = s.ident(host_v)?;
        let src_ip = self.ip(ip_v)?;
        let dst_ip = self.ip(dst_ip_v)?;
        let direction: Option<i64> = match direction_v {
            None => None,
            Some(v) => {
                let d = v.cast_into_exact::<PyString>().map_err(|_| Doubt)?;
                Some(match d.to_str()? {
                    "inbound" => 1,
                    "outbound" => 2,
                    "lateral" => 3,
                    _ => return Err(Doubt),
                })
            }
        };
        let activity: Option<i64> = match activity_v {
            None => None,
            Some(v) => {
                let a = v.cast_into_exact::<PyString>().map_err(|_| Doubt)?;
                Some(match a.to_str()? {
                    "logon" => 1,
                    "logoff" => 2,
                    "other" => 99,
                    _ => return Err(Doubt),
                })
            }
        };
        let entity_is_user = user.is_some();
        let (entity, entity_class) = match user.clone() {
            Some(u) => (u, self.classify(py, user_type.as_ref())?),
            None if is_auth => return Err(Doubt),
            None => {
                let e = match device_id.clone().or_else(|| src_hostname.clone()) {
                    Some(e) => e,
                    None => match src_ip.as_ref() {
                        Some(ip) => ip[0].clone().cast_into_exact::<PyString>().map_err(|_| Doubt)?,
                        None => return Err(Doubt),
                    },
                };
                (e, self.device_class.bind(py).clone())
            }
        };
        let success = boolean(ok_v)?;
        let is_mfa = boolean(mfa_v)?;
        let session_id = s.ident(session_v)?;
        let service = s.string(service_v)?;
        let user_agent = s.string(ua_v)?;
        let src_country = country(country_v)?;
        let src_city = s.string(city_v)?;
        let src_lat = coord(lat_v, 90.0)?;
        let src_lon = coord(lon_v, 180.0)?;
        let src_asn = asn(asn_v)?;
        let src_as_name = s.string(as_name_v)?;
        let dst_hostname = s.ident(dst_host_v)?;
        let dst_port = match dst_port_v {
            None => None,
            Some(p) => {
                int_in(&p, 0, 65535).ok_or(Doubt)?;
                Some(p)
            }
        };
        let dst_country = country(dst_country_v)?;
        let dst_asn = asn(dst_asn_v)?;
        let protocol = match s.string(proto_v)? {
            Some(p) => Some(self.lower(p)?),
            None => None,
        };
        let bytes_in = count(bytes_in_v)?;
        let bytes_out = count(bytes_out_v)?;
        let packets_in = count(packets_in_v)?;
        let packets_out = count(packets_out_v)?;
        let duration_ms = count(duration_v)?;

        let dst_internal: Option<Bound<'py, PyAny>> = if direction == Some(3) {
            Some(py_bool(py, true))
        } else {
            match dst_ip.as_ref() {
                None => None,
                Some(ip) => Some(ip[2].clone()).filter(|x| !x.is_none()),
            }
        };
        let event_id = match event_id {
            Some(e) => e,
            None => self.derived_id.bind(py).call1((doc, raw))?,
        };
        let (src_ip_text, src_prefix) = match src_ip {
            Some([a, b, _]) => (Some(a), Some(b)),
            None => (None, None),
        };
        let dst_ip_text = dst_ip.map(|[a, _, _]| a);

        let any = |x: Option<Bound<'py, PyString>>| x.map(Bound::into_any);
        let mut items: [Option<Bound<'py, PyAny>>; 39] = std::array::from_fn(|_| None);
        items[EV_EVENT_ID] = Some(event_id);
        items[EV_KIND] = Some(kind.clone());
        items[EV_TS_MS] = Some(ts_ms);
        items[EV_ENTITY] = Some(entity.into_any());
        items[EV_ENTITY_KIND] =
            Some(if entity_is_user { &self.user_kind } else { &self.device_kind }.bind(py).clone());
        items[EV_ENTITY_CLASS] = Some(entity_class);
        items[EV_SOURCE_FORMAT] = Some(self.native.bind(py).clone().into_any());
        items[EV_USER] = any(user);
        items[EV_USER_TYPE] = any(user_type);
        items[EV_ACTIVITY] = opt_int(py, activity)?;
        items[EV_SUCCESS] = success;
        items[EV_IS_MFA] = is_mfa;
        items[EV_SESSION_ID] = any(session_id);
        items[EV_SERVICE] = any(service);
        items[EV_USER_AGENT] = any(user_agent);
        items[EV_SRC_IP] = src_ip_text;
        items[EV_SRC_PREFIX] = src_prefix;
        items[EV_SRC_COUNTRY] = src_country;
        items[EV_SRC_CITY] = any(src_city);
        items[EV_SRC_LAT] = src_lat;
        items[EV_SRC_LON] = src_lon;
        items[EV_SRC_ASN] = src_asn;
        items[EV_SRC_AS_NAME] = any(src_as_name);
        items[EV_DEVICE_ID] = any(device_id);
        items[EV_SRC_HOSTNAME] = any(src_hostname);
        items[EV_DST_IP] = dst_ip_text;
        items[EV_DST_HOSTNAME] = any(dst_hostname);
        items[EV_DST_PORT] = dst_port;
        items[EV_DST_COUNTRY] = dst_country;
        items[EV_DST_ASN] = dst_asn;
        items[EV_DST_INTERNAL] = dst_internal;
        items[EV_PROTOCOL] = protocol;
        items[EV_DIRECTION] = opt_int(py, direction)?;
        items[EV_BYTES_IN] = bytes_in;
        items[EV_BYTES_OUT] = bytes_out;
        items[EV_PACKETS_IN] = packets_in;
        items[EV_PACKETS_OUT] = packets_out;
        items[EV_DURATION_MS] = duration_ms;
        self.new_event(py, items)
    }

    /// OCSF `user.type` as sent, else the caption of `user.type_id` (checked as a code).
    fn ocsf_user_type<'py>(
        &self,
        s: &Strs,
        type_v: Option<Bound<'py, PyAny>>,
        type_id_v: Option<Bound<'py, PyAny>>,
    ) -> R<Option<Bound<'py, PyString>>> {
        if let Some(tag) = s.string(type_v)? {
            return Ok(Some(tag));
        }
        let Some(type_id_obj) = type_id_v else { return Ok(None) };
        let py = type_id_obj.py();
        let Some(type_id) = code(Some(&type_id_obj))? else {
            return Ok(None);
        };
        for (id, caption) in &self.user_type_by_id {
            if *id == type_id {
                let c = caption.bind(py).clone();
                return Ok(Some(c.cast_into_exact::<PyString>().map_err(|_| Doubt)?));
            }
        }
        Ok(None)
    }
}

impl ParseKernels {
    /// `raw(data)` with the string cache `strs`, when the caller holds it.
    fn raw_with<'py>(&self, data: &Bound<'py, PyBytes>, strs: Option<&mut StrCache>) -> Option<Bound<'py, PyAny>> {
        // The reader sees untrusted bytes first: should it ever panic (a bug),
        // that is a doubt like any other, not a PanicException (a
        // BaseException) escaping parse_event into a worker. (A panic there
        // cannot leave the cache half-written: each slot is one assignment.)
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::jparse::raw_event(self, data, strs).ok()
        }))
        .unwrap_or(None)
    }
}

#[pymethods]
impl ParseKernels {
    /// Binds the kernels to `detector.events` (its Event class, enums, memo and helpers).
    #[new]
    fn new(events: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = events.py();
        let attr = |name: &str| events.getattr(name).map(Bound::unbind);
        for (name, expected) in [
            ("MAX_STR_LEN", MAX_STR_LEN as i64),
            ("MAX_TS_MS", MAX_TS_MS),
            ("_MAX_CODE", MAX_CODE),
            ("_MAX_ASN", MAX_ASN),
            ("_MAX_COUNT", i64::MAX),
            ("_NO_LONG_STRINGS", NO_LONG_STRINGS as i64),
            ("MAX_EVENT_BYTES", crate::jparse::MAX_EVENT_BYTES as i64),
        ] {
            let got: i64 = events.getattr(name)?.extract()?;
            if got != expected {
                return Err(PyValueError::new_err(format!(
                    "detector.events.{name} is {got}, the kernel was built for {expected}"
                )));
            }
        }
        let event_type = events.getattr("Event")?.cast_into::<PyType>()?;
        let tuple_type = py.get_type::<PyTuple>();
        let n_fields = event_type.getattr("_fields")?.len()?;
        if n_fields != EVENT_FIELDS.len() {
            return Err(PyValueError::new_err("Event has another number of fields"));
        }
        let alloc_in_place = plain_tuple_subtype(&event_type)?;
        let user_type_by_id = events
            .getattr("_OCSF_USER_TYPE_BY_ID")?
            .cast_into::<PyDict>()?
            .iter()
            .map(|(id, caption)| Ok((id.extract::<i64>()?, caption.unbind())))
            .collect::<PyResult<Vec<_>>>()?;
        let class_by_tag_dict = events.getattr("_CLASS_BY_TAG")?.cast_into::<PyDict>()?;
        let class_by_tag = class_by_tag_dict
            .iter()
            .map(|(tag, cls)| Ok((tag.extract::<String>()?, cls.unbind())))
            .collect::<PyResult<Vec<_>>>()?;
        if class_by_tag.iter().any(|(t, _)| !t.is_ascii() || t.to_ascii_lowercase() != *t) {
            return Err(PyValueError::new_err("_CLASS_BY_TAG holds a tag that is not lower-case ASCII"));
        }
        Ok(ParseKernels {
            event_type: event_type.clone().unbind(),
            alloc_in_place,
            tuple_new: tuple_type.getattr("__new__")?.unbind(),
            auth: attr("_AUTH")?,
            network: attr("_NETWORK")?,
            user_kind: attr("_USER")?,
            device_kind: attr("_DEVICE_KIND")?,
            employee: attr("_EMPLOYEE")?,
            device_class: attr("_DEVICE_CLASS")?,
            ocsf: PyString::intern(py, "ocsf").unbind(),
            native: PyString::intern(py, "native").unbind(),
            ms_from_iso: attr("_ms_from_iso")?,
            user_type_by_id,
            class_by_tag,
            class_by_tag_dict: class_by_tag_dict.unbind(),
            ip_memo: events.getattr("_IP_MEMO")?.cast_into::<PyDict>()?.unbind(),
            ip_info: attr("_ip_info")?,
            derived_id: attr("_derived_id")?,
            lower_name: PyString::intern(py, "lower").unbind(),
            str_cache: Mutex::new(StrCache::default()),
        })
    }

    /// `_fast_ocsf(doc, raw, is_auth) -> Event | None`: the Event the Python fast path
    /// returns for this OCSF document, or None at any doubt (then the careful parser decides).
    fn ocsf<'py>(
        &self,
        doc: &Bound<'py, PyDict>,
        raw: &Bound<'py, PyAny>,
        is_auth: bool,
    ) -> Option<Bound<'py, PyAny>> {
        // A panic (a bug) is a doubt too: the careful parser decides.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.ocsf_impl(doc, raw, is_auth).ok()))
            .unwrap_or(None)
    }

    /// `_fast_native(doc, raw, kind) -> Event | None`: the Event the Python fast path
    /// returns for this native-form document, or None at any doubt.
    fn native<'py>(
        &self,
        doc: &Bound<'py, PyDict>,
        raw: &Bound<'py, PyAny>,
        kind: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyAny>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.native_impl(doc, raw, kind).ok()))
            .unwrap_or(None)
    }

    /// `parse_event(data)` for the bytes of one document, read straight from
    /// them (native/src/jparse.rs): the very Event the Python path returns, or
    /// None at any doubt (then `parse_event` takes its usual path).
    fn raw<'py>(&self, data: &Bound<'py, PyBytes>) -> Option<Bound<'py, PyAny>> {
        let mut strs = self.str_cache.try_lock().ok();
        self.raw_with(data, strs.as_deref_mut())
    }

    /// `raw` over a list of documents: `(results, doubts)`, where `results[i]`
    /// is the Event `raw` returns for `docs[i]` or None, and `doubts` lists
    /// the indices of the Nones in order. A document that is not an exact
    /// `bytes` of at most `max_bytes` is a doubt without being read (the
    /// caller's careful path decides, as `parse_event` does for one).
    fn raw_many<'py>(
        &self,
        py: Python<'py>,
        docs: &Bound<'py, PyList>,
        max_bytes: usize,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let n = docs.len();
        let mut out: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
        let doubts = PyList::empty(py);
        let none = py.None().into_bound(py);
        let mut strs = self.str_cache.try_lock().ok();
        for i in 0..n {
            // Indexed and bounds-checked: should the caller's list change
            // meanwhile (a finalizer run by the collector during an
            // allocation), a read past its end raises.
            let doc = docs.get_item(i)?;
            let event = match doc.cast_exact::<PyBytes>() {
                Ok(b) if b.as_bytes().len() <= max_bytes => self.raw_with(b, strs.as_deref_mut()),
                _ => None,
            };
            match event {
                Some(e) => out.push(e),
                None => {
                    doubts.append(i)?;
                    out.push(none.clone());
                }
            }
        }
        Ok((PyList::new(py, out)?, doubts))
    }

    /// Whether Events are allocated in place (else through `tuple.__new__`), for tests.
    #[getter]
    fn alloc_in_place(&self) -> bool {
        self.alloc_in_place
    }
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ParseKernels>()?;
    Ok(())
}
