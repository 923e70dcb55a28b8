//! The worker's internal records, decoded: `detector.stream.stages.decode_records`.
//!
//! Between its stages the worker forwards events in packed records,
//! `{"v":2,"r":[{"e":[...39 fields...],"o":[topic,partition,offset],"i":null|[u,f,fu],"s":null|[[a,b,c],...]},...]}`,
//! written by `stages.pack` with orjson. Decoding one in Python builds every
//! value as a Python object twice over (orjson's lists and dicts, then the
//! `Routed`, `Event` and `Source` built from them), at each of three hops.
//! Here the bytes are read once and only the final objects are built.
//!
//! The contract is the one of the parse kernels: return the very list the
//! Python decoder returns (the same values, of the same types, the same enum
//! members), or `None` at any doubt, and then the Python decoder decides (and
//! raises `ValueError` on a malformed record). The reader accepts exactly the
//! layout `pack` writes (no whitespace, keys in that order); anything else
//! (the single-event version 1, escapes it does not know, integers beyond
//! int64, invalid UTF-8, an unknown enum value, a wrong field count) is a doubt.

use std::io::Write;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::layout::*;
use crate::parse::{int_obj, plain_tuple_subtype, py_bool, tuple_in_place, Doubt, R};

/// One JSON scalar, as read.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str, bool),
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn lit(&mut self, s: &[u8]) -> R<()> {
        if self.b.len() - self.i >= s.len() && &self.b[self.i..self.i + s.len()] == s {
            self.i += s.len();
            Ok(())
        } else {
            Err(Doubt)
        }
    }

    #[inline]
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Doubt)
    }

    #[inline]
    fn try_lit(&mut self, s: &[u8]) -> bool {
        self.lit(s).is_ok()
    }

    /// A string: its text (validated UTF-8, without quotes) and whether it holds escapes.
    fn string(&mut self) -> R<(&'a str, bool)> {
        self.lit(b"\"")?;
        let start = self.i;
        let mut esc = false;
        loop {
            let c = self.peek()?;
            match c {
                b'"' => break,
                b'\\' => {
                    esc = true;
                    self.i += 2; // the escaped character is checked by unescape
                }
                0x00..=0x1f => return Err(Doubt), // raw control characters: invalid JSON
                _ => self.i += 1,
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Doubt)?;
        self.i += 1;
        Ok((text, esc))
    }

    /// One or more ASCII digits; none is a doubt.
    fn digits(&mut self) -> R<()> {
        let start = self.i;
        while matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == start {
            return Err(Doubt);
        }
        Ok(())
    }

    /// A number: an int when it has neither fraction nor exponent (within int64), else a float.
    fn number(&mut self) -> R<Scalar<'a>> {
        let start = self.i;
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return Err(Doubt),
        }
        let mut is_float = false;
        if self.b.get(self.i) == Some(&b'.') {
            is_float = true;
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            is_float = true;
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        // ASCII digits and signs only: always valid UTF-8.
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Doubt)?;
        if is_float {
            // Rust's parse is correctly rounded, as orjson's is; an overflow to
            // infinity (which orjson refuses) is a doubt.
            let v: f64 = text.parse().map_err(|_| Doubt)?;
            if !v.is_finite() {
                return Err(Doubt);
            }
            Ok(Scalar::Float(v))
        } else {
            // Beyond int64 orjson returns a big int or refuses: a doubt.
            Ok(Scalar::Int(text.parse().map_err(|_| Doubt)?))
        }
    }

    fn scalar(&mut self) -> R<Scalar<'a>> {
        match self.peek()? {
            b'n' => {
                self.lit(b"null")?;
                Ok(Scalar::Null)
            }
            b't' => {
                self.lit(b"true")?;
                Ok(Scalar::Bool(true))
            }
            b'f' => {
                self.lit(b"false")?;
                Ok(Scalar::Bool(false))
            }
            b'"' => {
                let (s, esc) = self.string()?;
                Ok(Scalar::Str(s, esc))
            }
            _ => self.number(),
        }
    }

    fn int(&mut self) -> R<i64> {
        match self.number()? {
            Scalar::Int(v) => Ok(v),
            _ => Err(Doubt),
        }
    }
}

