//! The stream stages' per-event bookkeeping, one call per batch.
//!
//! * `fresh_split`: `detector.stream.stages._fresh`, the applied-log check
//!   of the IP and entity stages (which events of a batch are redeliveries
//!   their state already holds). Per event it was two Python method calls
//!   and a loop step, 4-5 % of a draining worker's CPU.
//! * `rerouted`: the stages' `(key, Routed)` outputs with one field of each
//!   input `Routed` replaced (the IP stats, the session changes).
//!
//! Both work on the stages' own Python values (`Routed` and `Source` named
//! tuples, `Applied` logs and their `offsets` dicts), so they are drop-ins:
//! the Python functions stay the specification and tests compare the two.
//! Anything unexpected (a log whose `offsets` is not a dict, an origin that
//! is not exactly a `Source`) goes through the log's own Python methods;
//! offsets are compared with Python's own `<=`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString, PyTuple, PyType};

use crate::parse::{plain_tuple_subtype, tuple_in_place};

/// `Routed.origin`'s index (a `Source` is read as (topic, partition, offset);
/// `stages` holds both field lists fixed, and a test checks them).
const ROUTED_ORIGIN: usize = 1;

/// `_fresh(items, keys, applied, paths)` for a non-null `applied`: returns
/// `(fresh, duplicates, touched)` and updates `applied` in place, exactly as
/// the Python loop (`Applied.seen`, then `Applied.add`). `new_log` is the
/// `Applied` class (called for a key without a log); `paths` is None (every
/// path 0) or one path per item. `routed` and `source` are the `Routed` and
/// `Source` classes: returns None, before touching anything, when an item
/// is not a `Routed` (the caller runs the Python loop). A log that is not
/// exactly a `new_log`, or an origin not exactly a `Source`, goes through
/// the log's own `seen` and `add`.
#[pyfunction]
#[pyo3(signature = (items, keys, applied, paths, new_log, routed, source))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn fresh_split<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyList>,
    keys: &Bound<'py, PyList>,
    applied: &Bound<'py, PyDict>,
    paths: Option<&Bound<'py, PyList>>,
    new_log: &Bound<'py, PyAny>,
    routed: &Bound<'py, PyType>,
    source: &Bound<'py, PyType>,
) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PySet>)>> {
    if !items.iter().all(|item| item.get_type().is(routed)) {
        return Ok(None);
    }
    let fresh = PyList::empty(py);
    let dups = PyList::empty(py);
    let touched = PySet::empty(py)?;
    let offsets_attr = pyo3::intern!(py, "offsets");
    let zero = 0i64.into_pyobject(py)?.into_any();
    for (i, item) in items.iter().enumerate() {
        // Python's `keys[i]` / `paths[i]`: an IndexError when shorter.
        let key = keys.get_item(i)?;
        if key.is_none() {
            fresh.append(&item)?;
            continue;
        }
        let log = match applied.get_item(&key)? {
            Some(log) => log,
            None => {
                let log = new_log.call0()?;
                applied.set_item(&key, &log)?;
                log
            }
        };
        let path = match paths {
            Some(p) => p.get_item(i)?,
            None => zero.clone(),
        };
        let origin = item.get_item(ROUTED_ORIGIN)?;
        // Only an exact `new_log` (Applied) log is read directly: a subclass
        // may override `seen`/`add`, and an origin of another class may
        // compare otherwise.
        let own = if log.get_type().is(new_log) && origin.get_type().is(source) {
            Some(log.getattr(offsets_attr)?)
        } else {
            None
        };
        let Some(offsets) = own.as_ref().and_then(|o| o.cast_exact::<PyDict>().ok()) else {
            // Not the usual shapes: the log's own methods decide.
            if log.call_method1(pyo3::intern!(py, "seen"), (&origin, &path))?.is_truthy()? {
                dups.append(&item)?;
            } else {
                log.call_method1(pyo3::intern!(py, "add"), (&origin, &path))?;
                touched.add(&key)?;
                fresh.append(&item)?;
            }
            continue;
        };
        let o = origin.cast::<PyTuple>()?;
        let offset = o.get_item(2)?;
        let slot = PyTuple::new(py, [o.get_item(0)?, o.get_item(1)?, path.clone()])?;
        match offsets.get_item(&slot)? {
            Some(top) => {
                // Applied.seen: `origin.offset <= top`.
                if offset.le(&top)? {
                    dups.append(&item)?;
                    continue;
                }
                // Applied.add on an existing slot below the offset: move it up.
                offsets.set_item(&slot, &offset)?;
            }
            None => {
                // A new slot: Applied.add also applies the window, in Python.
                log.call_method1(pyo3::intern!(py, "add"), (&origin, &path))?;
            }
        }
        touched.add(&key)?;
        fresh.append(&item)?;
    }
    Ok(Some((fresh, dups, touched)))
}

/// `[(key, Routed(*r[:index], values[i], *r[index + 1:])) for i, r in ...]`:
/// each item of `items` (a `routed` tuple) with field `index` replaced by the
/// matching item of `values`, paired with `key` (the stages' "" when they do
/// not route). Returns None when `routed` is not a plain tuple subtype or an
/// item is not a tuple of its length (the caller builds them in Python).
#[pyfunction]
fn rerouted<'py>(
    py: Python<'py>,
    routed: &Bound<'py, PyType>,
    items: &Bound<'py, PyList>,
    values: &Bound<'py, PyList>,
    index: usize,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    if !plain_tuple_subtype(routed)? || items.len() != values.len() {
        return Ok(None);
    }
    let mut out: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(items.len());
    for (item, value) in items.iter().zip(values.iter()) {
        if !item.get_type().is(routed) {
            return Ok(None);
        }
        let t = item.cast::<PyTuple>()?;
        if index >= t.len() {
            return Ok(None);
        }
        let fields = t.iter().enumerate().map(|(i, f)| if i == index { value.clone() } else { f });
        // SAFETY: `routed` is a plain tuple subtype (checked above).
        let Ok(new) = (unsafe { tuple_in_place(py, routed, fields) }) else {
            return Ok(None);
        };
        out.push(PyTuple::new(py, [key.as_any(), &new])?);
    }
    Ok(Some(PyList::new(py, out)?))
}

/// Adds this file's functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fresh_split, m)?)?;
    m.add_function(wrap_pyfunction!(rerouted, m)?)?;
    Ok(())
}
