//! Entropy-coder back ends: quantized static models over byte symbols and a
//! table-driven interleaved rANS coder ([`rans`]), plus the *stream* layer the
//! float codecs use ([`encode_stream`] / [`decode_stream`]): one byte stream,
//! optionally conditioned on a context byte per symbol, coded raw, as a
//! constant, or with rANS under one model or one model per context.
//!
//! # Why a custom coder and not constriction
//!
//! constriction is exact and well tested, and it is the reference the tests
//! check this coder's bit cost against. But it is an order of magnitude too
//! slow for the speed goal (CRATES.md: ~46–175 MB/s of symbols decoded on one
//! core, against > 1 GB/s needed to decode BF16 weights faster than zstd and
//! ZipNN). Its generic `DecoderModel` interface decodes one symbol at a time
//! through trait calls with a single coder state, which serializes every
//! symbol on the previous one's state update. The coder here keeps 32 or 64
//! independent rANS states interleaved over one word stream, decoded sixteen
//! at a time by AVX-512 (a gather of packed table entries, a word expand to
//! renormalize), eight at a time by AVX2 (a shuffle table instead of the
//! expand) or by a branch-free scalar loop, all from the same bytes; context
//! streams select per-context tables by index arithmetic (in registers, on
//! AVX-512). On the exponents of 4 MiB of MiniLM-BF16 (Zen 4, one core) the
//! AVX-512 decoder takes 0.43 ns per symbol with 64 lanes and 0.56 with 32,
//! AVX2 about 0.65, the scalar loop about 2.

pub mod merge;
pub mod rans;

use crate::error::{Error, Result};

/// Largest model precision (log2 of the total frequency). The decoding table
/// then packs symbol, frequency - 1 and slot offset in one u32 (8 + 12 + 12
/// bits), and a model's table is 16 KiB at most: tables must stay in L1,
/// measured to matter more than the last 0.1 % of ratio.
pub const MAX_PRECISION: u32 = 12;
/// Budget for all context tables of one stream, in slots (64 KiB).
const CTX_SLOTS: usize = 1 << 14;

/// A static model of byte symbols: frequencies summing to `1 << precision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub precision: u32,
    pub freq: [u32; 256],
}

/// A histogram of byte symbols.
pub type Hist = [u64; 256];

impl Model {
    /// The uniform model over all 256 symbols (what a raw byte costs).
    pub fn uniform(precision: u32) -> Model {
        assert!((8..=MAX_PRECISION).contains(&precision));
        Model { precision, freq: [1 << (precision - 8); 256] }
    }

    /// Quantize a histogram to frequencies summing to `1 << precision`, every
    /// present symbol keeping a frequency of at least 1, by greedily moving
    /// single units where they cost the least bits. `None` for an empty
    /// histogram or more distinct symbols than slots.
    pub fn from_hist(h: &Hist, precision: u32) -> Option<Model> {
        assert!((1..=MAX_PRECISION).contains(&precision));
        let total: u64 = h.iter().sum();
        let present = h.iter().filter(|&&c| c > 0).count() as u64;
        let target = 1u64 << precision;
        if total == 0 || present > target {
            return None;
        }
        let mut freq = [0u32; 256];
        let mut sum = 0u64;
        for (f, &c) in freq.iter_mut().zip(h) {
            if c > 0 {
                let q = ((c as u128 * target as u128 + total as u128 / 2) / total as u128) as u64;
                *f = q.clamp(1, target) as u32;
                sum += *f as u64;
            }
        }
        // Fix the sum: each step moves one unit where it helps (or hurts) the
        // expected code length the most (least), ties to the lowest symbol.
        // The gains are cached and only the moved symbol's is recomputed.
        let up = sum < target;
        let gain = |s: usize, f: u32| {
            if up {
                if h[s] > 0 { h[s] as f64 * ((f + 1) as f64 / f as f64).ln() } else { f64::NEG_INFINITY }
            } else if f > 1 {
                // Negated loss, so that both directions take the largest.
                -(h[s] as f64 * (f as f64 / (f - 1) as f64).ln())
            } else {
                f64::NEG_INFINITY
            }
        };
        let mut g: [f64; 256] = std::array::from_fn(|s| gain(s, freq[s]));
        while sum != target {
            let mut best = 0;
            for s in 1..256 {
                if g[s] > g[best] {
                    best = s;
                }
            }
            debug_assert!(g[best] > f64::NEG_INFINITY, "a symbol to move");
            if up {
                freq[best] += 1;
                sum += 1;
            } else {
                freq[best] -= 1;
                sum -= 1;
            }
            g[best] = gain(best, freq[best]);
        }
        Some(Model { precision, freq })
    }

