//! The causal LM: a llama forward pass in candle (the Hugging Face
//! `LlamaForCausalLM` computation: RMSNorm, RoPE on halves, grouped-query
//! attention with a causal mask, SiLU-gated MLP, tied or separate output
//! head), returning the logits of every position, and the metrics that
//! compare two models on the same token windows: perplexity, top-1
//! next-token agreement and the mean KL divergence KL(original || decoded)
//! of the next-token distributions.
//!
//! Computation is in F32 whatever the weights' dtype (BF16 weights are
//! widened exactly when loaded). candle-transformers' own llama returns only
//! the last position's logits, hence this implementation.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Tokens per window (windows do not overlap; each predicts its own tokens
/// after the first).
pub const WINDOW: usize = 1024;
/// Tokens of the default perplexity text that are used (20 windows).
pub const MAX_TOKENS: usize = 20 * WINDOW;

/// Llama hyper-parameters (the Hugging Face config's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl LmConfig {
    /// SmolLM2-135M's published config (for tests).
    pub fn smollm2_135m() -> LmConfig {
        LmConfig {
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            vocab_size: 49152,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    pub fn validate(&self) -> crate::Result<()> {
        let ok = self.num_attention_heads > 0
            && self.num_key_value_heads > 0
            && self.hidden_size.is_multiple_of(self.num_attention_heads)
            && self.num_attention_heads.is_multiple_of(self.num_key_value_heads)
            && self.head_dim().is_multiple_of(2)
            && self.vocab_size > 0
            && self.num_hidden_layers > 0
            && self.max_position_embeddings >= 2;
        if ok { Ok(()) } else { Err(crate::Error::invalid(format!("inconsistent llama config {self:?}"))) }
    }
}

/// See [`Llama::forward_with`]: `(layer, k, v) -> (k, v)`.
pub type KvHook<'a> = dyn FnMut(usize, Tensor, Tensor) -> candle_core::Result<(Tensor, Tensor)> + 'a;

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A llama model on the CPU, weights in F32.
pub struct Llama {
    cfg: LmConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
}

fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&w.t()?)
}

