//! Interleaved 32-bit rANS over byte symbols with static quantized models.
//!
//! [`LANES`] coder states take the symbols round-robin (symbol `i` goes to
//! lane `i % LANES`) and share one stream of 16-bit words, in the manner of
//! ryg_rans' interleaved coders: the encoder runs backwards over the symbols
//! and the word list is reversed, so the decoder reads strictly forwards.
//! States live in `[2^16, 2^32)`; with precision `p <= 12` one 16-bit word is
//! enough to renormalize after each symbol, so the decoder is branch-free:
//! each lane reads the word at the cursor whether or not it needs it and
//! keeps it with a conditional move.
//!
//! Tried and measured on the exponents of MiniLM-BF16 (AMD EPYC, one core):
//! eight lanes, and a word stream per lane, were no faster than four lanes
//! sharing one stream once the step was branch-free; the step's instruction
//! count, not the lanes' dependency chains, is what limits it.
//!
//! Layout: `LANES` little-endian u32 final encoder states, then the words
//! (little-endian u16). A decoder that does not end with every lane back at
//! the initial state and every word consumed reports corruption.

use super::Model;
use crate::error::{Error, Result};

/// Number of interleaved coder states.
pub const LANES: usize = 4;
const RANS_L: u32 = 1 << 16;

/// One symbol's encoding constants: frequency, cumulative frequency, and a
/// reciprocal of the frequency so that the encoder divides by multiplying
/// (a 32-bit division is the slowest step of a rANS encoder).
#[derive(Clone, Copy, Default)]
struct EncSym {
    freq: u32,
    cum: u32,
    /// `ceil(2^(32 + l) / freq)` with `2^l >= freq`: for every `x < 2^32`,
    /// `x / freq == (x * rcp) >> (32 + l)`, because the error term
    /// `x * (rcp * freq - 2^(32+l)) / (freq * 2^(32+l)) < 2^-l <= 1 / freq`
    /// cannot carry past the fraction of `x / freq` (at most `1 - 1/freq`).
    /// Checked against division for every frequency in the tests.
    rcp: u64,
    shift: u32,
}

impl EncSym {
    fn new(freq: u32, cum: u32) -> EncSym {
        if freq == 0 {
            return EncSym::default();
        }
        let l = 32 - (freq - 1).leading_zeros(); // ceil(log2 freq): 0 for 1
        let shift = 32 + l;
        let rcp = (1u128 << shift).div_ceil(freq as u128) as u64;
        EncSym { freq, cum, rcp, shift }
    }
    #[inline(always)]
    fn div(&self, x: u32) -> u32 {
        ((x as u128 * self.rcp as u128) >> self.shift) as u32
    }
}

fn enc_table(m: &Model) -> [EncSym; 256] {
    let mut t = [EncSym::default(); 256];
    let mut cum = 0;
    for (s, &f) in m.freq.iter().enumerate() {
        t[s] = EncSym::new(f, cum);
        cum += f;
    }
    t
}

#[inline(always)]
fn enc_put(x: &mut u32, e: &EncSym, p: u32, words: &mut Vec<u16>) {
    debug_assert!(e.freq > 0, "symbol outside the model");
    let mut s = *x;
    if (s as u64) >= (e.freq as u64) << (32 - p) {
        words.push(s as u16);
        s >>= 16;
    }
    let q = e.div(s);
    *x = (q << p) + (s - q * e.freq) + e.cum;
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
        enc_put(&mut x[i % LANES], &t[syms[i] as usize], p, &mut words);
    }
    finish(&x, &words, out);
}

/// Encode `syms`, symbol `i` with model `map[ctx[i]]` (all models of one precision).
pub fn encode_ctx(syms: &[u8], ctx: &[u8], map: &[u8; 256], models: &[Model], out: &mut Vec<u8>) {
    let tables: Vec<[EncSym; 256]> = models.iter().map(enc_table).collect();
    let p = models[0].precision;
    let mut x = [RANS_L; LANES];
    let mut words = Vec::with_capacity(syms.len() / 2 + 16);
    for i in (0..syms.len()).rev() {
        let e = &tables[map[ctx[i] as usize] as usize][syms[i] as usize];
        enc_put(&mut x[i % LANES], e, p, &mut words);
    }
    finish(&x, &words, out);
}

