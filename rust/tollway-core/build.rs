//! Writes the BPE rank tables `tokens::bpe` counts with into `OUT_DIR`, read out of
//! `tiktoken-rs` (which ships them) at build time: at run time each table is static data in
//! the library (shared by every worker's mapping of it) instead of ~50 MB of `CoreBPE` per
//! worker. Format: per ordinary token in rank order, `rank: u32 LE`, `len: u8`, the bytes.

use std::env;
use std::fs;
use std::path::PathBuf;

use tiktoken_rs::CoreBPE;

/// Past this many unknown ranks in a row the vocabulary has ended (the tables have small gaps
/// before their special tokens).
const GAP: u32 = 4096;

fn table(core: &CoreBPE) -> Vec<u8> {
    let special: Vec<Vec<u8>> = core
        .special_tokens()
        .into_iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let mut out = Vec::new();
    let (mut rank, mut missed) = (0u32, 0u32);
    while missed < GAP {
        match core.decode_bytes(&[rank]) {
            Ok(bytes) if !special.contains(&bytes) => {
                missed = 0;
                let len =
                    u8::try_from(bytes.len()).unwrap_or_else(|_| panic!("token {rank} too long"));
                out.extend_from_slice(&rank.to_le_bytes());
                out.push(len);
                out.extend_from_slice(&bytes);
            }
            Ok(_) => missed = 0,
            Err(_) => missed += 1,
        }
        rank += 1;
    }
    out
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| panic!("OUT_DIR is set by cargo")));
    for (name, core) in [
        ("cl100k.bpe", tiktoken_rs::cl100k_base()),
        ("o200k.bpe", tiktoken_rs::o200k_base()),
    ] {
        let core = core.unwrap_or_else(|e| panic!("tiktoken-rs tables load: {e}"));
        fs::write(out.join(name), table(&core)).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}
