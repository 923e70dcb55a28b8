//! Raw fast path: one JSON document's bytes straight to an `Event`.
//!
//! `parse_event` decodes a document with `orjson.loads` (building every value
//! of the document as a Python object) and then reads a few of them. Here a
//! strict JSON reader scans the bytes once into a flat, borrowed tree (spans
//! into the buffer, no Python objects), and the OCSF and native-form readers
//! (ports of `ocsf_impl` / `native_impl` in parse.rs, themselves ports of
//! `_fast_ocsf` / `_fast_native`) create Python objects only for the Event's
//! own fields.
//!
//! The contract is the one of every parse kernel, made stricter: return the
//! very Event that `parse_event(data)` returns, or `None` at any doubt. A
//! doubt is anything where the Python path could see another document or
//! decide otherwise: bytes orjson rejects (invalid UTF-8, bad grammar, numbers
//! that overflow to infinity, lone surrogates...) or reads differently
//! (integers beyond int64, which orjson returns as big ints or floats), keys
//! written with escapes, repeated keys in an object we read, nesting deeper
//! than [`MAX_DEPTH`], a missing event id (its derived id hashes orjson's own
//! dump), ECS documents, and every case where the Python fast path gives up.

use std::cell::RefCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyString};

use crate::layout::*;
use crate::parse::{
    int_obj, is_empty, py_bool, Doubt, ParseKernels, MAX_ASN, MAX_CODE, MAX_STR_LEN, MAX_TS_MS, R, TWO_63,
};

/// Deepest nesting read (objects and arrays); deeper documents are a doubt.
/// orjson accepts far deeper ones: this only bounds our recursion.
const MAX_DEPTH: usize = 32;
/// `events.MAX_EVENT_BYTES`: parse_event rejects larger documents before reading them.
pub(crate) const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One JSON value, as read from the buffer (no Python objects).
#[derive(Clone, Copy, Debug)]
enum Val {
    Null,
    Bool(bool),
    /// An integer literal within int64.
    Int(i64),
    /// An integer literal beyond int64 (orjson: a big int or a float): a doubt when read.
    BigInt,
    /// A number with a fraction or an exponent: the correctly rounded, finite double.
    Float(f64),
    /// A string: the byte span between its quotes, and whether it holds escapes.
    Str(Span),
    /// An object: its members are the nodes up to this node's `end`.
    Obj,
    /// An array: its elements are validated, not kept.
    Arr,
}

/// A string's bytes between its quotes (`s..e`) and whether it holds a backslash.
#[derive(Clone, Copy, Debug)]
struct Span {
    s: u32,
    e: u32,
    esc: bool,
}

impl Span {
    /// The byte range of the string's text, between its quotes.
    #[inline]
    fn range(self) -> std::ops::Range<usize> {
        self.s as usize..self.e as usize
    }
}

/// An object member (or the root): its key, its value and where its subtree ends.
#[derive(Clone, Copy, Debug)]
struct Node {
    key: Span,
    val: Val,
    /// Index of the first node after this node's subtree (its next sibling).
    end: u32,
}

/// The flat tree of a document: node 0 is the root object, members in document
/// order, each object's members right after it.
struct Doc<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

/// A strict JSON reader (RFC 8259, as orjson accepts it) over validated UTF-8.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    nodes: Vec<Node>,
}

/// The value of the four hex digits at `b[i..i + 4]`, else a doubt.
#[inline]
fn hex4(b: &[u8], i: usize) -> R<u32> {
    let mut v = 0u32;
    for k in 0..4 {
        let c = *b.get(i + k).ok_or(Doubt)?;
        let d = (c as char).to_digit(16).ok_or(Doubt)?;
        v = (v << 4) | d;
    }
    Ok(v)
}

