//! The archive format: one record per tensor, chunked, checksummed, with the
//! original safetensors header kept so decompression is byte-exact. See
//! `docs/format.md`.

pub mod format;
pub mod read;
pub mod write;

pub use format::{FORMAT_VERSION, Index, TensorRecord};
pub use read::{Archive, DecodeOptions, StreamReport, VerifyReport, decompress_file, verify_file};
pub use write::{CompressOptions, DEFAULT_CHUNK_SIZE, DEFAULT_CODEC, chunk_ranges, compress, compress_file};

/// Run `work` over `jobs` in windows of two jobs per thread (each window's
/// jobs in parallel inside `work`) and hand each window's result to `sink`,
/// in order. `sink` for one window runs beside `work` for the next, so the
/// sequential end (writing, hashing) overlaps the parallel one. Memory holds
/// two windows' results. Used by compress and decompress alike.
pub(crate) fn pipelined<'j, J: Sync, T: Send>(
    jobs: &'j [J],
    work: impl Fn(&'j [J]) -> T + Sync,
    mut sink: impl FnMut(&'j [J], T) -> crate::Result<()> + Send,
) -> crate::Result<()> {
    let mut pending: Option<(&'j [J], T)> = None;
    let window = rayon::current_num_threads().max(1) * 2;
    for batch in jobs.chunks(window) {
        let (done, sunk) = rayon::join(|| work(batch), || pending.take().map_or(Ok(()), |(b, d)| sink(b, d)));
        sunk?;
        pending = Some((batch, done));
    }
    match pending {
        Some((b, d)) => sink(b, d),
        None => Ok(()),
    }
}
