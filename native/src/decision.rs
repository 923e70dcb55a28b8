//! The decision record as JSON: `orjson.dumps(decision.to_dict())`.
//!
//! The worker writes one decision record per event to the decisions topic
//! (the analysts' audit trail) and `detector replay` one per line. Building
//! the 16-key dict in Python (three `round(x, 6)`, four enum values, the
//! reasons) and dumping it cost about 5-6 µs per event, the largest piece of
//! the entity stage's own Python after the engine. Here the named tuples are
//! read by index and the JSON is written directly.
//!
//! The contract is `Decision.to_dict()`'s: the same keys in the same order,
//! the same strings, integers and booleans, and floats with the same bits
//! (`round(x, 6)` through `update::py_round`, Python's correctly rounded
//! `round`). Floats are written in their shortest round-trip form, which can
//! differ from orjson's text (never from its value). At any doubt (a subclass,
//! a value of another type, a lone surrogate, a non-finite float) it returns
//! None and the caller uses `orjson.dumps(decision.to_dict())`.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::codec::{members, write_float, write_int, write_str};
use crate::engine::key_into;
use crate::parse::{Doubt, R};
use crate::update::py_round;

/// `Decision._fields` as `to_dict` reads them, in order.
const DECISION_FIELDS: [&str; 11] = [
    "event", "action", "risk", "model_risk", "score", "reasons", "cold_start", "learn_weight",
    "signal_id", "model_version", "features",
];
/// The `Event` fields `to_dict` reads.
const EVENT_FIELDS: [&str; 7] = ["event_id", "entity", "entity_kind", "entity_class", "kind", "ts_ms", "session_id"];

type Members = Vec<(String, Py<PyAny>)>;

#[pyclass(frozen, module = "detector._native")]
pub struct DecisionEncoder {
    decision: Py<PyType>,
    event: Py<PyType>,
    reason: Py<PyType>,
    /// `detector.events.EntityKind`, for the entity key (`engine::key_into`).
    entity_kind: Py<PyType>,
    /// Index in `Event` of each of `EVENT_FIELDS`.
    event_index: [usize; 7],
    actions: Members,
    entity_kinds: Members,
    entity_classes: Members,
    kinds: Members,
    reason_attrs: [Py<PyString>; 3],
}

fn value_of<'a>(table: &'a Members, v: &Bound<'_, PyAny>) -> R<&'a str> {
    let ptr = v.as_ptr();
    table.iter().find(|(_, m)| m.as_ptr() == ptr).map(|(value, _)| value.as_str()).ok_or(Doubt)
}

fn exact_str<'a>(v: &'a Bound<'_, PyAny>) -> R<&'a Bound<'a, PyString>> {
    if !v.is_exact_instance_of::<PyString>() {
        return Err(Doubt);
    }
    v.cast::<PyString>().map_err(|_| Doubt)
}

/// Appends an exact `str` (a lone surrogate, which has no UTF-8 form, is a doubt).
fn put_str(out: &mut Vec<u8>, v: &Bound<'_, PyAny>) -> R<()> {
    write_str(out, exact_str(v)?.to_str().map_err(|_| Doubt)?);
    Ok(())
}

/// Appends `None` or an exact `str`.
fn put_opt_str(out: &mut Vec<u8>, v: &Bound<'_, PyAny>) -> R<()> {
    if v.is_none() {
        out.extend_from_slice(b"null");
        Ok(())
    } else {
        put_str(out, v)
    }
}

/// Appends `round(v, 6)` for an exact float.
fn put_round6(out: &mut Vec<u8>, v: &Bound<'_, PyAny>) -> R<()> {
    if !v.is_exact_instance_of::<PyFloat>() {
        return Err(Doubt);
    }
    write_float(out, py_round(v.extract::<f64>()?, 6, 1e6))
}

