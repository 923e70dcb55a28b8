//! The batch loop: `detector.engine.Detector.process`.

use pyo3::prelude::*;

/// Adds this file's kernels to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
