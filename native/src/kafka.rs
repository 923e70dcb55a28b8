//! Kafka's default partitioner: `murmur2` of the key's bytes, as the Java
//! client's `Utils.murmur2` and aiokafka's pure-Python `murmur2` compute it.
//!
//! The worker groups every event it forwards by destination partition
//! (`detector.stream.stages.partition_for`, two or three calls per event);
//! aiokafka's Python loop over the key bytes was ~3% of the worker's time.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// MurmurHash2 of `data`, seed 0x9747b28c, as an unsigned 32-bit value.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// `murmur2(data)`: aiokafka's `murmur2`, compiled.
#[pyfunction(name = "murmur2")]
fn py_murmur2(data: &[u8]) -> u32 {
    murmur2(data)
}

/// `partition_for(key, partitions)`: the partition Kafka's default
/// partitioner picks for the UTF-8 bytes of `key`.
#[pyfunction]
fn partition_for(key: &str, partitions: u32) -> PyResult<u32> {
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be >= 1"));
    }
    Ok((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions)
}

/// Adds this file's functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_murmur2, m)?)?;
    m.add_function(wrap_pyfunction!(partition_for, m)?)?;
    Ok(())
}
