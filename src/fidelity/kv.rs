//! K/V caches of the causal LM (SmolLM2-135M, [`super::gguf`]) as derived
//! datasets, and the fidelity of a decoded cache.
//!
//! **Capture.** The model runs over the first [`WINDOWS`] windows of the
//! perplexity text (each window a prefill from position 0, as in the
//! evaluator), and every layer's keys (after RoPE) and values are rounded to
//! BF16 (round to nearest even) before the attention reads them, as a BF16
//! serving engine caches them. The rounded tensors are what is recorded, and
//! the run that reads them is the *reference*: its logits are what a decoded
//! cache is compared with.
//!
//! **Variants** (`smollm2-135m:kv-…`, cached under
//! `datasets/smollm2-135m/VARIANT/kv.safetensors`, labelled derived), windows
//! concatenated along the token axis (`weightlab.kv.windows` gives their
//! lengths):
//!
//! | variant | tensors per layer `L` |
//! |---|---|
//! | `kv-bf16` | `layers.L.k`, `layers.L.v`: BF16 `[head, token, channel]` |
//! | `kv-bf16-cm` | `layers.L.k.channel_major`, `layers.L.v.channel_major`: BF16 `[head, channel, token]` |
//! | `kv-fp8-tensor` (`-cm`) | the same names in FP8 E4M3 (`e4m3fn`, saturating) + `….scale` F32 `[]`: `x ≈ q · scale`, `scale = absmax / 448` over the tensor |
//! | `kv-fp8-channel` (`-cm`) | as above with `….scale` F32 `[head, channel]`: one scale per channel over all tokens |
//! | `kv-kivi4`, `kv-kivi2` | KIVI (Liu et al., ICML 2024): asymmetric INT4/INT2, K per channel (groups of [`KIVI_GROUP`] tokens), V per token (groups of [`KIVI_GROUP`] channels), the recent tokens in BF16 (see [`kivi_quantize`]) |
//!
//! The FP8 scales are computed from the captured values themselves (a
//! calibration on the same text, the best case for a static scale).
//!
//! **Fidelity.** A decoded cache replaces the original: in each window's
//! prefill, every layer's attention reads the decoded K/V (position `i` sees
//! decoded positions `0..=i`), while queries and hidden states are the
//! model's own. Perplexity, top-1 agreement and KL are taken against the
//! reference run; a lossless cache gives the reference logits bit for bit.

use super::gguf;
use super::lm::{self, Llama, LmSums};
use crate::datasets::{self, FetchOptions, derive};
use crate::error::{Error, Result};
use crate::tensor::{DType, OwnedTensor, SafeTensors};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Windows of the perplexity text captured (tokens: `WINDOWS × lm::WINDOW`).
pub const WINDOWS: usize = 2;
/// KIVI's group size (tokens per K group, channels per V group).
pub const KIVI_GROUP: usize = 32;
/// KIVI's residual length: V keeps its last `R` tokens of each sequence in
/// full precision, K the `len mod R` tokens that do not fill a block of `R`.
pub const KIVI_RESIDUAL: usize = 128;
/// Recorded in the sidecar: a change of the capture or of an encoding
/// invalidates every cached variant.
const FORMAT: &str = "weightlab-kv-1";

/// How FP8 scales are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Tensor,
    Channel,
}

/// A K/V cache variant (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVariant {
    Bf16 { channel_major: bool },
    Fp8 { scale: Scale, channel_major: bool },
    Kivi { bits: u8 },
}

/// Every variant, in the order they are listed.
pub const VARIANTS: [KvVariant; 8] = [
    KvVariant::Bf16 { channel_major: false },
    KvVariant::Bf16 { channel_major: true },
    KvVariant::Fp8 { scale: Scale::Tensor, channel_major: false },
    KvVariant::Fp8 { scale: Scale::Tensor, channel_major: true },
    KvVariant::Fp8 { scale: Scale::Channel, channel_major: false },
    KvVariant::Fp8 { scale: Scale::Channel, channel_major: true },
    KvVariant::Kivi { bits: 4 },
    KvVariant::Kivi { bits: 2 },
];

impl KvVariant {
    pub fn name(self) -> String {
        let cm = |c: bool| if c { "-cm" } else { "" };
        match self {
            KvVariant::Bf16 { channel_major } => format!("kv-bf16{}", cm(channel_major)),
            KvVariant::Fp8 { scale: Scale::Tensor, channel_major } => format!("kv-fp8-tensor{}", cm(channel_major)),
            KvVariant::Fp8 { scale: Scale::Channel, channel_major } => format!("kv-fp8-channel{}", cm(channel_major)),
            KvVariant::Kivi { bits } => format!("kv-kivi{bits}"),
        }
    }

    pub fn parse(s: &str) -> Option<KvVariant> {
        VARIANTS.iter().copied().find(|v| v.name() == s)
    }

    /// The names of every variant, comma-separated (for errors).
    pub fn list() -> String {
        VARIANTS.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
    }

    fn channel_major(self) -> bool {
        matches!(self, KvVariant::Bf16 { channel_major: true } | KvVariant::Fp8 { channel_major: true, .. })
    }

