//! FNV-1a (64 bits) as a `Hasher`, for the kernels' small string-keyed maps.
//!
//! Keys are short (entity keys, service names): std's SipHash costs more than
//! the rest of a lookup there, and these maps never hold input an attacker can
//! grow without bound (one batch's entities; the services of the tier table).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a state; 0 stands for "nothing hashed yet" (the offset basis).
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A `HashMap` hashed with [`Fnv`].
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
