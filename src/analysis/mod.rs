//! Analysis of weight tensors: histograms, entropies, floors, value
//! statistics, and the text and markdown tables of `weightlab analyze`.

pub mod entropy;
pub mod stats;
pub mod summary;
pub mod tables;

pub use stats::{ValueStats, to_f64};
pub use summary::{FileAnalysis, TensorAnalysis, analyze_safetensors, analyze_tensor, analyze_views};
