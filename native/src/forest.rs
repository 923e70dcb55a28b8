//! Forest scoring: `detector.model.KindModel.score` (matrix, imputation, `CompiledForest.score`, calibration).

use pyo3::prelude::*;

/// Adds this file's kernels to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
