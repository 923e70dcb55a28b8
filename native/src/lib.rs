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

mod applied;
pub mod bl;
mod blcore;
mod blengine;
mod blfeat;
mod bljson;
mod blmap;
mod codec;
mod context;
mod decision;
mod engine;
mod features;
mod fnv;
mod forest;
mod kafka;
mod jparse;
pub mod layout;
mod parse;
mod pynum;
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
    codec::register(m)?;
    decision::register(m)?;
    applied::register(m)?;
    // What a panic in a kernel (a bug) raises in Python: a BaseException,
    // which `except Exception` does not catch. The stream stages catch it
    // by name (`detector.native.engine_faults`) to dead-letter the event
    // instead of stopping the worker.
    m.add("PanicException", m.py().get_type::<pyo3::panic::PanicException>())?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    Ok(())
}

/// Test hook: panics with `message`, as a kernel bug would.
#[pyfunction]
fn _panic(message: &str) {
    panic!("{message}");
}
