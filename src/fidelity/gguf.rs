//! SmolLM2-135M from its GGUF (Q4_1 blocks, Q8_0 and F32 tensors): the
//! weights dequantized to F32 with candle's GGML kernels, put back into the
//! Hugging Face llama layout (names, and the rows of `q_proj`/`k_proj` that
//! the GGUF converter permuted for interleaved RoPE), and cast to BF16 by
//! round to nearest even. That file is the "original" of the causal-LM
//! evaluation, labelled derived (`weightlab.derived = "true"`) like every
//! derived variant. The tokenizer (byte-level BPE) is rebuilt from the
//! GGUF's vocabulary and merges.
//!
//! Cache: `datasets/smollm2-135m/bf16/SmolLM2-135M-Instruct.Q4_1.safetensors`
//! (+ `.sha256` sidecar: its hash and the GGUF's), `…/lm.json` (the model
//! config) and `…/tokenizer.json`.

use super::lm::LmConfig;
use crate::datasets::{self, FetchOptions, FileFormat, Variant, derive::f32_to_bf16};
use crate::error::{Error, Result};
use crate::tensor::{DType, OwnedTensor};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The dataset this importer knows.
pub const DATASET: &str = "smollm2-135m";

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {msg}", path.display()))
}

fn ce(path: &Path) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| bad(path, format!("gguf: {e}"))
}

/// The imported model: its BF16 safetensors, config and tokenizer.
#[derive(Debug, Clone)]
pub struct Imported {
    pub weights: PathBuf,
    pub sha256: String,
    pub config: LmConfig,
    pub tokenizer_json: PathBuf,
}

fn meta<'a>(c: &'a Content, path: &Path, key: &str) -> Result<&'a Value> {
    c.metadata.get(key).ok_or_else(|| bad(path, format!("gguf metadata has no '{key}'")))
}

fn meta_u32(c: &Content, path: &Path, key: &str) -> Result<usize> {
    meta(c, path, key)?.to_u32().map(|v| v as usize).map_err(ce(path))
}

fn meta_f32(c: &Content, path: &Path, key: &str) -> Result<f32> {
    meta(c, path, key)?.to_f32().map_err(ce(path))
}

fn strings(c: &Content, path: &Path, key: &str) -> Result<Vec<String>> {
    meta(c, path, key)?.to_vec().map_err(ce(path))?.iter().map(|v| v.to_string().cloned().map_err(ce(path))).collect()
}

/// The llama hyper-parameters in the GGUF's metadata.
pub fn config(c: &Content, path: &Path) -> Result<LmConfig> {
    let arch = meta(c, path, "general.architecture")?.to_string().map_err(ce(path))?;
    if arch != "llama" {
        return Err(Error::unsupported(format!("{}: architecture '{arch}', only llama is supported", path.display())));
    }
    let vocab = meta(c, path, "tokenizer.ggml.tokens")?.to_vec().map_err(ce(path))?.len();
    let cfg = LmConfig {
        hidden_size: meta_u32(c, path, "llama.embedding_length")?,
        intermediate_size: meta_u32(c, path, "llama.feed_forward_length")?,
        num_hidden_layers: meta_u32(c, path, "llama.block_count")?,
        num_attention_heads: meta_u32(c, path, "llama.attention.head_count")?,
        num_key_value_heads: meta_u32(c, path, "llama.attention.head_count_kv")?,
        vocab_size: vocab,
        rms_norm_eps: meta_f32(c, path, "llama.attention.layer_norm_rms_epsilon")? as f64,
        rope_theta: meta_f32(c, path, "llama.rope.freq_base").unwrap_or(10_000.0),
        max_position_embeddings: meta_u32(c, path, "llama.context_length")?,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
    };
    cfg.validate().map_err(|e| e.context(path.display()))?;
    Ok(cfg)
}

/// The GGUF's tokenizer as a `tokenizer.json` (Hugging Face `tokenizers`).
/// Supports the byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the
/// `smollm` pre-tokenizer: single digits, then GPT-2's byte-level split.
pub fn tokenizer_json(c: &Content, path: &Path) -> Result<serde_json::Value> {
    let model = meta(c, path, "tokenizer.ggml.model")?.to_string().map_err(ce(path))?;
    let pre = c.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if model != "gpt2" || pre != "smollm" {
        return Err(Error::unsupported(format!(
            "{}: tokenizer '{model}' with pre-tokenizer '{pre}'; only gpt2 + smollm is supported",
            path.display()
        )));
    }
    let tokens = strings(c, path, "tokenizer.ggml.tokens")?;
    let merges = strings(c, path, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match c.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec().map_err(ce(path))?.iter().map(|t| t.to_i32().map_err(ce(path))).collect::<Result<_>>()?,
        None => vec![1; tokens.len()],
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if vocab.insert(t.clone(), serde_json::json!(i)).is_some() {
            return Err(bad(path, format!("token '{t}' is twice in the vocabulary")));
        }
        // 3: control tokens (<|endoftext|>, <|im_start|> …) are matched whole
        if types.get(i) == Some(&3) {
            added.push(serde_json::json!({
                "id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        }
    }
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    Ok(serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    }))
}

/// The Hugging Face name of a GGUF llama tensor, and the number of heads
/// whose rows to un-permute (q and k only).
fn hf_name(gguf: &str, cfg: &LmConfig) -> Option<(String, Option<usize>)> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some((t.to_string(), None));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (hf, heads) = match leaf {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(cfg.num_attention_heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(cfg.num_key_value_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), heads))
}

/// Undo llama.cpp's `permute` of q/k rows: GGUF row `h·d + 2j + s` is HF row
/// `h·d + s·d/2 + j` (d = rows per head).
fn unpermute(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of pairs");
    }
    t.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
}

