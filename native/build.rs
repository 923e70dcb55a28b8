//! Embeds a digest of this crate's sources in the module (`SOURCE_DIGEST`).
//!
//! `detector/native.py` recomputes it from the checked-out sources and refuses
//! a compiled module built from other sources: a stale build would otherwise
//! decide with yesterday's code while the tests read today's.

use std::fs;
use std::path::Path;

/// FNV-1a, 64 bits: the same function `detector/native.py` applies.
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &byte in data {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = vec!["Cargo.toml".into(), "build.rs".into()];
    let mut sources: Vec<String> = fs::read_dir(root.join("src"))
        .expect("src/ is readable")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.ends_with(".rs").then(|| format!("src/{name}"))
        })
        .collect();
    sources.sort();
    files.extend(sources);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for rel in &files {
        let body = fs::read(root.join(rel)).expect("source is readable");
        h = fnv1a(rel.as_bytes(), h);
        h = fnv1a(&[0], h);
        h = fnv1a(&body, h);
        h = fnv1a(&[0], h);
        println!("cargo:rerun-if-changed={rel}");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rustc-env=DETECTOR_NATIVE_DIGEST={h:016x}");
}
