//! Parser fast path: `detector.events._fast_ocsf`, `_fast_ecs` and `_fast_native`.

use pyo3::prelude::*;

/// Adds this file's kernels to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