/// The text of a JSON string body with its escapes resolved; a lone surrogate is a doubt.
fn unescape(s: &str) -> R<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let hex4 = |i: usize| -> R<u32> {
        let h = b.get(i..i + 4).ok_or(Doubt)?;
        let t = std::str::from_utf8(h).map_err(|_| Doubt)?;
        if !t.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Doubt);
        }
        u32::from_str_radix(t, 16).map_err(|_| Doubt)
    };
    while i < b.len() {
        let c = b[i];
        if c != b'\\' {
            // Copy the run up to the next backslash (whole UTF-8 sequences).
            let next = b[i..].iter().position(|&x| x == b'\\').map_or(b.len(), |p| i + p);
            out.push_str(&s[i..next]);
            i = next;
            continue;
        }
        let e = *b.get(i + 1).ok_or(Doubt)?;
        i += 2;
        match e {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
                        return Err(Doubt);
                    }
                    let lo = hex4(i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(Doubt);
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err(Doubt);
                } else {
                    hi
                };
                out.push(char::from_u32(code).ok_or(Doubt)?);
            }
            _ => return Err(Doubt),
        }
    }
    Ok(out)
}

fn py_str<'py>(py: Python<'py>, s: &str, esc: bool) -> R<Bound<'py, PyString>> {
    if esc {
        Ok(PyString::new(py, &unescape(s)?))
    } else {
        Ok(PyString::new(py, s))
    }
}

fn scalar_obj<'py>(py: Python<'py>, v: Scalar<'_>) -> R<Option<Bound<'py, PyAny>>> {
    Ok(match v {
        Scalar::Null => None,
        Scalar::Bool(b) => Some(py_bool(py, b)),
        Scalar::Int(x) => Some(int_obj(py, x)?),
        Scalar::Float(x) => Some(PyFloat::new(py, x).into_any()),
        Scalar::Str(s, esc) => Some(py_str(py, s, esc)?.into_any()),
    })
}

/// The members of one enum, by value (`{m.value: m for m in Enum}`), for ASCII values.
pub(crate) fn members(enum_type: &Bound<'_, PyAny>) -> PyResult<Vec<(String, Py<PyAny>)>> {
    let mut out = Vec::new();
    for m in enum_type.try_iter()? {
        let m = m?;
        let value: String = m.getattr("value")?.extract()?;
        out.push((value, m.unbind()));
    }
    Ok(out)
}

