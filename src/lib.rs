//! weightlab: a codec lab for neural-network weights.
//!
//! Everything the CLI does is callable from here: read safetensors
//! ([`tensor`]), build codecs from spec strings ([`codec`]), write and read
//! archives ([`container`]).

pub mod analysis;
pub mod codec;
pub mod container;
pub mod datasets;
pub mod error;
pub mod experiment;
#[cfg(feature = "fidelity")]
pub mod fidelity;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod metrics;
pub mod progress;
pub mod repo;
pub mod report;
pub mod signals;
pub mod tensor;

pub use error::{Error, ErrorKind, Result};
