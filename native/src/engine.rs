//! The batch loop: `detector.engine.Detector.process`.
//!
//! `ProcessKernel` is a drop-in for the body of `Detector.process` after the
//! contexts are known: pass 1 computes every feature row and speculative
//! baseline as if every event were allowed and scores each event kind in one
//! call; pass 2 decides in input order and recomputes an entity's later events
//! once a decision diverged from the speculation. It owns no arithmetic: it
//! calls the detector's own pieces (`_update`, `_extract`, `_scorers[kind]`,
//! `_verdict`, `_decide`), Python or compiled, through vectorcall, in the same
//! order and with the same arguments as the Python loop, and builds the
//! `Decision` tuples of the allow path exactly as `_new_decision` does.
//!
//! Input the fast path does not recognise (an event that is not exactly an
//! `Event`, baselines that are not a plain `dict`, an entity key that is not
//! plain text) makes the kernel return `None` before it calls anything, and
//! `Detector.process` then runs its Python loop: the specification.


use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::pyclass::{CompareOp, PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::fnv::FnvMap;
use crate::layout::{BASELINE_FIELDS, BL_N_LEARNED, EVENT_FIELDS, EV_ENTITY, EV_ENTITY_KIND, EV_KIND};

type SlotMap = FnvMap<String, usize>;

/// The detector's pieces and constants, read once when the kernel is built
/// (`Detector._use_native` builds it last, after every other piece is set).
struct Pieces {
    update: Py<PyAny>,
    extract: Py<PyAny>,
    scorers: Py<PyAny>,
    verdict: Py<PyAny>,
    decide: Py<PyAny>,
    new_decision: Py<PyAny>,
    cfg: Py<PyAny>,
    min_events: Py<PyAny>,
    peers: Py<PyAny>,
    version: Py<PyAny>,
    auth: Py<PyAny>,
    network: Py<PyAny>,
    allow: Py<PyAny>,
    empty: Py<PyAny>,
    event_type: Py<PyType>,
    baseline_type: Py<PyType>,
    entity_kind_type: Py<PyType>,
    /// `Decision`, when it is laid out exactly like a tuple (checked once):
    /// then the allow path fills a new instance itself (see `new_decision`).
    decision_type: Option<Py<PyType>>,
    one: Py<PyAny>,
}

/// One entity of the batch: its key and its `current` / `diverged` entries.
struct Slot<'py> {
    key: Bound<'py, PyString>,
    current: Option<Bound<'py, PyAny>>,
    diverged: Option<Bound<'py, PyAny>>,
}

/// The compiled `Detector.process` loop, bound to one detector's pieces.
///
/// `kernel(events, state, keep_features, contexts)` returns the list of
/// decisions and updates `state.baselines` like the Python loop, or returns
/// `None` (having called nothing) when the input needs the Python loop.
#[pyclass(module = "detector._native")]
pub struct ProcessKernel {
    p: Option<Pieces>,
}

