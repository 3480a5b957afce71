//! The original model's outputs, computed once per model and inputs and kept
//! in the cache directory (`$WEIGHTLAB_CACHE/fidelity/DATASET/VARIANT/KEY.bin`),
//! so that a `[fidelity]` experiment (or `weightlab eval`, run again) runs the
//! original once, not once per codec, and an interrupted run resumes without
//! running it again.
//!
//! The key is the sha256 of the weights file's sha256, the dataset, variant,
//! task and every input token id (so it changes with the texts, the prompt,
//! the tokenizer and the truncation), and of the format version.
//!
//! - Sentence embeddings: every text's embedding, F32, bit for bit.
//! - Causal LM: per predicted position, the original's negative
//!   log-likelihood of the next token, its top-1 token, and its [`TOP_K`]
//!   most likely tokens with their log-probabilities (F64, bit for bit what
//!   the comparison computes). The KL divergence is that of the two
//!   next-token distributions coarse-grained to those K tokens plus one
//!   bucket for the rest of the vocabulary: by the log-sum inequality a lower
//!   bound of the full KL, equal to it when the decoded model keeps the
//!   original's tail proportions, and exactly 0 for identical logits. On
//!   SmolLM2 with `round:bits=2` (a large change: 0.24 nats over the whole
//!   vocabulary) it gave 0.217 against 0.242; perplexity and top-1 are exact.
//!
//! A file that does not parse, has the wrong key or the wrong length is
//! computed again and replaced; files are written atomically.