fn member<'py>(py: Python<'py>, table: &[(String, Py<PyAny>)], v: Scalar<'_>) -> R<Bound<'py, PyAny>> {
    match v {
        Scalar::Str(s, false) => table
            .iter()
            .find(|(value, _)| value == s)
            .map(|(_, m)| m.bind(py).clone())
            .ok_or(Doubt),
        _ => Err(Doubt),
    }
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // Almost every string has nothing to escape: one scan (vectorised), one copy.
    if !b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// Appends a finite float in its shortest round-trip form: Debug is the
/// shortest text that reads back as the same double, always with a fraction
/// or an exponent, so it decodes as a float. A non-finite one is a doubt
/// (orjson writes null for it; the Python path decides).
pub(crate) fn write_float(out: &mut Vec<u8>, x: f64) -> R<()> {
    if !x.is_finite() {
        return Err(Doubt);
    }
    // Written in place (no String per float): the same text as format!("{x:?}").
    let _ = write!(out, "{x:?}");
    Ok(())
}

/// Appends a Python int as a JSON integer (within int64 or uint64, as orjson; else a doubt).
pub(crate) fn write_int(out: &mut Vec<u8>, v: &Bound<'_, PyAny>) -> R<()> {
    if let Ok(x) = v.extract::<i64>() {
        let _ = write!(out, "{x}");
    } else {
        let x: u64 = v.extract().map_err(|_| Doubt)?;
        let _ = write!(out, "{x}");
    }
    Ok(())
}

/// The decoder, bound to `detector.stream.stages`' classes and `detector.events`' enums.
#[pyclass(frozen, module = "detector._native")]
pub struct RoutedCodec {
    kernels: Py<crate::parse::ParseKernels>,
    routed: Py<PyType>,
    source: Py<PyType>,
    ip_stats: Py<PyType>,
    /// `IpStats`'s slot names, in its fields' order.
    ip_stats_slots: Vec<Py<PyString>>,
    /// True when `IpStats` can be built through its slots (see `new`).
    ip_stats_by_slots: bool,
    /// True when `Routed` and `Source` are allocated in place.
    alloc_in_place: bool,
    object_new: Py<PyAny>,
    tuple_new: Py<PyAny>,
    kinds: Vec<(String, Py<PyAny>)>,
    entity_kinds: Vec<(String, Py<PyAny>)>,
    entity_classes: Vec<(String, Py<PyAny>)>,
    batch_version: i64,
}

impl RoutedCodec {
    /// An instance of the named tuple `cls` holding `items`.
    fn named<'py, const N: usize>(
        &self,
        py: Python<'py>,
        cls: &Py<PyType>,
        items: [Bound<'py, PyAny>; N],
    ) -> R<Bound<'py, PyAny>> {
        if self.alloc_in_place {
            // SAFETY: `Routed` and `Source` were checked at construction to have tuple's layout.
            return unsafe { tuple_in_place(py, cls.bind(py), items.into_iter()) };
        }
        let t = PyTuple::new(py, items)?;
        Ok(self.tuple_new.bind(py).call1((cls.bind(py), t))?)
    }

    /// `IpStats(users, failures, fail_users)`: through its slots when it is the
    /// plain frozen dataclass it was checked to be, else by calling it.
    fn ip_stats<'py>(&self, py: Python<'py>, values: [i64; 3]) -> R<Bound<'py, PyAny>> {
        let cls = self.ip_stats.bind(py);
        if !self.ip_stats_by_slots {
            return Ok(cls.call1((values[0], values[1], values[2]))?);
        }
        let obj = self.object_new.bind(py).call1((cls,))?;
        for (name, v) in self.ip_stats_slots.iter().zip(values) {
            let value = int_obj(py, v)?;
            // What the dataclass's own __init__ does for a frozen class:
            // object.__setattr__, which stores into the slot.
            let rc = unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
            if rc != 0 {
                return Err(PyErr::fetch(py).into());
            }
        }
        Ok(obj)
    }

    fn record<'py>(&self, py: Python<'py>, r: &mut Reader<'_>) -> R<Bound<'py, PyAny>> {
        let kernels = self.kernels.get();
        r.lit(b"{\"e\":[")?;
        let mut items: [Option<Bound<'py, PyAny>>; 39] = std::array::from_fn(|_| None);
        for (i, slot) in items.iter_mut().enumerate() {
            if i > 0 {
                r.lit(b",")?;
            }
            let v = r.scalar()?;
            *slot = match i {
                EV_KIND => Some(member(py, &self.kinds, v)?),
                EV_ENTITY_KIND => Some(member(py, &self.entity_kinds, v)?),
                EV_ENTITY_CLASS => Some(member(py, &self.entity_classes, v)?),
                _ => scalar_obj(py, v)?,
            };
        }
        r.lit(b"],\"o\":[")?;
        let (topic, esc) = r.string()?;
        let topic = py_str(py, topic, esc)?;
        r.lit(b",")?;
        let partition = r.int()?;
        r.lit(b",")?;
        let offset = r.int()?;
        r.lit(b"],\"i\":")?;
        let ip = if r.try_lit(b"null") {
            py.None().into_bound(py)
        } else {
            r.lit(b"[")?;
            let users = r.int()?;
            r.lit(b",")?;
            let failures = r.int()?;
            r.lit(b",")?;
            let fail_users = r.int()?;
            r.lit(b"]")?;
            self.ip_stats(py, [users, failures, fail_users])?
        };
        r.lit(b",\"s\":")?;
        let changes = if r.try_lit(b"null") {
            py.None().into_bound(py)
        } else {
            r.lit(b"[")?;
            let mut list: Vec<Bound<'py, PyAny>> = Vec::new();
            if !r.try_lit(b"]") {
                loop {
                    r.lit(b"[")?;
                    let mut three: Vec<Bound<'py, PyAny>> = Vec::with_capacity(3);
                    for j in 0..3 {
                        if j > 0 {
                            r.lit(b",")?;
                        }
                        let (s, esc) = r.string()?;
                        three.push(py_str(py, s, esc)?.into_any());
                    }
                    r.lit(b"]")?;
                    list.push(PyTuple::new(py, three)?.into_any());
                    if r.try_lit(b"]") {
                        break;
                    }
                    r.lit(b",")?;
                }
            }
            PyTuple::new(py, list)?.into_any()
        };
        r.lit(b"}")?;
        let event = kernels.new_event(py, items)?;
        let source =
            self.named(py, &self.source, [topic.into_any(), int_obj(py, partition)?, int_obj(py, offset)?])?;
        self.named(py, &self.routed, [event, source, ip, changes])
    }

    /// Appends one event field: a JSON scalar, or an enum member's value.
    fn write_value(&self, out: &mut Vec<u8>, v: &Bound<'_, PyAny>) -> R<()> {
        if v.is_none() {
            out.extend_from_slice(b"null");
        } else if v.is_exact_instance_of::<PyBool>() {
            out.extend_from_slice(if v.is_truthy()? { b"true" } else { b"false" });
        } else if v.is_exact_instance_of::<PyInt>() {
            write_int(out, v)?;
        } else if v.is_exact_instance_of::<PyFloat>() {
            write_float(out, v.extract()?)?;
        } else if v.is_exact_instance_of::<PyString>() {
            // A lone surrogate has no UTF-8 form (orjson refuses it): a doubt.
            write_str(out, v.cast::<PyString>().map_err(|_| Doubt)?.to_str()?);
        } else {
            let ptr = v.as_ptr();
            let member = [&self.kinds, &self.entity_kinds, &self.entity_classes]
                .into_iter()
                .flatten()
                .find(|(_, m)| m.as_ptr() == ptr)
                .ok_or(Doubt)?;
            write_str(out, &member.0);
        }
        Ok(())
    }

    fn encode_impl(&self, py: Python<'_>, routed: &Bound<'_, PyAny>) -> R<Vec<u8>> {
        if !routed.get_type().is(self.routed.bind(py)) {
            return Err(Doubt);
        }
        let t = routed.cast::<PyTuple>().map_err(|_| Doubt)?;
        let (event, origin, ip, changes) = (t.get_item(0)?, t.get_item(1)?, t.get_item(2)?, t.get_item(3)?);
        if !event.get_type().is(self.kernels.get().event_type.bind(py)) || !origin.get_type().is(self.source.bind(py)) {
            return Err(Doubt);
        }
        let event = event.cast::<PyTuple>().map_err(|_| Doubt)?;
        let origin = origin.cast::<PyTuple>().map_err(|_| Doubt)?;
        if event.len() != EVENT_FIELDS.len() || origin.len() != 3 {
            return Err(Doubt);
        }
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"e\":[");
        for (i, v) in event.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.write_value(&mut out, &v)?;
        }
        out.extend_from_slice(b"],\"o\":[");
        let topic = origin.get_item(0)?;
        if !topic.is_exact_instance_of::<PyString>() {
            return Err(Doubt);
        }
        self.write_value(&mut out, &topic)?;
        for item in [origin.get_item(1)?, origin.get_item(2)?] {
            if !item.is_exact_instance_of::<PyInt>() {
                return Err(Doubt);
            }
            out.push(b',');
            write_int(&mut out, &item)?;
        }
        out.extend_from_slice(b"],\"i\":");
        if ip.is_none() {
            out.extend_from_slice(b"null");
        } else {
            if !ip.get_type().is(self.ip_stats.bind(py)) {
                return Err(Doubt);
            }
            out.push(b'[');
            for (j, name) in self.ip_stats_slots.iter().enumerate() {
                let v = ip.getattr(name.bind(py))?;
                if !v.is_exact_instance_of::<PyInt>() {
                    return Err(Doubt);
                }
                if j > 0 {
                    out.push(b',');
                }
                write_int(&mut out, &v)?;
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"s\":");
        if changes.is_none() {
            out.extend_from_slice(b"null");
        } else {
            let changes = changes.cast_exact::<PyTuple>().map_err(|_| Doubt)?;
            out.push(b'[');
            for (j, change) in changes.iter().enumerate() {
                let change = change.cast_exact::<PyTuple>().map_err(|_| Doubt)?;
                if change.len() != 3 {
                    return Err(Doubt);
                }
                if j > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                for (k, text) in change.iter().enumerate() {
                    if !text.is_exact_instance_of::<PyString>() {
                        return Err(Doubt);
                    }
                    if k > 0 {
                        out.push(b',');
                    }
                    self.write_value(&mut out, &text)?;
                }
                out.push(b']');
            }
            out.push(b']');
        }
        out.push(b'}');
        Ok(out)
    }

    fn decode_impl<'py>(&self, py: Python<'py>, data: &[u8]) -> R<Bound<'py, PyList>> {
        let mut r = Reader { b: data, i: 0 };
        r.lit(b"{\"v\":")?;
        if r.int()? != self.batch_version {
            return Err(Doubt);
        }
        r.lit(b",\"r\":[")?;
        let out = PyList::empty(py);
        if !r.try_lit(b"]") {
            loop {
                out.append(self.record(py, &mut r)?)?;
                if r.try_lit(b"]") {
                    break;
                }
                r.lit(b",")?;
            }
        }
        r.lit(b"}")?;
        if r.i != data.len() {
            return Err(Doubt);
        }
        Ok(out)
    }
}

