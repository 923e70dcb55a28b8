//! Kafka's default partitioner: `murmur2` of the key's bytes, as the Java
//! client's `Utils.murmur2` and aiokafka's pure-Python `murmur2` compute it.
//!
//! The worker groups every event it forwards by destination partition
//! (`detector.stream.stages.partition_for`, two or three calls per event);
//! aiokafka's Python loop over the key bytes was ~3% of the worker's time.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::bl::utf8_of;
use crate::layout::{EV_ENTITY, EV_ENTITY_KIND, EV_KIND, EV_SESSION_ID, EV_SRC_IP, EVENT_FIELDS};

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

/// The UTF-8 text of a `str` (or of a `str` subclass, as a `StrEnum` member
/// is); `None` for anything else, or a string with lone surrogates.
fn utf8<'a>(o: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    let s = o.cast::<PyString>().ok()?;
    // SAFETY: `s` is a str (or a subclass) that the event tuple keeps alive for 'a.
    unsafe { utf8_of(s.as_ptr()) }
}

/// `entity_routes(events, auth, partitions)`: each event's entity key
/// (`Event.entity_key`, `entity_kind + ":" + entity`) and its path to the
/// per-entity stage (`detector.stream.stages.entity_path`: the partition of
/// its IP key times `partitions`, plus the partition of its session key).
///
/// `auth` is `EventKind.AUTH`. Returns `(keys, paths)`, or `None` when an
/// item is not an event tuple with string keys (the caller then computes
/// them in Python, which raises or decides as before).
#[pyfunction]
fn entity_routes<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyList>,
    auth: &Bound<'py, PyAny>,
    partitions: u32,
) -> PyResult<Option<(Bound<'py, PyList>, Vec<u32>)>> {
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be >= 1"));
    }
    let n = events.len();
    let mut keys: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut paths: Vec<u32> = Vec::with_capacity(n);
    let mut key = String::new();
    let part = |text: &str| (murmur2(text.as_bytes()) & 0x7fff_ffff) % partitions;
    for item in events.iter() {
        let Ok(event) = item.cast::<PyTuple>() else {
            return Ok(None);
        };
        if event.len() != EVENT_FIELDS.len() {
            return Ok(None);
        }
        let field = |i: usize| event.get_item(i);
        let (kind, entity) = (field(EV_ENTITY_KIND)?, field(EV_ENTITY)?);
        let (Some(kind), Some(entity)) = (utf8(&kind), utf8(&entity)) else {
            return Ok(None);
        };
        key.clear();
        key.push_str(kind);
        key.push(':');
        key.push_str(entity);
        let is_auth = field(EV_KIND)?.is(auth);
        // ip_key / session_key: the auth event's source IP / session id when
        // it has one, else the entity key.
        let pick = |i: usize| -> PyResult<Option<u32>> {
            if !is_auth {
                return Ok(Some(part(&key)));
            }
            let v = field(i)?;
            if v.is_none() {
                return Ok(Some(part(&key)));
            }
            Ok(utf8(&v).map(part))
        };
        let (Some(ip), Some(session)) = (pick(EV_SRC_IP)?, pick(EV_SESSION_ID)?) else {
            return Ok(None);
        };
        paths.push(ip * partitions + session);
        keys.push(PyString::new(py, &key));
    }
    Ok(Some((PyList::new(py, keys)?, paths)))
}

/// Adds this file's functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_murmur2, m)?)?;
    m.add_function(wrap_pyfunction!(partition_for, m)?)?;
    m.add_function(wrap_pyfunction!(entity_routes, m)?)?;
    Ok(())
}