    /// Bits needed to code histogram `h` with this model (inf if a symbol of
    /// `h` has frequency 0).
    pub fn cost_bits(&self, h: &Hist) -> f64 {
        let p = self.precision as f64;
        h.iter()
            .zip(&self.freq)
            .filter(|(c, _)| **c > 0)
            .map(|(&c, &f)| if f == 0 { f64::INFINITY } else { c as f64 * (p - (f as f64).log2()) })
            .sum()
    }

    /// Serialize: a byte with the precision (low 4 bits) and kind (high 4
    /// bits: 0 table, 1 uniform, 2 single symbol), then for a table the first
    /// and last present symbol and the frequencies of the symbols between them
    /// as varints (a zero is followed by a run length byte), the last one
    /// implied by the sum.
    pub fn write(&self, out: &mut Vec<u8>) {
        let p = self.precision;
        if self.freq.iter().all(|&f| f == 1 << p.saturating_sub(8)) && p >= 8 {
            out.push((1 << 4) | p as u8);
            return;
        }
        let lo = self.freq.iter().position(|&f| f > 0).expect("a model has a symbol");
        let hi = 255 - self.freq.iter().rev().position(|&f| f > 0).expect("a model has a symbol");
        if lo == hi {
            out.push((2 << 4) | p as u8);
            out.push(lo as u8);
            return;
        }
        out.push(p as u8);
        out.push(lo as u8);
        out.push(hi as u8);
        let mut s = lo;
        while s < hi {
            let f = self.freq[s];
            put_varint(out, f as u64);
            if f == 0 {
                let run = self.freq[s..hi].iter().take_while(|&&f| f == 0).count().min(256);
                out.push((run - 1) as u8);
                s += run;
            } else {
                s += 1;
            }
        }
    }

    /// Parse and validate a serialized model.
    pub fn read(r: &mut crate::codec::Reader) -> Result<Model> {
        let b = r.u8()?;
        let p = (b & 15) as u32;
        let kind = b >> 4;
        if !(1..=MAX_PRECISION).contains(&p) {
            return Err(Error::corrupt(format!("entropy model: precision {p} out of range")));
        }
        let total = 1u32 << p;
        let mut freq = [0u32; 256];
        match kind {
            1 if p >= 8 => return Ok(Model::uniform(p)),
            2 => {
                freq[r.u8()? as usize] = total;
                return Ok(Model { precision: p, freq });
            }
            0 => {}
            _ => return Err(Error::corrupt(format!("entropy model: unknown kind {kind} (precision {p})"))),
        }
        let lo = r.u8()? as usize;
        let hi = r.u8()? as usize;
        if lo >= hi {
            return Err(Error::corrupt("entropy model: empty symbol range"));
        }
        let mut sum = 0u64;
        let mut s = lo;
        while s < hi {
            let f = get_varint(r)?;
            if f == 0 {
                let run = r.u8()? as usize + 1;
                if s + run > hi {
                    return Err(Error::corrupt("entropy model: zero run past the last symbol"));
                }
                s += run;
                continue;
            }
            if f >= total as u64 {
                return Err(Error::corrupt("entropy model: frequency exceeds the total"));
            }
            freq[s] = f as u32;
            sum += f;
            s += 1;
        }
        if sum >= total as u64 {
            return Err(Error::corrupt("entropy model: frequencies exceed the total"));
        }
        freq[hi] = total - sum as u32;
        Ok(Model { precision: p, freq })
    }

    /// Serialized size in bytes.
    pub fn serialized_len(&self) -> usize {
        let mut v = Vec::new();
        self.write(&mut v);
        v.len()
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(r: &mut crate::codec::Reader) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.u8()?;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Error::corrupt("varint longer than 64 bits"))
}

