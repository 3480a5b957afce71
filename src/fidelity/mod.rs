//! Model fidelity (feature `fidelity`): run a model with its original weights
//! and with the weights a codec gave back, on the same fixed inputs, and
//! report what the codec did to the model's outputs.
//!
//! - Sentence-embedding models (all-minilm-l6-v2, BERT; embeddinggemma-300m,
//!   a Gemma 3 encoder, [`gemma`]): per-text cosine between the two models'
//!   embeddings (mean, 1st percentile, min) and top-10 neighbour agreement
//!   ([`embed`]).
//! - The causal LM (smollm2-135m: its GGUF dequantized and cast to BF16, a
//!   derived "original", [`gguf`]): perplexity of both, its change in %, top-1
//!   next-token agreement and mean KL(original || decoded) ([`lm`]).
//!
//! Inference runs in-process with candle on the CPU, in F32. The inputs are
//! fixed ([`texts`]): speeches of *Hamlet* for embeddings, *Julius Caesar*
//! for perplexity, from a sha256-pinned wheel.
//!
//! A codec is applied as `weightlab compress` applies it (the archive
//! container, every tensor, the same chunking), the archive is decoded back
//! to safetensors bytes, and those bytes are what the decoded model loads:
//! a lossless codec gives the original bytes, hence bit-identical outputs.

pub mod cache;
pub mod cli;
pub mod embed;
pub mod gemma;
pub mod gguf;
pub mod kv;
pub mod lm;
#[cfg(test)]
mod tests;
pub mod texts;

use crate::container::{self, Archive, CompressOptions, DecodeOptions};
use crate::datasets::{self, FetchOptions};
use crate::error::{Error, Result};
use crate::tensor::SafeTensors;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What kind of model a dataset is, for the evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    SentenceEmbedding,
    CausalLm,
}

/// The task of a dataset the evaluator can run, or `None`.
pub fn task_of(dataset: &str) -> Option<Task> {
    match dataset {
        "all-minilm-l6-v2" | gemma::DATASET => Some(Task::SentenceEmbedding),
        gguf::DATASET => Some(Task::CausalLm),
        _ => None,
    }
}

/// The weights file of a dataset the codec is applied to and the model
/// runs on (the Dense layers of EmbeddingGemma are separate files, kept
/// original).
pub const MODEL_FILE: &str = "model.safetensors";

/// Whether a manifest file of a dataset is the one the evaluator runs
/// (the GGUF import has a single file).
pub fn is_model_file(dataset: &str, file: &str) -> bool {
    dataset == gguf::DATASET || file == MODEL_FILE
}

/// Metrics of the decoded model against the original (the fields of one task
/// are set, the others are `None` and left out of the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Texts (embeddings) or predicted tokens (causal LM).
    pub n_inputs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_p1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top10_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl_original: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl_delta_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
}

/// One codec evaluated on one model.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub variant: String,
    /// The "original" is itself made here (a cast, or the GGUF import).
    pub derived: bool,
    pub task: Task,
    /// The canonical codec spec.
    pub codec: String,
    /// Every tensor of the archive is lossless.
    pub lossless: bool,
    pub original_bytes: u64,
    pub archive_bytes: u64,
    /// original / archive.
    pub ratio: f64,
    /// Archive bits per element of the model's tensors.
    pub bits_per_weight: f64,
    pub n_weights: u64,
    /// The decoded safetensors file is byte-identical to the original.
    pub identical_weights: bool,
    #[serde(flatten)]
    pub metrics: Metrics,
    pub seconds_codec: f64,
    pub seconds_eval: f64,
}

enum Reference {
    Embedding {
        model: embed::Embedder,
        ids: Vec<Vec<u32>>,
        original: Vec<Vec<f32>>,
    },
    /// The original's next-token distributions, summarized ([`cache`]).
    CausalLm {
        cfg: lm::LmConfig,
        windows: Vec<Vec<u32>>,
        original: Vec<Vec<cache::Position>>,
    },
    /// A K/V cache variant of the causal LM ([`kv`]): the model runs with the
    /// decoded cache in place of its own.
    KvCache {
        reference: std::sync::Arc<kv::KvReference>,
    },
}