impl<'a> Reader<'a> {
    /// The byte at the cursor (0 past the end: never valid JSON there).
    #[inline(always)]
    fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(0)
    }

    /// Skips JSON whitespace (space, tab, LF, CR: nothing else, like orjson).
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Moves the cursor to the next byte of a string that is not plain text:
    /// a quote, a backslash or a control character (or the end of the buffer).
    #[inline(always)]
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // Eight bytes at a time: a word holds a special byte when one of its
        // bytes equals '"' or '\\' or is below 0x20 (the classic "has zero
        // byte" / "has less than" bit tricks; exact for bytes < 0x80, and a
        // byte >= 0x80 is never flagged by the `!w & HIGH` mask).
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            let q = w ^ (ONES * b'"' as u64);
            let bs = w ^ (ONES * b'\\' as u64);
            let special = (q.wrapping_sub(ONES) & !q)
                | (bs.wrapping_sub(ONES) & !bs)
                | (w.wrapping_sub(ONES * 0x20) & !w);
            let special = special & HIGH;
            if special != 0 {
                self.i += (special.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// A string at the cursor (on its opening quote): its span; escapes checked.
    #[inline(always)]
    fn string(&mut self) -> R<Span> {
        self.i += 1;
        let s = self.i as u32; // documents are at most MAX_EVENT_BYTES long
        let mut esc = false;
        loop {
            self.skip_plain();
            let c = *self.b.get(self.i).ok_or(Doubt)?;
            match c {
                b'"' => {
                    let e = self.i as u32;
                    self.i += 1;
                    return Ok(Span { s, e, esc });
                }
                b'\\' => {
                    esc = true;
                    match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let cp = hex4(self.b, self.i + 2)?;
                            self.i += 6;
                            if (0xD800..0xDC00).contains(&cp) {
                                // a high surrogate must be followed by an escaped low one
                                if self.b.get(self.i) != Some(&b'\\') || self.b.get(self.i + 1) != Some(&b'u') {
                                    return Err(Doubt);
                                }
                                let lo = hex4(self.b, self.i + 2)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(Doubt);
                                }
                                self.i += 6;
                            } else if (0xDC00..0xE000).contains(&cp) {
                                return Err(Doubt); // a lone low surrogate
                            }
                        }
                        _ => return Err(Doubt),
                    }
                }
                _ => return Err(Doubt), // control characters must be escaped
            }
        }
    }

    /// Skips digits; returns their value when it fits a u64 (None on overflow).
    #[inline(always)]
    fn digits(&mut self) -> Option<u64> {
        let mut v: Option<u64> = Some(0);
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.and_then(|v| v.checked_mul(10)).and_then(|v| v.checked_add((c - b'0') as u64));
            self.i += 1;
        }
        v
    }

    /// A number at the cursor: grammar checked, value parsed.
    fn number(&mut self) -> R<Val> {
        let s = self.i;
        let neg = self.peek() == b'-';
        if neg {
            self.i += 1;
        }
        let int = match self.peek() {
            b'0' => {
                self.i += 1; // no leading zeros: a digit after it ends the number
                Some(0)
            }
            b'1'..=b'9' => self.digits(),
            _ => return Err(Doubt),
        };
        let mut is_float = false;
        if self.peek() == b'.' {
            is_float = true;
            self.i += 1;
            if !self.peek().is_ascii_digit() {
                return Err(Doubt);
            }
            self.digits();
        }
        if matches!(self.peek(), b'e' | b'E') {
            is_float = true;
            self.i += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            if !self.peek().is_ascii_digit() {
                return Err(Doubt);
            }
            self.digits();
        }
        if !is_float {
            // "-0" is the int 0, as for orjson; beyond int64 orjson differs (big int, float)
            let v = match (int, neg) {
                (Some(v), false) => i64::try_from(v).ok(),
                (Some(v), true) => 0i64.checked_sub_unsigned(v),
                (None, _) => None,
            };
            return Ok(v.map(Val::Int).unwrap_or(Val::BigInt));
        }
        // ASCII only, so the span is valid UTF-8.
        let text = std::str::from_utf8(&self.b[s..self.i]).map_err(|_| Doubt)?;
        // Rust's parse is correctly rounded, as orjson's is; orjson rejects infinities.
        let x: f64 = text.parse().map_err(|_| Doubt)?;
        if !x.is_finite() {
            return Err(Doubt);
        }
        Ok(Val::Float(x))
    }

    /// A literal (`true`, `false`, `null`) at the cursor.
    #[inline]
    fn literal(&mut self, word: &[u8], v: Val) -> R<Val> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(Doubt);
        }
        self.i += word.len();
        Ok(v)
    }

    /// Any value at the cursor (after whitespace). `keep`: record an object's members.
    fn value(&mut self, depth: usize, keep: bool) -> R<Val> {
        match self.peek() {
            b'{' => {
                self.object(depth + 1, keep)?;
                Ok(Val::Obj)
            }
            b'[' => {
                self.array(depth + 1)?;
                Ok(Val::Arr)
            }
            b'"' => Ok(Val::Str(self.string()?)),
            b't' => self.literal(b"true", Val::Bool(true)),
            b'f' => self.literal(b"false", Val::Bool(false)),
            b'n' => self.literal(b"null", Val::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Doubt),
        }
    }

    /// An object at the cursor; with `keep`, each member becomes a node (after
    /// the object's own node, which the caller pushed).
    fn object(&mut self, depth: usize, keep: bool) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Doubt);
        }
        self.i += 1;
        self.ws();
        if self.peek() == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != b'"' {
                return Err(Doubt);
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != b':' {
                return Err(Doubt);
            }
            self.i += 1;
            self.ws();
            if keep {
                let at = self.nodes.len();
                self.nodes.push(Node { key, val: Val::Null, end: at as u32 + 1 });
                let val = self.value(depth, true)?;
                let end = self.nodes.len() as u32;
                self.nodes[at].val = val;
                self.nodes[at].end = end;
            } else {
                self.value(depth, false)?;
            }
            self.ws();
            match self.peek() {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Doubt),
            }
        }
    }

    /// An array at the cursor: validated, its elements not kept (never read).
    fn array(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Doubt);
        }
        self.i += 1;
        self.ws();
        if self.peek() == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth, false)?;
            self.ws();
            match self.peek() {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Doubt),
            }
        }
    }
}

impl<'a> Doc<'a> {
    /// Reads a whole document: a top-level object and nothing but whitespace around it.
    fn read(data: &'a [u8]) -> R<Doc<'a>> {
        if data.len() > MAX_EVENT_BYTES {
            return Err(Doubt); // positions are u32; parse_event rejects it anyway
        }
        // orjson rejects invalid UTF-8 anywhere (surrogates, overlong forms,
        // beyond U+10FFFF), as Rust's validation does.
        let text = std::str::from_utf8(data).map_err(|_| Doubt)?;
        let mut r = Reader { b: data, i: 0, nodes: Vec::with_capacity(96) };
        r.ws();
        if r.peek() != b'{' {
            return Err(Doubt); // not an object (or not JSON): the Python path names it
        }
        r.nodes.push(Node { key: Span { s: 0, e: 0, esc: false }, val: Val::Obj, end: 1 });
        r.object(1, true)?;
        r.nodes[0].end = r.nodes.len() as u32;
        r.ws();
        if r.i != data.len() {
            return Err(Doubt); // trailing content
        }
        Ok(Doc { text, nodes: r.nodes })
    }

    /// The value of node `n`.
    #[inline]
    fn val(&self, n: usize) -> Val {
        self.nodes[n].val
    }

    /// The raw text of a span (escapes not decoded).
    #[inline]
    fn raw(&self, sp: Span) -> R<&'a str> {
        self.text.get(sp.range()).ok_or(Doubt)
    }