    fn method(self) -> String {
        let layout = if self.channel_major() {
            "channel-major [head, channel, token]"
        } else {
            "token-major [head, token, channel]"
        };
        match self {
            KvVariant::Bf16 { .. } => format!("K (after RoPE) and V as BF16, {layout}"),
            KvVariant::Fp8 { scale, .. } => format!(
                "K and V as FP8 E4M3 (e4m3fn, saturating) of the BF16 cache divided by a {} scale absmax/448 (F32, in .scale), {layout}",
                if scale == Scale::Tensor { "per-tensor" } else { "per-channel ([head, channel])" }
            ),
            KvVariant::Kivi { bits } => format!(
                "KIVI INT{bits} of the BF16 cache: asymmetric (scale and min in BF16), K per channel in groups of {KIVI_GROUP} tokens, V per token in groups of {KIVI_GROUP} channels; per window, V's last {KIVI_RESIDUAL} tokens and K's len mod {KIVI_RESIDUAL} last tokens kept in BF16 (.residual); codes packed little-endian, first element in the low bits"
            ),
        }
    }
}

/// A K/V cache: per layer, K and V as F32, `[head, token, channel]`, the
/// windows one after another along the token axis.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub heads: usize,
    pub head_dim: usize,
    /// Tokens of each window (each one a prefill from position 0).
    pub windows: Vec<usize>,
    /// Per layer: (k, v), `heads × tokens × head_dim` values each.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

fn ce(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::invalid(format!("{what}: {e}"))
}

impl KvCache {
    pub fn tokens(&self) -> usize {
        self.windows.iter().sum()
    }

    fn window_start(&self, w: usize) -> usize {
        self.windows[..w].iter().sum()
    }

    /// The `(1, heads, t, head_dim)` K and V of window `w` at layer `l`.
    fn window(&self, l: usize, w: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (h, d, tt) = (self.heads, self.head_dim, self.tokens());
        let (Some((k, v)), Some(&t)) = (self.layers.get(l), self.windows.get(w)) else {
            candle_core::bail!("the cache has no layer {l} / window {w}");
        };
        let s = self.window_start(w);
        let cut = |x: &[f32]| -> candle_core::Result<Tensor> {
            let mut out = Vec::with_capacity(h * t * d);
            for hh in 0..h {
                out.extend_from_slice(&x[(hh * tt + s) * d..(hh * tt + s + t) * d]);
            }
            Tensor::from_vec(out, (1, h, t, d), &Device::Cpu)
        };
        Ok((cut(k)?, cut(v)?))
    }
}

/// The K/V a BF16 serving engine caches: `x` rounded to BF16 (nearest even).
fn bf16_round(x: &Tensor) -> candle_core::Result<Tensor> {
    x.to_dtype(candle_core::DType::BF16)?.to_dtype(candle_core::DType::F32)
}

/// Run `model` on `windows`, every layer reading BF16-rounded K/V; returns
/// the cache it read and the logits of every window (`t × vocab`, flat).
pub fn capture(model: &Llama, windows: &[Vec<u32>]) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let cfg = model.config();
    let (h, d, n) = (cfg.num_key_value_heads, cfg.head_dim(), cfg.num_hidden_layers);
    // per layer, per head: the windows' values one after another
    let mut ks: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); h]; n];
    let mut vs: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); h]; n];
    let mut logits = Vec::with_capacity(windows.len());
    for w in windows {
        let t = w.len();
        let mut hook = |l: usize, k: Tensor, v: Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            let (k, v) = (bf16_round(&k)?, bf16_round(&v)?);
            let (kf, vf): (Vec<f32>, Vec<f32>) = (k.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?);
            for hh in 0..h {
                ks[l][hh].extend_from_slice(&kf[hh * t * d..(hh + 1) * t * d]);
                vs[l][hh].extend_from_slice(&vf[hh * t * d..(hh + 1) * t * d]);
            }
            Ok((k, v))
        };
        let lg = model.forward_with(w, &mut hook).map_err(ce("running the llama model"))?;
        logits.push(lg.flatten_all().and_then(|x| x.to_vec1()).map_err(ce("running the llama model"))?);
    }
    let layers = ks.into_iter().zip(vs).map(|(k, v)| (k.concat(), v.concat())).collect();
    Ok((KvCache { heads: h, head_dim: d, windows: windows.iter().map(Vec::len).collect(), layers }, logits))
}

/// Run `model` on `windows` with `cache` in place of its own K/V and compare
/// with the reference logits.
pub fn compare(model: &Llama, windows: &[Vec<u32>], reference: &[Vec<f32>], cache: &KvCache) -> Result<LmSums> {
    let cfg = model.config();
    let lens: Vec<usize> = windows.iter().map(Vec::len).collect();
    if cache.windows != lens
        || cache.layers.len() != cfg.num_hidden_layers
        || cache.heads != cfg.num_key_value_heads
        || cache.head_dim != cfg.head_dim()
        || reference.len() != windows.len()
    {
        return Err(Error::invalid(format!(
            "the K/V cache ({} layers × {} heads × {} channels, windows {:?}) does not fit the model and its windows {lens:?}",
            cache.layers.len(),
            cache.heads,
            cache.head_dim,
            cache.windows
        )));
    }
    let vocab = cfg.vocab_size;
    let mut s = LmSums::default();
    for (wi, w) in windows.iter().enumerate() {
        let mut hook = |l: usize, _k: Tensor, _v: Tensor| cache.window(l, wi);
        let lg = model.forward_with(w, &mut hook).map_err(ce("running the llama model with the decoded cache"))?;
        let lg: Vec<f32> = lg.flatten_all().and_then(|x| x.to_vec1()).map_err(ce("reading the logits"))?;
        if reference[wi].len() != lg.len() || w.iter().any(|&i| i as usize >= vocab) {
            return Err(Error::invalid("the reference logits do not match the windows"));
        }
        s.add(&lm::compare_window(&reference[wi], &lg, w, vocab));
    }
    Ok(s)
}