use super::lm::{LmSums, argmax, log_softmax};
use crate::error::{Error, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tokens of the original's next-token distribution kept per position.
pub const TOP_K: usize = 256;
const MAGIC: &[u8; 8] = b"WLFIDC1\n";
const VERSION: &str = "weightlab fidelity cache 1";

/// The cache key of a model's outputs on some inputs.
pub fn key(dataset: &str, variant: &str, weights_sha256: &str, task: &str, inputs: &[Vec<u32>]) -> String {
    let mut h = Sha256::new();
    for s in [VERSION, dataset, variant, weights_sha256, task] {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update((TOP_K as u64).to_le_bytes());
    h.update((inputs.len() as u64).to_le_bytes());
    for ids in inputs {
        h.update((ids.len() as u64).to_le_bytes());
        for &i in ids {
            h.update(i.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the outputs of `key` are kept.
pub fn path(cache_root: &Path, dataset: &str, variant: &str, key: &str) -> PathBuf {
    cache_root.join("fidelity").join(dataset).join(variant).join(format!("{key}.bin"))
}

/// Read a cache file: its payload when the file is whole and has this key.
fn read(path: &Path, key: &str) -> Option<Vec<u8>> {
    let b = std::fs::read(path).ok()?;
    let rest = b.strip_prefix(MAGIC.as_slice())?;
    let (k, rest) = rest.split_at_checked(64)?;
    if k != key.as_bytes() {
        return None;
    }
    let (n, rest) = rest.split_at_checked(8)?;
    let n = u64::from_le_bytes(n.try_into().ok()?);
    (rest.len() as u64 == n).then(|| rest.to_vec())
}

fn write(path: &Path, key: &str, payload: &[u8]) -> Result<()> {
    crate::io::write_atomic(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(key.as_bytes())?;
        w.write_all(&(payload.len() as u64).to_le_bytes())?;
        w.write_all(payload)
    })
}

/// Embeddings from the cache, or computed by `run` and stored. The bool says
/// whether they came from the cache.
pub fn embeddings(
    path: &Path,
    key: &str,
    n: usize,
    run: impl FnOnce() -> Result<Vec<Vec<f32>>>,
) -> Result<(Vec<Vec<f32>>, bool)> {
    if let Some(p) = read(path, key)
        && let Some(e) = decode_embeddings(&p, n)
    {
        return Ok((e, true));
    }
    let e = run()?;
    let dim = e.first().map_or(0, Vec::len);
    if e.len() != n || e.iter().any(|v| v.len() != dim) {
        return Err(Error::invalid(format!("{n} texts gave {} embeddings of unequal sizes", e.len())));
    }
    let mut p = Vec::with_capacity(8 + n * dim * 4);
    p.extend_from_slice(&(dim as u64).to_le_bytes());
    for x in e.iter().flatten() {
        p.extend_from_slice(&x.to_le_bytes());
    }
    write(path, key, &p)?;
    Ok((e, false))
}

fn decode_embeddings(p: &[u8], n: usize) -> Option<Vec<Vec<f32>>> {
    let (d, rest) = p.split_at_checked(8)?;
    let dim = u64::from_le_bytes(d.try_into().ok()?) as usize;
    if dim == 0 || rest.len() != n.checked_mul(dim)?.checked_mul(4)? {
        return None;
    }
    let f: Vec<f32> = rest.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Some(f.chunks(dim).map(<[f32]>::to_vec).collect())
}

/// The original's next-token distribution at one predicted position.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// −log p(next token).
    pub nll: f64,
    pub argmax: u32,
    /// The [`TOP_K`] (or vocabulary-size) most likely tokens, most likely first.
    pub ids: Vec<u32>,
    /// Their log-probabilities.
    pub logp: Vec<f64>,
}

/// The summary of one window's logits, `(t, vocab)` row-major: position `i`
/// predicts `ids[i + 1]`.
pub fn summarize(logits: &[f32], ids: &[u32], vocab: usize) -> Vec<Position> {
    let t = ids.len();
    assert_eq!(logits.len(), t * vocab);
    let k = TOP_K.min(vocab);
    (0..t.saturating_sub(1))
        .into_par_iter()
        .map(|i| {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let lp = log_softmax(row);
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            // most likely first; ties by token id
            let cmp = |a: &u32, b: &u32| lp[*b as usize].total_cmp(&lp[*a as usize]).then(a.cmp(b));
            order.select_nth_unstable_by(k - 1, cmp);
            order.truncate(k);
            order.sort_by(cmp);
            Position {
                nll: -lp[ids[i + 1] as usize],
                argmax: argmax(row) as u32,
                logp: order.iter().map(|&j| lp[j as usize]).collect(),
                ids: order,
            }
        })
        .collect()
}

/// The probability mass outside the kept tokens, from their log-probabilities.
fn tail(logp: impl Iterator<Item = f64>) -> f64 {
    (1.0 - logp.map(f64::exp).sum::<f64>()).max(0.0)
}

/// Compare a decoded model's logits of one window with the original's summary.
pub fn compare(orig: &[Position], dec: &[f32], ids: &[u32], vocab: usize) -> LmSums {
    let t = ids.len();
    assert_eq!(dec.len(), t * vocab);
    assert_eq!(orig.len(), t.saturating_sub(1));
    orig.par_iter()
        .enumerate()
        .map(|(i, o)| {
            let rd = &dec[i * vocab..(i + 1) * vocab];
            let ld = log_softmax(rd);
            let lq: Vec<f64> = o.ids.iter().map(|&j| ld[j as usize]).collect();
            let mut kl: f64 = o.logp.iter().zip(&lq).map(|(&a, &b)| if a == b { 0.0 } else { a.exp() * (a - b) }).sum();
            let (tp, tq) = (tail(o.logp.iter().copied()), tail(lq.iter().copied()));
            if tp > 0.0 && tp != tq {
                kl += tp * (tp.ln() - tq.max(f64::MIN_POSITIVE).ln());
            }
            LmSums {
                n: 1,
                nll_original: o.nll,
                nll: -ld[ids[i + 1] as usize],
                top1_agree: (o.argmax as usize == argmax(rd)) as u64,
                kl,
            }
        })
        .reduce(LmSums::default, |mut a, b| {
            a.add(&b);
            a
        })
}

/// Window summaries from the cache, or computed by `run` (one window at a
/// time: its logits, `(t, vocab)` row-major) and stored.
pub fn lm_summaries(
    path: &Path,
    key: &str,
    windows: &[Vec<u32>],
    vocab: usize,
    mut run: impl FnMut(&[u32]) -> Result<Vec<f32>>,
) -> Result<(Vec<Vec<Position>>, bool)> {
    if let Some(p) = read(path, key)
        && let Some(s) = decode_lm(&p, windows, vocab)
    {
        return Ok((s, true));
    }
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
        if let Some(bad) = w.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        out.push(summarize(&run(w)?, w, vocab));
    }
    let k = TOP_K.min(vocab);
    let mut p = Vec::new();
    p.extend_from_slice(&(k as u64).to_le_bytes());
    for pos in out.iter().flatten() {
        p.extend_from_slice(&pos.nll.to_le_bytes());
        p.extend_from_slice(&pos.argmax.to_le_bytes());
        for &j in &pos.ids {
            p.extend_from_slice(&j.to_le_bytes());
        }
        for &l in &pos.logp {
            p.extend_from_slice(&l.to_le_bytes());
        }
    }
    write(path, key, &p)?;
    Ok((out, false))
}

fn decode_lm(p: &[u8], windows: &[Vec<u32>], vocab: usize) -> Option<Vec<Vec<Position>>> {
    let (k, mut rest) = p.split_at_checked(8)?;
    let k = u64::from_le_bytes(k.try_into().ok()?) as usize;
    if k != TOP_K.min(vocab) {
        return None;
    }
    let per = 12 + k * 12;
    let n: usize = windows.iter().map(|w| w.len().saturating_sub(1)).sum();
    if rest.len() != n.checked_mul(per)? {
        return None;
    }
    let u32s =
        |b: &[u8]| -> Vec<u32> { b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect() };
    let f64s =
        |b: &[u8]| -> Vec<f64> { b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect() };
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
        let mut v = Vec::with_capacity(w.len().saturating_sub(1));
        for _ in 1..w.len() {
            let (b, r) = rest.split_at(per);
            rest = r;
            let pos = Position {
                nll: f64::from_le_bytes(b[0..8].try_into().unwrap()),
                argmax: u32::from_le_bytes(b[8..12].try_into().unwrap()),
                ids: u32s(&b[12..12 + 4 * k]),
                logp: f64s(&b[12 + 4 * k..]),
            };
            if pos.argmax as usize >= vocab || pos.ids.iter().any(|&j| j as usize >= vocab) {
                return None;
            }
            v.push(pos);
        }
        out.push(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(t: usize, vocab: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::tensor::synth::Rng::new(seed);
        (0..t * vocab).map(|_| (rng.normal() * 3.0) as f32).collect()
    }

    #[test]
    fn identical_logits_give_zero_kl_and_the_exact_nll() {
        let (vocab, ids) = (600, [3u32, 17, 599, 0, 42]);
        let l = logits(ids.len(), vocab, 1);
        let s = summarize(&l, &ids, vocab);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].ids.len(), TOP_K);
        assert!(s[0].logp.windows(2).all(|w| w[0] >= w[1]));
        let c = compare(&s, &l, &ids, vocab);
        assert_eq!((c.n, c.kl, c.top1_agree), (4, 0.0, 4));
        assert_eq!(c.nll.to_bits(), c.nll_original.to_bits());
        // the exact comparison of lm.rs agrees on nll and top-1
        let exact = super::super::lm::compare_window(&l, &l, &ids, vocab);
        assert_eq!(exact.nll_original.to_bits(), c.nll_original.to_bits());
    }

    #[test]
    fn truncated_kl_is_a_close_lower_bound() {
        let (vocab, ids) = (2000, [1u32, 2, 3, 4, 5, 6, 7, 8]);
        let l = logits(ids.len(), vocab, 2);
        let mut rng = crate::tensor::synth::Rng::new(9);
        let d: Vec<f32> = l.iter().map(|&x| x + (rng.normal() * 0.05) as f32).collect();
        let s = summarize(&l, &ids, vocab);
        let c = compare(&s, &d, &ids, vocab);
        let exact = super::super::lm::compare_window(&l, &d, &ids, vocab);
        assert!(c.kl > 0.0 && c.kl <= exact.kl * (1.0 + 1e-9), "{} vs {}", c.kl, exact.kl);
        assert!(c.kl > 0.5 * exact.kl, "{} vs {}", c.kl, exact.kl);
        assert_eq!(c.top1_agree, exact.top1_agree);
        assert!((c.nll - exact.nll).abs() < 1e-12);
        // a small vocabulary is kept whole: exact
        let (vocab, ids) = (50, [1u32, 2, 3]);
        let l = logits(3, vocab, 4);
        let d: Vec<f32> = l.iter().map(|&x| x * 1.1).collect();
        let c = compare(&summarize(&l, &ids, vocab), &d, &ids, vocab);
        let exact = super::super::lm::compare_window(&l, &d, &ids, vocab);
        assert!((c.kl - exact.kl).abs() < 1e-12 * exact.kl.max(1.0), "{} vs {}", c.kl, exact.kl);
    }

    #[test]
    fn files_round_trip_and_bad_ones_are_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let windows = vec![vec![1u32, 2, 3], vec![4, 5]];
        let k = key("d", "v", "sha", "causal-lm", &windows);
        assert_ne!(k, key("d", "v", "sha", "causal-lm", &[vec![1, 2, 3], vec![4, 6]]));
        let p = path(dir.path(), "d", "v", &k);
        let vocab = 300;
        let runs = std::cell::Cell::new(0);
        let mut run = |w: &[u32]| {
            runs.set(runs.get() + 1);
            Ok(logits(w.len(), vocab, w[0] as u64))
        };
        let (a, cached) = lm_summaries(&p, &k, &windows, vocab, &mut run).unwrap();
        assert!(!cached);
        let (b, cached) = lm_summaries(&p, &k, &windows, vocab, &mut run).unwrap();
        assert!(cached);
        assert_eq!(a, b);
        assert_eq!(runs.get(), 2);
        // a truncated file, or another key: computed again
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 1).unwrap();
        assert!(!lm_summaries(&p, &k, &windows, vocab, &mut run).unwrap().1);
        assert_eq!(runs.get(), 4);
        let k2 = key("d", "v", "sha2", "causal-lm", &windows);
        assert!(!lm_summaries(&p, &k2, &windows, vocab, &mut run).unwrap().1);

        let e = vec![vec![1.0f32, -0.5], vec![0.25, f32::MIN_POSITIVE]];
        let pe = path(dir.path(), "d", "v", "e");
        let (x, c1) = embeddings(&pe, &k, 2, || Ok(e.clone())).unwrap();
        let (y, c2) = embeddings(&pe, &k, 2, || panic!("not run again")).unwrap();
        assert!(!c1 && c2);
        assert_eq!(x, y);
        // the number of texts must match
        assert!(!embeddings(&pe, &k, 3, || Ok(vec![vec![0.0; 2]; 3])).unwrap().1);
    }
}