impl DecisionEncoder {
    fn encode_impl(&self, py: Python<'_>, d: &Bound<'_, PyAny>) -> R<Vec<u8>> {
        if !d.get_type().is(self.decision.bind(py)) {
            return Err(Doubt);
        }
        let t = d.cast::<PyTuple>().map_err(|_| Doubt)?;
        let event = t.get_item(0)?;
        if !event.get_type().is(self.event.bind(py)) {
            return Err(Doubt);
        }
        let e = event.cast::<PyTuple>().map_err(|_| Doubt)?;
        let field = |i: usize| e.get_item(self.event_index[i]);
        let mut out = Vec::with_capacity(384);
        out.extend_from_slice(b"{\"event_id\":");
        put_str(&mut out, &field(0)?)?;
        out.extend_from_slice(b",\"entity\":");
        put_str(&mut out, &field(1)?)?;
        out.extend_from_slice(b",\"action\":");
        write_str(&mut out, value_of(&self.actions, &t.get_item(1)?)?);
        out.extend_from_slice(b",\"risk\":");
        put_round6(&mut out, &t.get_item(2)?)?;
        out.extend_from_slice(b",\"reasons\":[");
        let reasons = t.get_item(5)?;
        if !reasons.is_exact_instance_of::<PyTuple>() {
            return Err(Doubt);
        }
        for (i, r) in reasons.cast::<PyTuple>().map_err(|_| Doubt)?.iter().enumerate() {
            if !r.get_type().is(self.reason.bind(py)) {
                return Err(Doubt);
            }
            let [code, observed, expected] = [0, 1, 2].map(|k| r.getattr(self.reason_attrs[k].bind(py)));
            let (code, observed, expected) = (code?, observed?, expected?);
            let (c, o, x) = (
                exact_str(&code)?.to_str().map_err(|_| Doubt)?,
                exact_str(&observed)?.to_str().map_err(|_| Doubt)?,
                exact_str(&expected)?.to_str().map_err(|_| Doubt)?,
            );
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"code\":");
            write_str(&mut out, c);
            out.extend_from_slice(b",\"observed\":");
            write_str(&mut out, o);
            out.extend_from_slice(b",\"expected\":");
            write_str(&mut out, x);
            out.extend_from_slice(b",\"text\":");
            // Reason.text
            write_str(&mut out, &format!("{c}: observed={o}, {x}"));
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"entity_kind\":");
        write_str(&mut out, value_of(&self.entity_kinds, &field(2)?)?);
        out.extend_from_slice(b",\"entity_class\":");
        write_str(&mut out, value_of(&self.entity_classes, &field(3)?)?);
        out.extend_from_slice(b",\"kind\":");
        write_str(&mut out, value_of(&self.kinds, &field(4)?)?);
        out.extend_from_slice(b",\"ts\":");
        let ts = field(5)?;
        if !ts.is_exact_instance_of::<PyInt>() {
            return Err(Doubt);
        }
        write_int(&mut out, &ts)?;
        out.extend_from_slice(b",\"session_id\":");
        put_opt_str(&mut out, &field(6)?)?;
        out.extend_from_slice(b",\"model_risk\":");
        put_round6(&mut out, &t.get_item(3)?)?;
        out.extend_from_slice(b",\"score\":");
        put_round6(&mut out, &t.get_item(4)?)?;
        out.extend_from_slice(b",\"cold_start\":");
        let cold = t.get_item(6)?;
        if !cold.is_exact_instance_of::<PyBool>() {
            return Err(Doubt);
        }
        out.extend_from_slice(if cold.is_truthy()? { b"true" } else { b"false" });
        out.extend_from_slice(b",\"learned\":");
        let learned = t.get_item(7)?;
        if learned.is_exact_instance_of::<PyFloat>() {
            write_float(&mut out, learned.extract::<f64>()?)?;
        } else if learned.is_exact_instance_of::<PyInt>() {
            write_int(&mut out, &learned)?;
        } else {
            return Err(Doubt);
        }
        out.extend_from_slice(b",\"signal_id\":");
        put_opt_str(&mut out, &t.get_item(8)?)?;
        out.extend_from_slice(b",\"model_version\":");
        put_str(&mut out, &t.get_item(9)?)?;
        out.push(b'}');
        Ok(out)
    }
}