#[pymethods]
impl ProcessKernel {
    /// Holds the pieces: see `detector.native.process_kernel` for the order.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (update, extract, scorers, verdict, decide, new_decision, cfg, min_events,
                        peers, version, auth, network, allow, empty, event_type, baseline_type,
                        entity_kind_type, decision_type))]
    fn new(
        py: Python<'_>,
        update: Py<PyAny>,
        extract: Py<PyAny>,
        scorers: Py<PyAny>,
        verdict: Py<PyAny>,
        decide: Py<PyAny>,
        new_decision: Py<PyAny>,
        cfg: Py<PyAny>,
        min_events: Py<PyAny>,
        peers: Py<PyAny>,
        version: Py<PyAny>,
        auth: Py<PyAny>,
        network: Py<PyAny>,
        allow: Py<PyAny>,
        empty: Py<PyAny>,
        event_type: Py<PyType>,
        baseline_type: Py<PyType>,
        entity_kind_type: Py<PyType>,
        decision_type: Py<PyType>,
    ) -> PyResult<Self> {
        // The learn weight of a speculative update and of an allowed event:
        // one float object, like the constant 1.0 of the Python loop.
        let one = PyFloat::new(py, 1.0).into_any().unbind();
        let decision_type = if tuple_layout(decision_type.bind(py))? {
            Some(decision_type)
        } else {
            None
        };
        Ok(ProcessKernel {
            p: Some(Pieces {
                update,
                extract,
                scorers,
                verdict,
                decide,
                new_decision,
                cfg,
                min_events,
                peers,
                version,
                auth,
                network,
                allow,
                empty,
                event_type,
                baseline_type,
                entity_kind_type,
                decision_type,
                one,
            }),
        })
    }

    /// Decides a batch: `Detector.process(events, state, keep_features, contexts)`.
    ///
    /// Returns the decisions (a list, input order), or `None` when the input
    /// needs the Python loop.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        state: &Bound<'py, PyAny>,
        keep_features: &Bound<'py, PyAny>,
        contexts: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(p) = self.p.as_ref() else {
            return Err(PyTypeError::new_err("ProcessKernel was cleared"));
        };
        run(py, p, events, state, keep_features, contexts)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The pieces are bound methods of the detector that holds this kernel:
        // a reference cycle the garbage collector must see.
        if let Some(p) = &self.p {
            for o in [
                &p.update, &p.extract, &p.scorers, &p.verdict, &p.decide, &p.new_decision,
                &p.cfg, &p.min_events, &p.peers, &p.version, &p.auth, &p.network, &p.allow,
                &p.empty, &p.one,
            ] {
                visit.call(o)?;
            }
            visit.call(&p.event_type)?;
            visit.call(&p.baseline_type)?;
            visit.call(&p.entity_kind_type)?;
            visit.call(&p.decision_type)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.p = None;
    }
}

/// The number of fields of `Decision` (a test checks `Decision._fields`).
const DECISION_FIELDS: usize = 11;

/// True when `tp` is a tuple subclass with tuple's own layout and
/// `DECISION_FIELDS` fields: a `NamedTuple` (no `__dict__`, no extra slots).
pub(crate) fn tuple_layout(tp: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = tp.py();
    if !tp.is_subclass_of::<PyTuple>()? {
        return Ok(false);
    }
    let n_fields = match tp.getattr_opt(intern!(py, "_fields"))? {
        Some(f) => f.len()?,
        None => return Ok(false),
    };
    let t = tp.as_type_ptr();
    // SAFETY: reads plain fields of live type objects (`tp` is borrowed for
    // the call, `PyTuple_Type` is static); nothing is written.
    let same = unsafe {
        let base = &raw const pyo3::ffi::PyTuple_Type;
        (*t).tp_basicsize == (*base).tp_basicsize
            && (*t).tp_itemsize == (*base).tp_itemsize
            && (*t).tp_alloc.is_some()
    };
    Ok(same && n_fields == DECISION_FIELDS)
}

/// `_new_decision(fields)`, i.e. `tuple.__new__(Decision, fields)`.
///
/// When `Decision` has tuple's layout (checked at construction), this does
/// what `tuple.__new__` does for a subclass (`tuple_subtype_new`): allocate
/// an instance of the type with `tp_alloc` and move the items in. Measured:
/// the call through `functools.partial` and `tuple.__new__` cost about 2,900
/// instructions per event, half of the loop's own cost.
fn new_decision<'py>(
    py: Python<'py>,
    p: &Pieces,
    fields: [&Bound<'py, PyAny>; DECISION_FIELDS],
) -> PyResult<Bound<'py, PyAny>> {
    let Some(tp) = &p.decision_type else {
        return p.new_decision.bind(py).call1((PyTuple::new(py, fields)?,));
    };
    let Some(obj) = new_tuple_subtype(py, tp.bind(py), &fields)? else {
        return p.new_decision.bind(py).call1((PyTuple::new(py, fields)?,));
    };
    Ok(obj)
}

