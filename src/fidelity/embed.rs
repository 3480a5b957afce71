//! Sentence embeddings, as sentence-transformers computes them for
//! all-MiniLM-L6-v2: the BERT encoder (candle-transformers' `BertModel`),
//! mean pooling of the last hidden states over the real tokens, L2
//! normalization. Inputs are truncated to the model's `max_seq_length`
//! (256 tokens, `[CLS]` and `[SEP]` included), as sentence-transformers does.
//!
//! The comparison: per text, the cosine between the original and the decoded
//! model's embeddings (mean, 1st percentile, min), and the top-10
//! neighbour agreement (each text as a query over the others, by cosine;
//! the overlap of the two top-10 sets, averaged).

use crate::datasets::{self, FetchOptions};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rayon::prelude::*;
use std::path::PathBuf;

/// Texts per forward pass (padded to the longest of the batch).
const BATCH: usize = 32;
/// Neighbours compared per query.
pub const TOP_K: usize = 10;

/// A sentence-transformers BERT model's settings and tokenizer.
pub struct Bert {
    pub config: Config,
    pub tokenizer: tokenizers::Tokenizer,
    pub max_seq_length: usize,
    pub files: Vec<PathBuf>,
}

/// A sentence-embedding model of the evaluator: its settings and tokenizer
/// (the weights come separately, original or decoded).
pub enum Embedder {
    Bert(Box<Bert>),
    Gemma(Box<super::gemma::Gemma>),
}

impl Embedder {
    /// The model of a dataset: `embeddinggemma-300m` is the Gemma 3 encoder,
    /// the others BERT.
    pub fn load(dataset: &str, opts: &FetchOptions) -> Result<Embedder> {
        if dataset == super::gemma::DATASET {
            let g = super::gemma::Gemma::from_files(|f| fetch(dataset, f, opts))?;
            return Ok(Embedder::Gemma(Box::new(g)));
        }
        Ok(Embedder::Bert(Box::new(Bert::load(dataset, opts)?)))
    }

    pub fn max_seq_length(&self) -> usize {
        match self {
            Embedder::Bert(b) => b.max_seq_length,
            Embedder::Gemma(g) => g.max_seq_length,
        }
    }

    /// The prompt put before every text ("" for none).
    pub fn prompt(&self) -> &str {
        match self {
            Embedder::Bert(_) => "",
            Embedder::Gemma(g) => &g.prompt,
        }
    }

    /// Token ids of every text, special tokens included, truncated.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        match self {
            Embedder::Bert(b) => b.encode(texts),
            Embedder::Gemma(g) => g.encode(texts),
        }
    }

    /// Load weights (safetensors bytes) and embed every text.
    pub fn run(&self, weights: &[u8], ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Embedder::Bert(b) => b.embed(&b.model(weights)?, ids),
            Embedder::Gemma(g) => g.embed(&g.model(weights, ids)?, ids),
        }
    }
}

fn fetch(name: &str, file: &str, opts: &FetchOptions) -> Result<PathBuf> {
    let m = datasets::load_manifest(name)?;
    let f = m.files.iter().find(|f| f.path == file).ok_or_else(|| {
        Error::unsupported(format!("dataset {name} has no {file} in its manifest: it cannot be run here"))
    })?;
    Ok(datasets::fetch_file(&m, f, opts)?.path)
}

fn read_json(path: &PathBuf) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&s).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

impl Bert {
    /// The config, tokenizer and sentence-transformers settings of a dataset
    /// (fetched and verified like its weights).
    pub fn load(dataset: &str, opts: &FetchOptions) -> Result<Bert> {
        let cfg_path = fetch(dataset, "config.json", opts)?;
        let tok_path = fetch(dataset, "tokenizer.json", opts)?;
        let st_path = fetch(dataset, "sentence_bert_config.json", opts)?;
        let pool_path = fetch(dataset, "1_Pooling/config.json", opts)?;
        let cfg_text =
            std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(format!("reading {}", cfg_path.display()), e))?;
        let config: Config =
            serde_json::from_str(&cfg_text).map_err(|e| Error::invalid(format!("{}: {e}", cfg_path.display())))?;
        let pool = read_json(&pool_path)?;
        if pool["pooling_mode_mean_tokens"] != serde_json::json!(true) {
            return Err(Error::unsupported(format!("{}: only mean pooling is implemented", pool_path.display())));
        }
        let max_seq_length = read_json(&st_path)?["max_seq_length"]
            .as_u64()
            .filter(|&n| n >= 2)
            .ok_or_else(|| Error::invalid(format!("{}: no max_seq_length", st_path.display())))?
            as usize;
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::invalid(format!("{}: {e}", tok_path.display())))?;
        Ok(Bert { config, tokenizer, max_seq_length, files: vec![cfg_path, tok_path, st_path, pool_path] })
    }

    /// Token ids of each text, `[CLS] … [SEP]`, truncated to `max_seq_length`
    /// (the `[SEP]` kept, as the tokenizer's truncation does).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                let mut tok = self.tokenizer.clone();
                tok.with_truncation(Some(tokenizers::TruncationParams {
                    max_length: self.max_seq_length,
                    ..Default::default()
                }))
                .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
                tok.with_padding(None);
                let e = tok.encode(t.as_str(), true).map_err(|e| Error::invalid(format!("tokenizing '{t}': {e}")))?;
                Ok(e.get_ids().to_vec())
            })
            .collect()
    }

    /// Load weights (safetensors bytes) into a model.
    pub fn model(&self, weights: &[u8]) -> Result<BertModel> {
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, &Device::Cpu).map_err(ce)?;
        BertModel::load(vb, &self.config).map_err(ce)
    }

    /// The normalized sentence embedding of every text.
    pub fn embed(&self, model: &BertModel, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(BATCH) {
            out.extend(embed_batch(model, batch).map_err(ce)?);
        }
        Ok(out)
    }
}

