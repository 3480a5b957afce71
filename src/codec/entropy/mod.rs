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
//! symbol on the previous one's state update. The coder here keeps four
//! independent rANS states interleaved over one word stream (so a core works
//! on four symbols at once), decodes through a flat per-slot table (one load
//! gives frequency and offset, one gives the symbol), renormalizes branch-free
//! with 16-bit words, and selects per-context tables by index arithmetic.

pub mod rans;

use crate::error::{Error, Result};
use rans::DecTables;

/// Largest model precision (log2 of the total frequency). Frequencies then
/// fit in 16 bits, which the decoding table packs beside the slot offset.
pub const MAX_PRECISION: u32 = 15;

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
        // expected code length the most (least).
        while sum != target {
            if sum < target {
                let best = (0..256)
                    .filter(|&s| h[s] > 0)
                    .max_by(|&a, &b| {
                        let ga = h[a] as f64 * ((freq[a] + 1) as f64 / freq[a] as f64).ln();
                        let gb = h[b] as f64 * ((freq[b] + 1) as f64 / freq[b] as f64).ln();
                        ga.total_cmp(&gb).then(b.cmp(&a))
                    })
                    .expect("a present symbol");
                freq[best] += 1;
                sum += 1;
            } else {
                let best = (0..256)
                    .filter(|&s| freq[s] > 1)
                    .min_by(|&a, &b| {
                        let la = h[a] as f64 * (freq[a] as f64 / (freq[a] - 1) as f64).ln();
                        let lb = h[b] as f64 * (freq[b] as f64 / (freq[b] - 1) as f64).ln();
                        la.total_cmp(&lb).then(a.cmp(&b))
                    })
                    .expect("sum > target implies a frequency > 1");
                freq[best] -= 1;
                sum -= 1;
            }
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

/// Histograms of `syms` split by context byte (256 histograms).
pub fn ctx_hists(syms: &[u8], ctx: &[u8]) -> Vec<Hist> {
    let mut h = vec![[0u64; 256]; 256];
    for (&s, &c) in syms.iter().zip(ctx) {
        h[c as usize][s as usize] += 1;
    }
    h
}

fn entropy_bits(h: &Hist) -> f64 {
    let n: u64 = h.iter().sum();
    crate::analysis::entropy::entropy(h) * n as f64
}

/// Cross-entropy in bits of coding `h` with the distribution of `g`.
fn cross_bits(h: &Hist, g: &Hist) -> f64 {
    let tg: u64 = g.iter().sum();
    h.iter()
        .zip(g)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &q)| c as f64 * (tg as f64 / q as f64).log2())
        .sum()
}

/// Rough serialized size of the model of `h` (bytes), for planning.
fn model_bytes_estimate(h: &Hist) -> f64 {
    let lo = h.iter().position(|&c| c > 0).unwrap_or(0);
    let hi = 255 - h.iter().rev().position(|&c| c > 0).unwrap_or(255);
    3.0 + 1.3 * (hi - lo) as f64
}

const MODE_RAW: u8 = 0;
const MODE_RANS: u8 = 1;
const MODE_CONST: u8 = 2;

/// Fixed cost of a rANS stream: lane states plus precision and counts.
const RANS_OVERHEAD_BITS: f64 = (rans::LANES * 32 + 64) as f64;

/// The models of a stream and which context uses which.
struct Plan {
    models: Vec<Model>,
    /// Context value -> model index (contexts not listed use model 0).
    map: Vec<(u8, u8)>,
}

/// Decide how to code a stream: per-context models where they pay for their
/// table, one pooled model (or the uniform one) for the rest. Deterministic.
fn plan(global: &Hist, ctx: Option<&[Hist]>, n: usize) -> Option<Plan> {
    let raw_bits = n as f64 * 8.0;
    let mut own: Vec<u8> = Vec::new();
    let mut pool = *global;
    if let Some(hs) = ctx {
        let mut order: Vec<usize> = (0..256).filter(|&c| hs[c].iter().any(|&x| x > 0)).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(hs[c].iter().sum::<u64>()));
        for c in order {
            if own.len() >= 254 {
                break;
            }
            let h = &hs[c];
            let own_bits = entropy_bits(h) + model_bytes_estimate(h) * 8.0 + 8.0;
            // Against what it would cost in the pool (or raw, when the pool ends up uniform).
            let pooled = cross_bits(h, global).min(h.iter().sum::<u64>() as f64 * 8.0);
            if own_bits < pooled * 0.998 {
                own.push(c as u8);
                for (p, x) in pool.iter_mut().zip(h) {
                    *p -= x;
                }
            }
        }
    }
    let pool_n: u64 = pool.iter().sum();
    let pool_coded = pool_n > 0 && entropy_bits(&pool) + model_bytes_estimate(&pool) * 8.0 < pool_n as f64 * 8.0 * 0.995;
    if own.is_empty() && !pool_coded {
        return None;
    }
    // Choose one precision for all models: the cheapest in total, preferring
    // smaller tables when within 0.05 %.
    let hists: Vec<&Hist> = std::iter::once(&pool).chain(own.iter().map(|&c| &ctx.expect("ctx")[c as usize])).collect();
    let mut best: Option<(f64, Plan)> = None;
    for p in [11u32, 12, 13, 14, 15] {
        // Context tables stay small: many of them are built per chunk and
        // they share the cache while decoding.
        if hists.len() > 1 && p > 13 {
            break;
        }
        let mut models = Vec::with_capacity(hists.len());
        let mut bits = RANS_OVERHEAD_BITS;
        let mut ok = true;
        for (i, h) in hists.iter().enumerate() {
            let m = if i == 0 && !pool_coded {
                Model::uniform(p)
            } else if i == 0 && pool_n == 0 {
                Model::uniform(p)
            } else {
                match Model::from_hist(h, p) {
                    Some(m) => m,
                    None => {
                        ok = false;
                        break;
                    }
                }
            };
            bits += m.cost_bits(h) + m.serialized_len() as f64 * 8.0;
            models.push(m);
        }
        if !ok {
            continue;
        }
        let better = match &best {
            None => true,
            Some((b, _)) => bits < *b * 0.9995,
        };
        if better {
            let map = own.iter().enumerate().map(|(i, &c)| (c, (i + 1) as u8)).collect();
            best = Some((bits, Plan { models, map }));
        }
    }
    let (bits, plan) = best?;
    (bits < raw_bits).then_some(plan)
}