    /// A string's value, escapes decoded as JSON defines them.
    fn decoded(&self, sp: Span) -> R<std::borrow::Cow<'a, str>> {
        let raw = self.raw(sp)?;
        if !sp.esc {
            return Ok(raw.into());
        }
        let b = raw.as_bytes();
        let mut out = String::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let Some(j) = raw[i..].find('\\') else {
                out.push_str(&raw[i..]);
                break;
            };
            out.push_str(&raw[i..i + j]);
            i += j;
            // (the reader checked every escape; `get` only keeps this panic-free)
            let (c, len) = match b.get(i + 1).ok_or(Doubt)? {
                b'"' => ('"', 2),
                b'\\' => ('\\', 2),
                b'/' => ('/', 2),
                b'b' => ('\u{8}', 2),
                b'f' => ('\u{c}', 2),
                b'n' => ('\n', 2),
                b'r' => ('\r', 2),
                b't' => ('\t', 2),
                b'u' => {
                    let hi = hex4(b, i + 2)?;
                    if (0xD800..0xDC00).contains(&hi) {
                        // a surrogate pair (the reader checked the low half follows)
                        let lo = hex4(b, i + 8)?.checked_sub(0xDC00).filter(|x| *x < 0x400).ok_or(Doubt)?;
                        (char::from_u32(0x10000 + ((hi - 0xD800) << 10) + lo).ok_or(Doubt)?, 12)
                    } else {
                        (char::from_u32(hi).ok_or(Doubt)?, 6)
                    }
                }
                _ => return Err(Doubt),
            };
            out.push(c);
            i += len;
        }
        Ok(out.into())
    }
}

/// A new Python str of `text`, as `PyString::new` makes it (a compact str of
/// the narrowest kind), with a shortcut for ASCII text, by far the most
/// common: allocated at its final size and copied, without CPython's UTF-8
/// decoder (a tenth of the kernel's time otherwise).
#[inline]
fn new_str<'py>(py: Python<'py>, text: &str) -> R<Bound<'py, PyString>> {
    if !text.is_ascii() || text.len() < 2 {
        // (0 and 1 characters: CPython's shared singletons, as the decoder returns them)
        return Ok(PyString::new(py, text));
    }
    // SAFETY: PyUnicode_New(n, 127) returns a new, compact ASCII str of n
    // characters (or NULL with an exception set, handled), whose data are the
    // n bytes after its header plus a NUL it already wrote. We copy exactly n
    // ASCII bytes there before anything else can see the object (no Python code
    // runs in between), which is how CPython's own decoder fills it for ASCII
    // input; its hash is not computed yet (-1), as for any new str.
    unsafe {
        let n = text.len();
        let obj = ffi::PyUnicode_New(n as ffi::Py_ssize_t, 127);
        if obj.is_null() {
            return Err(PyErr::fetch(py).into());
        }
        std::ptr::copy_nonoverlapping(text.as_ptr(), ffi::PyUnicode_1BYTE_DATA(obj), n);
        Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyString>())
    }
}

/// Finds the members of an object by key, in one pass over its members.
///
/// `find!(doc, obj; b"a" => a, b"b" => b)` declares `a` and `b` as
/// `Option<usize>`: the node of that key's value, `None` when the object is
/// absent, the key is absent or its value is null (as `obj.get(key)` with null
/// as absent). A key seen twice (Python keeps the last value), or any key
/// written with an escape (it could spell one of ours), is a doubt.
macro_rules! find {
    ($doc:expr, $parent:expr; $($name:literal => $var:ident),+ $(,)?) => {
        // Outer Option: the key was seen (null or not); inner: its non-null value.
        $(let mut $var: Option<Option<usize>> = None;)+
        if let Some(parent) = $parent {
            let doc: &Doc<'_> = $doc;
            let end = doc.nodes[parent].end as usize;
            let mut c = parent + 1;
            while c < end {
                let node = &doc.nodes[c];
                if node.key.esc {
                    return Err(Doubt);
                }
                let value = (!matches!(node.val, Val::Null)).then_some(c);
                match doc.text.as_bytes().get(node.key.range()).ok_or(Doubt)? {
                    $($name => {
                        if $var.is_some() {
                            return Err(Doubt);
                        }
                        $var = Some(value);
                    })+
                    _ => {}
                }
                c = node.end as usize;
            }
        }
        $(let $var: Option<usize> = $var.flatten();)+
    };
}

/// Reads the Event's values from a document, creating Python objects only for them.
struct Fields<'a, 'py> {
    py: Python<'py>,
    doc: Doc<'a>,
    k: &'a ParseKernels,
    /// The strings of earlier documents, when the caller holds the cache.
    strs: RefCell<Option<&'a mut StrCache>>,
}

/// Short ASCII strings the parser made, for the next documents to share.
///
/// Most string fields repeat from event to event (user names, services,
/// user agents, countries, source addresses, session ids): each repeat then
/// costs a hash and a compare instead of a new str, its free, and hashing it
/// again where it is a dict key (CPython caches a str's hash in the object).
/// Direct-mapped and fixed in size: a collision evicts, so input cannot grow
/// it, and a string is the same value whichever object holds it.
pub(crate) struct StrCache {
    slots: Vec<Option<(u64, Py<PyString>)>>,
}

/// Slots of the cache (2^bits), and the longest string it keeps.
const STR_CACHE_BITS: u32 = 12;
const STR_CACHE_SLOTS: usize = 1 << STR_CACHE_BITS;
const STR_CACHE_MAX_LEN: usize = 64;

/// The cache's hash of a string's bytes: eight bytes per step (rotate, xor,
/// multiply, as FxHash), the slot from the top bits. Byte-at-a-time FNV-1a
/// cost more than the allocation it saves on 40-60-byte user agents.
fn str_cache_hash(b: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = b.len() as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(x)).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut x = [0u8; 8];
        x[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(x)).wrapping_mul(K);
    }
    h
}

impl Default for StrCache {
    fn default() -> Self {
        StrCache { slots: (0..STR_CACHE_SLOTS).map(|_| None).collect() }
    }
}

impl StrCache {
    /// The str of `text`: the cached one when it holds the same text, else a
    /// new one (kept when `text` is short ASCII).
    fn get<'py>(&mut self, py: Python<'py>, text: &str) -> R<Bound<'py, PyString>> {
        let b = text.as_bytes();
        if b.len() < 2 || b.len() > STR_CACHE_MAX_LEN || !text.is_ascii() {
            return new_str(py, text);
        }
        let h = str_cache_hash(b);
        let slot = &mut self.slots[(h >> (64 - STR_CACHE_BITS)) as usize];
        if let Some((held_hash, held)) = slot {
            if *held_hash == h {
                let held = held.bind(py);
                // SAFETY: every cached str was made by `new_str` from ASCII
                // text of 2 or more bytes: a compact ASCII str, whose data are
                // its length in bytes; it is immutable and alive (held here).
                let same = unsafe {
                    let p = held.as_ptr();
                    ffi::PyUnicode_GET_LENGTH(p) as usize == b.len()
                        && std::slice::from_raw_parts(ffi::PyUnicode_1BYTE_DATA(p), b.len()) == b
                };
                if same {
                    return Ok(held.clone());
                }
            }
        }
        let s = new_str(py, text)?;
        *slot = Some((h, s.clone().unbind()));
        Ok(s)
    }
}