/// Histogram of a byte slice.
pub fn hist(data: &[u8]) -> Hist {
    crate::analysis::entropy::byte_histogram(data)
}

/// Histograms of `syms` split by context byte: one per context present,
/// in context order. Counted in rows allocated as contexts first appear
/// (the float streams have a few dozen): a table of all 256 contexts,
/// zeroed and scanned for every stream, cost more than the counting on the
/// small tensors of real models.
pub fn ctx_hists(syms: &[u8], ctx: &[u8]) -> Vec<(u8, Hist)> {
    ctx_hists_of(syms, ctx, 0)
}

/// The position sampled from block `k` of `2^log2` symbols (`log2` from 1
/// to 31): one of the block's, picked by a hash of `k`. A fixed stride
/// aliased with the structure of real tensors: whisper-tiny's sinusoidal
/// position embedding (rows of 384) sampled at every 8th element saw a few
/// columns only, and the exponent models built from it cost 0.2 points of
/// ratio.
fn sampled(k: usize, log2: u32) -> usize {
    (k << log2) + ((k as u32).wrapping_mul(0x9e37_79b1) >> (32 - log2)) as usize
}

/// The positions [`sampled`] picks in a stream of `n` symbols.
#[cfg(test)]
fn sample_positions(n: usize, log2: u32) -> impl Iterator<Item = usize> {
    (0..n.div_ceil(1 << log2)).map(move |k| sampled(k, log2)).take_while(move |&i| i < n)
}

/// Call `f` with every position [`sampled`] picks in a stream of `n`, or
/// with every position for `log2 == 0`.
#[inline]
fn for_sampled(n: usize, log2: u32, mut f: impl FnMut(usize)) {
    if log2 == 0 {
        return (0..n).for_each(f);
    }
    for k in 0..n >> log2 {
        f(sampled(k, log2));
    }
    let last = sampled(n >> log2, log2);
    if last < n {
        f(last);
    }
}

/// [`ctx_hists`] of the symbols [`for_sampled`] picks with `log2`, counts
/// not scaled: the contexts present are found first, then every (context,
/// symbol) pair counted in their rows.
fn ctx_hists_of(syms: &[u8], ctx: &[u8], log2: u32) -> Vec<(u8, Hist)> {
    let n = syms.len().min(ctx.len());
    let mut present = [false; 256];
    for_sampled(n, log2, |i| present[ctx[i] as usize] = true);
    let seen: Vec<u8> = (0..=255u8).filter(|&c| present[c as usize]).collect();
    let mut row = [0usize; 256];
    for (r, &c) in seen.iter().enumerate() {
        row[c as usize] = r << 8;
    }
    // u32 counters (half the cache footprint), in pieces short enough that
    // they cannot overflow.
    let mut out: Vec<(u8, Hist)> = seen.iter().map(|&c| (c, [0u64; 256])).collect();
    let mut flat = vec![0u32; seen.len() << 8];
    let piece = 1usize << 31;
    for start in (0..n).step_by(piece) {
        let (s, c) = (&syms[start..n.min(start + piece)], &ctx[start..n.min(start + piece)]);
        for_sampled(s.len(), log2, |i| flat[row[c[i] as usize] | s[i] as usize] += 1);
        for ((_, h), counts) in out.iter_mut().zip(flat.chunks_exact_mut(256)) {
            for (o, k) in h.iter_mut().zip(counts) {
                *o += std::mem::take(k) as u64;
            }
        }
    }
    out
}

fn entropy_bits(h: &Hist) -> f64 {
    let n: u64 = h.iter().sum();
    crate::analysis::entropy::entropy(h) * n as f64
}

/// [`entropy_bits`] of the stream a histogram was sampled from, one symbol
/// in `2^log2` (counts already scaled back up): the plug-in entropy of a
/// sample of `m` symbols falls short of the distribution's by about
/// `(K - 1) / (2 m ln 2)` bits per symbol (`K` symbols seen), that of all
/// `n` symbols by the same with `n`, so the sample's estimate is raised by
/// the difference (Miller-Madow). Uncorrected, near-uniform mantissas of
/// contexts with a few thousand samples looked several percent
/// compressible and were coded, larger and slower to decode.
fn sampled_entropy_bits(h: &Hist, log2: u32) -> f64 {
    let n: u64 = h.iter().sum();
    let m = (n >> log2).max(1) as f64;
    let k = h.iter().filter(|&&c| c > 0).count().max(1) as f64;
    let short = (k - 1.0) / (2.0 * std::f64::consts::LN_2) * (1.0 / m - 1.0 / n as f64);
    entropy_bits(h) + short.max(0.0) * n as f64
}