/// `tuple.__new__(tp, fields)` for a tuple subtype `tp` that `tuple_layout`
/// accepted; `None` when the type has no allocator (use `tuple.__new__`).
pub(crate) fn new_tuple_subtype<'py>(
    py: Python<'py>,
    tp: &Bound<'py, PyType>,
    fields: &[&Bound<'py, PyAny>],
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let tp = tp.as_type_ptr();
    // SAFETY: `tp` is a live tuple subtype with tuple's basic and item sizes
    // and an allocator (checked in `tuple_layout`), so, as in CPython's
    // `tuple_subtype_new`, `tp_alloc(tp, n)` returns a new zero-filled tuple
    // of n slots or NULL with an exception set. Each slot is written once
    // with a new (owned) reference; no Python code runs between the
    // allocation and the last write (the GC's tuple traversal skips NULL
    // slots anyway); then the object is tracked if the allocator did not.
    unsafe {
        let Some(alloc) = (*tp).tp_alloc else {
            return Ok(None);
        };
        let obj = alloc(tp, fields.len() as pyo3::ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, item) in fields.iter().enumerate() {
            pyo3::ffi::PyTuple_SET_ITEM(obj, i as pyo3::ffi::Py_ssize_t, (*item).clone().into_ptr());
        }
        if pyo3::ffi::PyObject_GC_IsTracked(obj) == 0 {
            pyo3::ffi::PyObject_GC_Track(obj.cast());
        }
        Ok(Some(Bound::from_owned_ptr(py, obj)))
    }
}

/// Returns the items of `seq` (a list, a tuple or any iterable), in order.
pub(crate) fn items<'py>(seq: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = seq.cast::<PyList>() {
        return Ok(l.iter().collect());
    }
    if let Ok(t) = seq.cast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    seq.try_iter()?.collect()
}

/// `a, b = obj`, with Python's errors.
pub(crate) fn unpack2<'py>(obj: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = obj.cast::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    }
    let Ok(it) = obj.try_iter() else {
        return Err(PyTypeError::new_err(format!(
            "cannot unpack non-iterable {} object",
            obj.get_type().name()?
        )));
    };
    let mut got: Vec<Bound<'py, PyAny>> = Vec::with_capacity(2);
    for item in it {
        got.push(item?);
        if got.len() > 2 {
            return Err(PyValueError::new_err("too many values to unpack (expected 2)"));
        }
    }
    if got.len() < 2 {
        return Err(PyValueError::new_err(format!(
            "not enough values to unpack (expected 2, got {})",
            got.len()
        )));
    }
    let b = got.pop();
    let a = got.pop();
    match (a, b) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(PyValueError::new_err("not enough values to unpack (expected 2, got 0)")),
    }
}

/// The error `zip(idxs, sc, rk, strict=True)` raises for these lengths, if any.
fn zip_strict_error(n: usize, n_sc: usize, n_rk: usize) -> Option<PyErr> {
    let m = n.min(n_sc).min(n_rk);
    let msg = if m == n {
        if n_sc > n {
            "zip() argument 2 is longer than argument 1"
        } else if n_rk > n {
            "zip() argument 3 is longer than arguments 1-2"
        } else {
            return None;
        }
    } else if m == n_sc {
        "zip() argument 2 is shorter than argument 1"
    } else {
        "zip() argument 3 is shorter than arguments 1-2"
    };
    Some(PyValueError::new_err(msg))
}

/// The entity key of an exact `Event` (`entity_kind + ":" + entity`) into
/// `buf`; false when the fields are not plain text (the caller asks Python).
pub(crate) fn key_into(ev: &Bound<'_, PyTuple>, entity_kind_type: &Bound<'_, PyType>, buf: &mut String) -> bool {
    let (Ok(kind), Ok(entity)) =
        (ev.get_borrowed_item(EV_ENTITY_KIND), ev.get_borrowed_item(EV_ENTITY))
    else {
        return false;
    };
    // `EntityKind` is a StrEnum: `+` is str's own, so the key is the text of both.
    let kind_ok = kind.is_exact_instance_of::<PyString>()
        || kind.get_type_ptr() == entity_kind_type.as_type_ptr();
    if !kind_ok || !entity.is_exact_instance_of::<PyString>() {
        return false;
    }
    let (Ok(k), Ok(e)) = (kind.cast::<PyString>(), entity.cast::<PyString>()) else {
        return false;
    };
    let (Ok(k), Ok(e)) = (k.to_str(), e.to_str()) else {
        return false;
    };
    buf.clear();
    buf.push_str(k);
    buf.push(':');
    buf.push_str(e);
    true
}