impl<'a, 'py> Fields<'a, 'py> {
    /// A nested object: `None` when absent or null, a doubt when not an object.
    #[inline]
    fn obj(&self, v: Option<usize>) -> R<Option<usize>> {
        match v {
            None => Ok(None),
            Some(n) => match self.doc.val(n) {
                Val::Obj => Ok(Some(n)),
                _ => Err(Doubt),
            },
        }
    }

    /// A string field checked (`None` when absent, or empty for an identifier):
    /// a doubt when not a string or longer than MAX_STR_LEN characters. The
    /// Python str is made later, only for the strings the Event holds.
    #[inline]
    fn checked(&self, v: Option<usize>, ident: bool) -> R<Option<Span>> {
        let Some(n) = v else { return Ok(None) };
        let Val::Str(sp) = self.doc.val(n) else { return Err(Doubt) };
        if ident && sp.s == sp.e {
            return Ok(None); // an empty identifier counts as missing
        }
        // characters, not bytes: only a long text can have too many
        if sp.e - sp.s > MAX_STR_LEN as u32 && self.doc.decoded(sp)?.chars().count() > MAX_STR_LEN {
            return Err(Doubt);
        }
        Ok(Some(sp))
    }

    /// The Python str of a checked string.
    #[inline]
    fn make(&self, sp: Option<Span>) -> R<Option<Bound<'py, PyString>>> {
        sp.map(|sp| self.shared_str(&self.doc.decoded(sp)?)).transpose()
    }

    /// A str of `text`, from the string cache when the caller holds one.
    #[inline]
    fn shared_str(&self, text: &str) -> R<Bound<'py, PyString>> {
        match self.strs.borrow_mut().as_deref_mut() {
            Some(cache) => cache.get(self.py, text),
            None => new_str(self.py, text),
        }
    }

    /// A string field (`None` when absent) as a Python str; a doubt when not a
    /// string or longer than MAX_STR_LEN characters.
    #[inline]
    fn string(&self, v: Option<usize>) -> R<Option<Bound<'py, PyString>>> {
        self.make(self.checked(v, false)?)
    }

    /// An identifier: like `string`, but an empty string counts as missing.
    #[inline]
    fn ident(&self, v: Option<usize>) -> R<Option<Bound<'py, PyString>>> {
        self.make(self.checked(v, true)?)
    }

    /// An int literal within `lo..=hi`, else `None`.
    #[inline]
    fn int_in(&self, n: usize, lo: i64, hi: i64) -> Option<i64> {
        match self.doc.val(n) {
            Val::Int(x) if (lo..=hi).contains(&x) => Some(x),
            _ => None,
        }
    }

    /// An optional code (`activity_id` and friends): a non-negative int32, else a doubt.
    #[inline]
    fn code(&self, v: Option<usize>) -> R<Option<i64>> {
        v.map(|n| self.int_in(n, 0, MAX_CODE).ok_or(Doubt)).transpose()
    }

    /// An optional int within `lo..=hi` as a Python int, else a doubt.
    #[inline]
    fn int_field(&self, v: Option<usize>, lo: i64, hi: i64) -> R<Option<Bound<'py, PyAny>>> {
        v.map(|n| int_obj(self.py, self.int_in(n, lo, hi).ok_or(Doubt)?)).transpose()
    }

    /// A counter (`_count`): an int in 0..=2**63-1 as is, a float in range truncated.
    #[inline]
    fn count(&self, v: Option<usize>) -> R<Option<Bound<'py, PyAny>>> {
        let Some(n) = v else { return Ok(None) };
        match self.doc.val(n) {
            Val::Int(x) if x >= 0 => Ok(Some(int_obj(self.py, x)?)),
            // int(x) truncates toward zero; x < 2**63 fits an i64.
            Val::Float(x) if (0.0..TWO_63).contains(&x) => Ok(Some(int_obj(self.py, x.trunc() as i64)?)),
            _ => Err(Doubt),
        }
    }

    /// The event time (`time`, `ts`): an int in 0..MAX_TS_MS, or a float in range truncated.
    #[inline]
    fn time_number(&self, n: usize) -> R<Bound<'py, PyAny>> {
        match self.doc.val(n) {
            Val::Int(x) if (0..MAX_TS_MS).contains(&x) => int_obj(self.py, x),
            Val::Float(x) if 0.0 <= x && x < MAX_TS_MS as f64 => int_obj(self.py, x.trunc() as i64),
            _ => Err(Doubt),
        }
    }

    /// A coordinate in -limit..=limit as a float (`float(v)`), else a doubt.
    #[inline]
    fn coord(&self, v: Option<usize>, limit: f64) -> R<Option<Bound<'py, PyAny>>> {
        let Some(n) = v else { return Ok(None) };
        let x = match self.doc.val(n) {
            Val::Float(x) if -limit <= x && x <= limit => x,
            Val::Int(i) if -(limit as i64) <= i && i <= limit as i64 => i as f64, // exact
            _ => return Err(Doubt),
        };
        Ok(Some(PyFloat::new(self.py, x).into_any()))
    }

    /// A country code (`_ALPHA2`): two ASCII upper-case letters, else a doubt.
    #[inline]
    fn country(&self, v: Option<usize>) -> R<Option<Bound<'py, PyAny>>> {
        let Some(n) = v else { return Ok(None) };
        let Val::Str(sp) = self.doc.val(n) else { return Err(Doubt) };
        let b = self.doc.raw(sp)?.as_bytes(); // an escape is a doubt: not two letters raw
        if b.len() == 2 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() {
            Ok(Some(self.shared_str(self.doc.raw(sp)?)?.into_any()))
        } else {
            Err(Doubt)
        }
    }

    /// An optional bool, else a doubt.
    #[inline]
    fn boolean(&self, v: Option<usize>) -> R<Option<Bound<'py, PyAny>>> {
        match v.map(|n| self.doc.val(n)) {
            None => Ok(None),
            Some(Val::Bool(b)) => Ok(Some(py_bool(self.py, b))),
            Some(_) => Err(Doubt),
        }
    }

    /// An event id: an int literal as its decimal text (`str(int)`), or a
    /// non-empty string. Missing is a doubt (the derived id hashes orjson's dump).
    fn event_id(&self, v: Option<usize>) -> R<Bound<'py, PyAny>> {
        let n = v.ok_or(Doubt)?;
        if let Val::Int(x) = self.doc.val(n) {
            return Ok(new_str(self.py, &x.to_string())?.into_any());
        }
        // Unique per event: made outside the string cache, where it would
        // only evict strings that repeat.
        let sp = self.checked(Some(n), true)?.ok_or(Doubt)?;
        Ok(new_str(self.py, &self.doc.decoded(sp)?)?.into_any())
    }

    /// `s.lower()` of a string field: ASCII in Rust, anything else by Python's own.
    fn lowered(&self, v: Option<usize>) -> R<Option<Bound<'py, PyAny>>> {
        let Some(s) = self.string(v)? else { return Ok(None) };
        Ok(Some(self.k.lower(s)?))
    }

    /// The memoised `(normalized, prefix, internal)` of an IP field, or a doubt.
    fn ip(&self, v: Option<usize>) -> R<Option<[Bound<'py, PyAny>; 3]>> {
        let Some(n) = v else { return Ok(None) };
        let Val::Str(sp) = self.doc.val(n) else { return Err(Doubt) };
        // like the fast paths: no length check here (an address that long is no address)
        let text = self.doc.decoded(sp)?;
        self.k.ip(Some(self.shared_str(&text)?.into_any()))
    }

    /// OCSF `user.type` as sent, else the caption of `user.type_id` (checked as a code).
    fn ocsf_user_type(&self, type_v: Option<usize>, type_id_v: Option<usize>) -> R<Option<Bound<'py, PyString>>> {
        if let Some(tag) = self.string(type_v)? {
            return Ok(Some(tag));
        }
        let Some(type_id) = self.code(type_id_v)? else { return Ok(None) };
        for (id, caption) in &self.k.user_type_by_id {
            if *id == type_id {
                let c = caption.bind(self.py).clone();
                return Ok(Some(c.cast_into_exact::<PyString>().map_err(|_| Doubt)?));
            }
        }
        Ok(None)
    }

    /// The port of `ocsf_impl` (and `_fast_ocsf`) over the document's nodes.
    fn ocsf(&self, root: usize, is_auth: bool) -> R<Bound<'py, PyAny>> {
        let py = self.py;
        let k = self.k;
        let doc = &self.doc;
        find!(doc, Some(root);
            b"time" => time, b"metadata" => metadata, b"src_endpoint" => src_endpoint,
            b"device" => device_v, b"dst_endpoint" => dst_endpoint, b"user" => user_v,
            b"status_id" => status_id, b"status_detail" => status_detail_v,
            b"is_mfa" => is_mfa_v, b"service" => service_v, b"actor" => actor_v,
            b"connection_info" => connection_info, b"traffic" => traffic_v,
            b"duration" => duration_v, b"session" => session_v,
            b"activity_id" => activity_v, b"http_request" => http_request,
        );
        let ts_ms = self.time_number(time.ok_or(Doubt)?)?;

        let meta = self.obj(metadata)?;
        find!(doc, meta; b"uid" => meta_uid);
        let event_id = self.event_id(meta_uid)?;

        let src = self.obj(src_endpoint)?;
        find!(doc, src;
            b"ip" => src_ip_v, b"uid" => src_uid_v, b"hostname" => src_hostname_v,
            b"location" => src_loc_v, b"autonomous_system" => src_as_v,
        );
        let src_ip = self.ip(src_ip_v)?;
        let src_uid = self.checked(src_uid_v, true)?; // made into a str where used
        let src_hostname = self.ident(src_hostname_v)?;
        let src_loc = self.obj(src_loc_v)?;
        let src_as = self.obj(src_as_v)?;
        let device = self.obj(device_v)?;
        find!(doc, device; b"uid" => device_uid_v);
        let device_uid = self.checked(device_uid_v, true)?;
        let dst = self.obj(dst_endpoint)?;
        find!(doc, dst;
            b"ip" => dst_ip_v, b"hostname" => dst_hostname_v, b"port" => dst_port_v,
            b"location" => dst_loc_v, b"autonomous_system" => dst_as_v,
        );
        let dst_ip = self.ip(dst_ip_v)?;

        let mut success: Option<Bound<'py, PyAny>> = None;
        let mut is_mfa: Option<Bound<'py, PyAny>> = None;
        let mut status_detail: Option<Bound<'py, PyString>> = None;
        let mut service: Option<Bound<'py, PyString>> = None;
        let mut protocol: Option<Bound<'py, PyAny>> = None;
        let mut dst_country: Option<Bound<'py, PyAny>> = None;
        let mut direction: Option<i64> = None;
        let mut dst_asn: Option<Bound<'py, PyAny>> = None;
        let mut bytes_in = None;
        let mut bytes_out = None;
        let mut packets_in = None;
        let mut packets_out = None;
        let mut duration_ms = None;
        let mut actor_session_v: Option<usize> = None;
        let kind;
        let user;
        let user_type: Option<Bound<'py, PyString>>;
        let device_id;
        let entity: Bound<'py, PyString>;
        let mut entity_is_user = true;

        if is_auth {
            kind = &k.auth;
            let user_obj = self.obj(user_v)?;
            find!(doc, user_obj;
                b"uid" => uid_v, b"name" => name_v, b"email_addr" => email_v,
                b"type" => type_v, b"type_id" => type_id_v,
            );
            let uid = self.checked(uid_v, true)?;
            let name = self.checked(name_v, true)?;
            let email = self.checked(email_v, true)?;
            user_type = self.ocsf_user_type(type_v, type_id_v)?;
            user = self.make(uid.or(name).or(email))?;
            if let Some(sid) = self.code(status_id)? {
                success = match sid {
                    1 => Some(py_bool(py, true)),
                    2 => Some(py_bool(py, false)),
                    _ => None,
                };
            }
            status_detail = self.string(status_detail_v)?;
            is_mfa = self.boolean(is_mfa_v)?;
            let service_obj = self.obj(service_v)?;
            find!(doc, service_obj; b"name" => service_name_v);
            service = self.string(service_name_v)?;
            device_id = self.make(device_uid.or(src_uid))?;
            entity = user.clone().ok_or(Doubt)?;
        } else {
            kind = &k.network;
            let actor = self.obj(actor_v)?;
            find!(doc, actor; b"user" => actor_user_v, b"session" => actor_session);
            actor_session_v = actor_session;
            let actor_user = self.obj(actor_user_v)?;
            find!(doc, actor_user;
                b"uid" => uid_v, b"name" => name_v, b"type" => type_v, b"type_id" => type_id_v,
            );
            let uid = self.checked(uid_v, true)?;
            let name = self.checked(name_v, true)?;
            user_type = self.ocsf_user_type(type_v, type_id_v)?;
            user = self.make(uid.or(name))?;
            let conn = self.obj(connection_info)?;
            find!(doc, conn; b"protocol_name" => protocol_v, b"direction_id" => direction_v);
            protocol = self.lowered(protocol_v)?;
            direction = self.code(direction_v)?.filter(|x| (1..=3).contains(x)); // 0 unknown, 99 other
            let traffic = self.obj(traffic_v)?;
            find!(doc, traffic;
                b"bytes_in" => bytes_in_v, b"bytes_out" => bytes_out_v,
                b"packets_in" => packets_in_v, b"packets_out" => packets_out_v,
            );
            bytes_in = self.count(bytes_in_v)?;
            bytes_out = self.count(bytes_out_v)?;
            packets_in = self.count(packets_in_v)?;
            packets_out = self.count(packets_out_v)?;
            duration_ms = self.count(duration_v)?;
            let dst_loc = self.obj(dst_loc_v)?;
            find!(doc, dst_loc; b"country" => dst_country_v);
            dst_country = self.country(dst_country_v)?;
            let dst_as = self.obj(dst_as_v)?;
            find!(doc, dst_as; b"number" => dst_asn_v);
            // anything but an int in range (e.g. a string) is the careful parser's
            dst_asn = self.int_field(dst_asn_v, 0, MAX_ASN)?;
            device_id = self.make(src_uid.or(device_uid))?;
            entity = match user.clone() {
                Some(u) => u,
                None => {
                    entity_is_user = false;
                    // src_uid, when there is one, is device_id's very str
                    let src_uid = if src_uid.is_some() { device_id.clone() } else { None };
                    match src_uid.or_else(|| src_hostname.clone()) {
                        Some(e) => e,
                        None => match src_ip.as_ref() {
                            Some(ip) => ip[0].clone().cast_into_exact::<PyString>().map_err(|_| Doubt)?,
                            None => return Err(Doubt),
                        },
                    }
                }
            };
        }

        let session = self.obj(session_v)?;
        find!(doc, session; b"uid" => session_uid_v);
        let mut session_id = self.string(session_uid_v)?;
        if !is_auth && session_id.as_ref().is_none_or(is_empty) {
            // OCSF puts the session under the actor for Network Activity.
            let actor_session = self.obj(actor_session_v)?;
            find!(doc, actor_session; b"uid" => actor_session_uid_v);
            session_id = self.string(actor_session_uid_v)?;
        }
        let session_id = session_id.filter(|x| !is_empty(x));

        let entity_class = if entity_is_user {
            k.classify(py, user_type.as_ref())?
        } else {
            k.device_class.bind(py).clone()
        };
        let activity = self.code(activity_v)?;
        let http = self.obj(http_request)?;
        find!(doc, http; b"user_agent" => user_agent_v);
        let user_agent = self.string(user_agent_v)?;
        find!(doc, src_loc;
            b"country" => src_country_v, b"city" => src_city_v, b"lat" => src_lat_v,
            b"long" => src_lon_v,
        );
        let src_country = self.country(src_country_v)?;
        let src_city = self.string(src_city_v)?;
        let src_lat = self.coord(src_lat_v, 90.0)?;
        let src_lon = self.coord(src_lon_v, 180.0)?;
        find!(doc, src_as; b"number" => src_asn_v, b"name" => src_as_name_v);
        let src_asn = self.int_field(src_asn_v, 0, MAX_ASN)?;
        let src_as_name = self.string(src_as_name_v)?;
        let dst_hostname = self.ident(dst_hostname_v)?;
        let dst_port = self.int_field(dst_port_v, 0, 65535)?;

        let dst_internal: Option<Bound<'py, PyAny>> = if direction == Some(3) {
            Some(py_bool(py, true))
        } else {
            match dst_ip.as_ref() {
                None => None,
                Some(ip) => Some(ip[2].clone()).filter(|x| !x.is_none()),
            }
        };
        let (src_ip_text, src_prefix) = match src_ip {
            Some([a, b, _]) => (Some(a), Some(b)),
            None => (None, None),
        };
        let dst_ip_text = dst_ip.map(|[a, _, _]| a);

        let any = |x: Option<Bound<'py, PyString>>| x.map(Bound::into_any);
        let mut items: [Option<Bound<'py, PyAny>>; 39] = std::array::from_fn(|_| None);
        items[EV_EVENT_ID] = Some(event_id);
        items[EV_KIND] = Some(kind.bind(py).clone());
        items[EV_TS_MS] = Some(ts_ms);
        items[EV_ENTITY] = Some(entity.into_any());
        items[EV_ENTITY_KIND] =
            Some(if entity_is_user { &k.user_kind } else { &k.device_kind }.bind(py).clone());
        items[EV_ENTITY_CLASS] = Some(entity_class);
        items[EV_SOURCE_FORMAT] = Some(k.ocsf.bind(py).clone().into_any());
        items[EV_USER] = any(user);
        items[EV_USER_TYPE] = any(user_type);
        items[EV_ACTIVITY] = activity.map(|x| int_obj(py, x)).transpose()?;
        items[EV_SUCCESS] = success;
        items[EV_STATUS_DETAIL] = any(status_detail);
        items[EV_IS_MFA] = is_mfa;
        items[EV_SESSION_ID] = any(session_id);
        items[EV_SERVICE] = any(service);
        items[EV_USER_AGENT] = any(user_agent);
        items[EV_SRC_IP] = src_ip_text;
        items[EV_SRC_PREFIX] = src_prefix;
        items[EV_SRC_COUNTRY] = src_country;
        items[EV_SRC_CITY] = any(src_city);
        items[EV_SRC_LAT] = src_lat;
        items[EV_SRC_LON] = src_lon;
        items[EV_SRC_ASN] = src_asn;
        items[EV_SRC_AS_NAME] = any(src_as_name);
        items[EV_DEVICE_ID] = any(device_id);
        items[EV_SRC_HOSTNAME] = any(src_hostname);
        items[EV_DST_IP] = dst_ip_text;
        items[EV_DST_HOSTNAME] = any(dst_hostname);
        items[EV_DST_PORT] = dst_port;
        items[EV_DST_COUNTRY] = dst_country;
        items[EV_DST_ASN] = dst_asn;
        items[EV_DST_INTERNAL] = dst_internal;
        items[EV_PROTOCOL] = protocol;
        items[EV_DIRECTION] = direction.map(|x| int_obj(py, x)).transpose()?;
        items[EV_BYTES_IN] = bytes_in;
        items[EV_BYTES_OUT] = bytes_out;
        items[EV_PACKETS_IN] = packets_in;
        items[EV_PACKETS_OUT] = packets_out;
        items[EV_DURATION_MS] = duration_ms;
        k.new_event(py, items)
    }

    /// One of a few exact words (no escapes), as its code, else a doubt.
    fn word(&self, v: Option<usize>, words: &[(&str, i64)]) -> R<Option<i64>> {
        let Some(n) = v else { return Ok(None) };
        let Val::Str(sp) = self.doc.val(n) else { return Err(Doubt) };
        let text = self.doc.raw(sp)?; // with an escape it matches no word: a doubt
        words.iter().find(|(w, _)| *w == text).map(|(_, c)| Some(*c)).ok_or(Doubt)
    }

    /// The port of `native_impl` (and `_fast_native`) over the document's nodes.
    fn native(&self, root: usize, is_auth: bool) -> R<Bound<'py, PyAny>> {
        let py = self.py;
        let k = self.k;
        let doc = &self.doc;
        find!(doc, Some(root);
            b"ts" => ts_v, b"id" => id_v, b"user" => user_v, b"user_type" => user_type_v,
            b"device" => device_v, b"host" => host_v, b"ip" => ip_v, b"dst_ip" => dst_ip_v,
            b"direction" => direction_v, b"activity" => activity_v, b"ok" => ok_v,
            b"mfa" => mfa_v, b"session" => session_v, b"service" => service_v, b"ua" => ua_v,
            b"country" => country_v, b"city" => city_v, b"lat" => lat_v, b"lon" => lon_v,
            b"asn" => asn_v, b"as_name" => as_name_v, b"dst_host" => dst_host_v,
            b"dst_port" => dst_port_v, b"dst_country" => dst_country_v, b"dst_asn" => dst_asn_v,
            b"proto" => proto_v, b"bytes_in" => bytes_in_v, b"bytes_out" => bytes_out_v,
            b"packets_in" => packets_in_v, b"packets_out" => packets_out_v,
            b"duration_ms" => duration_v,
        );

        // ts: epoch ms (an int, or a float truncated) or ISO 8601 (Python's own _ms_from_iso)
        let t = ts_v.ok_or(Doubt)?;
        let ts_ms = if let Val::Str(_) = doc.val(t) {
            let text = self.string(Some(t))?.ok_or(Doubt)?;
            let ms = k.ms_from_iso.bind(py).call1((text,))?;
            if ms.is_none() {
                return Err(Doubt);
            }
            ms
        } else {
            self.time_number(t)?
        };
        let event_id = self.event_id(id_v)?;
        let user = self.ident(user_v)?;
        let user_type = self.string(user_type_v)?;
        let device_id = self.ident(device_v)?;
        let src_hostname = self.ident(host_v)?;
        let src_ip = self.ip(ip_v)?;
        let dst_ip = self.ip(dst_ip_v)?;
        let direction = self.word(direction_v, &[("inbound", 1), ("outbound", 2), ("lateral", 3)])?;
        let activity = self.word(activity_v, &[("logon", 1), ("logoff", 2), ("other", 99)])?;
        let entity_is_user = user.is_some();
        let (entity, entity_class) = match user.clone() {
            Some(u) => (u, k.classify(py, user_type.as_ref())?),
            None if is_auth => return Err(Doubt),
            None => {
                let e = match device_id.clone().or_else(|| src_hostname.clone()) {
                    Some(e) => e,
                    None => match src_ip.as_ref() {
                        Some(ip) => ip[0].clone().cast_into_exact::<PyString>().map_err(|_| Doubt)?,
                        None => return Err(Doubt),
                    },
                };
                (e, k.device_class.bind(py).clone())
            }
        };
        let success = self.boolean(ok_v)?;
        let is_mfa = self.boolean(mfa_v)?;
        let session_id = self.ident(session_v)?;
        let service = self.string(service_v)?;
        let user_agent = self.string(ua_v)?;
        let src_country = self.country(country_v)?;
        let src_city = self.string(city_v)?;
        let src_lat = self.coord(lat_v, 90.0)?;
        let src_lon = self.coord(lon_v, 180.0)?;
        let src_asn = self.int_field(asn_v, 0, MAX_ASN)?;
        let src_as_name = self.string(as_name_v)?;
        let dst_hostname = self.ident(dst_host_v)?;
        let dst_port = self.int_field(dst_port_v, 0, 65535)?;
        let dst_country = self.country(dst_country_v)?;
        let dst_asn = self.int_field(dst_asn_v, 0, MAX_ASN)?;
        let protocol = self.lowered(proto_v)?;
        let bytes_in = self.count(bytes_in_v)?;
        let bytes_out = self.count(bytes_out_v)?;
        let packets_in = self.count(packets_in_v)?;
        let packets_out = self.count(packets_out_v)?;
        let duration_ms = self.count(duration_v)?;

        let dst_internal: Option<Bound<'py, PyAny>> = if direction == Some(3) {
            Some(py_bool(py, true))
        } else {
            match dst_ip.as_ref() {
                None => None,
                Some(ip) => Some(ip[2].clone()).filter(|x| !x.is_none()),
            }
        };
        let (src_ip_text, src_prefix) = match src_ip {
            Some([a, b, _]) => (Some(a), Some(b)),
            None => (None, None),
        };
        let dst_ip_text = dst_ip.map(|[a, _, _]| a);
        let kind = if is_auth { &k.auth } else { &k.network };

        let any = |x: Option<Bound<'py, PyString>>| x.map(Bound::into_any);
        let mut items: [Option<Bound<'py, PyAny>>; 39] = std::array::from_fn(|_| None);
        items[EV_EVENT_ID] = Some(event_id);
        items[EV_KIND] = Some(kind.bind(py).clone());
        items[EV_TS_MS] = Some(ts_ms);
        items[EV_ENTITY] = Some(entity.into_any());
        items[EV_ENTITY_KIND] =
            Some(if entity_is_user { &k.user_kind } else { &k.device_kind }.bind(py).clone());
        items[EV_ENTITY_CLASS] = Some(entity_class);
        items[EV_SOURCE_FORMAT] = Some(k.native.bind(py).clone().into_any());
        items[EV_USER] = any(user);
        items[EV_USER_TYPE] = any(user_type);
        items[EV_ACTIVITY] = activity.map(|x| int_obj(py, x)).transpose()?;
        items[EV_SUCCESS] = success;
        items[EV_IS_MFA] = is_mfa;
        items[EV_SESSION_ID] = any(session_id);
        items[EV_SERVICE] = any(service);
        items[EV_USER_AGENT] = any(user_agent);
        items[EV_SRC_IP] = src_ip_text;
        items[EV_SRC_PREFIX] = src_prefix;
        items[EV_SRC_COUNTRY] = src_country;
        items[EV_SRC_CITY] = any(src_city);
        items[EV_SRC_LAT] = src_lat;
        items[EV_SRC_LON] = src_lon;
        items[EV_SRC_ASN] = src_asn;
        items[EV_SRC_AS_NAME] = any(src_as_name);
        items[EV_DEVICE_ID] = any(device_id);
        items[EV_SRC_HOSTNAME] = any(src_hostname);
        items[EV_DST_IP] = dst_ip_text;
        items[EV_DST_HOSTNAME] = any(dst_hostname);
        items[EV_DST_PORT] = dst_port;
        items[EV_DST_COUNTRY] = dst_country;
        items[EV_DST_ASN] = dst_asn;
        items[EV_DST_INTERNAL] = dst_internal;
        items[EV_PROTOCOL] = protocol;
        items[EV_DIRECTION] = direction.map(|x| int_obj(py, x)).transpose()?;
        items[EV_BYTES_IN] = bytes_in;
        items[EV_BYTES_OUT] = bytes_out;
        items[EV_PACKETS_IN] = packets_in;
        items[EV_PACKETS_OUT] = packets_out;
        items[EV_DURATION_MS] = duration_ms;
        k.new_event(py, items)
    }

    /// `parse_event`'s form detection, then the form's reader.
    fn event(&self) -> R<Bound<'py, PyAny>> {
        let doc = &self.doc;
        // `"class_uid" in doc` decides OCSF even when its value is null, so the
        // presence of each key counts here, null or not.
        let mut class_uid: Option<Val> = None;
        let mut event_key = false;
        let mut kind: Option<Val> = None;
        let mut c = 1;
        let end = doc.nodes[0].end as usize;
        while c < end {
            let node = &doc.nodes[c];
            if node.key.esc {
                return Err(Doubt);
            }
            let slot = match doc.text.as_bytes().get(node.key.range()).ok_or(Doubt)? {
                b"class_uid" => &mut class_uid,
                b"kind" => &mut kind,
                b"event" => {
                    // ECS (or a native document with an "event" key): the Python path's
                    event_key = true;
                    c = node.end as usize;
                    continue;
                }
                _ => {
                    c = node.end as usize;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(Doubt); // a repeated key: Python keeps the last value
            }
            *slot = Some(node.val);
            c = node.end as usize;
        }
        if let Some(v) = class_uid {
            return match v {
                Val::Int(3002) => self.ocsf(0, true),
                Val::Int(4001) => self.ocsf(0, false),
                _ => Err(Doubt), // unknown_class: the Python path raises it
            };
        }
        if event_key {
            return Err(Doubt);
        }
        match kind {
            Some(Val::Str(sp)) if !sp.esc => match doc.raw(sp)? {
                "auth" => self.native(0, true),
                "network" => self.native(0, false),
                _ => Err(Doubt),
            },
            _ => Err(Doubt),
        }
    }
}

/// `ParseKernels.raw(data)`: the Event `parse_event(data)` returns, or a
/// doubt. `strs`: the string cache, when the caller holds it.
pub(crate) fn raw_event<'py>(
    k: &ParseKernels,
    data: &Bound<'py, PyBytes>,
    strs: Option<&mut StrCache>,
) -> R<Bound<'py, PyAny>> {
    let py = data.py();
    let bytes = data.as_bytes();
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Doubt); // too_large: parse_event's
    }
    let doc = Doc::read(bytes)?;
    Fields { py, doc, k, strs: RefCell::new(strs) }.event()
}
