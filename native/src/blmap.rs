//! `BaselineMap`: the entity -> baseline table of an `EngineState`, held in Rust.
//!
//! A mutable mapping from entity key (`user:alice`) to `Baseline`, in
//! insertion order like the `dict` it replaces. Each value is held as a Rust
//! [`Bl`] when its Python form converts exactly (`Bl::from_py`), otherwise as
//! the Python object itself. Reading a value (`m[key]`, `get`, `values`,
//! `items`) builds a fresh Python `Baseline` equal to what was stored; the
//! compiled engine (`blengine.rs`) reads and updates the Rust values in
//! place, which is what makes it fast: no dict copies, no objects for the
//! cyclic GC, nothing to free per event.

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::bl::Bl;
use crate::blcore::BlTypes;
use crate::sstr::SStr;

use std::collections::HashMap;
use std::sync::Arc;

/// One stored value.
pub(crate) enum Slot {
    /// Held in Rust (boxed: the table's vector then holds 40-byte items, so
    /// its growth slack stays small next to the baselines themselves).
    Native(Box<Bl>),
    /// A value `Bl` cannot represent exactly: kept as the Python object.
    Py(Py<PyAny>),
}

/// The mapping: see the module documentation.
#[pyclass(module = "detector._native", mapping)]
pub struct BaselineMap {
    /// Shared with the `HeldBaseline`s it hands out, which read it to build
    /// their Python form.
    types: Arc<BlTypes>,
    /// Keys and values in insertion order.
    /// Removed items leave a hole (`None`) so that the positions of the
    /// others stay valid; holes are squeezed out once they outnumber the
    /// live items, so a removal costs O(1) amortised, as in a `dict`.
    entries: Vec<Option<(SStr, Slot)>>,
    /// Live items in `entries`.
    live: usize,
    /// Key -> position in `entries`. std's keyed SipHash, not FNV: entity
    /// keys come from the input, and an unkeyed hash would let a producer
    /// choose names that all land in one bucket.
    index: HashMap<SStr, usize>,
}

impl BaselineMap {
    /// The slot of `key`, mutable.
    pub(crate) fn slot_mut(&mut self, key: &str) -> Option<&mut Slot> {
        let i = *self.index.get(key)?;
        self.entries[i].as_mut().map(|e| &mut e.1)
    }

    /// `Some(true)` when `key` is held in Rust, `Some(false)` as a Python value, `None` if absent.
    pub(crate) fn holds_native(&self, key: &str) -> Option<bool> {
        let i = *self.index.get(key)?;
        Some(matches!(self.entries[i], Some((_, Slot::Native(_)))))
    }

    /// Stores `slot` under `key`: replaced in place, or appended.
    pub(crate) fn put(&mut self, key: &str, slot: Slot) {
        match self.index.get(key) {
            Some(&i) => {
                if let Some(e) = self.entries[i].as_mut() {
                    e.1 = slot;
                }
            }
            None => {
                self.index.insert(SStr::new(key), self.entries.len());
                self.entries.push(Some((SStr::new(key), slot)));
                self.live += 1;
            }
        }
    }

    /// The slot for a Python value: Rust-held when it converts exactly.
    pub(crate) fn slot_of(&self, value: &Bound<'_, PyAny>) -> Slot {
        if let Ok(held) = value.cast_exact::<HeldBaseline>() {
            // Already Rust: a clone, not a walk over Python objects.
            return Slot::Native(held.get().bl.clone());
        }
        match Bl::from_py(value, &self.types) {
            Some(b) => Slot::Native(Box::new(b)),
            None => Slot::Py(value.clone().unbind()),
        }
    }