impl Llama {
    /// Load from Hugging Face llama names (`model.layers.N.self_attn.q_proj.weight` …).
    pub fn load(vb: &VarBuilder, cfg: &LmConfig, max_len: usize) -> candle_core::Result<Llama> {
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed = vb.get((cfg.vocab_size, h), "model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = vb.pp(format!("model.layers.{l}"));
            layers.push(Layer {
                input_norm: p.get(h, "input_layernorm.weight")?,
                q: p.get((nq, h), "self_attn.q_proj.weight")?,
                k: p.get((nkv, h), "self_attn.k_proj.weight")?,
                v: p.get((nkv, h), "self_attn.v_proj.weight")?,
                o: p.get((h, nq), "self_attn.o_proj.weight")?,
                post_norm: p.get(h, "post_attention_layernorm.weight")?,
                gate: p.get((i, h), "mlp.gate_proj.weight")?,
                up: p.get((i, h), "mlp.up_proj.weight")?,
                down: p.get((h, i), "mlp.down_proj.weight")?,
            });
        }
        let norm = vb.get(h, "model.norm.weight")?;
        let lm_head =
            if cfg.tie_word_embeddings { embed.clone() } else { vb.get((cfg.vocab_size, h), "lm_head.weight")? };
        // RoPE tables as Hugging Face computes them (F32): inv_freq = 1/theta^(2i/d)
        let n = max_len.min(cfg.max_position_embeddings).max(1);
        let inv: Vec<f32> = (0..hd / 2).map(|k| 1.0 / cfg.rope_theta.powf((2 * k) as f32 / hd as f32)).collect();
        let mut freqs = Vec::with_capacity(n * hd / 2);
        for pos in 0..n {
            freqs.extend(inv.iter().map(|f| pos as f32 * f));
        }
        let freqs = Tensor::from_vec(freqs, (n, hd / 2), &Device::Cpu)?;
        Ok(Llama { cfg: cfg.clone(), embed, layers, norm, lm_head, cos: freqs.cos()?, sin: freqs.sin()? })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    /// Logits of every position, `(ids.len(), vocab)`, F32.
    pub fn forward(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.forward_with(ids, &mut |_, k, v| Ok((k, v)))
    }

    /// [`Llama::forward`] with a K/V hook: for every layer `l`, `kv(l, k, v)`
    /// receives the keys (after RoPE) and values that the attention is about
    /// to read, `(1, kv_heads, tokens, head_dim)` each, as a serving engine
    /// would cache them, and returns the tensors the attention reads instead
    /// (same shapes; the causal mask still lets position `i` see `0..=i`).
    pub fn forward_with(&self, ids: &[u32], kv: &mut KvHook<'_>) -> candle_core::Result<Tensor> {
        let t = ids.len();
        if t == 0 || t > self.cos.dims()[0] {
            candle_core::bail!("{t} tokens: the model takes 1 to {}", self.cos.dims()[0]);
        }
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let dev = Device::Cpu;
        let ids_t = Tensor::new(ids, &dev)?;
        let mut x = self.embed.index_select(&ids_t, 0)?; // (t, h)
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (li, l) in self.layers.iter().enumerate() {
            let hs = candle_nn::ops::rms_norm(&x, &l.input_norm, cfg.rms_norm_eps as f32)?;
            let heads = |w: &Tensor, n: usize| -> candle_core::Result<Tensor> {
                linear(&hs, w)?.reshape((t, n, hd))?.transpose(0, 1)?.contiguous()?.unsqueeze(0)
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, nh)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, nkv)?, &cos, &sin)?;
            let v = heads(&l.v, nkv)?;
            let (k, v) = kv(li, k, v)?;
            if k.dims() != [1, nkv, t, hd] || v.dims() != [1, nkv, t, hd] {
                candle_core::bail!(
                    "layer {li}: the K/V hook gave {:?} and {:?} for (1, {nkv}, {t}, {hd})",
                    k.dims(),
                    v.dims()
                );
            }
            let rep = |x: Tensor| -> candle_core::Result<Tensor> {
                if nh == nkv {
                    return Ok(x);
                }
                x.unsqueeze(2)?.expand((1, nkv, nh / nkv, t, hd))?.contiguous()?.reshape((1, nh, t, hd))
            };
            let (k, v) = (rep(k)?, rep(v)?);
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.squeeze(0)?.transpose(0, 1)?.contiguous()?.reshape((t, nh * hd))?;
            x = (x + linear(&y, &l.o)?)?;
            let hs = candle_nn::ops::rms_norm(&x, &l.post_norm, cfg.rms_norm_eps as f32)?;
            let g = candle_nn::ops::silu(&linear(&hs, &l.gate)?)?;
            x = (x + linear(&(g * linear(&hs, &l.up)?)?, &l.down)?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps as f32)?;
        linear(&x, &self.lm_head)?.to_dtype(DType::F32)
    }
}

/// Split tokens into windows of [`WINDOW`] (the last one may be shorter but
/// has at least two tokens), at most `max_tokens` in all.
pub fn windows(ids: &[u32], max_tokens: usize) -> Vec<Vec<u32>> {
    let ids = &ids[..ids.len().min(max_tokens)];
    ids.chunks(WINDOW).filter(|w| w.len() >= 2).map(<[u32]>::to_vec).collect()
}

/// Sums over the predicted positions of some windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LmSums {
    pub n: u64,
    pub nll_original: f64,
    pub nll: f64,
    pub top1_agree: u64,
    pub kl: f64,
}

impl LmSums {
    pub fn add(&mut self, o: &LmSums) {
        self.n += o.n;
        self.nll_original += o.nll_original;
        self.nll += o.nll;
        self.top1_agree += o.top1_agree;
        self.kl += o.kl;
    }
}

pub(crate) fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Compare the logits of one window, `(t, vocab)` row-major: position `i`
/// predicts `ids[i + 1]`.
pub fn compare_window(orig: &[f32], dec: &[f32], ids: &[u32], vocab: usize) -> LmSums {
    let t = ids.len();
    assert_eq!(orig.len(), t * vocab);
    assert_eq!(dec.len(), t * vocab);
    (0..t.saturating_sub(1))
        .into_par_iter()
        .map(|i| {
            let (ro, rd) = (&orig[i * vocab..(i + 1) * vocab], &dec[i * vocab..(i + 1) * vocab]);
            let (lo, ld) = (log_softmax(ro), log_softmax(rd));
            let target = ids[i + 1] as usize;
            let kl: f64 = lo.iter().zip(&ld).map(|(&a, &b)| if a == b { 0.0 } else { a.exp() * (a - b) }).sum();
            LmSums {
                n: 1,
                nll_original: -lo[target],
                nll: -ld[target],
                top1_agree: (argmax(ro) == argmax(rd)) as u64,
                kl,
            }
        })
        .reduce(LmSums::default, |mut a, b| {
            a.add(&b);
            a
        })
}

