//! Interleaved 32-bit rANS over byte symbols with static quantized models.
//!
//! [`LANES`] coder states take the symbols round-robin (symbol `i` goes to
//! lane `i % LANES`) and share one stream of 16-bit words, in the manner of
//! ryg_rans' interleaved coders: the encoder runs backwards over the symbols
//! and the word list is reversed, so the decoder reads strictly forwards.
//! States live in `[2^16, 2^32)`; with precision `p <= 12` one 16-bit word is
//! enough to renormalize after each symbol, so the decoder is branch-free.
//!
//! Layout: `LANES` little-endian u32 final encoder states, then the words
//! (little-endian u16). A decoder that does not end with every lane back at
//! the initial state and every word consumed reports corruption.

use super::Model;
use crate::error::{Error, Result};

/// Number of interleaved coder states.
pub const LANES: usize = 4;
// The decoder's fast path peeks 2 * LANES = 8 payload bytes as one u64.
const _: () = assert!(LANES == 4);
const RANS_L: u32 = 1 << 16;

fn enc_table(m: &Model) -> [(u32, u32); 256] {
    let mut t = [(0u32, 0u32); 256];
    let mut cum = 0;
    for (s, &f) in m.freq.iter().enumerate() {
        t[s] = (f, cum);
        cum += f;
    }
    t
}

#[inline(always)]
fn enc_put(x: &mut u32, f: u32, c: u32, p: u32, words: &mut Vec<u16>) {
    debug_assert!(f > 0, "symbol outside the model");
    let mut s = *x;
    if (s as u64) >= (f as u64) << (32 - p) {
        words.push(s as u16);
        s >>= 16;
    }
    *x = ((s / f) << p) + (s % f) + c;
}

