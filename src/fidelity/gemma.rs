//! EmbeddingGemma-300M as sentence-transformers runs it (`modules.json`):
//! Transformer (a Gemma 3 text model with bidirectional attention) → mean
//! pooling over the real tokens (the prompt included) → Dense 768→3072 →
//! Dense 3072→768 (no bias, identity activation) → L2 normalization.
//!
//! The Gemma 3 encoder, as transformers' `Gemma3TextModel` computes it with
//! `use_bidirectional_attention = true`:
//! - token embedding times `sqrt(hidden_size)` (rounded to the weights' dtype,
//!   F32 here);
//! - per layer: `x += post_attn_norm(attn(input_norm(x)))`,
//!   `x += post_ffn_norm(mlp(pre_ffn_norm(x)))`, every RMSNorm scaling by
//!   `1 + w`;
//! - attention: q/k/v projections, RMSNorm of each query and key head
//!   (`q_norm`, `k_norm`) before RoPE (rotate-half), grouped-query heads,
//!   scores scaled by `query_pre_attn_scalar^-1/2`; `sliding_attention`
//!   layers see the keys at distance < `sliding_window` on both sides and use
//!   RoPE base `rope_local_base_freq`, `full_attention` layers see every
//!   real token and use `rope_theta`; padding keys are masked;
//! - MLP: `down(gelu_tanh(gate(x)) * up(x))`; a final RMSNorm.
//!
//! candle-transformers' `gemma3` is a causal decoder with a KV cache that
//! returns logits, hence this forward. Computation is in F32 (BF16 weights are
//! widened exactly when loaded). The codec is applied to `model.safetensors`
//! (the encoder, 300M parameters); the two Dense layers (2 × 2.4M
//! parameters, their own files) are always the original ones.
//!
//! Every text is prefixed with the prompt `prompt_name` of
//! `config_sentence_transformers.json` ([`PROMPT_NAME`]: sentence
//! similarity), as `SentenceTransformer.encode(texts, prompt_name=...)` does,
//! then tokenized `<bos> … <eos>` and truncated to `max_seq_length`.

use crate::error::{Error, Result};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The dataset this model is.
pub const DATASET: &str = "embeddinggemma-300m";
/// The prompt of `config_sentence_transformers.json` put before every text.
pub const PROMPT_NAME: &str = "STS";
/// Texts per forward pass (sorted by length first, padded to the longest).
const BATCH: usize = 16;

/// The Gemma 3 text config (the Hugging Face names); fields the forward
/// does not implement are checked in [`GemmaConfig::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GemmaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_local_base_freq: f64,
    pub sliding_window: usize,
    pub layer_types: Vec<String>,
    pub query_pre_attn_scalar: f64,
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    pub hidden_activation: String,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    pub max_position_embeddings: usize,
}

impl GemmaConfig {
    pub fn validate(&self) -> Result<()> {
        let unsupported = |what: String| Err(Error::unsupported(format!("gemma3 config: {what}")));
        if !self.use_bidirectional_attention {
            return unsupported("use_bidirectional_attention is false: a causal decoder, not the encoder".into());
        }
        if self.hidden_activation != "gelu_pytorch_tanh" {
            return unsupported(format!("hidden_activation {}", self.hidden_activation));
        }
        if self.attn_logit_softcapping.is_some() {
            return unsupported("attn_logit_softcapping".into());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return unsupported("rope_scaling".into());
        }
        if self.attention_bias {
            return unsupported("attention_bias".into());
        }
        if let Some(t) = self.layer_types.iter().find(|t| *t != "sliding_attention" && *t != "full_attention") {
            return unsupported(format!("layer type {t}"));
        }
        let ok = self.num_attention_heads > 0
            && self.num_key_value_heads > 0
            && self.num_attention_heads.is_multiple_of(self.num_key_value_heads)
            && self.head_dim > 0
            && self.head_dim.is_multiple_of(2)
            && self.hidden_size > 0
            && self.vocab_size > 0
            && self.num_hidden_layers > 0
            && self.layer_types.len() == self.num_hidden_layers
            && self.query_pre_attn_scalar > 0.0
            && self.max_position_embeddings >= 2;
        if ok { Ok(()) } else { Err(Error::invalid(format!("inconsistent gemma3 config {self:?}"))) }
    }
}

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    pre_ffn_norm: Tensor,
    post_ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    sliding: bool,
}

/// The Gemma 3 encoder with its weights, F32 on the CPU.
pub struct Encoder {
    cfg: GemmaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// RoPE tables `(max_len, head_dim/2)`: (cos, sin) local and global.
    local: (Tensor, Tensor),
    global: (Tensor, Tensor),
}

fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    // x: (..., in), w: (out, in)
    match x.dims() {
        [b, t, i] => x.reshape((b * t, *i))?.matmul(&w.t()?)?.reshape((*b, *t, w.dims()[0])),
        _ => x.matmul(&w.t()?),
    }
}

/// Gemma's RMSNorm scales by `1 + w`: the weight given to candle's kernel.
fn norm_weight(vb: &VarBuilder, n: usize, name: &str) -> candle_core::Result<Tensor> {
    vb.get(n, name)? + 1.0
}

fn rope_tables(base: f64, hd: usize, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
    // as transformers: inv_freq = 1 / base^(arange(0, d, 2) / d) in F32, freqs = pos * inv_freq
    let base = base as f32;
    let inv: Vec<f32> = (0..hd / 2).map(|k| 1.0 / base.powf((2 * k) as f32 / hd as f32)).collect();
    let mut freqs = Vec::with_capacity(n * hd / 2);
    for pos in 0..n {
        freqs.extend(inv.iter().map(|f| pos as f32 * f));
    }
    let freqs = Tensor::from_vec(freqs, (n, hd / 2), &Device::Cpu)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

impl Encoder {
    /// Load from `Gemma3TextModel` names (`embed_tokens.weight`,
    /// `layers.N.self_attn.q_proj.weight` …); RoPE tables for `max_len` tokens.
    pub fn load(vb: &VarBuilder, cfg: &GemmaConfig, max_len: usize) -> candle_core::Result<Encoder> {
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed = vb.get((cfg.vocab_size, h), "embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = vb.pp(format!("layers.{l}"));
            layers.push(Layer {
                input_norm: norm_weight(&p, h, "input_layernorm.weight")?,
                q: p.get((nq, h), "self_attn.q_proj.weight")?,
                k: p.get((nkv, h), "self_attn.k_proj.weight")?,
                v: p.get((nkv, h), "self_attn.v_proj.weight")?,
                o: p.get((h, nq), "self_attn.o_proj.weight")?,
                q_norm: norm_weight(&p, hd, "self_attn.q_norm.weight")?,
                k_norm: norm_weight(&p, hd, "self_attn.k_norm.weight")?,
                post_attn_norm: norm_weight(&p, h, "post_attention_layernorm.weight")?,
                pre_ffn_norm: norm_weight(&p, h, "pre_feedforward_layernorm.weight")?,
                post_ffn_norm: norm_weight(&p, h, "post_feedforward_layernorm.weight")?,
                gate: p.get((i, h), "mlp.gate_proj.weight")?,
                up: p.get((i, h), "mlp.up_proj.weight")?,
                down: p.get((h, i), "mlp.down_proj.weight")?,
                sliding: cfg.layer_types[l] == "sliding_attention",
            });
        }
        let norm = norm_weight(vb, h, "norm.weight")?;
        let n = max_len.min(cfg.max_position_embeddings).max(1);
        Ok(Encoder {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            local: rope_tables(cfg.rope_local_base_freq, hd, n)?,
            global: rope_tables(cfg.rope_theta, hd, n)?,
        })
    }

    /// Additive attention masks `(b, 1, t, t)` for a batch of lengths
    /// (right padding): (full, sliding).
    fn masks(&self, lens: &[usize], t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let w = self.cfg.sliding_window;
        let mk = |sliding: bool| {
            let mut m = Vec::with_capacity(lens.len() * t * t);
            for &len in lens {
                for i in 0..t {
                    m.extend((0..t).map(|j| {
                        let ok = j < len && (!sliding || i.abs_diff(j) < w);
                        // the lowest finite value, as transformers' eager masks: a padded query
                        // row may see no key at all, and must not give NaN (0 × NaN in att·v)
                        if ok { 0f32 } else { f32::MIN }
                    }));
                }
            }
            Tensor::from_vec(m, (lens.len(), 1, t, t), &Device::Cpu)
        };
        Ok((mk(false)?, mk(true)?))
    }

    /// The last hidden states `(b, t, hidden)` of a right-padded batch.
    pub fn forward(&self, ids: &Tensor, lens: &[usize]) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 || t > self.local.0.dims()[0] {
            candle_core::bail!("{t} tokens: the model takes 1 to {}", self.local.0.dims()[0]);
        }
        let cfg = &self.cfg;
        let (nh, nkv, hd, h) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size);
        let g = nh / nkv;
        let eps = cfg.rms_norm_eps as f32;
        let scale = cfg.query_pre_attn_scalar.powf(-0.5);
        let (full_mask, sliding_mask) = self.masks(lens, t)?;
        let rope = |(c, s): &(Tensor, Tensor)| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((c.narrow(0, 0, t)?.contiguous()?, s.narrow(0, 0, t)?.contiguous()?))
        };
        let (local, global) = (rope(&self.local)?, rope(&self.global)?);
        // transformers multiplies by sqrt(hidden) rounded to the weights' dtype (F32)
        let embed_scale = (h as f64).sqrt() as f32 as f64;
        let mut x = (self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, h))? * embed_scale)?;
        for l in &self.layers {
            let (cos, sin) = if l.sliding { &local } else { &global };
            let mask = if l.sliding { &sliding_mask } else { &full_mask };
            let hs = candle_nn::ops::rms_norm(&x, &l.input_norm, eps)?;
            let heads = |w: &Tensor, n: usize, norm: &Tensor| -> candle_core::Result<Tensor> {
                let y = linear(&hs, w)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?;
                candle_nn::ops::rms_norm(&y, norm, eps)
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, nh, &l.q_norm)?, cos, sin)?; // (b, nh, t, hd)
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, nkv, &l.k_norm)?, cos, sin)?; // (b, nkv, t, hd)
            let v = linear(&hs, &l.v)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            // the g query heads of one kv head as one matrix: (b, nkv, g*t, hd)
            let qg = q.reshape((b, nkv, g * t, hd))?;
            let att = (qg.matmul(&k.t()?)? * scale)?.reshape((b, nh, t, t))?.broadcast_add(mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?.reshape((b, nkv, g * t, t))?;
            let y = att.matmul(&v)?.reshape((b, nh, t, hd))?.transpose(1, 2)?.contiguous()?.reshape((b, t, nh * hd))?;
            let y = candle_nn::ops::rms_norm(&linear(&y, &l.o)?, &l.post_attn_norm, eps)?;
            x = (x + y)?;
            let hs = candle_nn::ops::rms_norm(&x, &l.pre_ffn_norm, eps)?;
            let m = linear(&(linear(&hs, &l.gate)?.gelu()? * linear(&hs, &l.up)?)?, &l.down)?;
            x = (x + candle_nn::ops::rms_norm(&m, &l.post_ffn_norm, eps)?)?;
        }
        candle_nn::ops::rms_norm(&x, &self.norm, eps)
    }
}

