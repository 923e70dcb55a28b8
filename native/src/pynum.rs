//! Python's number semantics on f64/i128, shared by the feature kernels
//! (`features.rs` on Python baselines, `blfeat.rs` on Rust-held ones): int
//! to float conversion, exact int/float comparisons, and `x ** 2`.

use std::hint::black_box;

/// Bound inside which an f64 converts to i128 without overflow (2**100).
pub(crate) const I128_SAFE: f64 = 1.2676506002282294e30;

/// `float(i)`: through i64 when it fits (one instruction instead of the
/// i128 library routine); both casts round to nearest, ties to even.
#[inline]
pub(crate) fn i2f(i: i128) -> f64 {
    match i64::try_from(i) {
        Ok(v) => v as f64,
        Err(_) => i as f64,
    }
}

/// `i < f`, exactly, as Python compares an int with a float.
pub(crate) fn int_lt_float(i: i128, f: f64) -> bool {
    if f.is_nan() {
        false
    } else if f >= I128_SAFE {
        true
    } else if f < -I128_SAFE {
        false
    } else {
        // For an integer i: i < f  <=>  i < ceil(f).
        i < f.ceil() as i128
    }
}

/// `f < i`, exactly.
pub(crate) fn float_lt_int(f: f64, i: i128) -> bool {
    if f.is_nan() || f >= I128_SAFE {
        false
    } else if f < -I128_SAFE {
        true
    } else {
        // For an integer i: f < i  <=>  floor(f) < i.
        (f.floor() as i128) < i
    }
}

/// Python's `x ** 2` on a float (`float_pow`): NaN is returned as is, the
/// sign is dropped, 1 and 0 are special-cased, and the rest goes to libm's
/// `pow` (black_box keeps LLVM from turning it into `x * x`, which may round
/// differently).
pub(crate) fn square(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a == 1.0 {
        1.0
    } else if a == 0.0 {
        0.0
    } else if a.is_infinite() {
        f64::INFINITY
    } else {
        a.powf(black_box(2.0))
    }
}
