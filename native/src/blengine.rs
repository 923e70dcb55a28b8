//! The compiled engine on Rust-owned baselines: `Detector.process` for a `BaselineMap`.
//!
//! Strictly one event at a time, which is the specification (the batch loop
//! of `Detector.process` is an optimisation proven equal to it): for each
//! event, the features against the entity's baseline as it is before the
//! event, the forest on that one row, the policy gate, and the update of the
//! baseline in place with learning weight 1. No Python object is built per
//! event except its `Decision`.
//!
//! Anything else goes through Python, one event at a time, exactly: an event
//! or context with a field the Rust types do not model, an entity whose
//! baseline is held as a Python value, a feature or update that would need
//! Python's own arithmetic (overflow, domain errors). For such an event the
//! engine hands the entity's baseline (as a Python `Baseline`) to
//! `Detector._process_one`, which runs the Python pipeline on that single
//! event and returns its decision and new baseline, stored back.
//!
//! An event the gate cannot prove to be allowed (all signals, every rule that
//! fires) is scored here as any other; only its verdict comes from Python
//! (`Detector._judge`: the policy, with its reasons), given the feature row,
//! the risk and the baseline read out once. The engine then learns the event
//! into the Rust baseline with the verdict's weight and keeps the signal
//! dedup record itself, as `Detector._decide` does. So such an event no
//! longer costs a second pass of the whole pipeline in Python and a
//! conversion of its baseline back into Rust (160-600 us per event, measured,
//! when every step-up and revoke went that way).
//! A scorer that is not one of ours (a benchmark's clock, a test double) is
//! called from here with a one-row batch.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyList, PyString, PyType};

use crate::bl::{Bl, Cx, Ev, EvTypes, EK_DEVICE, EK_USER};
use crate::blcore::{BlTypes, UpdCfg};
use crate::blfeat::{extract_bl, FeatCfg};
use crate::blmap::{BaselineMap, Slot};
use crate::context::PolicyGate;
use crate::engine::{items, new_tuple_subtype, tuple_layout, unpack2};
use crate::forest::{ConstantScorer, ForestScorer};