/// Rough serialized size of the model of `h` (bytes), for planning.
fn model_bytes_estimate(h: &Hist) -> f64 {
    let lo = h.iter().position(|&c| c > 0).unwrap_or(0);
    let hi = 255 - h.iter().rev().position(|&c| c > 0).unwrap_or(255);
    3.0 + 1.3 * (hi - lo) as f64
}

const MODE_RAW: u8 = 0;
/// Four-lane rANS: single streams shorter than [`WIDE_FROM`]; with
/// contexts, the raw contexts' symbols stored and the coded ones in one
/// stream with a model switch per symbol.
const MODE_RANS: u8 = 1;
const MODE_CONST: u8 = 2;
/// One 32-lane rANS stream, decoded by AVX-512 or AVX2 where the core has
/// it. (Mode 3 was a short-lived development layout and is not read.)
const MODE_RANS32: u8 = 4;
/// One 64-lane rANS stream: as mode 4 with twice the lanes, for streams of
/// [`WIDER_FROM`] symbols or more.
const MODE_RANS64: u8 = 5;
/// A context stream laid out as mode 1, its coded symbols on 32 lanes
/// (decoded by AVX-512 where the core has it): for [`WIDE_CODED_FROM`]
/// coded symbols or more.
const MODE_CTX32: u8 = 6;
/// Context streams with this many coded symbols or more use mode 6 (112
/// bytes more of lane states than four lanes).
const WIDE_CODED_FROM: usize = 1 << 14;

/// Fixed cost of a rANS stream: lane states plus precision and counts.
const RANS_OVERHEAD_BITS: f64 = (rans::LANES * 32 + 64) as f64;
/// Single streams this long or longer get 32 lanes (vector decoding, 128
/// bytes of lane states); shorter ones four (16 bytes): on MiniLM-BF16 the
/// states of 32 lanes on every stream cost 0.03 points of ratio.
const WIDE_FROM: usize = 1 << 16;
/// Single streams this long or longer get 64 lanes (256 bytes of states):
/// a lane's step is a chain of dependent instructions (table gather,
/// multiply, renormalization), and 32 lanes leave the vector units idle
/// part of the time. Measured on the exponents of 4 MiB of MiniLM-BF16
/// (AVX-512, one core): 0.56 ns per symbol with 32 lanes, 0.43 with 64,
/// the same with 128.
const WIDER_FROM: usize = 1 << 19;

/// The default share of its raw size a context (or the pool of rare
/// contexts) must save to be entropy coded rather than stored raw. Raw contexts bypass the
/// rANS decoder entirely, so this trades a little ratio for decode speed:
/// the near-uniform mantissas of the common exponents are copied, while the
/// skewed ones (rare exponents, the tails) are coded.
pub const MIN_GAIN: f64 = 0.02;
/// Contexts with fewer symbols than this share a pooled model.
const POOL_BELOW: u64 = 2048;
/// Map value of a context whose symbols are stored raw.
const RAW_CTX: u8 = 255;

/// Quantize `hists` at one precision chosen from `ps` (the cheapest in bits
/// including the serialized models, preferring the smaller table unless the
/// larger saves 0.3 %). The first histogram may be empty (an unused pool): it gets a
/// uniform model.
fn quantize(hists: &[&Hist], ps: &[u32]) -> Option<(f64, Vec<Model>)> {
    let mut best: Option<(f64, Vec<Model>)> = None;
    for &p in ps {
        let mut models = Vec::with_capacity(hists.len());
        let mut bits = RANS_OVERHEAD_BITS;
        for h in hists {
            let m = if h.iter().all(|&c| c == 0) { Model::uniform(p) } else { Model::from_hist(h, p)? };
            bits += m.cost_bits(h) + m.serialized_len() as f64 * 8.0;
            models.push(m);
        }
        // A larger table must earn its cache footprint: 0.3 % fewer bits.
        if best.as_ref().is_none_or(|(b, _)| bits < *b * 0.997) {
            best = Some((bits, models));
        }
    }
    best
}