/// `[h, t, d]` -> `[h, d, t]`.
fn to_channel_major(x: &[f32], h: usize, t: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for hh in 0..h {
        for tt in 0..t {
            for c in 0..d {
                out[(hh * d + c) * t + tt] = x[(hh * t + tt) * d + c];
            }
        }
    }
    out
}

/// `[h, d, t]` -> `[h, t, d]`.
fn to_token_major(x: &[f32], h: usize, t: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for hh in 0..h {
        for c in 0..d {
            for tt in 0..t {
                out[(hh * t + tt) * d + c] = x[(hh * d + c) * t + tt];
            }
        }
    }
    out
}

fn bf16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|&v| derive::f32_to_bf16(v).to_le_bytes()).collect()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bf16r(x: f32) -> f32 {
    derive::bf16_to_f32(derive::f32_to_bf16(x))
}

/// One KIVI group: asymmetric `bits`-bit codes of `x` with its scale and min
/// rounded to BF16 (what is stored): `x ≈ code · scale + min`.
fn kivi_group(x: &[f32], bits: u8, codes: &mut Vec<u8>) -> (f32, f32) {
    let (mn, mx) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let top = ((1u32 << bits) - 1) as f32;
    let (mn, scale) = (bf16r(mn), bf16r((mx - mn) / top));
    for &v in x {
        let q = if scale > 0.0 { ((v - mn) / scale).round().clamp(0.0, top) } else { 0.0 };
        codes.push(q as u8);
    }
    (scale, mn)
}

fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let per = (8 / bits) as usize;
    codes.chunks(per).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &q)| b | (q << (i * bits as usize)))).collect()
}

fn unpack(bytes: &[u8], bits: u8, n: usize) -> Vec<u8> {
    let per = (8 / bits) as usize;
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = Vec::with_capacity(n);
    for &b in bytes {
        for i in 0..per {
            if out.len() < n {
                out.push((b >> (i * bits as usize)) & mask);
            }
        }
    }
    out
}

/// Tokens of each window that KIVI quantizes (the rest is the BF16
/// residual): K every full block of [`KIVI_RESIDUAL`], V all but the last
/// [`KIVI_RESIDUAL`].
fn kivi_split(len: usize, key: bool) -> usize {
    if key { len - len % KIVI_RESIDUAL } else { len.saturating_sub(KIVI_RESIDUAL) }
}

/// KIVI tensors of one K or V (`[h, T, d]` F32): `.codes` U8 (K: `[h, d, Tq·b/8]`,
/// codes along tokens; V: `[h, Tq, d·b/8]`), `.scale` and `.min` BF16 (K:
/// `[h, d, Tq/G]`; V: `[h, Tq, d/G]`), `.residual` BF16 `[h, Tr, d]`.
pub fn kivi_quantize(name: &str, x: &[f32], cache: &KvCache, bits: u8, key: bool) -> Vec<OwnedTensor> {
    let (h, d, tt, g) = (cache.heads, cache.head_dim, cache.tokens(), KIVI_GROUP);
    let (mut q_tokens, mut r_tokens) = (Vec::new(), Vec::new()); // token indices, in order
    let mut s = 0;
    for &len in &cache.windows {
        let nq = kivi_split(len, key);
        q_tokens.extend(s..s + nq);
        r_tokens.extend(s + nq..s + len);
        s += len;
    }
    let (tq, tr) = (q_tokens.len(), r_tokens.len());
    let (mut codes, mut scales, mut mins) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = Vec::with_capacity(g);
    for hh in 0..h {
        if key {
            for c in 0..d {
                for grp in q_tokens.chunks(g) {
                    buf.clear();
                    buf.extend(grp.iter().map(|&t| x[(hh * tt + t) * d + c]));
                    let (sc, mn) = kivi_group(&buf, bits, &mut codes);
                    scales.push(sc);
                    mins.push(mn);
                }
            }
        } else {
            for &t in &q_tokens {
                for grp in x[(hh * tt + t) * d..(hh * tt + t + 1) * d].chunks(g) {
                    let (sc, mn) = kivi_group(grp, bits, &mut codes);
                    scales.push(sc);
                    mins.push(mn);
                }
            }
        }
    }
    let mut residual = Vec::with_capacity(h * tr * d);
    for hh in 0..h {
        for &t in &r_tokens {
            residual.extend_from_slice(&x[(hh * tt + t) * d..(hh * tt + t + 1) * d]);
        }
    }
    let (h64, d64, tq64, tr64, g64, b64) = (h as u64, d as u64, tq as u64, tr as u64, g as u64, bits as u64);
    let (cshape, sshape) = if key {
        (vec![h64, d64, tq64 * b64 / 8], vec![h64, d64, tq64 / g64])
    } else {
        (vec![h64, tq64, d64 * b64 / 8], vec![h64, tq64, d64 / g64])
    };
    vec![
        OwnedTensor::new(format!("{name}.codes"), DType::U8, cshape, pack(&codes, bits)),
        OwnedTensor::new(format!("{name}.scale"), DType::BF16, sshape.clone(), bf16_bytes(&scales)),
        OwnedTensor::new(format!("{name}.min"), DType::BF16, sshape, bf16_bytes(&mins)),
        OwnedTensor::new(format!("{name}.residual"), DType::BF16, vec![h64, tr64, d64], bf16_bytes(&residual)),
    ]
}

