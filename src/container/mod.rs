//! The archive format: one record per tensor, chunked, checksummed, with the
//! original safetensors header kept so decompression is byte-exact. See
//! `docs/format.md`.

pub mod format;
pub mod read;
pub mod write;

pub use format::{FORMAT_VERSION, Index, TensorRecord};
pub use read::{Archive, DecodeOptions, StreamReport, VerifyReport, decompress_file, verify_file};
pub use write::{CompressOptions, DEFAULT_CHUNK_SIZE, DEFAULT_CODEC, chunk_ranges, compress, compress_file};