    /// The Python value of a slot.
    pub(crate) fn value_of<'py>(&self, py: Python<'py>, slot: &Slot) -> PyResult<Bound<'py, PyAny>> {
        match slot {
            Slot::Native(b) => b.to_py(py, &self.types),
            Slot::Py(o) => Ok(o.bind(py).clone()),
        }
    }

    pub(crate) fn types(&self) -> &BlTypes {
        &self.types
    }

    fn key_of(key: &Bound<'_, PyAny>) -> PyResult<String> {
        match key.cast_exact::<PyString>() {
            Ok(s) => Ok(s.to_str()?.to_owned()),
            Err(_) => Err(PyTypeError::new_err("BaselineMap keys are str")),
        }
    }

    fn remove(&mut self, key: &str) -> Option<Slot> {
        let i = self.index.remove(key)?;
        let (_, slot) = self.entries[i].take()?;
        self.live -= 1;
        let holes = self.entries.len() - self.live;
        if holes > 64 && holes > self.live {
            self.entries.retain(Option::is_some);
            for (pos, (k, _)) in self.entries.iter().flatten().enumerate() {
                if let Some(p) = self.index.get_mut(k.as_str()) {
                    *p = pos;
                }
            }
        }
        Some(slot)
    }

    /// The live items, in insertion order.
    fn items_iter(&self) -> impl Iterator<Item = &(SStr, Slot)> {
        self.entries.iter().flatten()
    }

    /// The slot at a position the index holds (always live).
    fn at(&self, i: usize) -> &Slot {
        match &self.entries[i] {
            Some((_, slot)) => slot,
            None => unreachable!("the index only holds live positions"),
        }
    }
}

#[pymethods]
impl BaselineMap {
    /// An empty map, or one filled from a mapping or an iterable of pairs.
    #[new]
    #[pyo3(signature = (source=None))]
    fn new(py: Python<'_>, source: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut m = BaselineMap { types: Arc::new(BlTypes::new(py)?), entries: Vec::new(), live: 0, index: HashMap::new() };
        if let Some(src) = source {
            m.update(src)?;
        }
        Ok(m)
    }

    fn __len__(&self) -> usize {
        self.live
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        match key.cast_exact::<PyString>() {
            Ok(s) => s.to_str().is_ok_and(|k| self.index.contains_key(k)),
            Err(_) => false,
        }
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let k = Self::key_of(key).map_err(|_| PyKeyError::new_err(key.clone().unbind()))?;
        match self.index.get(k.as_str()) {
            Some(&i) => self.value_of(py, self.at(i)),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __setitem__(&mut self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = Self::key_of(key)?;
        let slot = self.slot_of(value);
        self.put(&k, slot);
        Ok(())
    }

    fn __delitem__(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = Self::key_of(key).map_err(|_| PyKeyError::new_err(key.clone().unbind()))?;
        match self.remove(&k) {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Iterates over a snapshot of the keys, in insertion order.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.keys(py)?.into_any().try_iter()?.into_any())
    }

    /// `m.get(key, default=None)`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(s) = key.cast_exact::<PyString>() {
            if let Some(&i) = self.index.get(s.to_str()?) {
                return self.value_of(py, self.at(i));
            }
        }
        Ok(default.unwrap_or_else(|| py.None().into_bound(py)))
    }

    /// `m.pop(key[, default])`.
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &mut self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let found = match key.cast_exact::<PyString>() {
            Ok(s) => self.remove(s.to_str()?),
            Err(_) => None,
        };
        match found {
            Some(slot) => self.value_of(py, &slot),
            None if !default.is_empty() => default.get_item(0),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// The keys, in insertion order (a list).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.items_iter().map(|(k, _)| k.as_str()))
    }