/// `b.n_learned < min_events`, as the object Python's `<` returns.
fn is_cold<'py>(
    py: Python<'py>,
    p: &Pieces,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let min_events = p.min_events.bind(py);
    let n_learned = match b.cast::<PyTuple>() {
        Ok(t) if b.get_type_ptr() == p.baseline_type.bind(py).as_type_ptr()
            && t.len() == BASELINE_FIELDS.len() =>
        {
            t.get_item(BL_N_LEARNED)?
        }
        _ => b.getattr(intern!(py, "n_learned"))?,
    };
    if n_learned.is_exact_instance_of::<PyInt>() && min_events.is_exact_instance_of::<PyInt>() {
        if let (Ok(a), Ok(m)) = (n_learned.extract::<i64>(), min_events.extract::<i64>()) {
            return Ok(PyBool::new(py, a < m).to_owned().into_any());
        }
    }
    n_learned.rich_compare(min_events, CompareOp::Lt)
}

fn run<'py>(
    py: Python<'py>,
    p: &Pieces,
    events: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    keep_features: &Bound<'py, PyAny>,
    contexts: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let events = items(events)?;
    let n = events.len();
    if n == 0 {
        return Ok(Some(PyList::empty(py)));
    }
    if contexts.is_none() {
        return Ok(None);
    }
    let contexts = items(contexts)?;
    if contexts.len() != n {
        return Err(PyValueError::new_err("one context per event is required"));
    }
    let baselines_any = state.getattr(intern!(py, "baselines"))?;
    let Ok(baselines) = baselines_any.cast_exact::<PyDict>() else {
        return Ok(None);
    };
    let keep = keep_features.is_truthy()?;

    // Pre-scan, before calling anything: every event must be an exact
    // `Event`; map each to its entity slot (first-seen order = the insertion
    // order of the Python loop's `current`, hence of `baselines.update`).
    let event_type = p.event_type.bind(py);
    let entity_kind_type = p.entity_kind_type.bind(py);
    let mut tuples: Vec<&Bound<'py, PyTuple>> = Vec::with_capacity(n);
    let mut slot_of: Vec<usize> = Vec::with_capacity(n);
    let mut slots: Vec<Slot<'py>> = Vec::new();
    let mut by_key: SlotMap = SlotMap::default();
    let mut buf = String::with_capacity(64);
    for e in &events {
        if e.get_type_ptr() != event_type.as_type_ptr() {
            return Ok(None);
        }
        let Ok(t) = e.cast::<PyTuple>() else { return Ok(None) };
        if t.len() != EVENT_FIELDS.len() {
            return Ok(None);
        }
        if !key_into(t, entity_kind_type, &mut buf) {
            // Odd field types: the key is whatever the property says.
            let key = e.getattr(intern!(py, "entity_key"))?;
            let Ok(s) = key.cast_exact::<PyString>() else { return Ok(None) };
            let Ok(s) = s.to_str() else { return Ok(None) };
            buf.clear();
            buf.push_str(s);
        }
        let slot = match by_key.get(buf.as_str()) {
            Some(&s) => s,
            None => {
                let s = slots.len();
                slots.push(Slot { key: PyString::new(py, &buf), current: None, diverged: None });
                by_key.insert(buf.clone(), s);
                s
            }
        };
        tuples.push(t);
        slot_of.push(slot);
    }

    // Pass 1, speculative: every row and baseline as if every earlier event
    // of the batch were allowed; one scorer call per event kind.
    let extract = p.extract.bind(py);
    let update = p.update.bind(py);
    let cfg = p.cfg.bind(py);
    let one = p.one.bind(py);
    let empty = p.empty.bind(py);
    let auth = p.auth.bind(py);
    let mut before: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
    let mut after: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
    let mut rows: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
    let mut auth_idx: Vec<usize> = Vec::new();
    let mut network_idx: Vec<usize> = Vec::new();
    for i in 0..n {
        let e = &events[i];
        let slot = &mut slots[slot_of[i]];
        let b = match &slot.current {
            Some(c) if !c.is_none() => c.clone(),
            _ => match baselines.get_item(&slot.key)? {
                Some(v) => v,
                None => empty.clone(),
            },
        };
        rows.push(extract.call1((e, &b, &contexts[i]))?);
        let nb = update.call1((&b, e, cfg, one))?;
        before.push(b);
        slot.current = Some(nb.clone());
        after.push(nb);
        if tuples[i].get_borrowed_item(EV_KIND)?.is(auth) {
            auth_idx.push(i);
        } else {
            network_idx.push(i);
        }
    }
    let scorers = p.scorers.bind(py);
    let mut scores: Vec<Option<Bound<'py, PyAny>>> = vec![None; n];
    let mut risks: Vec<Option<Bound<'py, PyAny>>> = vec![None; n];
    for (kind, idxs) in [(p.auth.bind(py), &auth_idx), (p.network.bind(py), &network_idx)] {
        if idxs.is_empty() {
            continue;
        }
        let scorer = scorers.get_item(kind)?;
        let batch = PyList::new(py, idxs.iter().map(|&i| &rows[i]))?;
        let (sc, rk) = unpack2(&scorer.call1((batch,))?)?;
        let (sc, rk) = (items(&sc)?, items(&rk)?);
        if let Some(err) = zip_strict_error(idxs.len(), sc.len(), rk.len()) {
            return Err(err);
        }
        for ((&i, s), r) in idxs.iter().zip(sc).zip(rk) {
            scores[i] = Some(s);
            risks[i] = Some(r);
        }
    }

    // Pass 2, in input order: decide; where a decision is not "allow", the
    // entity's later events are recomputed against its true baseline.
    let verdict_fn = p.verdict.bind(py);
    let decide = p.decide.bind(py);
    let peers = p.peers.bind(py);
    let peers_dict = peers.cast_exact::<PyDict>().ok();
    let version = p.version.bind(py);
    let allow = p.allow.bind(py);
    let none = py.None().into_bound(py);
    let out = PyList::empty(py);
    for i in 0..n {
        let e = &events[i];
        let ctx = &contexts[i];
        let slot = &mut slots[slot_of[i]];
        let true_b = slot.diverged.as_ref().filter(|d| !d.is_none()).cloned();
        let (b, row, score, model_risk) = match &true_b {
            None => {
                let (Some(s), Some(r)) = (scores[i].clone(), risks[i].clone()) else {
                    return Err(PyValueError::new_err("an event was not scored"));
                };
                (before[i].clone(), rows[i].clone(), s, r)
            }
            Some(tb) => {
                let row = extract.call1((e, tb, ctx))?;
                let kind = tuples[i].get_item(EV_KIND)?;
                let scorer = scorers.get_item(kind)?;
                let (sc, rk) = unpack2(&scorer.call1((PyList::new(py, [&row])?,))?)?;
                (tb.clone(), row, sc.get_item(0)?, rk.get_item(0)?)
            }
        };
        // FeatureExtractor.is_cold() and profile_for(), as inlined in Python.
        let cold = is_cold(py, p, &b)?;
        let mut prof = b.clone();
        if cold.is_truthy()? {
            let entity_kind = tuples[i].get_item(EV_ENTITY_KIND)?;
            let peer = match peers_dict {
                Some(d) => d.get_item(entity_kind)?,
                None => Some(peers.call_method1(intern!(py, "get"), (entity_kind,))?),
            };
            if let Some(peer) = peer.filter(|x| !x.is_none()) {
                prof = peer;
            }
        }
        let verdict = verdict_fn.call1((e, &row, &model_risk, &cold, ctx, &b, &prof))?;
        let action = verdict.getattr(intern!(py, "action"))?;
        if action.is(allow) && true_b.is_none() {
            // The common case: the speculative update is the next baseline,
            // the risk is the model's, no signal (see Detector._decide).
            slot.current = Some(after[i].clone());
            let reasons = verdict.getattr(intern!(py, "reasons"))?;
            let decision = new_decision(
                py,
                p,
                [
                    e,
                    allow,
                    &model_risk,
                    &model_risk,
                    &score,
                    &reasons,
                    &cold,
                    one,
                    &none,
                    version,
                    if keep { &row } else { &none },
                ],
            )?;
            out.append(decision)?;
            continue;
        }
        let (decision, new_b) =
            unpack2(&decide.call1((e, &b, &score, &model_risk, &verdict, &cold))?)?;
        if true_b.is_some() || !decision.getattr(intern!(py, "action"))?.is(allow) {
            slot.diverged = Some(new_b.clone());
        }
        slot.current = Some(new_b);
        if keep {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "features"), &row)?;
            out.append(decision.call_method(intern!(py, "_replace"), (), Some(&kwargs))?)?;
        } else {
            out.append(decision)?;
        }
    }
    // `baselines.update(current)`: the entities in first-seen order.
    for slot in &slots {
        if let Some(c) = &slot.current {
            baselines.set_item(&slot.key, c)?;
        }
    }
    Ok(Some(out))
}

/// Adds this file's kernels to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ProcessKernel>()?;
    Ok(())
}