/// How one event kind is scored in this batch.
enum Scoring<'py> {
    Forest(Bound<'py, ForestScorer>),
    Constant(f64, f64),
    Python(Bound<'py, PyAny>),
}

/// The compiled engine bound to one detector (see the module documentation).
#[pyclass(module = "detector._native")]
pub struct BlEngine {
    ev_types: EvTypes,
    ip_stats_type: Py<PyAny>,
    no_ctx: Py<PyAny>,
    upd: UpdCfg,
    feat: FeatCfg,
    /// Peer baselines by `EK_*` code.
    peers: [Option<Bl>; 2],
    gate: Py<PolicyGate>,
    /// The detector's `_scorers` dict, read at every batch (a benchmark may
    /// replace its entries).
    scorers: Py<PyAny>,
    auth: Py<PyAny>,
    network: Py<PyAny>,
    /// `Detector._process_one(event, baseline_or_None, ctx, keep_features)`.
    process_one: Py<PyAny>,
    /// `Detector._judge(event, baseline_or_None, row, model_risk, cold, ctx)`;
    /// `None`: such events are handed over whole, as before (a benchmark's twin).
    judge: Option<Py<PyAny>>,
    bl_types: BlTypes,
    new_decision: Py<PyAny>,
    decision_type: Option<Py<PyType>>,
    allow: Py<PyAny>,
    allow_reasons: Py<PyAny>,
    version: Py<PyAny>,
    one: Py<PyAny>,
    nan: Py<PyAny>,
    n_features: usize,
    entity_kind_names: [String; 2],
    handed_over: AtomicU64,
    decided: AtomicU64,
    judged: AtomicU64,
}

impl BlEngine {
    fn scoring<'py>(&self, py: Python<'py>, kind: &Py<PyAny>) -> PyResult<Scoring<'py>> {
        let s = self.scorers.bind(py).get_item(kind.bind(py))?;
        if let Ok(f) = s.cast::<ForestScorer>() {
            return Ok(Scoring::Forest(f.clone()));
        }
        if let Ok(c) = s.cast::<ConstantScorer>() {
            let c = c.get();
            return Ok(Scoring::Constant(c.score, c.risk));
        }
        Ok(Scoring::Python(s))
    }

    fn row_list<'py>(&self, py: Python<'py>, row: &[f64]) -> PyResult<Bound<'py, PyList>> {
        let nan = self.nan.bind(py);
        let out = PyList::empty(py);
        for &v in row {
            if v.is_nan() {
                out.append(nan)?;
            } else {
                out.append(PyFloat::new(py, v))?;
            }
        }
        Ok(out)
    }

    /// A `Decision` from its fields, in field order.
    fn decision<'py>(&self, py: Python<'py>, fields: &[&Bound<'py, PyAny>; 11]) -> PyResult<Bound<'py, PyAny>> {
        if let Some(tp) = &self.decision_type {
            if let Some(d) = new_tuple_subtype(py, tp.bind(py), fields)? {
                return Ok(d);
            }
        }
        self.new_decision.bind(py).call1((pyo3::types::PyTuple::new(py, fields)?,))
    }

    /// The decision for an event the gate could not prove allowed, from
    /// `Detector._judge`'s answer `judged`; `b` learns the event and keeps the
    /// signal's dedup record as `Detector._decide` does.
    ///
    /// `None`, with `b` untouched, when an answer is of a type the Rust
    /// baseline does not model or the update would need Python's arithmetic:
    /// the event is then handed over whole.
    #[allow(clippy::too_many_arguments)]
    fn judged<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        ev: &Ev<'_>,
        b: &mut Bl,
        judged: &Bound<'py, PyAny>,
        score: f64,
        model_risk: &Bound<'py, PyAny>,
        cold: bool,
        features: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(j) = judged.cast_exact::<pyo3::types::PyTuple>() else { return Ok(None) };
        if j.len() != 8 {
            return Ok(None);
        }
        let action = j.get_item(0)?;
        let reasons = j.get_item(1)?;
        let cold = PyBool::new(py, cold).to_owned().into_any();
        let score = PyFloat::new(py, score).into_any();
        let none = py.None().into_bound(py);
        if action.is(self.allow.bind(py)) {
            if b.update(ev, &self.upd, 1.0).is_err() {
                return Ok(None);
            }
            let allow = self.allow.bind(py);
            let fields = [event, allow, model_risk, model_risk, &score, &reasons, &cold,
                          self.one.bind(py), &none, self.version.bind(py), features];
            return self.decision(py, &fields).map(Some);
        }
        let (weight, risk, signal_id) = (j.get_item(2)?, j.get_item(3)?, j.get_item(6)?);
        let level = j.get_item(4)?;
        let dedup = j.get_item(5)?;
        let horizon = j.get_item(7)?;
        let (Ok(w), Ok(level), Ok(dedup), Ok(horizon)) = (
            weight.cast_exact::<PyFloat>(),
            level.cast_exact::<pyo3::types::PyInt>(),
            dedup.cast_exact::<PyString>(),
            horizon.cast_exact::<pyo3::types::PyInt>(),
        ) else {
            return Ok(None);
        };
        let (Ok(level), Ok(horizon), Ok(dedup)) = (level.extract::<i64>(), horizon.extract::<i64>(), dedup.to_str())
        else {
            return Ok(None);
        };
        if b.update(ev, &self.upd, w.value()).is_err() {
            return Ok(None);
        }
        // `signal_suppressed` and `with_signal` (detector.baseline) on the updated baseline.
        let ts = ev.ts_ms;
        let suppressed =
            b.signals.iter().any(|(k, l, t)| k.as_str() == dedup && *l >= level && horizon <= *t && *t <= ts);
        let signal_id = if suppressed {
            none.clone()
        } else {
            b.signals.retain(|(k, _, t)| *t >= horizon && k.as_str() != dedup);
            b.signals.push((crate::sstr::SStr::new(dedup), level, ts));
            let extra = b.signals.len().saturating_sub(8);
            b.signals.drain(..extra);
            signal_id
        };
        let fields = [event, &action, &risk, model_risk, &score, &reasons, &cold, &weight, &signal_id,
                      self.version.bind(py), features];
        self.decision(py, &fields).map(Some)
    }

    /// The event through Python (`Detector._process_one`); its new baseline stored back.
    fn hand_over<'py>(
        &self,
        py: Python<'py>,
        map: &mut BaselineMap,
        key: &str,
        event: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
        keep_features: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.handed_over.fetch_add(1, Ordering::Relaxed);
        let before = match map.slot_mut(key) {
            Some(Slot::Native(b)) => {
                let b = b.clone();
                b.to_py(py, map.types())?
            }
            Some(Slot::Py(o)) => o.bind(py).clone(),
            None => py.None().into_bound(py),
        };
        let got = self.process_one.bind(py).call1((event, before, ctx, keep_features))?;
        let (decision, after) = unpack2(&got)?;
        let slot = map.slot_of(&after);
        map.put(key, slot);
        Ok(decision)
    }
}

