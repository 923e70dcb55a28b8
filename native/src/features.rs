//! Feature extraction: `detector.features.FeatureExtractor.extract`.

use pyo3::prelude::*;

/// Adds this file's kernels to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