/// The tensors of a variant (names and layouts: see the module docs).
pub fn encode(cache: &KvCache, v: KvVariant) -> Result<Vec<OwnedTensor>> {
    let (h, d, t) = (cache.heads, cache.head_dim, cache.tokens());
    if let KvVariant::Kivi { bits } = v
        && (!matches!(bits, 2 | 4) || !d.is_multiple_of(KIVI_GROUP) || !KIVI_RESIDUAL.is_multiple_of(KIVI_GROUP))
    {
        return Err(Error::unsupported(format!(
            "KIVI INT{bits} with {d} channels per head and groups of {KIVI_GROUP}: needs 2 or 4 bits and whole groups"
        )));
    }
    let cm = v.channel_major();
    let shape = if cm { vec![h as u64, d as u64, t as u64] } else { vec![h as u64, t as u64, d as u64] };
    let mut out = Vec::new();
    for (l, (k, val)) in cache.layers.iter().enumerate() {
        for (which, x) in [("k", k), ("v", val)] {
            let name = format!("layers.{l}.{which}{}", if cm { ".channel_major" } else { "" });
            let laid = if cm { to_channel_major(x, h, t, d) } else { x.clone() };
            match v {
                KvVariant::Bf16 { .. } => {
                    out.push(OwnedTensor::new(name, DType::BF16, shape.clone(), bf16_bytes(&laid)))
                }
                KvVariant::Fp8 { scale, .. } => {
                    // one scale per tensor, or per (head, channel) over the tokens
                    let scales: Vec<f32> = match scale {
                        Scale::Tensor => vec![derive::e4m3_scale(x)],
                        Scale::Channel => (0..h * d)
                            .map(|hc| {
                                let (hh, c) = (hc / d, hc % d);
                                let col: Vec<f32> = (0..t).map(|tt| x[(hh * t + tt) * d + c]).collect();
                                derive::e4m3_scale(&col)
                            })
                            .collect(),
                    };
                    let sc = |i: usize| -> f32 {
                        // element i of the laid-out tensor -> its (head, channel)
                        if scales.len() == 1 {
                            return scales[0];
                        }
                        let (hh, c) = if cm { (i / (d * t), (i / t) % d) } else { (i / (t * d), i % d) };
                        scales[hh * d + c]
                    };
                    let q: Vec<u8> =
                        laid.iter().enumerate().map(|(i, &x)| derive::f32_to_e4m3fn_sat(x / sc(i))).collect();
                    let sshape = if scales.len() == 1 { vec![] } else { vec![h as u64, d as u64] };
                    out.push(OwnedTensor::new(name.clone(), DType::F8E4M3, shape.clone(), q));
                    out.push(OwnedTensor::new(
                        format!("layers.{l}.{which}.scale"),
                        DType::F32,
                        sshape,
                        f32_bytes(&scales),
                    ));
                }
                KvVariant::Kivi { bits } => out.extend(kivi_quantize(&name, x, cache, bits, which == "k")),
            }
        }
    }
    Ok(out)
}

fn meta_of(cache: &KvCache, v: KvVariant, source_sha: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("weightlab.derived".into(), "true".into());
    m.insert("weightlab.dataset".into(), gguf::DATASET.into());
    m.insert("weightlab.variant".into(), v.name());
    m.insert("weightlab.source_sha256".into(), source_sha.into());
    m.insert(
        "weightlab.method".into(),
        format!(
            "the K/V cache of every layer of {} over the first {} windows of the perplexity text (each window a prefill from position 0): {}",
            gguf::DATASET,
            cache.windows.len(),
            v.method()
        ),
    );
    m.insert("weightlab.kv.layers".into(), cache.layers.len().to_string());
    m.insert("weightlab.kv.heads".into(), cache.heads.to_string());
    m.insert("weightlab.kv.head_dim".into(), cache.head_dim.to_string());
    m.insert("weightlab.kv.windows".into(), cache.windows.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(","));
    m.insert("format".into(), "pt".into());
    m
}

/// A variant's safetensors bytes.
pub fn to_safetensors(cache: &KvCache, v: KvVariant, source_sha: &str) -> Result<Vec<u8>> {
    let t = encode(cache, v)?;
    crate::tensor::safetensors::serialize(t.iter().map(|t| t.view()), Some(&meta_of(cache, v, source_sha)))
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("K/V cache file: {msg}"))
}