/// Run both models on every window and compare them.
pub fn compare(original: &Llama, decoded: &Llama, windows: &[Vec<u32>]) -> candle_core::Result<LmSums> {
    let mut s = LmSums::default();
    for w in windows {
        let vocab = original.cfg.vocab_size;
        let lo: Vec<f32> = original.forward(w)?.flatten_all()?.to_vec1()?;
        let ld: Vec<f32> = decoded.forward(w)?.flatten_all()?.to_vec1()?;
        if ids_out_of_range(w, vocab) {
            candle_core::bail!("a token id is outside the vocabulary of {vocab}");
        }
        s.add(&compare_window(&lo, &ld, w, vocab));
    }
    Ok(s)
}

fn ids_out_of_range(ids: &[u32], vocab: usize) -> bool {
    ids.iter().any(|&i| i as usize >= vocab)
}

/// Perplexity of one model alone (the reference check).
pub fn perplexity(model: &Llama, windows: &[Vec<u32>]) -> candle_core::Result<(f64, u64)> {
    let mut nll = 0.0;
    let mut n = 0u64;
    for w in windows {
        let logits = model.forward(w)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let rows: Vec<Vec<f32>> = lsm.to_vec2()?;
        for i in 0..w.len() - 1 {
            nll -= rows[i][w[i + 1] as usize] as f64;
            n += 1;
        }
    }
    Ok(((nll / n.max(1) as f64).exp(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cut_and_bound() {
        let ids: Vec<u32> = (0..2500).collect();
        let w = windows(&ids, 10_000);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), vec![1024, 1024, 452]);
        assert_eq!(windows(&ids, 1025).len(), 1, "a 1-token tail predicts nothing");
    }

    #[test]
    fn identical_logits_give_zero_kl_and_full_agreement() {
        let vocab = 5;
        let ids = [0u32, 3, 1];
        let l: Vec<f32> = (0..15).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let s = compare_window(&l, &l, &ids, vocab);
        assert_eq!(s.n, 2);
        assert_eq!(s.kl, 0.0);
        assert_eq!(s.top1_agree, 2);
        assert_eq!(s.nll.to_bits(), s.nll_original.to_bits());
        let mut d = l.clone();
        d[0] += 5.0; // position 0: token 0 becomes the favourite
        let s2 = compare_window(&l, &d, &ids, vocab);
        assert!(s2.kl > 0.0);
        assert_eq!(s2.top1_agree, 1);
        assert!(s2.nll > s.nll);
    }

    #[test]
    fn tiny_llama_runs_and_is_causal() {
        let cfg = LmConfig {
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            vocab_size: 11,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 16,
            tie_word_embeddings: true,
        };
        let vb = VarBuilder::from_tensors(tiny_weights(&cfg), DType::F32, &Device::Cpu);
        let m = Llama::load(&vb, &cfg, 16).unwrap();
        let a: Vec<Vec<f32>> = m.forward(&[1, 2, 3, 4]).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = m.forward(&[1, 2, 3, 9]).unwrap().to_vec2().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].len(), 11);
        // changing the last token changes only the last position's logits
        assert_eq!(a[..3], b[..3]);
        assert_ne!(a[3], b[3]);
        assert!(m.forward(&[]).is_err());
        assert!(m.forward(&[0; 17]).is_err());
    }

    fn tiny_weights(cfg: &LmConfig) -> std::collections::HashMap<String, Tensor> {
        let mut rng = crate::tensor::synth::Rng::new(7);
        let mut mk = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.3) as f32).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let mut w = std::collections::HashMap::new();
        w.insert("model.embed_tokens.weight".into(), mk(&[cfg.vocab_size, h]));
        w.insert("model.norm.weight".into(), mk(&[h]));
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            for (n, s) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![cfg.num_attention_heads * hd, h]),
                ("self_attn.k_proj.weight", vec![cfg.num_key_value_heads * hd, h]),
                ("self_attn.v_proj.weight", vec![cfg.num_key_value_heads * hd, h]),
                ("self_attn.o_proj.weight", vec![h, cfg.num_attention_heads * hd]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                w.insert(format!("{p}{n}"), mk(&s));
            }
        }
        w
    }
}
