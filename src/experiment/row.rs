//! One result row: one (dataset file × tensor × codec) cell of an experiment.
//! The runner produces them; the report turns them into Polars tables and
//! charts. Tidy: one row per cell, every column a plain value.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub experiment: String,
    /// Dataset name (datasets/NAME.toml) or a file stem for ad-hoc paths.
    pub dataset: String,
    /// "original", or the derived variant ("bf16", "f16", "fp8-e4m3").
    pub variant: String,
    /// True when the weights were derived by a cast, not published as such.
    pub derived: bool,
    pub file: String,
    /// Tensor name, or "*" for a whole-file cell.
    pub tensor: String,
    pub dtype: String,
    /// embedding / attention / mlp / norm / bias / other (from the name).
    pub tensor_class: String,
    pub numel: u64,
    /// Canonical codec spec (or "peer:NAME args" for external tools).
    pub codec: String,
    /// generic / planes / float / special / lossy / peer / auto.
    pub family: String,
    pub lossless: bool,
    /// Declared error bound ("" when lossless or none guaranteed).
    pub bound: String,
    /// False when a peer tool is not installed: then sizes and times are absent.
    pub available: bool,
    pub original_bytes: u64,
    pub compressed_bytes: Option<u64>,
    /// compressed / original (smaller is better).
    pub ratio: Option<f64>,
    /// Order-0 floor of the tensor (or file), in bytes and as a ratio.
    pub floor_bytes: Option<f64>,
    pub floor_ratio: Option<f64>,
    pub threads: u32,
    pub reps: u32,
    /// Throughput in MB/s (1e6 bytes of original data per second).
    pub compress_mbps_median: Option<f64>,
    pub compress_mbps_min: Option<f64>,
    pub compress_mbps_max: Option<f64>,
    pub decompress_mbps_median: Option<f64>,
    pub decompress_mbps_min: Option<f64>,
    pub decompress_mbps_max: Option<f64>,
    /// Peak heap bytes during encode + decode of this cell (counting allocator),
    /// or peak RSS for subprocess peers.
    pub peak_mem_bytes: Option<u64>,
    /// Round trip verified: bits for lossless, the declared bound for lossy.
    pub verified: bool,
    pub max_abs_err: Option<f64>,
    pub max_rel_err: Option<f64>,
    pub mean_rel_err: Option<f64>,
    pub rmse: Option<f64>,
    pub psnr: Option<f64>,
    /// RMSE / the standard deviation of the original values (a file: the
    /// root of the numel-weighted mean of its tensors' squares).
    pub rmse_rel_std: Option<f64>,
    /// Max abs error / max |x| of the original values (a file: its worst tensor).
    pub max_abs_rel_absmax: Option<f64>,
    /// Some(true/false) when a bound was declared and checked.
    pub bound_held: Option<bool>,
    /// Model fidelity (`[fidelity]`, whole-file cells; see `weightlab eval`):
    /// archive bits per model element.
    pub bits_per_weight: Option<f64>,
    /// Sentence embeddings: per-text cosine, original vs decoded model.
    pub cosine_mean: Option<f64>,
    pub cosine_p1: Option<f64>,
    pub cosine_min: Option<f64>,
    /// Sentence embeddings: overlap of each text's 10 nearest neighbours.
    pub top10_agreement: Option<f64>,
    /// Causal LM: perplexity of the original and the decoded model, change in %.
    pub ppl_original: Option<f64>,
    pub ppl: Option<f64>,
    pub ppl_delta_pct: Option<f64>,
    /// Causal LM: same next-token argmax; mean KL(original || decoded) in nats.
    pub top1_agreement: Option<f64>,
    pub kl_mean: Option<f64>,
    /// Free-form note (e.g. why a peer is unavailable).
    pub note: String,
}