/// Read a cache file of any variant back into F32 `[head, token, channel]`
/// (FP8 and KIVI dequantized). Every tensor's dtype and shape is checked
/// against the file's metadata before anything is allocated from it.
pub fn decode(bytes: &[u8]) -> Result<(KvVariant, KvCache)> {
    let st = SafeTensors::parse(bytes)?;
    let meta = st.metadata.as_ref().ok_or_else(|| bad("no metadata"))?;
    let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no '{k}' in the metadata")));
    let num = |k: &str| -> Result<usize> { get(k)?.parse().map_err(|_| bad(format!("'{k}' is not a count"))) };
    let vname = get("weightlab.variant")?;
    let v =
        KvVariant::parse(vname).ok_or_else(|| bad(format!("variant '{vname}' is none of {}", KvVariant::list())))?;
    let (n, h, d) = (num("weightlab.kv.layers")?, num("weightlab.kv.heads")?, num("weightlab.kv.head_dim")?);
    let windows: Vec<usize> = get("weightlab.kv.windows")?
        .split(',')
        .map(|w| w.trim().parse().map_err(|_| bad("'weightlab.kv.windows' is not a list of counts")))
        .collect::<Result<_>>()?;
    let t = windows.iter().try_fold(0usize, |a, &w| a.checked_add(w)).ok_or_else(|| bad("too many tokens"))?;
    let mut cache = KvCache { heads: h, head_dim: d, windows, layers: Vec::new() };
    let tensor = |name: &str, dtype: DType, shape: &[usize]| -> Result<&[u8]> {
        let tv = st.get(name).ok_or_else(|| bad(format!("no tensor '{name}'")))?;
        let want: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
        if tv.dtype != dtype || tv.shape != want.as_slice() {
            return Err(bad(format!(
                "tensor '{name}' is {} {:?} where {dtype} {want:?} was expected",
                tv.dtype, tv.shape
            )));
        }
        Ok(tv.data)
    };
    let bf16 = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(2).map(|c| derive::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
    };
    let cm = v.channel_major();
    if n > st.tensors.len() {
        return Err(bad(format!("{n} layers but {} tensors", st.tensors.len())));
    }
    for l in 0..n {
        let mut kv = Vec::with_capacity(2);
        for which in ["k", "v"] {
            let name = format!("layers.{l}.{which}{}", if cm { ".channel_major" } else { "" });
            let shape = if cm { [h, d, t] } else { [h, t, d] };
            let x = match v {
                KvVariant::Bf16 { .. } => bf16(tensor(&name, DType::BF16, &shape)?),
                KvVariant::Fp8 { scale, .. } => {
                    let q = tensor(&name, DType::F8E4M3, &shape)?;
                    let sname = format!("layers.{l}.{which}.scale");
                    let s: Vec<f32> = match scale {
                        Scale::Tensor => tensor(&sname, DType::F32, &[])?,
                        Scale::Channel => tensor(&sname, DType::F32, &[h, d])?,
                    }
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                    q.iter()
                        .enumerate()
                        .map(|(i, &b)| {
                            let sc = if s.len() == 1 {
                                s[0]
                            } else {
                                let (hh, c) = if cm { (i / (d * t), (i / t) % d) } else { (i / (t * d), i % d) };
                                s[hh * d + c]
                            };
                            derive::e4m3fn_to_f32(b) * sc
                        })
                        .collect()
                }
                KvVariant::Kivi { bits } => kivi_dequantize(&tensor, &name, &cache, bits, which == "k")?,
            };
            kv.push(if cm { to_token_major(&x, h, t, d) } else { x });
        }
        let v_ = kv.pop().expect("v");
        let k_ = kv.pop().expect("k");
        cache.layers.push((k_, v_));
    }
    Ok((v, cache))
}

type TensorGet<'a> = dyn Fn(&str, DType, &[usize]) -> Result<&'a [u8]> + 'a;

fn kivi_dequantize(tensor: &TensorGet<'_>, name: &str, cache: &KvCache, bits: u8, key: bool) -> Result<Vec<f32>> {
    let (h, d, tt, g) = (cache.heads, cache.head_dim, cache.tokens(), KIVI_GROUP);
    let (mut q_tokens, mut r_tokens) = (Vec::new(), Vec::new());
    let mut s = 0;
    for &len in &cache.windows {
        let nq = kivi_split(len, key);
        q_tokens.extend(s..s + nq);
        r_tokens.extend(s + nq..s + len);
        s += len;
    }
    let (tq, tr, b) = (q_tokens.len(), r_tokens.len(), bits as usize);
    if !d.is_multiple_of(g) || (key && !tq.is_multiple_of(g)) {
        return Err(bad(format!("{name}: {tq} tokens × {d} channels are not whole groups of {g}")));
    }
    let (cshape, sshape) =
        if key { ([h, d, tq * b / 8], [h, d, tq / g]) } else { ([h, tq, d * b / 8], [h, tq, d / g]) };
    let codes = unpack(tensor(&format!("{name}.codes"), DType::U8, &cshape)?, bits, h * tq * d);
    let to_f32 = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(2).map(|c| derive::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
    };
    let scale = to_f32(tensor(&format!("{name}.scale"), DType::BF16, &sshape)?);
    let min = to_f32(tensor(&format!("{name}.min"), DType::BF16, &sshape)?);
    let res = to_f32(tensor(&format!("{name}.residual"), DType::BF16, &[h, tr, d])?);
    let mut x = vec![0f32; h * tt * d];
    // codes are in the order kivi_quantize wrote them: group by group
    for hh in 0..h {
        if key {
            for c in 0..d {
                for (qi, &t) in q_tokens.iter().enumerate() {
                    let ci = (hh * d + c) * tq + qi;
                    let gi = (hh * d + c) * (tq / g) + qi / g;
                    x[(hh * tt + t) * d + c] = codes[ci] as f32 * scale[gi] + min[gi];
                }
            }
        } else {
            for (qi, &t) in q_tokens.iter().enumerate() {
                for c in 0..d {
                    let ci = (hh * tq + qi) * d + c;
                    let gi = (hh * tq + qi) * (d / g) + c / g;
                    x[(hh * tt + t) * d + c] = codes[ci] as f32 * scale[gi] + min[gi];
                }
            }
        }
        for (ri, &t) in r_tokens.iter().enumerate() {
            x[(hh * tt + t) * d..(hh * tt + t + 1) * d]
                .copy_from_slice(&res[(hh * tr + ri) * d..(hh * tr + ri + 1) * d]);
        }
    }
    Ok(x)
}