/// The precisions `k` context models may use (all their tables within
/// [`CTX_SLOTS`]).
fn ctx_precisions(k: usize) -> Vec<u32> {
    [10u32, 11, 12].into_iter().filter(|&p| k << p <= CTX_SLOTS).collect()
}

/// Streams at least this long are modelled from a sample ([`sampled`]; see
/// [`model_hist`] and [`encode_stream_with`]).
const SAMPLE_FROM: usize = 1 << 16;
/// A single stream's model is built from one symbol in every block of
/// `2^MODEL_SAMPLE` (and the exact counts of the symbols that misses).
const MODEL_SAMPLE: u32 = 3;
/// Which contexts of a context stream to code is planned on one symbol in
/// every block of `2^PLAN_SAMPLE` (the models then come from exact counts):
/// counting every 8th symbol under its context took 1.4 ns per sample,
/// about a tenth of the float encoder's time on MiniLM-BF16.
const PLAN_SAMPLE: u32 = 4;

/// The histogram the model of a stream without contexts is built from: of
/// every symbol in a short stream; in a long one ([`SAMPLE_FROM`] symbols
/// and up), of the symbols [`sampled`] with [`MODEL_SAMPLE`] scaled back up, plus the
/// exact count of every symbol the sample missed (found by a membership
/// pass over all symbols, [`merge::count_unflagged`]), so that every
/// present symbol gets a frequency and no absent one does. The full count
/// took about a sixth of the float encoder's time on MiniLM-BF16; the
/// sample's estimate of a 2^19-symbol stream's distribution costs well
/// under 0.01 % of its size. The same histogram on every core.
pub fn model_hist(syms: &[u8]) -> Hist {
    if syms.len() < SAMPLE_FROM {
        return hist(syms);
    }
    let mut h = [0u64; 256];
    for_sampled(syms.len(), MODEL_SAMPLE, |i| h[syms[i] as usize] += 1);
    let seen: [u8; 256] = std::array::from_fn(|k| (h[k] > 0) as u8);
    for c in h.iter_mut() {
        *c <<= MODEL_SAMPLE;
    }
    for (c, m) in h.iter_mut().zip(merge::count_unflagged(syms, &seen)) {
        *c += m;
    }
    h
}

/// The model of a stream without contexts, or `None` where raw storage is
/// about as small.
fn plan_single(global: &Hist, n: usize, min_gain: f64) -> Option<Model> {
    let (bits, mut models) = quantize(&[global], &[10, 11, 12])?;
    (bits < n as f64 * 8.0 * (1.0 - min_gain.min(0.02) / 4.0)).then(|| models.remove(0))
}

/// Decide which contexts of a stream to code, from their histograms: an
/// own model (index 1 up) for every context that saves [`MIN_GAIN`] of its
/// raw size, the pooled model (index 0) for the rare contexts if the pool
/// saves as much, raw ([`RAW_CTX`]) for the rest. Returns the map and the
/// number of models, or `None` when every context is raw. Deterministic.
fn plan_contexts(hs: &[(u8, Hist)], log2: u32, min_gain: f64) -> Option<([u8; 256], usize)> {
    let mut map = [RAW_CTX; 256];
    let mut own: Vec<usize> = Vec::new();
    let mut pool = [0u64; 256];
    let mut pooled: Vec<usize> = Vec::new();
    let mut order: Vec<(u64, usize, &Hist)> =
        hs.iter().map(|(c, h)| (h.iter().sum::<u64>(), *c as usize, h)).filter(|&(k, _, _)| k > 0).collect();
    order.sort_by_key(|&(k, c, _)| (std::cmp::Reverse(k), c));
    for (k, c, h) in order {
        let raw = k as f64 * 8.0;
        if k >= POOL_BELOW && own.len() < 15 {
            let own_bits = sampled_entropy_bits(h, log2) + model_bytes_estimate(h) * 8.0;
            if own_bits < raw * (1.0 - min_gain) {
                own.push(c);
            }
        } else if k < POOL_BELOW {
            pooled.push(c);
            for (p, x) in pool.iter_mut().zip(h) {
                *p += x;
            }
        }
    }
    let pool_n: u64 = pool.iter().sum();
    let pool_coded = pool_n > 0
        && sampled_entropy_bits(&pool, log2) + model_bytes_estimate(&pool) * 8.0
            < pool_n as f64 * 8.0 * (1.0 - min_gain);
    if own.is_empty() && !pool_coded {
        return None;
    }
    if pool_coded {
        for &c in &pooled {
            map[c] = 0;
        }
    }
    for (i, &c) in own.iter().enumerate() {
        map[c] = (i + 1) as u8;
    }
    Some((map, own.len() + 1))
}

