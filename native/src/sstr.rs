//! [`SStr`]: the strings a Rust-held baseline keeps (value-set entries,
//! dimension names, traffic keys, signal keys, a country), inline when short.
//!
//! Nearly nine in ten baseline strings are at most 22 bytes (countries,
//! cities, ASNs, /24 prefixes, services, ports, host names, dimension names).
//! A `String` puts each in its own heap block (24 bytes of header plus a
//! malloc chunk of at least 32 bytes); `SStr` keeps those inside its 24 bytes
//! and boxes only the longer ones (user agents, long host names), which is
//! most of the difference between ~6.7 KB and ~4 KB resident per entity.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest string kept inline, in bytes.
const INLINE: usize = 22;

/// A UTF-8 string of at most [`INLINE`] bytes inline, else boxed (24 bytes either way).
#[derive(Clone)]
pub enum SStr {
    /// `(length, bytes)`: the first `length` bytes are the string.
    Inline(u8, [u8; INLINE]),
    Heap(Box<str>),
}

// Same size as the `String` it replaces; never larger.
const _: () = assert!(std::mem::size_of::<SStr>() == 24);

impl SStr {
    /// The string `s`, inline when it fits.
    #[inline]
    pub fn new(s: &str) -> SStr {
        let b = s.as_bytes();
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            SStr::Inline(b.len() as u8, buf)
        } else {
            SStr::Heap(Box::from(s))
        }
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            SStr::Inline(n, buf) => {
                let b = &buf[..*n as usize];
                // SAFETY: `b` is a copy of a whole `&str` (`new` only), so it is
                // valid UTF-8 and ends on a character boundary.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            SStr::Heap(s) => s,
        }
    }
}

impl Deref for SStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SStr {
    #[inline]
    fn eq(&self, other: &SStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SStr {}

impl PartialEq<str> for SStr {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SStr {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for SStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for SStr {
    #[inline]
    fn from(s: &str) -> SStr {
        SStr::new(s)
    }
}

impl From<String> for SStr {
    #[inline]
    fn from(s: String) -> SStr {
        SStr::new(&s)
    }
}

// Hash and Borrow as `str` does, so a map keyed by `SStr` is looked up by `&str`.
impl Hash for SStr {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl Borrow<str> for SStr {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
