//! What the fuzz targets share: the case count and the corpus reader.
#![allow(dead_code)] // each test crate uses its own part

use std::path::PathBuf;

/// Cases per target: `TOLLWAY_FUZZ_CASES` (a long run), else `default` (the CI run).
pub fn cases(default: u32) -> u32 {
    std::env::var("TOLLWAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The files of `tests/corpus/<target>/`, sorted, with their bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus files", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// `bytes` cut at the given points (each taken modulo `len + 1`, sorted).
pub fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for c in cuts {
        parts.push(&bytes[prev..c]);
        prev = c;
    }
    parts.push(&bytes[prev..]);
    parts
}

/// Up to `n` evenly spread single cut points of a `len`-byte input, and every point when
/// `len < n`: how the corpus replays a file split in two.
pub fn spread_cuts(len: usize, n: usize) -> Vec<usize> {
    let step = (len / n).max(1);
    (0..=len).step_by(step).collect()
}