#[pymethods]
impl RoutedCodec {
    /// Binds the decoder to `detector.stream.stages` (its Routed, Source and
    /// IpStats classes, its batch version) and the parse kernels' Event class.
    #[new]
    fn new(stages: &Bound<'_, PyAny>, kernels: Py<crate::parse::ParseKernels>) -> PyResult<Self> {
        let py = stages.py();
        let events = py.import("detector.events")?;
        let n: usize = stages.getattr("_N_FIELDS")?.extract()?;
        if n != EVENT_FIELDS.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("Event has another number of fields"));
        }
        let routed = stages.getattr("Routed")?.cast_into::<PyType>()?;
        let source = stages.getattr("Source")?.cast_into::<PyType>()?;
        let ip_stats = stages.getattr("IpStats")?.cast_into::<PyType>()?;
        // IpStats is built through its slots only while it is exactly a
        // frozen, slotted dataclass of three fields with no __post_init__:
        // then its __init__ does nothing but store them. Otherwise it is called.
        let fields: Vec<String> = py
            .import("dataclasses")?
            .call_method1("fields", (&ip_stats,))?
            .try_iter()?
            .map(|f| f?.getattr("name")?.extract::<String>())
            .collect::<PyResult<_>>()?;
        let slots: Vec<String> = ip_stats.getattr("__slots__")?.extract().unwrap_or_default();
        let ip_stats_by_slots = fields == ["users", "failures", "fail_users"]
            && slots == fields
            && !ip_stats.hasattr("__post_init__")?
            && ip_stats.getattr("__dataclass_params__")?.getattr("frozen")?.extract::<bool>()?;
        Ok(RoutedCodec {
            kernels,
            alloc_in_place: plain_tuple_subtype(&routed)? && plain_tuple_subtype(&source)?,
            routed: routed.unbind(),
            source: source.unbind(),
            ip_stats_slots: fields.iter().map(|f| PyString::intern(py, f).unbind()).collect(),
            ip_stats_by_slots,
            object_new: py.get_type::<pyo3::types::PyAny>().getattr("__new__")?.unbind(),
            ip_stats: ip_stats.unbind(),
            tuple_new: py.get_type::<PyTuple>().getattr("__new__")?.unbind(),
            kinds: members(&events.getattr("EventKind")?)?,
            entity_kinds: members(&events.getattr("EntityKind")?)?,
            entity_classes: members(&events.getattr("EntityClass")?)?,
            batch_version: stages.getattr("ROUTED_BATCH_VERSION")?.extract()?,
        })
    }

    /// `orjson.dumps(routed._wire())`, one event of a packed record: JSON that
    /// decodes to the same values (floats in their shortest form, which may
    /// differ from orjson's text), or None at any doubt (a value of another
    /// type, an integer beyond 64 bits, a lone surrogate), and then the caller
    /// encodes it with orjson.
    fn encode<'py>(&self, py: Python<'py>, routed: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encode_impl(py, routed).ok()))
            .unwrap_or(None)
            .map(|out| PyBytes::new(py, &out))
    }

    /// `decode_records(raw)` for a version-2 record as `pack` writes it: the
    /// list of `Routed` the Python decoder returns, or None at any doubt.
    fn decode<'py>(&self, py: Python<'py>, data: &Bound<'py, PyBytes>) -> Option<Bound<'py, PyList>> {
        let bytes = data.as_bytes();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_impl(py, bytes).ok()))
            .unwrap_or(None)
    }
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RoutedCodec>()?;
    Ok(())
}