/// Code a byte stream, optionally conditioned on `ctx` (one context byte per
/// symbol, known to the decoder). Appends a self-describing block to `out`.
///
/// Block: a mode byte, then for raw (0) the bytes; const (2): the symbol;
/// rANS without contexts (4 for 32 lanes, 1 for four): model count - 1 (0),
/// the model, the rANS payload; rANS with contexts (1): model count - 1, the
/// models, a u16 count of (context, model) pairs (unlisted contexts are
/// raw), a u32-prefixed block of the raw contexts' symbols in order, then
/// the four-lane rANS payload of the coded symbols in order, each with its
/// context's model.
pub fn encode_stream(syms: &[u8], ctx: Option<&[u8]>, out: &mut Vec<u8>) -> Result<()> {
    encode_stream_with(syms, ctx, MIN_GAIN, out)
}

/// [`encode_stream`] with the share of raw size a context must save to be
/// coded (`min_gain`, e.g. 0.02; 1.0 stores every context raw: fastest decode).
pub fn encode_stream_with(syms: &[u8], ctx: Option<&[u8]>, min_gain: f64, out: &mut Vec<u8>) -> Result<()> {
    let Some(ctx) = ctx else {
        let global = model_hist(syms);
        if global.iter().filter(|&&c| c > 0).count() == 1 {
            out.extend_from_slice(&[MODE_CONST, syms[0]]);
            return Ok(());
        }
        let model = if syms.len() < 64 { None } else { plan_single(&global, syms.len(), min_gain) };
        let Some(model) = model else {
            encode_raw(syms, out);
            return Ok(());
        };
        let mode = match syms.len() {
            n if n >= WIDER_FROM => MODE_RANS64,
            n if n >= WIDE_FROM => MODE_RANS32,
            _ => MODE_RANS,
        };
        out.extend_from_slice(&[mode, 0]);
        model.write(out);
        match mode {
            MODE_RANS64 => rans::encode::<{ rans::LANES64 }>(syms, &model, out),
            MODE_RANS32 => rans::encode::<{ rans::LANES32 }>(syms, &model, out),
            _ => rans::encode::<{ rans::LANES }>(syms, &model, out),
        }
        return Ok(());
    };
    if ctx.len() != syms.len() {
        return Err(Error::invalid("entropy stream: context and symbol lengths differ"));
    }
    if !syms.is_empty() && syms.iter().all(|&s| s == syms[0]) {
        out.extend_from_slice(&[MODE_CONST, syms[0]]);
        return Ok(());
    }
    // Which contexts to code is decided on the context histograms: of every
    // symbol in a short stream, of the sampled ones (counts scaled back up)
    // in a long one. The models are then built from the exact
    // counts of the coded symbols, so a symbol the sample missed still has a
    // frequency. Counting every symbol under its context took about as long
    // as coding the exponents.
    let log2 = if syms.len() >= SAMPLE_FROM { PLAN_SAMPLE } else { 0 };
    let hs = if log2 > 0 {
        let mut hs = ctx_hists_of(syms, ctx, PLAN_SAMPLE);
        for k in hs.iter_mut().flat_map(|(_, h)| h.iter_mut()) {
            *k <<= PLAN_SAMPLE;
        }
        hs
    } else {
        ctx_hists(syms, ctx)
    };
    let planned = if syms.len() < 64 { None } else { plan_contexts(&hs, log2, min_gain) };
    let Some((map, nm)) = planned else {
        encode_raw(syms, out);
        return Ok(());
    };
    // Split into raw and coded symbols by a bitmask of the coded positions
    // (about one in ten, scattered): a per-symbol select with three stores
    // cost more than coding the exponents.
    let (raw, cs, cc) = merge::split_flagged(syms, ctx, &coded_flags(&map));
    let mut hm = vec![[0u64; 256]; nm];
    for (&s, &c) in cs.iter().zip(&cc) {
        hm[map[c as usize] as usize][s as usize] += 1;
    }
    let refs: Vec<&Hist> = hm.iter().collect();
    let Some((_, models)) = quantize(&refs, &ctx_precisions(nm)) else {
        encode_raw(syms, out);
        return Ok(());
    };
    let wide = cs.len() >= WIDE_CODED_FROM;
    out.push(if wide { MODE_CTX32 } else { MODE_RANS });
    out.push((models.len() - 1) as u8);
    for m in &models {
        m.write(out);
    }
    let listed: Vec<usize> = (0..256).filter(|&c| map[c] != RAW_CTX).collect();
    out.extend_from_slice(&(listed.len() as u16).to_le_bytes());
    for &c in &listed {
        out.push(c as u8);
        out.push(map[c]);
    }
    crate::codec::put_block(out, &raw)?;
    if wide {
        rans::encode_ctx::<{ rans::LANES32 }>(&cs, &cc, &map, &models, out);
    } else {
        rans::encode_ctx::<{ rans::LANES }>(&cs, &cc, &map, &models, out);
    }
    Ok(())
}

