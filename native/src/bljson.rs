//! `Baseline.to_dict()` as JSON, straight from a Rust-held baseline ([`Bl`]).
//!
//! The stream worker stores each baseline as `orjson.dumps(b.to_dict())`
//! (`detector.stream.stages.encode_state`). For a `HeldBaseline` that meant
//! building the Python `Baseline`, then its dict, then the JSON: ~150 µs a
//! baseline, the largest part of a background state write. [`to_json`]
//! writes the same document directly: the same keys in the same order, the
//! same integers and strings, floats with the same bits (shortest
//! round-trip form, as `crate::codec::write_float`). Where it cannot be
//! sure (a non-finite float, a time difference past int64) it returns
//! `None` and the caller takes the Python path. `tests/test_native_bljson.py`
//! holds it to `orjson.dumps(to_dict())`.

use crate::bl::{Bl, Dim, Name, FIRST_TRAFFIC_NAME};
use crate::codec::{write_float, write_str};
use crate::parse::R;

/// `detector.baseline.SCHEMA_VERSION`.
const SCHEMA_VERSION: i64 = 2;

/// `detector.baseline._DIM_ALIAS`, by dimension position (`bl::NAMES`' order).
const DIM_ALIAS: [&str; FIRST_TRAFFIC_NAME] = ["c", "ci", "a", "p", "d", "u", "sv", "h", "po", "dc", "da"];

/// `detector.baseline._TRAFFIC_ALIAS`, by traffic key position (after the dimensions).
const TRAFFIC_ALIAS: [&str; 4] = ["io", "ii", "eo", "ei"];

/// A dimension's serialised key (`_DIM_ALIAS`, else `"~" + name`).
fn write_dim_key(out: &mut Vec<u8>, name: Name) {
    write_alias(out, name, 0, &DIM_ALIAS)
}

/// A traffic key's serialised key (`_TRAFFIC_ALIAS`, else `"~" + name`).
fn write_traffic_key(out: &mut Vec<u8>, name: Name) {
    write_alias(out, name, FIRST_TRAFFIC_NAME, &TRAFFIC_ALIAS)
}

fn write_alias(out: &mut Vec<u8>, name: Name, first: usize, aliases: &[&str]) {
    let i = crate::bl::NAMES.iter().position(|n| *n == name.as_str());
    match i.and_then(|i| i.checked_sub(first)).and_then(|j| aliases.get(j)) {
        Some(a) => write_str(out, a),
        None => write_str(out, &format!("~{}", name.as_str())),
    }
}

fn int(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(x.to_string().as_bytes());
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b',');
    write_str(out, k);
    out.push(b':');
}

fn sub(a: i64, b: i64) -> R<i64> {
    a.checked_sub(b).ok_or(crate::parse::Doubt)
}

/// `detector.baseline._affixes`: the prefix and suffix common to a set's
/// values, in characters as Python counts them, or ("", "") when writing
/// them once would not save more than 8 characters.
fn affixes(dim: &Dim) -> (&str, &str) {
    let values = &dim.entries;
    if values.len() < 2 {
        return ("", "");
    }
    let first = values[0].value.as_str();
    // Common byte prefix, backed off to a character boundary: equal
    // characters are equal bytes in UTF-8, and a partly shared character
    // differs.
    let mut head = first.len();
    let mut shortest_chars = usize::MAX;
    let mut tail_bytes = first.len();
    for e in values.iter() {
        let v = e.value.as_str();
        let common = first.bytes().zip(v.bytes()).take_while(|(a, b)| a == b).count();
        head = head.min(common);
        let common_end = first.bytes().rev().zip(v.bytes().rev()).take_while(|(a, b)| a == b).count();
        tail_bytes = tail_bytes.min(common_end);
        shortest_chars = shortest_chars.min(v.chars().count());
    }
    while !first.is_char_boundary(head) {
        head -= 1;
    }
    let mut suffix_start = first.len() - tail_bytes;
    while !first.is_char_boundary(suffix_start) {
        suffix_start += 1;
    }
    let head_s = &first[..head];
    let suffix = &first[suffix_start..];
    let head_chars = head_s.chars().count();
    let suffix_chars = suffix.chars().count();
    let keep = suffix_chars.min(shortest_chars.saturating_sub(head_chars));
    // The last `keep` characters of the suffix.
    let skip = suffix.char_indices().nth(suffix_chars - keep).map_or(suffix.len(), |(i, _)| i);
    let tail = &suffix[skip..];
    if (head_chars + keep) * (values.len() - 1) <= 8 {
        return ("", "");
    }
    (head_s, tail)
}