/// Code a byte stream, optionally conditioned on `ctx` (one context byte per
/// symbol, known to the decoder). Appends a self-describing block to `out`.
pub fn encode_stream(syms: &[u8], ctx: Option<&[u8]>, out: &mut Vec<u8>) -> Result<()> {
    if let Some(c) = ctx
        && c.len() != syms.len()
    {
        return Err(Error::invalid("entropy stream: context and symbol lengths differ"));
    }
    let global = hist(syms);
    let present = global.iter().filter(|&&c| c > 0).count();
    if present == 1 {
        out.push(MODE_CONST);
        out.push(syms[0]);
        return Ok(());
    }
    let hs = ctx.map(|c| ctx_hists(syms, c));
    let plan = if syms.len() < 64 { None } else { plan(&global, hs.as_deref(), syms.len()) };
    let Some(plan) = plan else {
        out.push(MODE_RAW);
        out.extend_from_slice(syms);
        return Ok(());
    };
    out.push(MODE_RANS);
    out.push((plan.models.len() - 1) as u8);
    for m in &plan.models {
        m.write(out);
    }
    if ctx.is_some() {
        out.extend_from_slice(&(plan.map.len() as u16).to_le_bytes());
        for &(c, m) in &plan.map {
            out.push(c);
            out.push(m);
        }
    } else if !plan.map.is_empty() {
        return Err(Error::invalid("entropy stream: context models without contexts"));
    }
    let mut map = [0u8; 256];
    for &(c, m) in &plan.map {
        map[c as usize] = m;
    }
    if plan.models.len() == 1 {
        rans::encode(syms, &plan.models[0], out);
    } else {
        rans::encode_ctx(syms, ctx.expect("ctx"), &map, &plan.models, out);
    }
    Ok(())
}

/// Decode a block written by [`encode_stream`] into `out` (its exact length),
/// with the same contexts. Never panics on malformed input.
pub fn decode_stream(input: &[u8], ctx: Option<&[u8]>, out: &mut [u8]) -> Result<()> {
    if let Some(c) = ctx
        && c.len() != out.len()
    {
        return Err(Error::invalid("entropy stream: context and output lengths differ"));
    }
    let mut r = crate::codec::Reader::new(input, "entropy");
    match r.u8()? {
        MODE_RAW => {
            let b = r.bytes(out.len())?;
            r.finish()?;
            out.copy_from_slice(b);
            Ok(())
        }
        MODE_CONST => {
            let s = r.u8()?;
            r.finish()?;
            out.fill(s);
            Ok(())
        }
        MODE_RANS => {
            let nm = r.u8()? as usize + 1;
            let mut models = Vec::with_capacity(nm);
            for _ in 0..nm {
                models.push(Model::read(&mut r)?);
            }
            let p = models[0].precision;
            if models.iter().any(|m| m.precision != p) {
                return Err(Error::corrupt("entropy stream: models differ in precision"));
            }
            let mut map = [0u8; 256];
            if ctx.is_some() {
                let k = r.u16()? as usize;
                for _ in 0..k {
                    let c = r.u8()?;
                    let m = r.u8()?;
                    if m as usize >= nm {
                        return Err(Error::corrupt(format!("entropy stream: context {c} uses model {m} of {nm}")));
                    }
                    map[c as usize] = m;
                }
            } else if nm != 1 {
                return Err(Error::corrupt("entropy stream: several models but no contexts"));
            }
            let tables = DecTables::new(&models);
            let payload = r.rest();
            match ctx {
                Some(c) if nm > 1 => rans::decode_ctx(payload, &tables, c, &map, out),
                _ => rans::decode(payload, &tables, out),
            }
        }
        m => Err(Error::corrupt(format!("entropy stream: unknown mode {m}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