/// A raw block (what [`encode_stream`] writes for symbols it cannot code).
fn encode_raw(syms: &[u8], out: &mut Vec<u8>) {
    out.push(MODE_RAW);
    out.extend_from_slice(syms);
}

/// Decode a block written by [`encode_stream`] into `out` (its exact length),
/// with the same contexts. Never panics on malformed input.
pub fn decode_stream(input: &[u8], ctx: Option<&[u8]>, out: &mut [u8]) -> Result<()> {
    if ctx.is_some_and(|c| c.len() != out.len()) {
        return Err(Error::invalid("entropy stream: context and output lengths differ"));
    }
    let mut r = crate::codec::Reader::new(input, "entropy");
    match (r.u8()?, ctx) {
        (mode @ (MODE_RANS | MODE_RANS32 | MODE_RANS64), None) => decode_single(mode, &mut r, out),
        _ => match decode_parts(input, ctx, out.len())? {
            Parts::Bytes(b) => {
                out.copy_from_slice(&b);
                Ok(())
            }
            Parts::Const(s) => {
                out.fill(s);
                Ok(())
            }
            Parts::Split { flag, raw, coded } => {
                merge::merge_flagged(ctx.expect("split streams have contexts"), &flag, raw, &coded, out);
                Ok(())
            }
        },
    }
}

/// A stream decoded up to the merge of its raw and coded symbols (see
/// [`decode_parts`]): what a caller that assembles several streams into
/// elements in one pass needs.
pub enum Parts<'a> {
    /// Every symbol, in order: a raw block, or a stream coded without contexts.
    Bytes(std::borrow::Cow<'a, [u8]>),
    /// One symbol throughout.
    Const(u8),
    /// A context stream: the symbols of the elements whose context is
    /// flagged come from `coded` in order, the others from `raw` in order.
    /// The counts have been checked against the contexts.
    Split { flag: Box<[u8; 256]>, raw: &'a [u8], coded: Vec<u8> },
}

/// Decode a block written by [`encode_stream`] for `n` symbols, with the
/// same contexts, short of merging a context stream's two sources. Never
/// panics on malformed input.
pub fn decode_parts<'a>(input: &'a [u8], ctx: Option<&[u8]>, n: usize) -> Result<Parts<'a>> {
    if ctx.is_some_and(|c| c.len() != n) {
        return Err(Error::invalid("entropy stream: context and output lengths differ"));
    }
    let mut r = crate::codec::Reader::new(input, "entropy");
    match (r.u8()?, ctx) {
        (MODE_RAW, _) => {
            let b = r.bytes(n)?;
            r.finish()?;
            Ok(Parts::Bytes(b.into()))
        }
        (MODE_CONST, _) => {
            let s = r.u8()?;
            r.finish()?;
            Ok(Parts::Const(s))
        }
        (mode @ (MODE_RANS | MODE_RANS32 | MODE_RANS64), None) => {
            let mut out = vec![0u8; n];
            decode_single(mode, &mut r, &mut out)?;
            Ok(Parts::Bytes(out.into()))
        }
        (mode @ (MODE_RANS | MODE_CTX32), Some(ctx)) => decode_ctx_rans(&mut r, ctx, mode == MODE_CTX32),
        (m, _) => Err(Error::corrupt(format!("entropy stream: unknown mode {m}"))),
    }
}

