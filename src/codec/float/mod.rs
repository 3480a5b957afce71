//! Float-aware lossless codecs.
//!
//! - [`exp`]: `exp`, the exponent-split entropy coder: the exponent byte of
//!   every element coded with one model per chunk, the sign and the top
//!   mantissa bits coded with one model per exponent (where that pays), lower
//!   mantissa bytes coded per exponent or stored raw. FP8 and the packed
//!   sub-byte formats are coded byte by byte.
//! - [`special`]: `const` (a tensor of one repeated value) and `table` (few
//!   distinct values: a value table plus entropy-coded or bit-packed indices).
//!
//! Every codec here is chunk-local: a chunk's stream depends only on the
//! chunk's bytes and dtype, so output is identical whatever the thread count.

pub mod exp;
pub mod special;

/// Seeded test cases (also used by `tests/conformance.rs`); not an API.
#[doc(hidden)]
pub mod testdata;