/// `orjson.dumps(baseline.to_dict())` for the baseline `b` holds, or `None` at any doubt.
pub fn to_json(b: &Bl) -> Option<Vec<u8>> {
    write(b).ok()
}

fn write(b: &Bl) -> R<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    let r = b.last_ts.unwrap_or(0);
    out.extend_from_slice(b"{\"v\":");
    int(&mut out, SCHEMA_VERSION);
    key(&mut out, "n");
    int(&mut out, b.n_seen);
    key(&mut out, "nl");
    write_float(&mut out, b.n_learned)?;
    if let Some(lt) = b.last_ts {
        key(&mut out, "lt");
        int(&mut out, lt);
    }
    if let Some(ft) = b.first_ts {
        key(&mut out, "ft");
        int(&mut out, sub(r, ft)?);
    }
    key(&mut out, "t0");
    int(&mut out, sub(r, b.t0)?);
    if let Some(hours) = b.hours.as_ref().filter(|h| !h.is_empty()) {
        let mut sorted: Vec<(u8, i64)> = hours.iter().map(|x| (x.h, x.w)).collect();
        sorted.sort_unstable_by_key(|x| x.0);
        key(&mut out, "h");
        out.push(b'[');
        let mut prev = 0i64;
        for (i, (h, w)) in sorted.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            int(&mut out, i64::from(*h) - prev);
            out.push(b',');
            int(&mut out, *w);
            prev = i64::from(*h);
        }
        out.push(b']');
        key(&mut out, "ht");
        int(&mut out, b.hours_total);
    }
    let totals: &[(Name, i64)] = b.seen_totals.as_deref().unwrap_or(&[]);
    let total_of = |name: Name| totals.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let seen: &[Dim] = b.seen.as_deref().unwrap_or(&[]);
    if !seen.is_empty() {
        let ref_s = r.div_euclid(1000);
        key(&mut out, "s");
        out.push(b'{');
        for (i, dim) in seen.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_dim_key(&mut out, dim.name);
            out.extend_from_slice(b":[");
            match total_of(dim.name) {
                Some(t) => int(&mut out, t),
                None => out.extend_from_slice(b"null"),
            }
            let (head, tail) = affixes(dim);
            if !head.is_empty() || !tail.is_empty() {
                out.push(b',');
                write_str(&mut out, head);
                out.push(b',');
                write_str(&mut out, tail);
            }
            for e in &dim.entries {
                let v = e.value.as_str();
                out.push(b',');
                write_str(&mut out, &v[head.len()..v.len() - tail.len()]);
                out.push(b',');
                int(&mut out, e.w);
                out.push(b',');
                int(&mut out, sub(ref_s, e.last_s)?);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    let mut extra = totals.iter().filter(|(n, _)| !seen.iter().any(|d| d.name == *n)).peekable();
    if extra.peek().is_some() {
        key(&mut out, "st");
        out.push(b'{');
        for (i, (n, t)) in extra.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, n.as_str());
            out.push(b':');
            int(&mut out, *t);
        }
        out.push(b'}');
    }
    if let Some(ls) = &b.last_success {
        key(&mut out, "ls");
        out.push(b'[');
        int(&mut out, sub(r, ls.ts)?);
        out.push(b',');
        write_float(&mut out, ls.lat)?;
        out.push(b',');
        write_float(&mut out, ls.lon)?;
        out.push(b',');
        match &ls.country {
            Some(c) => write_str(&mut out, c.as_str()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b']');
    }
    // Python's truth test: a float is written unless it is 0.0 (NaN is
    // true, and refused by write_float).
    if b.fail_rate != 0.0 || b.fail_rate.is_nan() {
        key(&mut out, "fr");
        write_float(&mut out, b.fail_rate)?;
    }
    for (name, (count, ts)) in [("fb", b.fail_burst), ("nh", b.new_hosts)] {
        if count != 0.0 || count.is_nan() {
            key(&mut out, name);
            out.push(b'[');
            write_float(&mut out, count)?;
            out.push(b',');
            int(&mut out, sub(r, ts)?);
            out.push(b']');
        }
    }
    if let Some(traffic) = b.traffic.as_ref().filter(|t| !t.is_empty()) {
        key(&mut out, "tr");
        out.push(b'{');
        for (i, (name, v)) in traffic.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_traffic_key(&mut out, *name);
            out.extend_from_slice(b":[");
            for (j, x) in v.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_float(&mut out, *x)?;
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    if !b.signals.is_empty() {
        key(&mut out, "sg");
        out.push(b'[');
        for (i, (k, level, ts)) in b.signals.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_str(&mut out, k.as_str());
            out.push(b',');
            int(&mut out, *level);
            out.push(b',');
            int(&mut out, sub(r, *ts)?);
            out.push(b']');
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(out)
}