    /// The values, as fresh `Baseline`s, in insertion order (a list).
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (_, slot) in self.items_iter() {
            out.append(self.value_of(py, slot)?)?;
        }
        Ok(out)
    }

    /// `(key, Baseline)` pairs in insertion order (a list).
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (k, slot) in self.items_iter() {
            out.append(PyTuple::new(py, [PyString::new(py, k).into_any(), self.value_of(py, slot)?])?)?;
        }
        Ok(out)
    }

    /// `m.update(other)`: from a mapping (its `keys()` order) or an iterable of pairs.
    fn update(&mut self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = other.py();
        if let Ok(d) = other.cast_exact::<PyDict>() {
            for (k, v) in d.iter() {
                self.__setitem__(&k, &v)?;
            }
            return Ok(());
        }
        if let Ok(keys) = other.getattr(pyo3::intern!(py, "keys")) {
            for k in keys.call0()?.try_iter()? {
                let k = k?;
                let v = other.get_item(&k)?;
                self.__setitem__(&k, &v)?;
            }
            return Ok(());
        }
        for pair in other.try_iter()? {
            let pair = pair?;
            let k = pair.get_item(0)?;
            let v = pair.get_item(1)?;
            self.__setitem__(&k, &v)?;
        }
        Ok(())
    }

    /// `m.setdefault(key, default)`: the stored value, storing `default` first if absent.
    fn setdefault<'py>(
        &mut self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = Self::key_of(key)?;
        if !self.index.contains_key(k.as_str()) {
            let slot = self.slot_of(default);
            self.put(&k, slot);
        }
        let i = self.index[k.as_str()];
        self.value_of(py, self.at(i))
    }

    /// Removes every entry.
    fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
        self.live = 0;
    }

    /// An independent copy (the Rust values are cloned).
    fn copy(&self, py: Python<'_>) -> PyResult<Self> {
        let entries: Vec<Option<(SStr, Slot)>> = self
            .items_iter()
            .map(|(k, slot)| {
                let s = match slot {
                    Slot::Native(b) => Slot::Native(b.clone()),
                    Slot::Py(o) => Slot::Py(o.clone_ref(py)),
                };
                Some((k.clone(), s))
            })
            .collect();
        let index = entries.iter().flatten().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        Ok(BaselineMap { types: Arc::clone(&self.types), live: entries.len(), entries, index })
    }

    /// Removes `key` and returns its value as it is held: a `HeldBaseline`
    /// when in Rust (moved out, no Python `Baseline` built), else the Python
    /// value. `KeyError` when absent.
    fn pop_held<'py>(&mut self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let found = match key.cast_exact::<PyString>() {
            Ok(s) => self.remove(s.to_str()?),
            Err(_) => None,
        };
        match found {
            Some(Slot::Native(bl)) => {
                Ok(Bound::new(py, HeldBaseline { bl, types: Arc::clone(&self.types) })?.into_any())
            }
            Some(Slot::Py(o)) => Ok(o.into_bound(py)),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// How many values are held in Rust (the rest are Python objects).
    fn native_count(&self) -> usize {
        self.items_iter().filter(|(_, s)| matches!(s, Slot::Native(_))).count()
    }

    /// A plain `dict` with the same items, in the same order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, slot) in self.items_iter() {
            d.set_item(k.as_str(), self.value_of(py, slot)?)?;
        }
        Ok(d)
    }

    /// Equal to another `BaselineMap` or a mapping with equal items (order aside, as `dict`).
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.to_dict(py)?;
        if let Ok(o) = other.cast::<BaselineMap>() {
            return mine.eq(o.borrow().to_dict(py)?);
        }
        if other.cast::<PyDict>().is_ok() {
            return mine.eq(other);
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("BaselineMap({} entities, {} held in Rust)", self.live, self.native_count())
    }
}

/// One baseline held in Rust, outside any map: what `BaselineMap.pop_held`
/// returns and `BaselineMap` takes back by a clone of its Rust value.
///
/// Immutable, like the `Baseline` it stands for. A stream worker keeps
/// these between batches, so a baseline is converted to its Python form
/// only when it is written (`to_dict`), not twice per batch.
#[pyclass(frozen, module = "detector._native")]
pub struct HeldBaseline {
    bl: Box<Bl>,
    types: Arc<BlTypes>,
}

#[pymethods]
impl HeldBaseline {
    /// The Python `Baseline` equal to this one (a new object).
    fn to_baseline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.bl.to_py(py, &self.types)
    }

    /// `Baseline.to_dict()` of this baseline: what its stored form encodes.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_baseline(py)?.call_method0(pyo3::intern!(py, "to_dict"))
    }

    /// `orjson.dumps(self.to_dict())`, written from the Rust value (the
    /// same keys, order and values; see `bljson.rs`), or `None` when only
    /// the Python path can be sure (a non-finite float, an int past 64 bits).
    fn to_json<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        crate::bljson::to_json(&self.bl).map(|b| PyBytes::new(py, &b))
    }

    /// Equal to another `HeldBaseline` or a `Baseline` with equal fields.
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(o) = other.cast_exact::<HeldBaseline>() {
            return Ok(*self.bl == *o.get().bl);
        }
        self.to_baseline(py)?.eq(other)
    }

    fn __repr__(&self) -> String {
        format!("HeldBaseline(n_seen={})", self.bl.n_seen)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BaselineMap>()?;
    m.add_class::<HeldBaseline>()?;
    Ok(())
}