/// A model ready to evaluate codecs on: its original weights (memory-mapped),
/// its inputs, and the original model's outputs (embeddings, or a summary
/// of its next-token distributions), computed once per model and inputs and
/// kept in the cache directory ([`cache`]).
pub struct Evaluator {
    pub dataset: String,
    pub variant: String,
    pub derived: bool,
    pub task: Task,
    pub weights: PathBuf,
    pub sha256: String,
    map: crate::io::Mapped,
    reference: Reference,
    /// The input texts (for the causal LM, one: the perplexity text).
    pub texts: Vec<String>,
    /// The original model's outputs came from the cache ([`cache`]): it was not run.
    pub original_cached: bool,
    /// Seconds spent loading and running the original (or reading its outputs).
    pub seconds_setup: f64,
}

/// `DATASET[:VARIANT]`.
pub fn parse_target(s: &str) -> Result<(String, String)> {
    let (d, v) = s.split_once(':').unwrap_or((s, ""));
    if d.is_empty() {
        return Err(Error::invalid(format!("'{s}': give DATASET or DATASET:VARIANT")));
    }
    Ok((d.to_string(), if v.is_empty() { "original".to_string() } else { v.to_string() }))
}

fn candle_err(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::invalid(format!("{what}: {e}"))
}

/// The weights file of a dataset variant: through the datasets layer, or
/// for the GGUF causal LM, its BF16 import.
fn weights_of(dataset: &str, variant: &str, opts: &FetchOptions) -> Result<(PathBuf, String, bool, String)> {
    if dataset == gguf::DATASET && variant.starts_with("kv-") {
        let (path, sha) = kv::ensure(variant, opts)?;
        return Ok((path, sha, true, variant.to_string()));
    }
    if dataset == gguf::DATASET {
        if variant != "bf16" {
            return Err(Error::invalid(format!(
                "{dataset}: the evaluator runs its BF16 import only (the GGUF dequantized and cast): use {dataset}:bf16"
            )));
        }
        let imp = gguf::import(opts)?;
        return Ok((imp.weights, imp.sha256, true, variant.to_string()));
    }
    let r = datasets::resolve(dataset, &[variant.to_string()], opts)?;
    let f = r
        .into_iter()
        .find(|f| is_model_file(dataset, &f.file))
        .ok_or_else(|| Error::invalid(format!("dataset {dataset}: no weight file {MODEL_FILE}")))?;
    Ok((f.path, f.sha256, f.derived, f.variant))
}

impl Evaluator {
    /// Fetch the model and its inputs, and run the original once.
    /// `texts`: replaces the default inputs (one text each; for the causal
    /// LM they are joined with newlines).
    pub fn new(dataset: &str, variant: &str, texts: Option<Vec<String>>, opts: &FetchOptions) -> Result<Evaluator> {
        let t0 = Instant::now();
        let task = task_of(dataset).ok_or_else(|| {
            Error::unsupported(format!(
                "dataset '{dataset}': the fidelity evaluator runs all-minilm-l6-v2 and {} (sentence embeddings) and {} (causal LM)",
                gemma::DATASET,
                gguf::DATASET
            ))
        })?;
        let (weights, sha256, derived, variant) = weights_of(dataset, variant, opts)?;
        let map = crate::io::Mapped::open(&weights)?;
        let mut inputs = Vec::new();
        let (reference, original_cached) = match task {
            Task::SentenceEmbedding => {
                let model = embed::Embedder::load(dataset, opts)?;
                inputs = match texts {
                    Some(t) => t,
                    None => texts::default_embedding_texts(opts)?,
                };
                let ids = model.encode(&inputs)?;
                let key = cache::key(dataset, &variant, &sha256, "sentence-embedding", &ids);
                let path = cache::path(&opts.cache_root(), dataset, &variant, &key);
                let (original, cached) = cache::embeddings(&path, &key, ids.len(), || model.run(map.bytes(), &ids))?;
                (Reference::Embedding { model, ids, original }, cached)
            }
            Task::CausalLm if variant.starts_with("kv-") => {
                if texts.is_some() {
                    return Err(Error::unsupported(format!(
                        "{dataset}:{variant}: a K/V cache is captured on the default perplexity text only"
                    )));
                }
                let reference = kv::reference(opts)?;
                inputs.push(texts::default_lm_text(opts)?);
                (Reference::KvCache { reference }, false)
            }
            Task::CausalLm => {
                let imp = gguf::import(opts)?;
                let (text, windows) = lm_windows(&imp, texts, opts)?;
                inputs.push(text);
                let key = cache::key(dataset, &variant, &sha256, "causal-lm", &windows);
                let path = cache::path(&opts.cache_root(), dataset, &variant, &key);
                // the original model is loaded only when its outputs are not in the cache
                let mut model: Option<lm::Llama> = None;
                let (original, cached) =
                    cache::lm_summaries(&path, &key, &windows, imp.config.vocab_size, |w: &[u32]| {
                        if model.is_none() {
                            model = Some(load_llama(map.bytes(), &imp.config)?);
                        }
                        let m = model.as_ref().expect("loaded");
                        logits(m, w)
                    })?;
                (Reference::CausalLm { cfg: imp.config, windows, original }, cached)
            }
        };
        Ok(Evaluator {
            dataset: dataset.to_string(),
            variant,
            derived,
            task,
            weights,
            sha256,
            map,
            reference,
            texts: inputs,
            original_cached,
            seconds_setup: t0.elapsed().as_secs_f64(),
        })
    }

