//! placeholder, filled in by its owner.

use pyo3::prelude::*;

/// Registers this file's classes and functions.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