/// The model, its windows and the reference run, shared by every K/V
/// variant's evaluator in a process (one copy of the F32 weights and of the
/// reference logits).
pub struct KvReference {
    pub weights_sha: String,
    pub model: Llama,
    pub windows: Vec<Vec<u32>>,
    /// The reference run's logits, per window (`t × vocab`).
    pub logits: Vec<Vec<f32>>,
    /// The cache the reference run read.
    pub cache: KvCache,
}

static REFERENCE: Mutex<Option<Arc<KvReference>>> = Mutex::new(None);

/// The reference run of the imported model (made once per process).
pub fn reference(opts: &FetchOptions) -> Result<Arc<KvReference>> {
    let imp = gguf::import(opts)?;
    let mut g = REFERENCE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = g.as_ref()
        && r.weights_sha == imp.sha256
    {
        return Ok(r.clone());
    }
    let (_, windows) = super::lm_windows(&imp, None, opts)?;
    let windows: Vec<Vec<u32>> = windows.into_iter().take(WINDOWS).collect();
    let map = crate::io::Mapped::open(&imp.weights)?;
    let model = super::load_llama(map.bytes(), &imp.config)?;
    if opts.verbose {
        eprintln!("{}: capturing the K/V cache over {} windows", gguf::DATASET, windows.len());
    }
    let (cache, logits) = capture(&model, &windows)?;
    let r = Arc::new(KvReference { weights_sha: imp.sha256, model, windows, logits, cache });
    *g = Some(r.clone());
    Ok(r)
}

/// The cache path of a K/V variant.
pub fn variant_path(root: &Path, v: KvVariant) -> PathBuf {
    root.join("datasets").join(gguf::DATASET).join(v.name()).join("kv.safetensors")
}

/// What a cached variant was made from (its sidecar's second line).
fn source_tag(weights_sha: &str) -> String {
    format!("{weights_sha} {FORMAT} windows={WINDOWS}x{}", lm::WINDOW)
}