#[pymethods]
impl BlEngine {
    /// Binds the engine to a detector's pieces: see `detector.native.bl_engine`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (cfg, extractor, peers, gate, scorers, process_one, judge, new_decision,
                        decision_type, allow, allow_reasons, version, nan, n_features,
                        ip_stats_type, no_ctx))]
    fn new(
        py: Python<'_>,
        cfg: &Bound<'_, PyAny>,
        extractor: &Bound<'_, PyAny>,
        peers: &Bound<'_, PyAny>,
        gate: Bound<'_, PolicyGate>,
        scorers: Bound<'_, PyAny>,
        process_one: Bound<'_, PyAny>,
        judge: Option<Bound<'_, PyAny>>,
        new_decision: Bound<'_, PyAny>,
        decision_type: Bound<'_, PyType>,
        allow: Bound<'_, PyAny>,
        allow_reasons: Bound<'_, PyAny>,
        version: Bound<'_, PyAny>,
        nan: Bound<'_, PyAny>,
        n_features: usize,
        ip_stats_type: Bound<'_, PyAny>,
        no_ctx: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let ev_types = EvTypes::new(py)?;
        let not_modelled = || pyo3::exceptions::PyValueError::new_err("configuration not modelled");
        let (Some(upd), Some(feat)) = (UpdCfg::from_py(cfg), FeatCfg::from_py(extractor)) else {
            return Err(not_modelled());
        };
        let bl_types = BlTypes::new(py)?;
        let mut peer_bls: [Option<Bl>; 2] = [None, None];
        for (code, member) in [(EK_USER, &ev_types.entity_kinds[0]), (EK_DEVICE, &ev_types.entity_kinds[1])] {
            if let Some(p) = peers.get_item(member.bind(py)).ok().filter(|p| !p.is_none()) {
                match Bl::from_py(&p, &bl_types) {
                    Some(b) => peer_bls[code as usize] = Some(b),
                    None => return Err(not_modelled()),
                }
            }
        }
        let names = [
            ev_types.entity_kinds[0].bind(py).str()?.to_str()?.to_owned(),
            ev_types.entity_kinds[1].bind(py).str()?.to_str()?.to_owned(),
        ];
        let auth = ev_types.auth.clone_ref(py);
        let network = ev_types.network.clone_ref(py);
        let decision_type = if tuple_layout(&decision_type)? { Some(decision_type.unbind()) } else { None };
        Ok(BlEngine {
            ev_types,
            ip_stats_type: ip_stats_type.unbind(),
            no_ctx: no_ctx.unbind(),
            upd,
            feat,
            peers: peer_bls,
            gate: gate.unbind(),
            scorers: scorers.unbind(),
            auth,
            network,
            process_one: process_one.unbind(),
            judge: judge.map(Bound::unbind),
            bl_types,
            new_decision: new_decision.unbind(),
            decision_type,
            allow: allow.unbind(),
            allow_reasons: allow_reasons.unbind(),
            version: version.unbind(),
            one: PyFloat::new(py, 1.0).into_any().unbind(),
            nan: nan.unbind(),
            n_features,
            entity_kind_names: names,
            handed_over: AtomicU64::new(0),
            decided: AtomicU64::new(0),
            judged: AtomicU64::new(0),
        })
    }

    /// Decides `events` (with their `contexts`) against `baselines`, updated in
    /// place; returns the decisions in input order.
    fn run<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        baselines: &Bound<'py, BaselineMap>,
        contexts: &Bound<'py, PyAny>,
        keep_features: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let events = items(events)?;
        let contexts = items(contexts)?;
        if contexts.len() != events.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("one context per event is required"));
        }
        let auth_scoring = self.scoring(py, &self.auth)?;
        let network_scoring = self.scoring(py, &self.network)?;
        let out = PyList::empty(py);
        let no_ctx = self.no_ctx.bind(py);
        let allow = self.allow.bind(py);
        let reasons = self.allow_reasons.bind(py);
        let one = self.one.bind(py);
        let version = self.version.bind(py);
        let none = py.None().into_bound(py);
        let gate = self.gate.get();
        let mut row = vec![f64::NAN; self.n_features];
        let mut x: Vec<f32> = Vec::new();
        let mut lengths: Vec<f64> = Vec::new();
        let mut key = String::new();
        let mut map = baselines.borrow_mut();
        for (event, ctx) in events.iter().zip(contexts.iter()) {
            let ev = Ev::from_py(event, &self.ev_types);
            // The entity key, as Event.entity_key builds it.
            let entity = ev.as_ref().and_then(|_| {
                event.cast::<pyo3::types::PyTuple>().ok()?.get_item(crate::layout::EV_ENTITY).ok()
            });
            let (Some(ev), Some(entity)) = (ev, entity) else {
                let k = event.getattr(pyo3::intern!(py, "entity_key"))?;
                let k = k.cast::<PyString>()?.to_str()?.to_owned();
                out.append(self.hand_over(py, &mut map, &k, event, ctx, keep_features)?)?;
                continue;
            };
            let Ok(entity) = entity.cast_exact::<PyString>() else {
                let k = event.getattr(pyo3::intern!(py, "entity_key"))?;
                let k = k.cast::<PyString>()?.to_str()?.to_owned();
                out.append(self.hand_over(py, &mut map, &k, event, ctx, keep_features)?)?;
                continue;
            };
            key.clear();
            key.push_str(&self.entity_kind_names[ev.entity_kind as usize]);
            key.push(':');
            key.push_str(entity.to_str()?);
            let cx = if ctx.is(no_ctx) {
                Some(Cx::default())
            } else {
                Cx::from_py(ctx, &self.ip_stats_type)
            };
            let Some(cx) = cx else {
                out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                continue;
            };
            // The entity's baseline: Rust-held, new (EMPTY), or Python-held (hand over).
            let held = map.holds_native(&key);
            if held == Some(false) {
                out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                continue;
            }
            let mut fresh: Option<Box<Bl>> = None;
            let b: &mut Bl = if held.is_some() {
                match map.slot_mut(&key) {
                    Some(Slot::Native(b)) => b,
                    _ => unreachable!("checked by holds_native"),
                }
            } else {
                fresh.insert(Box::default())
            };
            let cold = self.feat.is_cold(b);
            let peer = if cold { self.peers[ev.entity_kind as usize].as_ref() } else { None };
            let (prof, prof_is_b) = match peer {
                Some(p) => (p, false),
                None => (&*b, true),
            };
            row.iter_mut().for_each(|v| *v = f64::NAN);
            if extract_bl(&self.feat, &ev, b, prof, prof_is_b, cold, &cx, &mut row).is_err() {
                out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                continue;
            }
            let scoring = if ev.is_auth { &auth_scoring } else { &network_scoring };
            let scored = match scoring {
                Scoring::Forest(f) => f.get().score_row(&row, &mut x, &mut lengths),
                Scoring::Constant(s, r) => Some((*s, *r)),
                Scoring::Python(f) => {
                    let rows = PyList::new(py, [self.row_list(py, &row)?])?;
                    let (sc, rk) = unpack2(&f.call1((rows,))?)?;
                    let (s, r) = (sc.get_item(0)?, rk.get_item(0)?);
                    match (s.cast_exact::<PyFloat>(), r.cast_exact::<PyFloat>()) {
                        (Ok(s), Ok(r)) => Some((s.value(), r.value())),
                        _ => None,
                    }
                }
            };
            let Some((score, risk)) = scored else {
                out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                continue;
            };
            if gate.proves_allow_bl(py, event, &ev, &row, risk, &cx, b).is_none() {
                let Some(judge) = &self.judge else {
                    out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                    continue;
                };
                // The policy decides, in Python for its reasons; the rest stays here.
                let before = if held.is_none() { none.clone() } else { b.to_py(py, &self.bl_types)? };
                let row_py = self.row_list(py, &row)?.into_any();
                let risk_f = PyFloat::new(py, risk).into_any();
                let answer =
                    judge.bind(py).call1((event, &before, &row_py, &risk_f, cold, ctx))?;
                let features = if keep_features { row_py } else { none.clone() };
                match self.judged(py, event, &ev, b, &answer, score, &risk_f, cold, &features)? {
                    Some(decision) => {
                        if let Some(new) = fresh.take() {
                            map.put(&key, Slot::Native(new));
                        }
                        self.decided.fetch_add(1, Ordering::Relaxed);
                        self.judged.fetch_add(1, Ordering::Relaxed);
                        out.append(decision)?;
                    }
                    None => out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?,
                }
                continue;
            }
            if b.update(&ev, &self.upd, 1.0).is_err() {
                out.append(self.hand_over(py, &mut map, &key, event, ctx, keep_features)?)?;
                continue;
            }
            if let Some(new) = fresh.take() {
                map.put(&key, Slot::Native(new));
            }
            let risk_f = PyFloat::new(py, risk).into_any();
            let features = if keep_features { self.row_list(py, &row)?.into_any() } else { none.clone() };
            let fields = [
                event,
                allow,
                &risk_f,
                &risk_f,
                &PyFloat::new(py, score).into_any(),
                reasons,
                &PyBool::new(py, cold).to_owned().into_any(),
                one,
                &none,
                version,
                &features,
            ];
            let decision = self.decision(py, &fields)?;
            self.decided.fetch_add(1, Ordering::Relaxed);
            out.append(decision)?;
        }
        Ok(out)
    }

    /// `(decided here, handed over to Python)` event counts so far.
    fn counts(&self) -> (u64, u64) {
        (self.decided.load(Ordering::Relaxed), self.handed_over.load(Ordering::Relaxed))
    }

    /// Of the events decided here, how many took their verdict from `Detector._judge`.
    fn judged_count(&self) -> u64 {
        self.judged.load(Ordering::Relaxed)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BlEngine>()?;
    Ok(())
}