    /// The original safetensors bytes.
    pub fn original(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Token ids of the inputs (texts, or windows of the perplexity text).
    pub fn inputs(&self) -> &[Vec<u32>] {
        match &self.reference {
            Reference::Embedding { ids, .. } => ids,
            Reference::CausalLm { windows, .. } => windows,
            Reference::KvCache { reference } => &reference.windows,
        }
    }

    /// The original model's inputs and outputs as JSON: the texts, their token
    /// ids and embeddings, or the perplexity text's windows and perplexity
    /// (from a report of this evaluator).
    pub fn dump(&self, r: &Report) -> serde_json::Value {
        let mut v = serde_json::json!({
            "dataset": self.dataset, "variant": self.variant, "derived": self.derived,
            "weights": self.weights, "sha256": self.sha256, "task": self.task,
        });
        match &self.reference {
            Reference::Embedding { model, ids, original } => {
                v["max_seq_length"] = model.max_seq_length().into();
                v["prompt"] = model.prompt().into();
                v["texts"] = serde_json::json!(self.texts);
                v["ids"] = serde_json::json!(ids);
                v["embeddings"] = serde_json::json!(original);
            }
            Reference::KvCache { reference } => {
                v["windows"] = serde_json::json!(reference.windows);
                v["ppl_original"] = serde_json::json!(r.metrics.ppl_original);
                v["n_predicted"] = serde_json::json!(r.metrics.n_inputs);
            }
            Reference::CausalLm { windows, .. } => {
                v["text"] = serde_json::json!(self.texts.join("\n"));
                v["windows"] = serde_json::json!(windows);
                v["ppl_original"] = serde_json::json!(r.metrics.ppl_original);
                v["n_predicted"] = serde_json::json!(r.metrics.n_inputs);
            }
        }
        v
    }

    /// The original model's embeddings (sentence-embedding tasks).
    pub fn original_embeddings(&self) -> Option<&[Vec<f32>]> {
        match &self.reference {
            Reference::Embedding { original, .. } => Some(original),
            Reference::CausalLm { .. } | Reference::KvCache { .. } => None,
        }
    }

    /// Embeddings of a decoded model (sentence-embedding tasks).
    pub fn embeddings(&self, weights: &[u8]) -> Result<Option<Vec<Vec<f32>>>> {
        match &self.reference {
            Reference::Embedding { model, ids, .. } => Ok(Some(model.run(weights, ids)?)),
            Reference::CausalLm { .. } | Reference::KvCache { .. } => Ok(None),
        }
    }

    /// The metrics of a decoded model (safetensors bytes) against the original.
    pub fn metrics(&self, decoded: &[u8]) -> Result<Metrics> {
        match &self.reference {
            Reference::Embedding { model, ids, original } => {
                let e = model.run(decoded, ids)?;
                let c = embed::compare(original, &e);
                Ok(Metrics {
                    n_inputs: c.n_texts,
                    cosine_mean: Some(c.cosine_mean),
                    cosine_p1: Some(c.cosine_p1),
                    cosine_min: Some(c.cosine_min),
                    top10_agreement: Some(c.top10_agreement),
                    ..Default::default()
                })
            }
            Reference::CausalLm { cfg, windows, original } => {
                let d = load_llama(decoded, cfg)?;
                let mut s = lm::LmSums::default();
                for (w, o) in windows.iter().zip(original) {
                    s.add(&cache::compare(o, &logits(&d, w)?, w, cfg.vocab_size));
                }
                Ok(lm_metrics(&s))
            }
            Reference::KvCache { reference } => {
                let (_, cache) = kv::decode(decoded)?;
                let s = kv::compare(&reference.model, &reference.windows, &reference.logits, &cache)?;
                Ok(lm_metrics(&s))
            }
        }
    }

    /// Compress the original with `codec` (as `weightlab compress` does),
    /// decode it back and evaluate the decoded model.
    pub fn evaluate(&self, codec: &str, threads: usize) -> Result<Report> {
        let t0 = Instant::now();
        let original = self.original();
        let (archive, index) = roundtrip_archive(original, &self.weights, codec, threads)?;
        let decoded = decode(&archive, threads)?;
        let seconds_codec = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let metrics = self.metrics(&decoded)?;
        let n_weights = n_weights(original)?;
        Ok(Report {
            dataset: self.dataset.clone(),
            variant: self.variant.clone(),
            derived: self.derived,
            task: self.task,
            codec: crate::codec::build(codec)?.spec(),
            lossless: index.is_lossless(),
            original_bytes: original.len() as u64,
            archive_bytes: archive.len() as u64,
            ratio: original.len() as f64 / archive.len().max(1) as f64,
            bits_per_weight: archive.len() as f64 * 8.0 / n_weights.max(1) as f64,
            n_weights,
            identical_weights: decoded == original,
            metrics,
            seconds_codec,
            seconds_eval: t1.elapsed().as_secs_f64(),
        })
    }
}

/// The causal-LM metrics of summed windows.
fn lm_metrics(s: &lm::LmSums) -> Metrics {
    let n = s.n.max(1) as f64;
    let (ppl_o, ppl) = ((s.nll_original / n).exp(), (s.nll / n).exp());
    Metrics {
        n_inputs: s.n as usize,
        ppl_original: Some(ppl_o),
        ppl: Some(ppl),
        ppl_delta_pct: Some(if s.nll == s.nll_original { 0.0 } else { 100.0 * (ppl / ppl_o - 1.0) }),
        top1_agreement: Some(s.top1_agree as f64 / n),
        kl_mean: Some(s.kl / n),
        ..Default::default()
    }
}

/// The perplexity text (or `texts` joined by newlines) and its windows.
fn lm_windows(
    imp: &gguf::Imported,
    texts: Option<Vec<String>>,
    opts: &FetchOptions,
) -> Result<(String, Vec<Vec<u32>>)> {
    let tok = tokenizers::Tokenizer::from_file(&imp.tokenizer_json)
        .map_err(|e| Error::invalid(format!("{}: {e}", imp.tokenizer_json.display())))?;
    let text = match texts {
        Some(t) => t.join("\n"),
        None => texts::default_lm_text(opts)?,
    };
    let enc = tok.encode(text.as_str(), false).map_err(|e| Error::invalid(format!("tokenizing: {e}")))?;
    let windows = lm::windows(enc.get_ids(), lm::MAX_TOKENS);
    if windows.is_empty() {
        return Err(Error::invalid("the perplexity text has fewer than 2 tokens"));
    }
    Ok((text, windows))
}

/// The logits of one window, `(t, vocab)` row-major.
fn logits(m: &lm::Llama, w: &[u32]) -> Result<Vec<f32>> {
    m.forward(w).and_then(|t| t.flatten_all()?.to_vec1()).map_err(candle_err("running the llama model"))
}

fn load_llama(weights: &[u8], cfg: &lm::LmConfig) -> Result<lm::Llama> {
    let vb = candle_nn::VarBuilder::from_slice_safetensors(weights, candle_core::DType::F32, &candle_core::Device::Cpu)
        .map_err(candle_err("loading the llama weights"))?;
    lm::Llama::load(&vb, cfg, lm::WINDOW).map_err(candle_err("loading the llama weights"))
}

/// Elements of every tensor of a safetensors file.
pub fn n_weights(safetensors: &[u8]) -> Result<u64> {
    Ok(SafeTensors::parse(safetensors)?.tensors.iter().map(|t| t.numel()).sum())
}

/// Compress safetensors bytes into an in-memory archive.
pub fn roundtrip_archive(
    original: &[u8],
    path: &std::path::Path,
    codec: &str,
    threads: usize,
) -> Result<(Vec<u8>, container::Index)> {
    let opts = CompressOptions { codec: codec.to_string(), threads, ..Default::default() };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut archive = Vec::new();
    let index = container::compress(original, &name, &mut archive, &opts)?;
    Ok((archive, index))
}

/// Decode an in-memory archive back to safetensors bytes (every chunk checked).
pub fn decode(archive: &[u8], threads: usize) -> Result<Vec<u8>> {
    let a = Archive::open(archive)?;
    let mut out = Vec::with_capacity(a.index.source.size as usize);
    let mut run = || a.stream(&mut out, &DecodeOptions::default());
    if threads == 0 {
        run()?;
    } else {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid(format!("thread pool: {e}")))?
            .install(run)?;
    }
    Ok(out)
}