/// The sentence-transformers model around the encoder: config, tokenizer,
/// prompt, pooling and the two Dense layers.
pub struct Gemma {
    pub config: GemmaConfig,
    pub tokenizer: tokenizers::Tokenizer,
    pub max_seq_length: usize,
    pub prompt: String,
    dense: Vec<Tensor>,
    pub files: Vec<PathBuf>,
}

/// The files of the repository the model needs besides `model.safetensors`.
pub const FILES: [&str; 9] = [
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Dense/config.json",
    "2_Dense/model.safetensors",
    "3_Dense/model.safetensors",
];

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&s).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

fn ce(e: candle_core::Error) -> Error {
    Error::invalid(format!("running the Gemma model: {e}"))
}

impl Gemma {
    /// From the repository's files, `path(name)` giving each of [`FILES`].
    pub fn from_files(path: impl Fn(&str) -> Result<PathBuf>) -> Result<Gemma> {
        let files: Vec<PathBuf> = FILES.iter().map(|f| path(f)).collect::<Result<_>>()?;
        let by = |name: &str| &files[FILES.iter().position(|f| *f == name).unwrap()];
        let cfg_path = by("config.json");
        let config: GemmaConfig = serde_json::from_value(read_json(cfg_path)?)
            .map_err(|e| Error::invalid(format!("{}: {e}", cfg_path.display())))?;
        config.validate()?;
        // the pipeline this forward implements, module by module
        let modules = read_json(by("modules.json"))?;
        let types: Vec<&str> =
            modules.as_array().map(|a| a.iter().filter_map(|m| m["type"].as_str()).collect()).unwrap_or_default();
        let want = ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
            .map(|t| format!("sentence_transformers.models.{t}"));
        if types != want.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(Error::unsupported(format!(
                "{}: modules {types:?}, the evaluator implements {want:?}",
                by("modules.json").display()
            )));
        }
        let pool = read_json(by("1_Pooling/config.json"))?;
        if pool["pooling_mode_mean_tokens"] != serde_json::json!(true)
            || pool["include_prompt"] == serde_json::json!(false)
        {
            return Err(Error::unsupported("1_Pooling/config.json: only mean pooling over every token is implemented"));
        }
        let dense_cfg = read_json(by("2_Dense/config.json"))?;
        if dense_cfg["bias"] != serde_json::json!(false)
            || dense_cfg["activation_function"] != serde_json::json!("torch.nn.modules.linear.Identity")
        {
            return Err(Error::unsupported("2_Dense/config.json: only Dense layers without bias or activation"));
        }
        let max_seq_length = read_json(by("sentence_bert_config.json"))?["max_seq_length"]
            .as_u64()
            .filter(|&n| n >= 2)
            .ok_or_else(|| Error::invalid("sentence_bert_config.json: no max_seq_length"))?
            as usize;
        let st = read_json(by("config_sentence_transformers.json"))?;
        let prompt = st["prompts"][PROMPT_NAME]
            .as_str()
            .ok_or_else(|| Error::invalid(format!("config_sentence_transformers.json: no prompt '{PROMPT_NAME}'")))?
            .to_string();
        let tok_path = by("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(tok_path)
            .map_err(|e| Error::invalid(format!("{}: {e}", tok_path.display())))?;
        let mut dense = Vec::new();
        let mut width = config.hidden_size;
        for d in ["2_Dense/model.safetensors", "3_Dense/model.safetensors"] {
            let p = by(d);
            let bytes = std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &Device::Cpu).map_err(ce)?;
            let w = vb.get_unchecked("linear.weight").map_err(ce)?;
            match w.dims() {
                [out, inp] if *inp == width => width = *out,
                s => return Err(Error::invalid(format!("{}: linear.weight {s:?} after width {width}", p.display()))),
            }
            dense.push(w);
        }
        Ok(Gemma { config, tokenizer, max_seq_length, prompt, dense, files })
    }

    /// From a directory holding the repository (tests, checks).
    pub fn from_dir(dir: &Path) -> Result<Gemma> {
        Gemma::from_files(|f| Ok(dir.join(f)))
    }

    /// Token ids of `prompt + text`, `<bos> … <eos>`, truncated to
    /// `max_seq_length` (the `<eos>` kept, as the tokenizer's truncation does).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(tokenizers::TruncationParams {
            max_length: self.max_seq_length,
            ..Default::default()
        }))
        .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        tok.with_padding(None);
        texts
            .iter()
            .map(|t| {
                let s = format!("{}{t}", self.prompt);
                let e = tok.encode(s.as_str(), true).map_err(|e| Error::invalid(format!("tokenizing '{t}': {e}")))?;
                Ok(e.get_ids().to_vec())
            })
            .collect()
    }

    /// Load the encoder's weights (safetensors bytes of `model.safetensors`).
    pub fn model(&self, weights: &[u8], ids: &[Vec<u32>]) -> Result<Encoder> {
        let max_len = ids.iter().map(Vec::len).max().unwrap_or(1).min(self.max_seq_length);
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, &Device::Cpu).map_err(ce)?;
        Encoder::load(&vb, &self.config, max_len).map_err(ce)
    }

    /// The normalized sentence embedding of every text (in input order; the
    /// batches are formed over the texts sorted by length).
    pub fn embed(&self, model: &Encoder, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if let Some(bad) = ids.iter().flatten().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary")));
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| (ids[i].len(), i));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let e = self.embed_batch(model, &batch).map_err(ce)?;
            for (&i, v) in chunk.iter().zip(e) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, model: &Encoder, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let lens: Vec<usize> = batch.iter().map(|b| b.len()).collect();
        let t = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(batch.len() * t);
        let mut mask = Vec::with_capacity(batch.len() * t);
        for b in batch {
            ids.extend(b.iter().copied().chain(std::iter::repeat_n(0, t - b.len())));
            mask.extend((0..t).map(|i| f32::from(u8::from(i < b.len()))));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), t), &dev)?;
        let mask = Tensor::from_vec(mask, (batch.len(), t, 1), &dev)?;
        let hidden = model.forward(&ids, &lens)?;
        // sentence-transformers' mean pooling: sum(h * mask) / clamp(sum(mask), 1e-9)
        let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
        let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mut x = sum.broadcast_div(&count)?;
        for w in &self.dense {
            x = x.matmul(&w.t()?)?;
        }
        let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        x.broadcast_div(&norm)?.to_vec2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> GemmaConfig {
        GemmaConfig {
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            vocab_size: 11,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            rope_local_base_freq: 1e4,
            sliding_window: 2,
            layer_types: vec!["sliding_attention".into(), "full_attention".into()],
            query_pre_attn_scalar: 4.0,
            use_bidirectional_attention: true,
            hidden_activation: "gelu_pytorch_tanh".into(),
            attn_logit_softcapping: None,
            rope_scaling: None,
            attention_bias: false,
            max_position_embeddings: 32,
        }
    }

    fn tiny_weights(cfg: &GemmaConfig) -> std::collections::HashMap<String, Tensor> {
        let mut rng = crate::tensor::synth::Rng::new(11);
        let mut mk = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.3) as f32).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let mut w = std::collections::HashMap::new();
        w.insert("embed_tokens.weight".into(), mk(&[cfg.vocab_size, h]));
        w.insert("norm.weight".into(), mk(&[h]));
        for l in 0..cfg.num_hidden_layers {
            let p = format!("layers.{l}.");
            for (n, s) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("pre_feedforward_layernorm.weight", vec![h]),
                ("post_feedforward_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![cfg.num_attention_heads * hd, h]),
                ("self_attn.k_proj.weight", vec![cfg.num_key_value_heads * hd, h]),
                ("self_attn.v_proj.weight", vec![cfg.num_key_value_heads * hd, h]),
                ("self_attn.o_proj.weight", vec![h, cfg.num_attention_heads * hd]),
                ("self_attn.q_norm.weight", vec![hd]),
                ("self_attn.k_norm.weight", vec![hd]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                w.insert(format!("{p}{n}"), mk(&s));
            }
        }
        w
    }

    fn rows(m: &Encoder, ids: &[u32]) -> Vec<Vec<f32>> {
        let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        m.forward(&t, &[ids.len()]).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn tiny_encoder_is_bidirectional_and_ignores_padding() {
        let cfg = tiny_config();
        cfg.validate().unwrap();
        let vb = VarBuilder::from_tensors(tiny_weights(&cfg), DType::F32, &Device::Cpu);
        let m = Encoder::load(&vb, &cfg, 16).unwrap();
        let a = rows(&m, &[1, 2, 3, 4, 5]);
        let b = rows(&m, &[1, 2, 3, 4, 9]);
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].len(), 8);
        // bidirectional: changing the last token changes the first position
        // (through the full-attention layer, beyond the sliding window of 2)
        assert_ne!(a[0], b[0]);
        // right padding with other ids changes nothing of the real positions
        let ids = Tensor::new(&[[1u32, 2, 3, 0, 0], [1, 2, 3, 7, 8]], &Device::Cpu).unwrap();
        let p: Vec<Vec<Vec<f32>>> = m.forward(&ids, &[3, 5]).unwrap().to_vec3().unwrap();
        let alone = rows(&m, &[1, 2, 3]);
        for (x, y) in p[0][..3].iter().flatten().zip(alone.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{x} {y}");
        }
        assert!(m.forward(&Tensor::zeros((1, 17), DType::U32, &Device::Cpu).unwrap(), &[17]).is_err());
    }

    #[test]
    fn sliding_window_limits_the_local_layers() {
        // one sliding layer only: position 0 cannot see position 4 (window 2)
        let mut cfg = tiny_config();
        cfg.num_hidden_layers = 1;
        cfg.layer_types = vec!["sliding_attention".into()];
        let vb = VarBuilder::from_tensors(tiny_weights(&cfg), DType::F32, &Device::Cpu);
        let m = Encoder::load(&vb, &cfg, 16).unwrap();
        let a = rows(&m, &[1, 2, 3, 4, 5]);
        let b = rows(&m, &[1, 2, 3, 4, 9]);
        assert_eq!(a[0], b[0]);
        assert_eq!(a[2], b[2]);
        assert_ne!(a[3], b[3]);
        // the same layer as full attention sees it
        cfg.layer_types = vec!["full_attention".into()];
        let vb = VarBuilder::from_tensors(tiny_weights(&cfg), DType::F32, &Device::Cpu);
        let m = Encoder::load(&vb, &cfg, 16).unwrap();
        assert_ne!(rows(&m, &[1, 2, 3, 4, 5])[0], rows(&m, &[1, 2, 3, 4, 9])[0]);
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let mut c = tiny_config();
        c.use_bidirectional_attention = false;
        assert_eq!(c.validate().unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let mut c = tiny_config();
        c.attn_logit_softcapping = Some(50.0);
        assert_eq!(c.validate().unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let mut c = tiny_config();
        c.layer_types.pop();
        assert_eq!(c.validate().unwrap_err().kind(), crate::ErrorKind::InvalidInput);
    }
}