fn ce(e: candle_core::Error) -> Error {
    Error::invalid(format!("running the BERT model: {e}"))
}

fn embed_batch(model: &BertModel, batch: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
    let dev = Device::Cpu;
    let len = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut mask = Vec::with_capacity(batch.len() * len);
    for b in batch {
        ids.extend(b.iter().copied().chain(std::iter::repeat_n(0, len - b.len())));
        mask.extend((0..len).map(|i| u32::from(i < b.len())));
    }
    let ids = Tensor::from_vec(ids, (batch.len(), len), &dev)?;
    let mask = Tensor::from_vec(mask, (batch.len(), len), &dev)?;
    let types = ids.zeros_like()?;
    let hidden = model.forward(&ids, &types, Some(&mask))?; // (b, len, h)
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = sum.broadcast_div(&count)?;
    // sentence-transformers' Normalize: x / max(||x||, 1e-12)
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)?.to_vec2()
}

/// How the decoded model's embeddings compare with the original's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedMetrics {
    pub n_texts: usize,
    pub cosine_mean: f64,
    pub cosine_p1: f64,
    pub cosine_min: f64,
    pub top10_agreement: f64,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Cosine similarity in f64; exactly 1 for identical nonzero vectors
/// (sqrt(x·x) is x exactly in IEEE arithmetic).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (ab, aa, bb) = (dot(a, b), dot(a, a), dot(b, b));
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    (ab / (aa * bb).sqrt()).clamp(-1.0, 1.0)
}

/// The `k` nearest other texts of text `q` by cosine (ties: lower index first).
fn neighbours(e: &[Vec<f32>], q: usize, k: usize) -> Vec<usize> {
    let mut s: Vec<(f64, usize)> = (0..e.len()).filter(|&j| j != q).map(|j| (cosine(&e[q], &e[j]), j)).collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter().take(k).map(|(_, j)| j).collect()
}

/// The 1st percentile (nearest rank) of values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn compare(original: &[Vec<f32>], decoded: &[Vec<f32>]) -> EmbedMetrics {
    assert_eq!(original.len(), decoded.len());
    let n = original.len();
    let cos: Vec<f64> = original.iter().zip(decoded).map(|(a, b)| cosine(a, b)).collect();
    let k = TOP_K.min(n.saturating_sub(1));
    let agree: f64 = if k == 0 {
        1.0
    } else {
        let total: usize = (0..n)
            .into_par_iter()
            .map(|q| {
                let a = neighbours(original, q, k);
                let b = neighbours(decoded, q, k);
                a.iter().filter(|j| b.contains(j)).count()
            })
            .sum();
        total as f64 / (n * k) as f64
    };
    EmbedMetrics {
        n_texts: n,
        cosine_mean: cos.iter().sum::<f64>() / n.max(1) as f64,
        cosine_p1: percentile(&cos, 1.0),
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        top10_agreement: agree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_exactly_one_for_identical_vectors() {
        let mut rng = crate::tensor::synth::Rng::new(3);
        for _ in 0..200 {
            let v: Vec<f32> = (0..384).map(|_| rng.normal() as f32).collect();
            assert_eq!(cosine(&v, &v), 1.0);
        }
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-15);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=300).map(f64::from).collect();
        assert_eq!(percentile(&v, 1.0), 3.0);
        assert_eq!(percentile(&v[..50], 1.0), 1.0);
    }

    #[test]
    fn compare_counts_neighbour_overlap() {
        let e: Vec<Vec<f32>> = (0..30).map(|i| vec![(i as f32 * 0.1).cos(), (i as f32 * 0.1).sin()]).collect();
        let m = compare(&e, &e);
        assert_eq!((m.cosine_mean, m.cosine_min, m.top10_agreement), (1.0, 1.0, 1.0));
        // reverse the order of the decoded points along the arc: each query's
        // neighbourhood changes
        let d: Vec<Vec<f32>> = (0..30).map(|i| e[(i * 7) % 30].clone()).collect();
        let m2 = compare(&e, &d);
        assert!(m2.top10_agreement < 1.0 && m2.cosine_min < 1.0);
    }
}