#[pymethods]
impl DecisionEncoder {
    /// Binds the encoder to `detector.engine.Decision`, `detector.events.Event`,
    /// `detector.policy.Reason` and their enums; refuses a layout it does not know.
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let engine = py.import("detector.engine")?;
        let events = py.import("detector.events")?;
        let policy = py.import("detector.policy")?;
        let decision = engine.getattr("Decision")?.cast_into::<PyType>()?;
        let event = events.getattr("Event")?.cast_into::<PyType>()?;
        let reason = policy.getattr("Reason")?.cast_into::<PyType>()?;
        let refuse = |what: &str| pyo3::exceptions::PyValueError::new_err(format!("{what} has another layout"));
        let decision_fields: Vec<String> = decision.getattr("_fields")?.extract()?;
        if decision_fields != DECISION_FIELDS {
            return Err(refuse("Decision"));
        }
        let event_fields: Vec<String> = event.getattr("_fields")?.extract()?;
        let mut event_index = [0usize; 7];
        for (slot, name) in event_index.iter_mut().zip(EVENT_FIELDS) {
            *slot = event_fields.iter().position(|f| f == name).ok_or_else(|| refuse("Event"))?;
        }
        let reason_fields: Vec<String> = py
            .import("dataclasses")?
            .call_method1("fields", (&reason,))?
            .try_iter()?
            .map(|f| f?.getattr("name")?.extract::<String>())
            .collect::<PyResult<_>>()?;
        if reason_fields != ["code", "observed", "expected"] {
            return Err(refuse("Reason"));
        }
        // Reason.text is written here as the property renders it today.
        let text: String = reason.call1(("c", "o", "x"))?.getattr("text")?.extract()?;
        if text != "c: observed=o, x" {
            return Err(refuse("Reason.text"));
        }
        Ok(DecisionEncoder {
            decision: decision.unbind(),
            event: event.unbind(),
            reason: reason.unbind(),
            entity_kind: events.getattr("EntityKind")?.cast_into::<PyType>()?.unbind(),
            event_index,
            actions: members(&policy.getattr("Action")?)?,
            entity_kinds: members(&events.getattr("EntityKind")?)?,
            entity_classes: members(&events.getattr("EntityClass")?)?,
            kinds: members(&events.getattr("EventKind")?)?,
            reason_attrs: ["code", "observed", "expected"].map(|a| PyString::intern(py, a).unbind()),
        })
    }

    /// `orjson.dumps(decision.to_dict())` with the same values (floats of the
    /// same bits, possibly in another text), or None at any doubt.
    fn encode<'py>(&self, py: Python<'py>, decision: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
        self.encoded(py, decision).map(|out| PyBytes::new(py, &out))
    }

    /// `[(d.event.entity_key, decision_json(d)) for d in decisions]` in one
    /// call: the worker's decisions-topic records. A decision the encoder
    /// doubts is encoded by `fallback(d)`; a key it cannot build is read
    /// from the event's `entity_key`.
    fn encode_keyed<'py>(
        &self,
        py: Python<'py>,
        decisions: &Bound<'py, PyList>,
        fallback: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let entity_key = pyo3::intern!(py, "entity_key");
        let mut out: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(decisions.len());
        for d in decisions.iter() {
            let key = match self.entity_key(py, &d) {
                Some(key) => key.into_any(),
                None => d.getattr(pyo3::intern!(py, "event"))?.getattr(entity_key)?,
            };
            let value = match self.encoded(py, &d) {
                Some(bytes) => PyBytes::new(py, &bytes).into_any(),
                None => fallback.call1((&d,))?,
            };
            out.push(PyTuple::new(py, [key, value])?);
        }
        PyList::new(py, out)
    }
}

impl DecisionEncoder {
    /// The record's bytes, or None at any doubt; a panic (a bug) is a doubt
    /// too, not a PanicException escaping into the worker.
    fn encoded(&self, py: Python<'_>, d: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encode_impl(py, d).ok()))
            .unwrap_or(None)
    }

    /// `decision.event.entity_key` (`entity_kind + ":" + entity`, as the
    /// engine builds it) when the decision and its event are the classes
    /// bound here and both fields are plain text; else None.
    fn entity_key<'py>(&self, py: Python<'py>, d: &Bound<'py, PyAny>) -> Option<Bound<'py, PyString>> {
        if !d.get_type().is(self.decision.bind(py)) {
            return None;
        }
        let event = d.cast::<PyTuple>().ok()?.get_item(0).ok()?;
        if !event.get_type().is(self.event.bind(py)) {
            return None;
        }
        let mut key = String::new();
        key_into(event.cast::<PyTuple>().ok()?, self.entity_kind.bind(py), &mut key)
            .then(|| PyString::new(py, &key))
    }
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DecisionEncoder>()?;
    Ok(())
}
