//! `detector._native`: compiled kernels of the detector's core.
//!
//! Each kernel is a drop-in for one Python function or method of the core and
//! must return exactly what it returns (same values, same types, same float
//! bits): the Python code stays the specification, and `tests/test_native_*.py`
//! compare the two. Kernels work on the core's own Python values (the `Event`
//! and `Baseline` named tuples, their dicts and tuples), so state, tables and
//! serialised forms are unchanged and either implementation can take over from
//! the other at any event.
//!
//! Nothing here reads the clock or the environment, and nothing here panics
//! on input: errors are Python exceptions.

use pyo3::prelude::*;

pub mod bl;
mod blcore;
mod blengine;
mod blfeat;
mod blmap;
mod context;
mod engine;
mod features;
mod fnv;
mod forest;
mod kafka;
mod jparse;
pub mod layout;
mod parse;
pub mod sstr;
mod update;

/// The module: one `register` per kernel file, so that kernels land independently.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SOURCE_DIGEST", env!("DETECTOR_NATIVE_DIGEST"))?;
    layout::register(m)?;
    update::register(m)?;
    features::register(m)?;
    forest::register(m)?;
    context::register(m)?;
    parse::register(m)?;
    engine::register(m)?;
    blcore::register(m)?;
    blfeat::register(m)?;
    blmap::register(m)?;
    blengine::register(m)?;
    kafka::register(m)?;
    Ok(())
}