/// A single-model rANS block after its mode byte.
fn decode_single(mode: u8, r: &mut crate::codec::Reader, out: &mut [u8]) -> Result<()> {
    let models = read_models(r, 1)?;
    let t = rans::DecTables::new(&models);
    match mode {
        MODE_RANS64 => rans::decode::<{ rans::LANES64 }>(r.rest(), &t, out),
        MODE_RANS32 => rans::decode::<{ rans::LANES32 }>(r.rest(), &t, out),
        _ => rans::decode::<{ rans::LANES }>(r.rest(), &t, out),
    }
}

/// The flag table of a context map: nonzero for the coded contexts.
fn coded_flags(map: &[u8; 256]) -> [u8; 256] {
    map.map(|m| (m != RAW_CTX) as u8)
}

/// The models of a stream: at most `max`, all of one precision, their
/// decoding tables within [`CTX_SLOTS`] slots (what every encoder since the
/// 12-bit tables writes: one model of 2^12, or up to 16 context models of
/// 2^10), so that a crafted stream cannot make a small chunk allocate
/// megabytes of tables (256 models of 2^12 slots took 9 MiB).
fn read_models(r: &mut crate::codec::Reader, max: usize) -> Result<Vec<Model>> {
    let nm = r.u8()? as usize + 1;
    if nm > max {
        return Err(Error::corrupt(format!("entropy stream: {nm} models, at most {max} expected")));
    }
    let mut models = Vec::with_capacity(nm);
    for _ in 0..nm {
        models.push(Model::read(r)?);
    }
    let p = models[0].precision;
    if models.iter().any(|m| m.precision != p) {
        return Err(Error::corrupt("entropy stream: models differ in precision"));
    }
    if (nm << p) > CTX_SLOTS.max(1 << MAX_PRECISION) {
        return Err(Error::corrupt(format!("entropy stream: {nm} model tables of 2^{p} slots are too large")));
    }
    Ok(models)
}

/// Decode a context-conditioned rANS block (after its mode byte). In the
/// float codecs most symbols sit in raw contexts (the near-uniform mantissas
/// of common exponents) and about one in ten in coded ones: the decoder
/// gathers the contexts of the coded elements, decodes their symbols, and
/// leaves the merge of the two sources by the flags to the caller
/// ([`merge`]).
fn decode_ctx_rans<'a>(r: &mut crate::codec::Reader<'a>, ctx: &[u8], wide: bool) -> Result<Parts<'a>> {
    let n = ctx.len();
    // 15 own models and the pool at most, the smallest precision 2^10
    let models = read_models(r, CTX_SLOTS >> 10)?;
    let nm = models.len();
    let mut map = [RAW_CTX; 256];
    let k = r.u16()? as usize;
    for _ in 0..k {
        let c = r.u8()?;
        let m = r.u8()?;
        if m as usize >= nm {
            return Err(Error::corrupt(format!("entropy stream: context {c} uses model {m} of {nm}")));
        }
        map[c as usize] = m;
    }
    let raw = r.block()?;
    let payload = r.rest();
    let flag = coded_flags(&map);
    let cc = merge::flagged(ctx, &flag);
    if raw.len() != n - cc.len() {
        return Err(Error::corrupt(format!(
            "entropy stream: {} raw bytes for {} raw symbols",
            raw.len(),
            n - cc.len()
        )));
    }
    let mut coded = vec![0u8; cc.len()];
    let t = rans::DecTables::new(&models);
    if wide {
        rans::decode_ctx::<{ rans::LANES32 }>(payload, &t, &cc, &map, &mut coded)?;
    } else {
        rans::decode_ctx::<{ rans::LANES }>(payload, &t, &cc, &map, &mut coded)?;
    }
    Ok(Parts::Split { flag: Box::new(flag), raw, coded })
}

#[cfg(test)]
pub(crate) mod tests;