/// Decoding tables of one or more models of one precision, concatenated:
/// slot `(model << p) | (x & mask)` holds `freq << 16 | offset` in `fo` and
/// the symbol in `sym` (two loads per symbol, no unpacking: measured faster
/// than one packed u32 entry, whose three extractions cost more than the
/// extra load).
pub struct DecTables {
    p: u32,
    fo: Vec<u32>,
    sym: Vec<u8>,
}

impl DecTables {
    pub fn new(models: &[Model]) -> DecTables {
        let p = models[0].precision;
        assert!(p <= super::MAX_PRECISION);
        let size = 1usize << p;
        let mut fo = vec![0u32; size * models.len()];
        let mut sym = vec![0u8; size * models.len()];
        for (k, m) in models.iter().enumerate() {
            debug_assert_eq!(m.precision, p);
            let mut pos = k * size;
            for (s, &f) in m.freq.iter().enumerate() {
                if f == 0 {
                    continue;
                }
                for (o, e) in fo[pos..pos + f as usize].iter_mut().enumerate() {
                    *e = (f << 16) | o as u32;
                }
                sym[pos..pos + f as usize].fill(s as u8);
                pos += f as usize;
            }
        }
        DecTables { p, fo, sym }
    }
    pub fn models(&self) -> usize {
        self.fo.len() >> self.p
    }
}

/// The decoder's state: lane states and the read position in the words.
struct Dec<'a> {
    x: [u32; LANES],
    pos: usize,
    words: &'a [u8],
}