/// What [`convert`] makes: the BF16 tensors, the file's metadata, the model
/// config and the tokenizer.json.
pub type Converted = (Vec<OwnedTensor>, BTreeMap<String, String>, LmConfig, serde_json::Value);

/// Dequantize, rename, un-permute and cast every tensor to BF16.
pub fn convert(gguf_path: &Path, source_sha: &str) -> Result<Converted> {
    let mut f = std::fs::File::open(gguf_path).map_err(|e| Error::io(format!("opening {}", gguf_path.display()), e))?;
    let c = Content::read(&mut f).map_err(ce(gguf_path))?;
    let cfg = config(&c, gguf_path)?;
    let tok = tokenizer_json(&c, gguf_path)?;
    let dev = Device::Cpu;
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let (hf, heads) =
            hf_name(name, &cfg).ok_or_else(|| bad(gguf_path, format!("tensor '{name}' has no llama counterpart")))?;
        let q = c.tensor(&mut f, name, &dev).map_err(ce(gguf_path))?;
        let mut t = q.dequantize(&dev).map_err(ce(gguf_path))?;
        if let Some(h) = heads {
            t = unpermute(&t, h).map_err(|e| bad(gguf_path, format!("{name}: {e}")))?;
        }
        let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        let vals: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).map_err(ce(gguf_path))?;
        let mut data = Vec::with_capacity(vals.len() * 2);
        for v in vals {
            data.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
        }
        out.push(OwnedTensor::new(hf, DType::BF16, shape, data));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let mut m = BTreeMap::new();
    m.insert("weightlab.derived".into(), "true".into());
    m.insert("weightlab.variant".into(), "bf16".into());
    m.insert("weightlab.dataset".into(), DATASET.into());
    m.insert("weightlab.source_sha256".into(), source_sha.into());
    m.insert(
        "weightlab.method".into(),
        "GGUF (Q4_1/Q8_0/F32) dequantized to F32 (candle), llama q/k rows un-permuted to the Hugging Face layout, cast to BF16 by round to nearest even".into(),
    );
    m.insert("format".into(), "pt".into());
    Ok((out, m, cfg, tok))
}

/// Fetch the GGUF and import it (once; cached and verified by its sidecar).
pub fn import(opts: &FetchOptions) -> Result<Imported> {
    let m = datasets::load_manifest(DATASET)?;
    let f = m
        .files
        .iter()
        .find(|f| f.format == FileFormat::Gguf)
        .ok_or_else(|| Error::invalid(format!("dataset {DATASET} lists no GGUF file")))?;
    let fetched = datasets::fetch_file(&m, f, opts)?;
    let root = opts.cache_root();
    let weights = datasets::variant_path(&root, &m, f, Variant::Bf16);
    let dir = weights.parent().map(Path::to_path_buf).unwrap_or_default();
    let cfg_path = dir.join("lm.json");
    let tok_path = dir.join("tokenizer.json");
    if let Some(sha) = datasets::generated_sha(&weights, &fetched.sha256)?
        && let Ok(cfg_text) = std::fs::read_to_string(&cfg_path)
        && let Ok(cfg) = serde_json::from_str::<LmConfig>(&cfg_text)
        && tok_path.is_file()
    {
        return Ok(Imported { weights, sha256: sha, config: cfg, tokenizer_json: tok_path });
    }
    if opts.verbose {
        eprintln!("{DATASET}: importing {} (GGUF -> BF16 safetensors) into {}", f.path, weights.display());
    }
    let (tensors, meta, cfg, tok) = convert(&fetched.path, &fetched.sha256)?;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    crate::io::write_atomic(&tok_path, |w| w.write_all(&json(&tok)))?;
    crate::io::write_atomic(&cfg_path, |w| w.write_all(&json(&serde_json::to_value(&cfg).expect("json"))))?;
    crate::tensor::safetensors::write_file(&weights, tensors.iter().map(|t| t.view()), Some(&meta))?;
    let sha = crate::io::sha256_file(&weights)?;
    datasets::write_sidecar(&weights, &sha, &fetched.sha256)?;
    Ok(Imported { weights, sha256: sha, config: cfg, tokenizer_json: tok_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // HF rows r = h*d + s*d/2 + j; llama.cpp writes them at h*d + 2j + s.
        let (heads, d, cols) = (3usize, 8usize, 2usize);
        let rows = heads * d;
        let mut gguf = vec![0f32; rows * cols];
        for h in 0..heads {
            for s in 0..2 {
                for j in 0..d / 2 {
                    let hf_row = h * d + s * d / 2 + j;
                    let gg_row = h * d + 2 * j + s;
                    for c in 0..cols {
                        gguf[gg_row * cols + c] = (hf_row * cols + c) as f32;
                    }
                }
            }
        }
        let t = Tensor::from_vec(gguf, (rows, cols), &Device::Cpu).unwrap();
        let hf: Vec<f32> = unpermute(&t, heads).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        assert_eq!(hf, want);
        assert!(unpermute(&t, 5).is_err());
    }

    #[test]
    fn gguf_names_map_to_hugging_face_llama() {
        let cfg = LmConfig::smollm2_135m();
        assert_eq!(
            hf_name("blk.7.attn_k.weight", &cfg),
            Some(("model.layers.7.self_attn.k_proj.weight".into(), Some(3)))
        );
        assert_eq!(hf_name("token_embd.weight", &cfg), Some(("model.embed_tokens.weight".into(), None)));
        assert_eq!(hf_name("blk.x.attn_k.weight", &cfg), None);
        assert_eq!(hf_name("rope_freqs.weight", &cfg), None);
    }
}
