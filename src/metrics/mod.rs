//! Measurements: error statistics of lossy round trips, throughput, memory.

pub mod error;

pub use error::{ErrorAccumulator, ErrorStats, error_stats};