impl<'a> Dec<'a> {
    fn parse(input: &'a [u8]) -> Result<Dec<'a>> {
        if input.len() < LANES * 4 {
            return Err(Error::truncated(format!(
                "rANS: {} bytes, need {} for the coder states",
                input.len(),
                LANES * 4
            )));
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
        Ok(Dec { x, pos: 0, words })
    }

    /// One symbol of lane `k` from the model at `base`, reading a word only
    /// when it renormalizes: fails instead of reading past the end.
    #[inline]
    fn step_checked(&mut self, k: usize, base: usize, t: &DecTables) -> Result<u8> {
        let slot = base | (self.x[k] & ((1u32 << t.p) - 1)) as usize;
        let e = t.fo[slot];
        let v = (e >> 16).wrapping_mul(self.x[k] >> t.p).wrapping_add(e & 0xffff);
        if v < RANS_L {
            let b = self
                .words
                .get(self.pos..self.pos + 2)
                .ok_or_else(|| Error::truncated("rANS: payload ends before the last symbol"))?;
            self.x[k] = (v << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            self.pos += 2;
        } else {
            self.x[k] = v;
        }
        Ok(t.sym[slot])
    }

    /// Decode `groups` groups of `LANES` symbols, symbol `i` of `out` with
    /// the model at `base(i)`, without bounds checks on the words. The
    /// caller guarantees at least `groups * LANES` words are left: a group
    /// reads at most one word per lane, so the read of a lane's next word,
    /// made before the lane knows whether it needs it, is in bounds.
    ///
    /// Each lane's new state is picked with `select_unpredictable` (a
    /// conditional move): a branch there is taken for about one symbol in
    /// six, at random, and its mispredictions cost more than the rest of the
    /// step. Measured on MiniLM-BF16 exponents with `examples/codec_speed.rs`.
    #[inline(always)]
    fn groups<const P: u32>(&mut self, t: &DecTables, base: impl Fn(usize) -> usize, out: &mut [u8], groups: usize) {
        debug_assert_eq!(P, t.p);
        debug_assert!(self.words.len() - self.pos >= 2 * LANES * groups && out.len() >= groups * LANES);
        let mask = (1u32 << P) - 1;
        let mut x = self.x;
        // SAFETY (pointer): `pos` is within `words` (checked by the caller
        // as above), and it advances by at most one word per lane step.
        let mut w = unsafe { self.words.as_ptr().add(self.pos) };
        let start = w;
        for (g, o) in out.chunks_exact_mut(LANES).take(groups).enumerate() {
            for k in 0..LANES {
                let slot = base(g * LANES + k) | (x[k] & mask) as usize;
                debug_assert!(slot < t.fo.len());
                // SAFETY: `base` returns `m << p` for a model `m < models()`
                // (checked where the bases are built) and `x & mask < 1 << p`,
                // so `slot < models() << p == fo.len() == sym.len()`.
                let (e, s) = unsafe { (*t.fo.get_unchecked(slot), *t.sym.get_unchecked(slot)) };
                o[k] = s;
                let v = (e >> 16).wrapping_mul(x[k] >> P).wrapping_add(e & 0xffff);
                // SAFETY: at least `groups * LANES` words were left when the
                // run began and at most one is read per lane step, so a whole
                // word starts at `w` (see above).
                let next = unsafe { w.cast::<[u8; 2]>().read() };
                let need = v < RANS_L;
                x[k] = std::hint::select_unpredictable(need, (v << 16) | u16::from_le_bytes(next) as u32, v);
                // SAFETY: stays within `words` (at most `groups * LANES` words).
                w = unsafe { w.add(2 * need as usize) };
            }
        }
        self.x = x;
        // SAFETY: both pointers are into `words`, `w` not before `start`.
        self.pos += unsafe { w.offset_from(start) } as usize;
    }

    /// Decode all of `out`: unchecked runs while enough words are left for
    /// them, then checked steps for the tail.
    fn run(&mut self, t: &DecTables, base: impl Fn(usize) -> usize + Copy, out: &mut [u8]) -> Result<()> {
        let total = out.len() / LANES;
        let mut g = 0;
        while g < total {
            let run = ((self.words.len() - self.pos) / (2 * LANES)).min(total - g);
            if run == 0 {
                break;
            }
            let o = &mut out[g * LANES..];
            let b = move |i: usize| base(g * LANES + i);
            match t.p {
                10 => self.groups::<10>(t, b, o, run),
                11 => self.groups::<11>(t, b, o, run),
                12 => self.groups::<12>(t, b, o, run),
                // Precisions this encoder does not write: the checked loop does it all.
                _ => break,
            }
            g += run;
        }
        for (i, o) in out.iter_mut().enumerate().skip(g * LANES) {
            *o = self.step_checked(i % LANES, base(i), t)?;
        }
        if self.pos != self.words.len() {
            return Err(Error::corrupt(format!("rANS: {} payload bytes left over", self.words.len() - self.pos)));
        }
        if self.x.iter().any(|&s| s != RANS_L) {
            return Err(Error::corrupt("rANS: coder did not end in its initial state"));
        }
        Ok(())
    }
}

/// Decode `out.len()` symbols coded with one model.
pub fn decode(input: &[u8], t: &DecTables, out: &mut [u8]) -> Result<()> {
    Dec::parse(input)?.run(t, |_| 0, out)
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
    let base = &base;
    Dec::parse(input)?.run(t, |i| base[ctx[i] as usize], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_division_is_exact() {
        let mut r = crate::codec::entropy::tests::Rng(1);
        for f in 1..=4096u32 {
            let e = EncSym::new(f, 0);
            let top = u32::MAX / f * f;
            let edge = [0, 1, f - 1, f, f + 1, u32::MAX, u32::MAX - 1, top, top - 1];
            for x in edge.into_iter().chain((0..64).map(|_| r.next() as u32)) {
                assert_eq!(e.div(x), x / f, "{x} / {f}");
            }
        }
    }
}