/// The cached file of a K/V variant (`kv-bf16` …), made when missing or
/// stale: `(path, sha256)`.
pub fn ensure(variant: &str, opts: &FetchOptions) -> Result<(PathBuf, String)> {
    let v = KvVariant::parse(variant).ok_or_else(|| {
        Error::invalid(format!("{}: no K/V variant '{variant}' (K/V variants: {})", gguf::DATASET, KvVariant::list()))
    })?;
    let imp = gguf::import(opts)?;
    let root = opts.cache_root();
    let path = variant_path(&root, v);
    let tag = source_tag(&imp.sha256);
    if let Some(sha) = datasets::generated_sha(&path, &tag)? {
        return Ok((path, sha));
    }
    // from the cached BF16 capture when there is one, else from a new capture
    let bf16 = variant_path(&root, VARIANTS[0]);
    let cache = match datasets::generated_sha(&bf16, &tag)? {
        Some(_) => decode(crate::io::Mapped::open(&bf16)?.bytes())?.1,
        None => reference(opts)?.cache.clone(),
    };
    if opts.verbose {
        eprintln!("{}: writing the K/V variant {} into {}", gguf::DATASET, v.name(), path.display());
    }
    let bytes = to_safetensors(&cache, v, &imp.sha256)?;
    crate::io::write_atomic(&path, |w| std::io::Write::write_all(w, &bytes))?;
    let sha = crate::io::sha256_file(&path)?;
    datasets::write_sidecar(&path, &sha, &tag)?;
    Ok((path, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(windows: Vec<usize>) -> KvCache {
        let (h, d) = (2, 64);
        let t: usize = windows.iter().sum();
        let mut rng = crate::tensor::synth::Rng::new(3);
        let mut mk = |s: f64| -> Vec<f32> {
            (0..h * t * d).map(|i| bf16r((rng.normal() * s + (i % d) as f64 * 0.1) as f32)).collect()
        };
        let layers = vec![(mk(2.0), mk(0.3)), (mk(1.0), mk(0.5))];
        KvCache { heads: h, head_dim: d, windows, layers }
    }

    #[test]
    fn lossless_variants_round_trip_bit_for_bit() {
        let c = synthetic(vec![200, 70]);
        for v in [KvVariant::Bf16 { channel_major: false }, KvVariant::Bf16 { channel_major: true }] {
            let b = to_safetensors(&c, v, "x").unwrap();
            let (v2, back) = decode(&b).unwrap();
            assert_eq!(v2, v);
            let bits = |c: &KvCache| -> Vec<u32> {
                c.layers.iter().flat_map(|(k, v)| k.iter().chain(v)).map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(&back), bits(&c), "{}", v.name());
            assert_eq!(back.windows, c.windows);
        }
        // the channel-major file holds the transpose
        let st_bytes = to_safetensors(&c, KvVariant::Bf16 { channel_major: true }, "x").unwrap();
        let st = SafeTensors::parse(&st_bytes).unwrap();
        let k = st.get("layers.1.k.channel_major").unwrap();
        assert_eq!(k.shape, &[2, 64, 270]);
        // element [h=1, c=5, t=7] is the token-major [1, 7, 5]
        let i = (64 + 5) * 270 + 7;
        let got = derive::bf16_to_f32(u16::from_le_bytes([k.data[2 * i], k.data[2 * i + 1]]));
        assert_eq!(got.to_bits(), c.layers[1].0[(270 + 7) * 64 + 5].to_bits());
    }

    #[test]
    fn fp8_variants_are_close_and_scaled() {
        let c = synthetic(vec![256]);
        for v in &VARIANTS[2..6] {
            let (_, back) = decode(&to_safetensors(&c, *v, "x").unwrap()).unwrap();
            for ((k, vv), (k0, v0)) in back.layers.iter().zip(&c.layers) {
                for (a, b) in k.iter().chain(vv).zip(k0.iter().chain(v0)) {
                    // E4M3: 3 mantissa bits, relative error <= 2^-4 above the subnormals
                    assert!((a - b).abs() <= b.abs() / 16.0 + 0.02, "{} {a} {b}", v.name());
                }
            }
            assert_ne!(back, c, "{} should be lossy", v.name());
        }
        let st_bytes = to_safetensors(&c, VARIANTS[4], "x").unwrap();
        let st = SafeTensors::parse(&st_bytes).unwrap();
        assert_eq!(st.get("layers.0.k.scale").unwrap().shape, &[2, 64]);
        assert_eq!(st.get("layers.0.k").unwrap().dtype, DType::F8E4M3);
    }

    #[test]
    fn kivi_keeps_residuals_and_bounds_the_error() {
        // window 1: 300 tokens -> K quantizes 256 and keeps 44; V quantizes 172 and keeps 128
        let c = synthetic(vec![300, 1024]);
        for bits in [4u8, 2] {
            let b = to_safetensors(&c, KvVariant::Kivi { bits }, "x").unwrap();
            let st = SafeTensors::parse(&b).unwrap();
            assert_eq!(st.get("layers.0.k.residual").unwrap().shape, &[2, 44, 64]);
            assert_eq!(st.get("layers.0.v.residual").unwrap().shape, &[2, 256, 64]);
            assert_eq!(st.get("layers.0.k.codes").unwrap().shape, &[2, 64, (256 + 1024) * bits as u64 / 8]);
            assert_eq!(st.get("layers.0.v.codes").unwrap().shape, &[2, 172 + 896, 64 * bits as u64 / 8]);
            let (_, back) = decode(&b).unwrap();
            let t = c.tokens();
            for ((k, v), (k0, v0)) in back.layers.iter().zip(&c.layers) {
                for hh in 0..2 {
                    for tt in 0..t {
                        for ch in 0..64 {
                            let i = (hh * t + tt) * 64 + ch;
                            let (in_w0, pos) = if tt < 300 { (true, tt) } else { (false, tt - 300) };
                            let len = if in_w0 { 300 } else { 1024 };
                            let k_res = pos >= kivi_split(len, true);
                            let v_res = pos >= kivi_split(len, false);
                            if k_res {
                                assert_eq!(k[i].to_bits(), k0[i].to_bits());
                            }
                            if v_res {
                                assert_eq!(v[i].to_bits(), v0[i].to_bits());
                            }
                        }
                    }
                }
                // the quantized part: error within half a step of its group's range (plus BF16 rounding)
                let err = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                let span = |b: &[f32]| b.iter().fold(0f32, |m, x| m.max(x.abs())) * 2.0;
                let steps = ((1u32 << bits) - 1) as f32;
                assert!(err(k, k0) <= span(k0) / steps, "K INT{bits}: {}", err(k, k0));
                assert!(err(v, v0) <= span(v0) / steps, "V INT{bits}: {}", err(v, v0));
                assert!(err(k, k0) > 0.0);
            }
        }
        assert_eq!(unpack(&pack(&[1, 2, 3, 0, 3], 2), 2, 5), vec![1, 2, 3, 0, 3]);
        assert_eq!(unpack(&pack(&[15, 0, 7], 4), 4, 3), vec![15, 0, 7]);
    }

    fn tiny_llama() -> (Llama, Vec<Vec<u32>>) {
        use candle_core::DType as C;
        let cfg = lm::LmConfig {
            hidden_size: 128,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            vocab_size: 23,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
        };
        let mut rng = crate::tensor::synth::Rng::new(11);
        let mut w = std::collections::HashMap::new();
        let mut mk = |name: String, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.2) as f32).collect();
            w.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
        };
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        mk("model.embed_tokens.weight".into(), &[cfg.vocab_size, h]);
        mk("model.norm.weight".into(), &[h]);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            mk(format!("{p}input_layernorm.weight"), &[h]);
            mk(format!("{p}post_attention_layernorm.weight"), &[h]);
            mk(format!("{p}self_attn.q_proj.weight"), &[cfg.num_attention_heads * hd, h]);
            mk(format!("{p}self_attn.k_proj.weight"), &[cfg.num_key_value_heads * hd, h]);
            mk(format!("{p}self_attn.v_proj.weight"), &[cfg.num_key_value_heads * hd, h]);
            mk(format!("{p}self_attn.o_proj.weight"), &[h, cfg.num_attention_heads * hd]);
            mk(format!("{p}mlp.gate_proj.weight"), &[i, h]);
            mk(format!("{p}mlp.up_proj.weight"), &[i, h]);
            mk(format!("{p}mlp.down_proj.weight"), &[h, i]);
        }
        let vb = candle_nn::VarBuilder::from_tensors(w, C::F32, &Device::Cpu);
        let m = Llama::load(&vb, &cfg, 512).unwrap();
        let ids = |n: usize, s: u32| (0..n as u32).map(|j| (j * 7 + s) % 23).collect::<Vec<u32>>();
        (m, vec![ids(300, 1), ids(140, 5)])
    }

    #[test]
    fn the_decoded_cache_replaces_the_model_own() {
        let (m, windows) = tiny_llama();
        let (cache, reference) = capture(&m, &windows).unwrap();
        assert_eq!((cache.heads, cache.head_dim, cache.windows.clone()), (1, 64, vec![300, 140]));
        // the reference run is reproducible, and the lossless files give it back bit for bit
        let (again, logits) = capture(&m, &windows).unwrap();
        assert_eq!(again, cache);
        assert_eq!(logits, reference);
        for v in VARIANTS {
            let (_, back) = decode(&to_safetensors(&cache, v, "x").unwrap()).unwrap();
            let s = compare(&m, &windows, &reference, &back).unwrap();
            assert_eq!(s.n, 299 + 139);
            let lossless = matches!(v, KvVariant::Bf16 { .. });
            if lossless {
                assert_eq!(s.nll.to_bits(), s.nll_original.to_bits(), "{}", v.name());
                assert_eq!((s.kl, s.top1_agree), (0.0, s.n), "{}", v.name());
            } else {
                assert!(s.kl > 0.0 && s.nll != s.nll_original, "{} should change the predictions", v.name());
            }
        }
        // a cache of other windows is refused
        let short = KvCache { windows: vec![300], ..cache.clone() };
        assert!(compare(&m, &windows, &reference, &short).is_err());
        // an edit of one cached key changes the predictions after it only
        let mut edited = cache.clone();
        edited.layers[1].0[(200) * 64 + 3] += 4.0; // layer 1, head 0, token 200 (window 0), channel 3
        let lg = |c: &KvCache| -> Vec<f32> {
            let mut hook = |l: usize, _k: Tensor, _v: Tensor| c.window(l, 0);
            m.forward_with(&windows[0], &mut hook).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        let (a, b) = (lg(&cache), lg(&edited));
        assert_eq!(a, reference[0]);
        assert_eq!(a[..200 * 23], b[..200 * 23]);
        assert_ne!(a[200 * 23..201 * 23], b[200 * 23..201 * 23]);
    }

    /// The real model (fetched once into the cache the other real-model tests
    /// use; `SKIPPED` when it cannot be fetched here): the BF16 cache through a
    /// lossless codec gives the reference perplexity exactly.
    #[test]
    fn smollm2_lossless_cache_gives_the_reference_perplexity() {
        let cache = std::env::var_os("WEIGHTLAB_CACHE")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/weightlab-cache"));
        let opts = FetchOptions { cache_dir: Some(cache), hub: false, ..FetchOptions::default() };
        let ev = match super::super::Evaluator::new(gguf::DATASET, "kv-bf16", None, &opts) {
            Ok(e) => e,
            Err(e) if e.kind() == crate::ErrorKind::Network => {
                eprintln!("SKIPPED: {} could not be fetched here ({})", gguf::DATASET, e.message());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(ev.derived);
        let r = ev.evaluate("zstd:level=3", 0).unwrap();
        assert!(r.lossless && r.identical_weights);
        assert_eq!(r.metrics.n_inputs, WINDOWS * (lm::WINDOW - 1));
        assert_eq!(r.metrics.ppl, r.metrics.ppl_original);
        assert_eq!((r.metrics.ppl_delta_pct, r.metrics.kl_mean), (Some(0.0), Some(0.0)));
        assert_eq!(r.metrics.top1_agreement, Some(1.0));
        // the FP8 cache is not the BF16 one: a cost, measured against the same reference
        let (path, _) = ensure("kv-fp8-tensor", &opts).unwrap();
        let (_, fp8) = decode(crate::io::Mapped::open(&path).unwrap().bytes()).unwrap();
        let rf = reference(&opts).unwrap();
        let s = compare(&rf.model, &rf.windows, &rf.logits, &fp8).unwrap();
        assert!(s.kl > 0.0 && s.top1_agree < s.n);
    }

    #[test]
    fn decode_rejects_a_wrong_shape() {
        let c = synthetic(vec![64]);
        let mut t = encode(&c, VARIANTS[0]).unwrap();
        t[0].shape = vec![2, 32, 128];
        let mut m = meta_of(&c, VARIANTS[0], "x");
        let b = crate::tensor::safetensors::serialize(t.iter().map(|t| t.view()), Some(&m)).unwrap();
        let e = decode(&b).unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
        m.insert("weightlab.variant".into(), "kv-nope".into());
        let t = encode(&c, VARIANTS[0]).unwrap();
        let b = crate::tensor::safetensors::serialize(t.iter().map(|t| t.view()), Some(&m)).unwrap();
        assert!(decode(&b).is_err());
    }
}
