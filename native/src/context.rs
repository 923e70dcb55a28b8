//! Cross-entity context: `detector.engine.Detector.ip_stats` and `session_changes`.

use pyo3::prelude::*;

/// Adds this file's kernels to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
