//! Shared by the archive tests: rewrite an archive's index with valid
//! checksums, so that only the reader's own checks catch a lie.

use weightlab::container::Index;

/// Replace an archive's index (and trailer) with `index`, checksums valid.
pub fn rewrite_index(arch: &[u8], index: &Index) -> Vec<u8> {
    let off = u64::from_le_bytes(arch[arch.len() - 40..arch.len() - 32].try_into().unwrap()) as usize;
    let json = serde_json::to_vec(index).unwrap();
    let mut out = arch[..off].to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&(off as u64).to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&weightlab::container::xxh3_64(&json).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(b"WLABEND\n");
    out
}