fn finish(x: &[u32; LANES], words: &[u16], out: &mut Vec<u8>) {
    out.reserve(LANES * 4 + words.len() * 2);
    for s in x {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Encode `syms` with one model (every symbol must have a nonzero frequency).
pub fn encode(syms: &[u8], m: &Model, out: &mut Vec<u8>) {
    let t = enc_table(m);
    let p = m.precision;
    let mut x = [RANS_L; LANES];
    let mut words = Vec::with_capacity(syms.len() / 2 + 16);
    for i in (0..syms.len()).rev() {
        let (f, c) = t[syms[i] as usize];
        enc_put(&mut x[i % LANES], f, c, p, &mut words);
    }
    finish(&x, &words, out);
}

/// Encode `syms`, symbol `i` with model `map[ctx[i]]` (all models of one precision).
pub fn encode_ctx(syms: &[u8], ctx: &[u8], map: &[u8; 256], models: &[Model], out: &mut Vec<u8>) {
    let tables: Vec<[(u32, u32); 256]> = models.iter().map(enc_table).collect();
    let p = models[0].precision;
    let mut x = [RANS_L; LANES];
    let mut words = Vec::with_capacity(syms.len() / 2 + 16);
    for i in (0..syms.len()).rev() {
        let (f, c) = tables[map[ctx[i] as usize] as usize][syms[i] as usize];
        enc_put(&mut x[i % LANES], f, c, p, &mut words);
    }
    finish(&x, &words, out);
}

/// Decoding tables of one or more models of one precision, concatenated:
/// slot `(model << p) | (x & mask)` holds `sym << 24 | (freq - 1) << 12 |
/// offset` (one 4-byte load per symbol; `p <= 12`).
pub struct DecTables {
    p: u32,
    entry: Vec<u32>,
}

impl DecTables {
    pub fn new(models: &[Model]) -> DecTables {
        let p = models[0].precision;
        assert!(p <= super::MAX_PRECISION);
        let size = 1usize << p;
        let mut entry = vec![0u32; size * models.len()];
        for (k, m) in models.iter().enumerate() {
            debug_assert_eq!(m.precision, p);
            let mut pos = k * size;
            for (s, &f) in m.freq.iter().enumerate() {
                if f == 0 {
                    continue;
                }
                let hi = ((s as u32) << 24) | ((f - 1) << 12);
                for (o, e) in entry[pos..pos + f as usize].iter_mut().enumerate() {
                    *e = hi | o as u32;
                }
                pos += f as usize;
            }
        }
        DecTables { p, entry }
    }
    pub fn models(&self) -> usize {
        self.entry.len() >> self.p
    }
}

/// (symbol, frequency, offset) of a table entry.
#[inline(always)]
fn unpack(e: u32) -> (u8, u32, u32) {
    ((e >> 24) as u8, ((e >> 12) & 0xfff) + 1, e & 0xfff)
}

fn read_states(input: &[u8]) -> Result<([u32; LANES], &[u8])> {
    if input.len() < LANES * 4 {
        return Err(Error::truncated(format!("rANS: {} bytes, need {} for the coder states", input.len(), LANES * 4)));
    }
    let mut x = [0u32; LANES];
    for (k, s) in x.iter_mut().enumerate() {
        *s = u32::from_le_bytes(input[k * 4..k * 4 + 4].try_into().expect("4 bytes"));
        if *s < RANS_L {
            return Err(Error::corrupt(format!("rANS: lane {k} starts in an invalid state")));
        }
    }
    let words = &input[LANES * 4..];
    if words.len() % 2 != 0 {
        return Err(Error::corrupt("rANS: odd number of payload bytes"));
    }
    Ok((x, words))
}

fn check_end(x: &[u32; LANES], pos: usize, words: &[u8]) -> Result<()> {
    if pos != words.len() {
        return Err(Error::corrupt(format!("rANS: {} payload bytes left over", words.len() - pos)));
    }
    if x.iter().any(|&s| s != RANS_L) {
        return Err(Error::corrupt("rANS: coder did not end in its initial state"));
    }
    Ok(())
}

/// Decode one group of `LANES` symbols. `next` holds the next `2 * LANES`
/// payload bytes (a group reads at most one word per lane); returns how many
/// bytes were consumed. Branch-free renormalization.
#[inline(always)]
fn group<const P: u32>(x: &mut [u32; LANES], bases: [usize; LANES], t: &DecTables, next: u64, out: &mut [u8]) -> usize {
    debug_assert_eq!(P, t.p);
    let mask = (1u32 << P) - 1;
    let mut used = 0u32;
    for k in 0..LANES {
        let slot = bases[k] | (x[k] & mask) as usize;
        debug_assert!(slot < t.entry.len());
        // SAFETY: `bases[k]` is `m << p` for a model index `m < models()`
        // (checked where the bases are built) and `x & mask < 1 << p`, so
        // `slot < models() << p == entry.len()`. Measured: the bounds check
        // here costs ~10 % of the decode loop.
        let (sym, f, off) = unpack(unsafe { *t.entry.get_unchecked(slot) });
        out[k] = sym;
        let v = f.wrapping_mul(x[k] >> P).wrapping_add(off);
        let need = (v < RANS_L) as u32;
        let w = (next >> (used * 8)) as u32 & 0xffff;
        x[k] = (v << (need * 16)) | (w & need.wrapping_neg());
        used += need * 2;
    }
    used as usize
}

/// The checked step for the tail: fails instead of reading past the end.
#[inline]
fn step_checked(x: &mut u32, base: usize, t: &DecTables, words: &[u8], pos: &mut usize) -> Result<u8> {
    let mask = (1u32 << t.p) - 1;
    let (sym, f, off) = unpack(t.entry[base | (*x & mask) as usize]);
    let v = f.wrapping_mul(*x >> t.p).wrapping_add(off);
    if v < RANS_L {
        let b = words
            .get(*pos..*pos + 2)
            .ok_or_else(|| Error::truncated("rANS: payload ends before the last symbol"))?;
        *x = (v << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
        *pos += 2;
    } else {
        *x = v;
    }
    Ok(sym)
}

#[inline(always)]
fn peek8(words: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(words[pos..pos + 8].try_into().expect("8 bytes"))
}

/// The fast loops, monomorphized per precision (constant shifts and masks).
/// They stop where fewer than 8 payload bytes remain; return (pos, symbols).
fn fast<const P: u32>(x: &mut [u32; LANES], t: &DecTables, words: &[u8], out: &mut [u8]) -> (usize, usize) {
    let mut pos = 0;
    let mut i = 0;
    for o in out.chunks_exact_mut(LANES) {
        if pos + 8 > words.len() {
            break;
        }
        pos += group::<P>(x, [0; LANES], t, peek8(words, pos), o);
        i += LANES;
    }
    (pos, i)
}

fn fast_ctx<const P: u32>(
    x: &mut [u32; LANES],
    t: &DecTables,
    base: &[usize; 256],
    ctx: &[u8],
    words: &[u8],
    out: &mut [u8],
) -> (usize, usize) {
    let mut pos = 0;
    let mut i = 0;
    for (o, c) in out.chunks_exact_mut(LANES).zip(ctx.chunks_exact(LANES)) {
        if pos + 8 > words.len() {
            break;
        }
        let bases = std::array::from_fn(|k| base[c[k] as usize]);
        pos += group::<P>(x, bases, t, peek8(words, pos), o);
        i += LANES;
    }
    (pos, i)
}

macro_rules! by_precision {
    ($p:expr, $f:ident, $($arg:expr),*) => {
        match $p {
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            // Precisions this encoder does not write: the checked tail loop does it all.
            _ => (0, 0),
        }
    };
}

/// Decode `out.len()` symbols coded with one model.
pub fn decode(input: &[u8], t: &DecTables, out: &mut [u8]) -> Result<()> {
    let (mut x, words) = read_states(input)?;
    let (mut pos, mut i) = by_precision!(t.p, fast, &mut x, t, words, out);
    while i < out.len() {
        out[i] = step_checked(&mut x[i % LANES], 0, t, words, &mut pos)?;
        i += 1;
    }
    check_end(&x, pos, words)
}

/// Decode `out.len()` symbols, symbol `i` with model `map[ctx[i]]` (map
/// entries beyond the models fall back to model 0).
pub fn decode_ctx(input: &[u8], t: &DecTables, ctx: &[u8], map: &[u8; 256], out: &mut [u8]) -> Result<()> {
    if ctx.len() != out.len() {
        return Err(Error::invalid("rANS: context length differs from output length"));
    }
    let mut base = [0usize; 256];
    for (b, &m) in base.iter_mut().zip(map) {
        *b = if (m as usize) < t.models() { (m as usize) << t.p } else { 0 };
    }
    let (mut x, words) = read_states(input)?;
    let (mut pos, mut i) = by_precision!(t.p, fast_ctx, &mut x, t, &base, ctx, words, out);
    while i < out.len() {
        out[i] = step_checked(&mut x[i % LANES], base[ctx[i] as usize], t, words, &mut pos)?;
        i += 1;
    }
    check_end(&x, pos, words)
}
