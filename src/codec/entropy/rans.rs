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
//! Within a group of lanes the words are read in lane order, so a stream of
//! `N` lanes can be decoded many symbols at a time by SIMD: one vector holds
//! 16 (AVX-512) or 8 (AVX2) states, one gather fetches their table entries,
//! and an expand (AVX-512) or a shuffle (AVX2) hands the next words to the
//! lanes that need them, in lane order, so that every width reads the same
//! stream ([`LANES64`] and [`LANES32`] for long streams, [`LANES`] for
//! short ones). Scalar, four lanes sharing one stream was as fast as eight
//! or a word stream per lane once the step was branch-free (about 2 ns per
//! symbol): the step's instruction count limits it, which the vector
//! decoders divide by 8 or 16. With 16-lane vectors, 32 lanes leave the
//! units waiting on each vector's chain of gather, multiply and expand; 64
//! hide it (0.56 against 0.43 ns per symbol on MiniLM-BF16 exponents), 128
//! gain nothing more.
//!
//! Layout: `N` little-endian u32 final encoder states, then the words
//! (little-endian u16). A decoder that does not end with every lane back at
//! the initial state and every word consumed reports corruption.

use super::Model;
use crate::error::{Error, Result};
use std::mem::MaybeUninit;

/// Interleaved coder states of short single streams and of context streams.
pub const LANES: usize = 4;
/// Interleaved coder states of long single streams (decoded by AVX-512
/// or AVX2).
pub const LANES32: usize = 32;
/// Interleaved coder states of the longest single streams.
pub const LANES64: usize = 64;
const RANS_L: u32 = 1 << 16;

/// One symbol's encoding constants. (A reciprocal to replace the division
/// was tried: on the reference machine, an AMD EPYC with a fast divider, it
/// was slower, 3.7 against 2.3 ns per symbol.)
#[derive(Clone, Copy, Default)]
struct EncSym {
    freq: u32,
    cum: u32,
}

fn enc_table(m: &Model) -> [EncSym; 256] {
    let mut t = [EncSym::default(); 256];
    let mut cum = 0;
    for (s, &f) in m.freq.iter().enumerate() {
        t[s] = EncSym { freq: f, cum };
        cum += f;
    }
    t
}

/// The encoder: symbols `i = n-1 .. 0`, symbol `i` coded with `sym(i)` by
/// lane `i % N`. The words go into a buffer from its end backwards, so they
/// end up in the order the decoder reads them. Branch-free like the
/// decoder: a lane always stores its low 16 bits at the cursor and moves the
/// cursor only when it renormalizes (a branch there mispredicts on about
/// one symbol in six). Measured variants (lanes in registers four at a
/// time, per-symbol words compacted at the end, a reciprocal for the
/// division, as a 64-bit multiply or as an f64 product) were slower.
///
/// `groups` may code whole groups of `N` symbols from the top down first
/// (the vector encoder); it gets the lane states, the buffer and the cursor,
/// and returns how many groups, from the first, it left to the scalar loop.
fn encode_with<'t, const N: usize>(
    n: usize,
    p: u32,
    sym: impl Fn(usize) -> &'t EncSym,
    out: &mut Vec<u8>,
    groups: impl FnOnce(&mut [u32; N], &mut [MaybeUninit<u16>], &mut usize) -> usize,
) {
    // At most one word per symbol; one slot of slack at the end for the
    // unconditional store of the last symbol, and 16 bytes in front for the
    // vector encoder's whole-register stores. Not zeroed: every slot from
    // the final cursor on has been written (a lane stores at the cursor
    // before it moves it), and only those are read.
    let mut buf: Vec<MaybeUninit<u16>> = Vec::with_capacity(n + 1 + FRONT_SLACK);
    // SAFETY: `MaybeUninit` needs no initialization.
    unsafe { buf.set_len(n + 1 + FRONT_SLACK) };
    let mut w = buf.len();
    let mut x = [RANS_L; N];
    #[inline(always)]
    fn put(x: &mut u32, e: &EncSym, p: u32, buf: &mut [MaybeUninit<u16>], w: &mut usize) {
        debug_assert!(e.freq > 0, "symbol outside the model");
        let mut s = *x;
        let big = (s as u64) >= (e.freq as u64) << (32 - p);
        // `*w >= 1`: at most one word per symbol has been written so far,
        // from `n + 1` slots, with symbols still to code.
        buf[*w - 1].write(s as u16);
        *w -= big as usize;
        s = std::hint::select_unpredictable(big, s >> 16, s);
        let q = s / e.freq;
        *x = (q << p) + (s - q * e.freq) + e.cum;
    }
    let full = n / N * N;
    for i in (full..n).rev() {
        put(&mut x[i % N], sym(i), p, &mut buf, &mut w);
    }
    let left = groups(&mut x, &mut buf, &mut w);
    for g in (0..left).rev() {
        for (k, xk) in x.iter_mut().enumerate().rev() {
            put(xk, sym(g * N + k), p, &mut buf, &mut w);
        }
    }
    // SAFETY: the words from `w` on were all written (see above).
    let words: &[u16] = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(w).cast(), buf.len() - w) };
    out.reserve(N * 4 + words.len() * 2);
    for s in x {
        out.extend_from_slice(&s.to_le_bytes());
    }
    // Little-endian words: the buffer's own bytes on a little-endian core.
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(words));
    } else {
        out.extend(words.iter().flat_map(|v| v.to_le_bytes()));
    }
}

/// Words of slack before the encoder's buffer (see [`encode_with`]).
const FRONT_SLACK: usize = 8;

/// Encode `syms` with one model on `N` lanes (every symbol must have a
/// nonzero frequency). 32-lane streams are coded by AVX2 where the core has
/// it, into the same stream the scalar loop writes.
pub fn encode<const N: usize>(syms: &[u8], m: &Model, out: &mut Vec<u8>) {
    let t = enc_table(m);
    let sym = |i: usize| &t[syms[i] as usize];
    #[cfg(target_arch = "x86_64")]
    if N >= LANES32 && simd::available() {
        let vector = |x: &mut [u32; N], buf: &mut [MaybeUninit<u16>], w: &mut usize| {
            let whole = &syms[..syms.len() / N * N];
            match (N, simd::available512()) {
                (32, true) => simd::encode512::<2>(x, whole, &t, m.precision, buf, w),
                (64, true) => simd::encode512::<4>(x, whole, &t, m.precision, buf, w),
                (32, false) => simd::encode::<4>(x, whole, &t, m.precision, buf, w),
                (64, false) => simd::encode::<8>(x, whole, &t, m.precision, buf, w),
                _ => return syms.len() / N,
            }
            0
        };
        return encode_with::<N>(syms.len(), m.precision, sym, out, vector);
    }
    encode_with::<N>(syms.len(), m.precision, sym, out, |_, _, _| syms.len() / N);
}

/// Encode `syms` on `N` lanes, symbol `i` with model `map[ctx[i]]` (all
/// models of one precision).
pub fn encode_ctx<const N: usize>(syms: &[u8], ctx: &[u8], map: &[u8; 256], models: &[Model], out: &mut Vec<u8>) {
    let tables: Vec<[EncSym; 256]> = models.iter().map(enc_table).collect();
    let p = models[0].precision;
    let sym = |i: usize| &tables[map[ctx[i] as usize] as usize][syms[i] as usize];
    #[cfg(target_arch = "x86_64")]
    if N == LANES32 && simd::available512() {
        // Contexts without a model (never used by a symbol) read model 0.
        let safe = map.map(|m| if (m as usize) < tables.len() { m } else { 0 });
        let vector = |x: &mut [u32; N], buf: &mut [MaybeUninit<u16>], w: &mut usize| {
            let whole = syms.len() / N * N;
            simd::encode512_ctx::<{ LANES32 / 16 }>(x, &syms[..whole], ctx, &safe, &tables, p, buf, w);
            0
        };
        return encode_with::<N>(syms.len(), p, sym, out, vector);
    }
    let scalar = |_: &mut [u32; N], _: &mut [MaybeUninit<u16>], _: &mut usize| syms.len() / N;
    encode_with::<N>(syms.len(), p, sym, out, scalar);
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
    /// `sym << 24 | (freq - 1) << 12 | offset`: one gather gives a vector
    /// decoder all three.
    packed: Vec<u32>,
}

impl DecTables {
    pub fn new(models: &[Model]) -> DecTables {
        let p = models[0].precision;
        assert!(p <= super::MAX_PRECISION);
        let size = 1usize << p;
        let mut fo = vec![0u32; size * models.len()];
        let mut sym = vec![0u8; size * models.len()];
        let mut packed = vec![0u32; size * models.len()];
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
                for (o, e) in packed[pos..pos + f as usize].iter_mut().enumerate() {
                    *e = ((s as u32) << 24) | ((f - 1) << 12) | o as u32;
                }
                sym[pos..pos + f as usize].fill(s as u8);
                pos += f as usize;
            }
        }
        DecTables { p, fo, sym, packed }
    }
    pub fn models(&self) -> usize {
        self.fo.len() >> self.p
    }
}

/// The decoder's state: lane states and the read position in the words.
struct Dec<'a, const N: usize> {
    x: [u32; N],
    pos: usize,
    words: &'a [u8],
}

impl<'a, const N: usize> Dec<'a, N> {
    fn parse(input: &'a [u8]) -> Result<Dec<'a, N>> {
        if input.len() < N * 4 {
            return Err(Error::truncated(format!("rANS: {} bytes, need {} for the coder states", input.len(), N * 4)));
        }
        let mut x = [0u32; N];
        for (k, s) in x.iter_mut().enumerate() {
            *s = u32::from_le_bytes(input[k * 4..k * 4 + 4].try_into().expect("4 bytes"));
            if *s < RANS_L {
                return Err(Error::corrupt(format!("rANS: lane {k} starts in an invalid state")));
            }
        }
        let words = &input[N * 4..];
        if !words.len().is_multiple_of(2) {
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

    /// Decode `groups` groups of `N` symbols, symbol `i` of `out` with
    /// the model at `base(i)`, without bounds checks on the words. The
    /// caller guarantees at least `groups * N` words are left: a group
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
        debug_assert!(self.words.len() - self.pos >= 2 * N * groups && out.len() >= groups * N);
        let mask = (1u32 << P) - 1;
        let mut x = self.x;
        // SAFETY (pointer): `pos` is within `words` (checked by the caller
        // as above), and it advances by at most one word per lane step.
        let mut w = unsafe { self.words.as_ptr().add(self.pos) };
        let start = w;
        for (g, o) in out.chunks_exact_mut(N).take(groups).enumerate() {
            for k in 0..N {
                let slot = base(g * N + k) | (x[k] & mask) as usize;
                debug_assert!(slot < t.fo.len());
                // SAFETY: `base` returns `m << p` for a model `m < models()`
                // (checked where the bases are built) and `x & mask < 1 << p`,
                // so `slot < models() << p == fo.len() == sym.len()`.
                let (e, s) = unsafe { (*t.fo.get_unchecked(slot), *t.sym.get_unchecked(slot)) };
                o[k] = s;
                let v = (e >> 16).wrapping_mul(x[k] >> P).wrapping_add(e & 0xffff);
                // SAFETY: at least `groups * N` words were left when the
                // run began and at most one is read per lane step, so a whole
                // word starts at `w` (see above).
                let next = unsafe { w.cast::<[u8; 2]>().read() };
                let need = v < RANS_L;
                x[k] = std::hint::select_unpredictable(need, (v << 16) | u16::from_le_bytes(next) as u32, v);
                // SAFETY: stays within `words` (at most `groups * N` words).
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
        let total = out.len() / N;
        let mut g = 0;
        while g < total {
            let run = ((self.words.len() - self.pos) / (2 * N)).min(total - g);
            if run == 0 {
                break;
            }
            let o = &mut out[g * N..];
            let b = move |i: usize| base(g * N + i);
            match t.p {
                10 => self.groups::<10>(t, b, o, run),
                11 => self.groups::<11>(t, b, o, run),
                12 => self.groups::<12>(t, b, o, run),
                // Precisions this encoder does not write: the checked loop does it all.
                _ => break,
            }
            g += run;
        }
        self.finish_from(g * N, t, base, out)
    }

    /// Decode the symbols from `done` on with checked steps, then check
    /// that the stream ended where it should.
    fn finish_from(&mut self, done: usize, t: &DecTables, base: impl Fn(usize) -> usize, out: &mut [u8]) -> Result<()> {
        for (i, o) in out.iter_mut().enumerate().skip(done) {
            *o = self.step_checked(i % N, base(i), t)?;
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

/// Decode `out.len()` symbols coded with one model on `N` lanes.
pub fn decode<const N: usize>(input: &[u8], t: &DecTables, out: &mut [u8]) -> Result<()> {
    let mut d = Dec::<N>::parse(input)?;
    #[cfg(target_arch = "x86_64")]
    if N >= LANES32 && simd::available() {
        let done = match (N, simd::available512()) {
            (32, true) => simd::decode512::<2>(&mut d.x[..], &mut d.pos, d.words, t, out),
            (64, true) => simd::decode512::<4>(&mut d.x[..], &mut d.pos, d.words, t, out),
            (32, false) => simd::decode::<4>(&mut d.x[..], &mut d.pos, d.words, t, out),
            (64, false) => simd::decode::<8>(&mut d.x[..], &mut d.pos, d.words, t, out),
            _ => 0,
        };
        return d.finish_from(done, t, |_| 0, out);
    }
    d.run(t, |_| 0, out)
}

/// Decode `out.len()` symbols on `N` lanes, symbol `i` with model
/// `map[ctx[i]]` (map entries beyond the models fall back to model 0).
pub fn decode_ctx<const N: usize>(
    input: &[u8],
    t: &DecTables,
    ctx: &[u8],
    map: &[u8; 256],
    out: &mut [u8],
) -> Result<()> {
    if ctx.len() != out.len() {
        return Err(Error::invalid("rANS: context length differs from output length"));
    }
    let mut base = [0usize; 256];
    for (b, &m) in base.iter_mut().zip(map) {
        *b = if (m as usize) < t.models() { (m as usize) << t.p } else { 0 };
    }
    let base = &base;
    let mut d = Dec::<N>::parse(input)?;
    #[cfg(target_arch = "x86_64")]
    if N == LANES32 && simd::available512() {
        let safe = map.map(|m| if (m as usize) < t.models() { m } else { 0 });
        let done = simd::decode512_ctx::<{ LANES32 / 16 }>(&mut d.x[..], &mut d.pos, d.words, t, ctx, &safe, out);
        return d.finish_from(done, t, |i| base[ctx[i] as usize], out);
    }
    d.run(t, |i| base[ctx[i] as usize], out)
}

/// The AVX2 decoder of eight-lane single-model streams.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::DecTables;
    use crate::codec::entropy::merge::x512::{Flags, load};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// AVX2 paths allowed (the core has them, and the level of
    /// [`crate::codec::simd`]).
    pub fn available() -> bool {
        crate::codec::simd::avx2()
    }

    /// AVX-512, as the merge uses it (one switch for every dispatch:
    /// [`crate::codec::simd`]).
    pub fn available512() -> bool {
        crate::codec::simd::avx512()
    }

    /// [`decode`] with `V` vectors of sixteen lanes (AVX-512): the same
    /// stream, since a 16-lane vector reads the words of its two 8-lane
    /// halves in lane order as two 8-lane vectors do. While at least `32 V`
    /// payload bytes are left (a vector loads 32 bytes at the cursor and
    /// advances it by at most that).
    pub fn decode512<const V: usize>(
        x: &mut [u32],
        pos: &mut usize,
        words: &[u8],
        t: &DecTables,
        out: &mut [u8],
    ) -> usize {
        assert!(x.len() == 16 * V && crate::codec::simd::cpu_avx512() && t.models() == 1);
        // SAFETY: AVX-512 is available (checked above).
        unsafe { decode_avx512::<V, false>(x, pos, words, t, None, out) }
    }

    /// [`decode512`] with a model per symbol: symbol `i` with model
    /// `map[ctx[i]]`, every entry of `map` below `t.models()`.
    pub fn decode512_ctx<const V: usize>(
        x: &mut [u32],
        pos: &mut usize,
        words: &[u8],
        t: &DecTables,
        ctx: &[u8],
        map: &[u8; 256],
        out: &mut [u8],
    ) -> usize {
        assert!(x.len() == 16 * V && crate::codec::simd::cpu_avx512() && ctx.len() == out.len());
        assert!(map.iter().all(|&m| (m as usize) < t.models()));
        // SAFETY: AVX-512 is available (checked above).
        unsafe { decode_avx512::<V, true>(x, pos, words, t, Some((ctx, Flags::new(map))), out) }
    }

    /// The first 16 bytes at `ctx[at..]` mapped through `map`, as u32
    /// lanes shifted left by `shift`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    fn model_bases(ctx: &[u8], at: usize, map: &Flags, shift: __m128i) -> __m512i {
        let c = _mm512_castsi128_si512(_mm512_castsi512_si128(load(ctx, at)));
        _mm512_sll_epi32(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(map.lookup(c))), shift)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    unsafe fn decode_avx512<const V: usize, const CTX: bool>(
        x: &mut [u32],
        pos: &mut usize,
        words: &[u8],
        t: &DecTables,
        models: Option<(&[u8], Flags)>,
        out: &mut [u8],
    ) -> usize {
        let per = 16 * V;
        let groups = out.len() / per;
        let mut p = *pos;
        let mut g = 0;
        // SAFETY: `x` has `16 * V` elements (asserted by the caller).
        let mut xv: [__m512i; V] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_si512(x.as_ptr().add(16 * j).cast()) });
        let mask = _mm512_set1_epi32(((1u32 << t.p) - 1) as i32);
        let m12 = _mm512_set1_epi32(0xfff);
        let one = _mm512_set1_epi32(1);
        let lim = _mm512_set1_epi32(1 << 16);
        let shift = _mm_cvtsi32_si128(t.p as i32);
        let table = t.packed.as_ptr().cast::<i32>();
        while g < groups && words.len() - p >= 32 * V {
            for (j, xj) in xv.iter_mut().enumerate() {
                let mut slot = _mm512_and_si512(*xj, mask);
                if let (true, Some((ctx, map))) = (CTX, &models) {
                    slot = _mm512_or_si512(slot, model_bases(ctx, g * per + 16 * j, map, shift));
                }
                // SAFETY: `slot < models << p == packed.len()`: `x & mask <
                // 1 << p` and every model index is below `models` (checked
                // by the callers).
                let e = unsafe { _mm512_i32gather_epi32::<4>(slot, table) };
                let f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32::<12>(e), m12), one);
                let off = _mm512_and_si512(e, m12);
                let v = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(*xj, shift)), off);
                let need = _mm512_cmplt_epu32_mask(v, lim);
                // SAFETY: `p + 32 * (V - j) <= words.len()` (the loop
                // condition, less at most 32 bytes per earlier vector).
                let wz = _mm512_cvtepu16_epi32(unsafe { _mm256_loadu_si256(words.as_ptr().add(p).cast()) });
                let w = _mm512_maskz_expand_epi32(need, wz);
                *xj = _mm512_mask_or_epi32(v, need, _mm512_slli_epi32::<16>(v), w);
                p += 2 * need.count_ones() as usize;
                let s = _mm512_cvtepi32_epi8(_mm512_srli_epi32::<24>(e));
                // SAFETY: `(g + 1) * per <= out.len()`.
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add(g * per + 16 * j).cast(), s) };
            }
            g += 1;
        }
        for (j, xj) in xv.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(x.as_mut_ptr().add(16 * j).cast(), *xj) };
        }
        *pos = p;
        g * per
    }

    /// For a 4-bit mask of lanes that renormalize: the `pshufb` control that
    /// moves the next words (u16, in lane order) into those lanes (u32,
    /// zero-extended) and zeros the others.
    const fn shuffle_lut() -> [[u8; 16]; 16] {
        let mut lut = [[0x80u8; 16]; 16];
        let mut m = 0;
        while m < 16 {
            let mut k = 0;
            let mut j = 0;
            while j < 4 {
                if m & (1 << j) != 0 {
                    lut[m][4 * j] = 2 * k;
                    lut[m][4 * j + 1] = 2 * k + 1;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        lut
    }
    static LUT: [[u8; 16]; 16] = shuffle_lut();

    /// Decode whole groups of `8 * V` symbols (`V` vectors of eight lanes,
    /// independent but for the shared word cursor, so that one vector's
    /// gather latency hides behind the others' work) while at least
    /// `16 * V + 8` payload bytes are left: a vector's two 16-byte word
    /// loads start at most 8 bytes apart and a group reads at most 16 bytes
    /// per vector, so every load is in bounds. Updates the lane states and
    /// the cursor; returns the symbols decoded (a multiple of `8 * V`).
    pub fn decode<const V: usize>(
        x: &mut [u32],
        pos: &mut usize,
        words: &[u8],
        t: &DecTables,
        out: &mut [u8],
    ) -> usize {
        assert!(x.len() == 8 * V && crate::codec::simd::cpu_avx2() && t.models() == 1);
        // SAFETY: AVX2 is available (checked above).
        unsafe { decode_avx2::<V>(x, pos, words, t, out) }
    }

    /// `table[idx[k]]` for the eight lanes, by eight scalar loads: on the
    /// reference machine (AMD EPYC) `vpgatherdd` was slower, measured on the
    /// exponents of MiniLM-BF16 at 0.91 against 0.78 ns per decoded symbol
    /// and 2.1 against 1.4 ns per encoded one.
    ///
    /// # Safety
    /// Every lane of `idx` indexes within `table`.
    #[inline(always)]
    unsafe fn gather8(table: *const i32, idx: __m256i) -> __m256i {
        let mut ix = [0u32; 8];
        // SAFETY: `ix` holds 32 bytes; the loads are in bounds (the caller).
        unsafe {
            _mm256_storeu_si256(ix.as_mut_ptr().cast(), idx);
            let g = |k: usize| *table.add(ix[k] as usize);
            _mm256_setr_epi32(g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7))
        }
    }

    /// For a 4-bit mask of lanes that renormalize: the `pshufb` control
    /// that packs those lanes' low 16 bits, in lane order, into the last
    /// bytes of the register (the encoder writes backwards).
    const fn pack_lut() -> [[u8; 16]; 16] {
        let mut lut = [[0x80u8; 16]; 16];
        let mut m = 0;
        while m < 16 {
            let c = (m as u32).count_ones() as usize;
            let mut k = 0;
            let mut j = 0;
            while j < 4 {
                if m & (1 << j) != 0 {
                    lut[m][16 - 2 * c + 2 * k] = 4 * j as u8;
                    lut[m][16 - 2 * c + 2 * k + 1] = 4 * j as u8 + 1;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        lut
    }
    static PACK: [[u8; 16]; 16] = pack_lut();

    /// A model's table as the vector encoders load it: `freq << 16 | cum`.
    fn pack_table(t: &[super::EncSym; 256]) -> [u32; 256] {
        let mut packed = [0u32; 256];
        for (q, e) in packed.iter_mut().zip(t) {
            assert!(e.freq < 1 << 16 && e.cum < 1 << 16);
            *q = e.freq << 16 | e.cum;
        }
        packed
    }

    /// Encode `syms` (whole groups of `8 * V`) on `8 * V` lanes from the
    /// last group down, continuing from the states `x` and the cursor `w`
    /// into `buf` (16 bytes of slack before the first word written), the
    /// words of each group in the order [`decode`] reads them.
    pub fn encode<const V: usize>(
        x: &mut [u32],
        syms: &[u8],
        t: &[super::EncSym; 256],
        p: u32,
        buf: &mut [MaybeUninit<u16>],
        w: &mut usize,
    ) {
        assert!(x.len() == 8 * V && syms.len().is_multiple_of(8 * V) && crate::codec::simd::cpu_avx2());
        assert!(*w >= syms.len() + super::FRONT_SLACK && *w <= buf.len() && (10..=12).contains(&p));
        let packed = pack_table(t);
        // SAFETY: AVX2 is available; the bounds are checked above.
        unsafe { encode_avx2::<V>(x, syms, &packed, p, buf, w) }
    }

    /// [`encode`] with `V` vectors of sixteen lanes (AVX-512), writing the
    /// same stream.
    pub fn encode512<const V: usize>(
        x: &mut [u32],
        syms: &[u8],
        t: &[super::EncSym; 256],
        p: u32,
        buf: &mut [MaybeUninit<u16>],
        w: &mut usize,
    ) {
        assert!(x.len() == 16 * V && syms.len().is_multiple_of(16 * V) && crate::codec::simd::cpu_avx512());
        assert!(*w >= syms.len() && *w <= buf.len() && (10..=12).contains(&p));
        let packed = pack_table(t);
        // SAFETY: AVX-512 is available; the bounds are checked above.
        unsafe { encode_avx512::<V, false>(x, syms, &packed, None, p, buf, w) }
    }

    /// [`encode512`] with a model per symbol: symbol `i` with table
    /// `map[ctx[i]]` of `tables`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode512_ctx<const V: usize>(
        x: &mut [u32],
        syms: &[u8],
        ctx: &[u8],
        map: &[u8; 256],
        tables: &[[super::EncSym; 256]],
        p: u32,
        buf: &mut [MaybeUninit<u16>],
        w: &mut usize,
    ) {
        assert!(
            x.len() == 16 * V
                && syms.len().is_multiple_of(16 * V)
                && ctx.len() >= syms.len()
                && crate::codec::simd::cpu_avx512()
        );
        assert!(*w >= syms.len() && *w <= buf.len() && (10..=12).contains(&p));
        assert!(map.iter().all(|&m| (m as usize) < tables.len()));
        let packed: Vec<u32> = tables
            .iter()
            .flatten()
            .map(|e| {
                assert!(e.freq < 1 << 16 && e.cum < 1 << 16);
                e.freq << 16 | e.cum
            })
            .collect();
        // SAFETY: AVX-512 is available; the bounds are checked above.
        unsafe { encode_avx512::<V, true>(x, syms, &packed, Some((ctx, Flags::new(map))), p, buf, w) }
    }

    /// One vector step per sixteen lanes, as the scalar `put`; the lanes
    /// that renormalize store their low 16 bits in lane order by a word
    /// compress and a masked store ending at the cursor, and the quotient
    /// `q = floor(s / freq)` comes from an f32 division corrected by one
    /// step either way: `q < 2^(32-p) <= 2^22` and the quotient's relative
    /// error (the rounding of `s` to f32 and of the division) is below
    /// `2^-23`, so the estimate is within 0.5 of `s / freq` and the
    /// truncation off by at most one. Measured on the exponents of 4 MiB of
    /// MiniLM-BF16 (one core): 0.84-0.93 ns per symbol, against 0.9 for the
    /// AVX2 encoder's f64 divisions and 1.2 for an f32 product with a
    /// reciprocal gathered from a second table.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn encode_avx512<const V: usize, const CTX: bool>(
        x: &mut [u32],
        syms: &[u8],
        packed: &[u32],
        models: Option<(&[u8], Flags)>,
        p: u32,
        buf: &mut [MaybeUninit<u16>],
        w: &mut usize,
    ) {
        let per = 16 * V;
        // SAFETY: `x` has `16 * V` elements (asserted by the caller).
        let mut xv: [__m512i; V] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_si512(x.as_ptr().add(16 * j).cast()) });
        let base = buf.as_mut_ptr();
        let mut wi = *w;
        let shift = _mm_cvtsi32_si128(32 - p as i32);
        let pshift = _mm_cvtsi32_si128(p as i32);
        let lo16 = _mm512_set1_epi32(0xffff);
        let one = _mm512_set1_epi32(1);
        let zero = _mm512_setzero_si512();
        let eight = _mm_cvtsi32_si128(8);
        let table = packed.as_ptr().cast::<i32>();
        for g in (0..syms.len() / per).rev() {
            for j in (0..V).rev() {
                // SAFETY: `g * per + 16 * j + 16 <= syms.len()`.
                let mut idx =
                    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(syms.as_ptr().add(g * per + 16 * j).cast()) });
                if let (true, Some((ctx, map))) = (CTX, &models) {
                    idx = _mm512_or_si512(idx, model_bases(ctx, g * per + 16 * j, map, eight));
                }
                // SAFETY: a byte index into a table of 256 entries, or with
                // models, `model << 8 | byte` into one of `256 * models`.
                let e = unsafe { _mm512_i32gather_epi32::<4>(idx, table) };
                let f = _mm512_srli_epi32::<16>(e);
                let xj = xv[j];
                let big = _mm512_cmpge_epu32_mask(_mm512_srl_epi32(xj, shift), f);
                let k = big.count_ones() as usize;
                // At most one word per symbol: `wi >= k` (see `encode_with`).
                wi -= k;
                let words = _mm512_maskz_compress_epi16(big as u32, _mm512_castsi256_si512(_mm512_cvtepi32_epi16(xj)));
                // SAFETY: writes the `k` words `wi..wi + k` of `buf`.
                unsafe { _mm512_mask_storeu_epi16(base.add(wi).cast(), _bzhi_u32(!0, k as u32), words) };
                let s = _mm512_mask_srli_epi32(xj, big, xj, 16);
                let qf = _mm512_div_ps(_mm512_cvtepu32_ps(s), _mm512_cvtepu32_ps(f));
                let mut q = _mm512_cvttps_epu32(qf);
                let mut rem = _mm512_sub_epi32(s, _mm512_mullo_epi32(q, f));
                let under = _mm512_cmplt_epi32_mask(rem, zero);
                q = _mm512_mask_sub_epi32(q, under, q, one);
                rem = _mm512_mask_add_epi32(rem, under, rem, f);
                let over = _mm512_cmpge_epu32_mask(rem, f);
                q = _mm512_mask_add_epi32(q, over, q, one);
                rem = _mm512_mask_sub_epi32(rem, over, rem, f);
                xv[j] = _mm512_add_epi32(_mm512_add_epi32(_mm512_sll_epi32(q, pshift), rem), _mm512_and_si512(e, lo16));
            }
        }
        for (j, xj) in xv.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(x.as_mut_ptr().add(16 * j).cast(), *xj) };
        }
        *w = wi;
    }

    /// One vector step per eight lanes, as the scalar `put`: lanes with
    /// `x >= freq << (32 - p)` emit their low 16 bits and shift; then
    /// `x = s + q * (2^p - freq) + cum` with `q = floor(s / freq)` taken by
    /// an f64 division (exact: `s < 2^32` converts exactly, and a correctly
    /// rounded quotient below `2^22` cannot reach the next integer, which is
    /// at least `1 / freq >= 2^-12` away; an exact one is exact).
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn encode_avx2<const V: usize>(
        x: &mut [u32],
        syms: &[u8],
        packed: &[u32; 256],
        p: u32,
        buf: &mut [MaybeUninit<u16>],
        w: &mut usize,
    ) {
        let per = 8 * V;
        // SAFETY: `x` has `8 * V` elements (asserted by the caller).
        let mut xv: [__m256i; V] = std::array::from_fn(|j| unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * j).cast()) });
        let base = buf.as_mut_ptr().cast::<u8>();
        let mut wb = 2 * *w;
        let shift = _mm_cvtsi32_si128(32 - p as i32);
        let one = _mm256_set1_epi32(1);
        let total = _mm256_set1_epi32(1 << p);
        let lo16 = _mm256_set1_epi32(0xffff);
        let flip = _mm256_set1_epi32(i32::MIN);
        let two31 = _mm256_set1_pd(2147483648.0);
        let table = packed.as_ptr().cast::<i32>();
        for g in (0..syms.len() / per).rev() {
            for j in (0..V).rev() {
                // SAFETY: `g * per + 8 * j + 8 <= syms.len()`.
                let idx = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(syms.as_ptr().add(g * per + 8 * j).cast()) });
                // SAFETY: byte indices into a 256-entry table.
                let e = unsafe { gather8(table, idx) };
                let f = _mm256_srli_epi32::<16>(e);
                let xj = xv[j];
                let big = _mm256_cmpgt_epi32(_mm256_srl_epi32(xj, shift), _mm256_sub_epi32(f, one));
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(big)) as usize;
                let (lo, hi) = (m & 15, m >> 4);
                // SAFETY: at most one word per symbol is written and `w`
                // started `FRONT_SLACK` words above the symbols' count, so
                // every 16-byte store ending at `wb` starts at or after `base`.
                unsafe {
                    let ctl = |k: usize| _mm_loadu_si128(PACK[k].as_ptr().cast());
                    _mm_storeu_si128(
                        base.add(wb - 16).cast(),
                        _mm_shuffle_epi8(_mm256_extracti128_si256::<1>(xj), ctl(hi)),
                    );
                    wb -= 2 * hi.count_ones() as usize;
                    _mm_storeu_si128(base.add(wb - 16).cast(), _mm_shuffle_epi8(_mm256_castsi256_si128(xj), ctl(lo)));
                    wb -= 2 * lo.count_ones() as usize;
                }
                let s = _mm256_blendv_epi8(xj, _mm256_srli_epi32::<16>(xj), big);
                let sf = _mm256_xor_si256(s, flip);
                let s_lo = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(sf)), two31);
                let s_hi = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(sf)), two31);
                let f_lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(f));
                let f_hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(f));
                let q = _mm256_set_m128i(
                    _mm256_cvttpd_epi32(_mm256_div_pd(s_hi, f_hi)),
                    _mm256_cvttpd_epi32(_mm256_div_pd(s_lo, f_lo)),
                );
                let cum = _mm256_and_si256(e, lo16);
                xv[j] = _mm256_add_epi32(_mm256_add_epi32(s, _mm256_mullo_epi32(q, _mm256_sub_epi32(total, f))), cum);
            }
        }
        for (j, xj) in xv.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * j).cast(), *xj) };
        }
        *w = wb / 2;
    }

    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn decode_avx2<const V: usize>(
        x: &mut [u32],
        pos: &mut usize,
        words: &[u8],
        t: &DecTables,
        out: &mut [u8],
    ) -> usize {
        let per = 8 * V;
        let groups = out.len() / per;
        let mut p = *pos;
        let mut g = 0;
        // SAFETY: `x` has `8 * V` elements (asserted by the caller).
        let mut xv: [__m256i; V] = std::array::from_fn(|j| unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * j).cast()) });
        let mask = _mm256_set1_epi32(((1u32 << t.p) - 1) as i32);
        let m12 = _mm256_set1_epi32(0xfff);
        let one = _mm256_set1_epi32(1);
        let zero = _mm256_setzero_si256();
        let shift = _mm_cvtsi32_si128(t.p as i32);
        // Byte 3 of each u32 of a 128-bit half to its low 4 bytes.
        let pick = _mm256_setr_epi8(
            3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
            3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let table = t.packed.as_ptr().cast::<i32>();
        while g < groups && words.len() - p >= 16 * V + 8 {
            let o = &mut out[g * per..(g + 1) * per];
            for (j, xj) in xv.iter_mut().enumerate() {
                let slot = _mm256_and_si256(*xj, mask);
                // SAFETY: one model: `slot <= mask < 1 << p == packed.len()`.
                let e = unsafe { gather8(table, slot) };
                let f = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32::<12>(e), m12), one);
                let off = _mm256_and_si256(e, m12);
                let v = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srl_epi32(*xj, shift)), off);
                let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(v), zero);
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as u32;
                let (lo, hi) = ((m & 15) as usize, (m >> 4) as usize);
                let at_hi = p + 2 * lo.count_ones() as usize;
                // SAFETY: `p + 16 * (V - j) + 8 <= words.len()` (the loop
                // condition, less at most 16 bytes per earlier vector) and
                // `at_hi <= p + 8`: both 16-byte loads are in bounds; the
                // LUT index is below 16.
                let (w_lo, w_hi) = unsafe {
                    (
                        _mm_shuffle_epi8(
                            _mm_loadu_si128(words.as_ptr().add(p).cast()),
                            _mm_loadu_si128(LUT[lo].as_ptr().cast()),
                        ),
                        _mm_shuffle_epi8(
                            _mm_loadu_si128(words.as_ptr().add(at_hi).cast()),
                            _mm_loadu_si128(LUT[hi].as_ptr().cast()),
                        ),
                    )
                };
                let w = _mm256_set_m128i(w_hi, w_lo);
                *xj = _mm256_blendv_epi8(v, _mm256_or_si256(_mm256_slli_epi32::<16>(v), w), need);
                p += 2 * m.count_ones() as usize;
                let syms = _mm256_shuffle_epi8(e, pick);
                let lo4 = _mm256_extract_epi32::<0>(syms) as u32 as u64;
                let hi4 = _mm256_extract_epi32::<4>(syms) as u32 as u64;
                o[8 * j..8 * j + 8].copy_from_slice(&(lo4 | (hi4 << 32)).to_le_bytes());
            }
            g += 1;
        }
        for (j, xj) in xv.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * j).cast(), *xj) };
        }
        *pos = p;
        g * per
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skewed(n: usize, seed: u64) -> (Vec<u8>, Model) {
        let mut r = crate::tensor::synth::Rng::from_state(seed);
        let syms: Vec<u8> = (0..n).map(|_| (120.0 + 3.0 * r.normal()).clamp(0.0, 255.0) as u8).collect();
        let m = Model::from_hist(&crate::codec::entropy::hist(&syms), 12).unwrap();
        (syms, m)
    }

    /// The vector and scalar encoders write the same stream, and the vector
    /// and scalar decoders agree, symbol for symbol and in the end state, on
    /// every length around the group sizes.
    #[test]
    fn vector_and_scalar_decoders_agree() {
        for n in [0, 1, 31, 32, 33, 64, 95, 1000, 4099, 100_000] {
            let (syms, m) = skewed(n.max(1), n as u64);
            let syms = &syms[..n];
            lanes_agree::<LANES32>(syms, &m);
            lanes_agree::<LANES64>(syms, &m);
        }
    }

    /// Every encoder of `N` lanes the core has (scalar, AVX2, AVX-512)
    /// writes the same stream, and every decoder reads it back.
    fn lanes_agree<const N: usize>(syms: &[u8], m: &Model) {
        let n = syms.len();
        let et = enc_table(m);
        let sym = |i: usize| &et[syms[i] as usize];
        let mut scalar = Vec::new();
        encode_with::<N>(n, m.precision, sym, &mut scalar, |_, _, _| n / N);
        let mut enc = Vec::new();
        encode::<N>(syms, m, &mut enc);
        assert!(enc == scalar, "{N} lanes: encoders differ, {n} symbols");
        let t = DecTables::new(std::slice::from_ref(m));
        type Decoder<'t> = Box<dyn Fn(&[u8], &mut [u8]) -> Result<()> + 't>;
        let mut decoders: Vec<(&str, Decoder)> = vec![
            ("scalar", Box::new(|e: &[u8], o: &mut [u8]| Dec::<N>::parse(e)?.run(&t, |_| 0, o))),
            ("dispatched", Box::new(|e: &[u8], o: &mut [u8]| decode::<N>(e, &t, o))),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            let whole = &syms[..n / N * N];
            let vector = |v512: bool| {
                let mut out = Vec::new();
                encode_with::<N>(n, m.precision, sym, &mut out, |x, buf, w| {
                    match (N, v512) {
                        (32, false) => simd::encode::<4>(x, whole, &et, m.precision, buf, w),
                        (64, false) => simd::encode::<8>(x, whole, &et, m.precision, buf, w),
                        (32, true) => simd::encode512::<2>(x, whole, &et, m.precision, buf, w),
                        (64, true) => simd::encode512::<4>(x, whole, &et, m.precision, buf, w),
                        _ => unreachable!(),
                    }
                    0
                });
                out
            };
            let t = &t;
            let vector_decoder = |v512: bool| -> Decoder {
                Box::new(move |e: &[u8], o: &mut [u8]| {
                    let mut d = Dec::<N>::parse(e)?;
                    let done = match (N, v512) {
                        (32, false) => simd::decode::<4>(&mut d.x[..], &mut d.pos, d.words, t, o),
                        (64, false) => simd::decode::<8>(&mut d.x[..], &mut d.pos, d.words, t, o),
                        (32, true) => simd::decode512::<2>(&mut d.x[..], &mut d.pos, d.words, t, o),
                        _ => simd::decode512::<4>(&mut d.x[..], &mut d.pos, d.words, t, o),
                    };
                    d.finish_from(done, t, |_| 0, o)
                })
            };
            if crate::codec::simd::cpu_avx2() {
                assert!(vector(false) == scalar, "{N} lanes: AVX2 encoder differs, {n} symbols");
                decoders.push(("AVX2", vector_decoder(false)));
            }
            if crate::codec::simd::cpu_avx512() {
                assert!(vector(true) == scalar, "{N} lanes: AVX-512 encoder differs, {n} symbols");
                decoders.push(("AVX-512", vector_decoder(true)));
            }
        }
        for (name, dec) in &decoders {
            let mut out = vec![0u8; n];
            dec(&enc, &mut out).unwrap();
            assert_eq!(out, syms, "{N} lanes, {name} decoder, {n} symbols");
            // A truncated stream fails.
            if n > 0 {
                assert!(dec(&enc[..enc.len() - 2], &mut out).is_err(), "{N} lanes, {name}, truncated");
            }
        }
    }

    /// 32-lane context streams: the vector coders (where the core has
    /// them) and the scalar ones write and read the same stream, with a
    /// model per symbol and contexts that map past the models.
    #[test]
    fn context_lanes_agree() {
        for n in [0usize, 1, 31, 32, 33, 1000, 20_001] {
            let (syms, m0) = skewed(n.max(1), 40 + n as u64);
            let syms = &syms[..n];
            let ctx: Vec<u8> = (0..n).map(|i| (i * 7 % 5) as u8).collect();
            let models = vec![
                m0,
                Model::uniform(12),
                Model::from_hist(&crate::codec::entropy::hist(&[1, 2, 3, 200]), 12).unwrap(),
            ];
            // Contexts 3 and 4 share model 1; unused contexts point past the models.
            let mut map = [9u8; 256];
            map[..5].copy_from_slice(&[0, 1, 0, 1, 1]);
            let syms: Vec<u8> =
                syms.iter().zip(&ctx).map(|(&s, &c)| if map[c as usize] == 1 { s ^ 0x55 } else { s }).collect();
            let tables: Vec<[EncSym; 256]> = models.iter().map(enc_table).collect();
            let mut scalar = Vec::new();
            let sym = |i: usize| &tables[map[ctx[i] as usize] as usize][syms[i] as usize];
            encode_with::<LANES32>(n, 12, sym, &mut scalar, |_, _, _| n / LANES32);
            let mut enc = Vec::new();
            encode_ctx::<LANES32>(&syms, &ctx, &map, &models, &mut enc);
            assert!(enc == scalar, "{n} symbols: context encoders differ");
            let t = DecTables::new(&models);
            let mut a = vec![0u8; n];
            decode_ctx::<LANES32>(&enc, &t, &ctx, &map, &mut a).unwrap();
            assert_eq!(a, syms, "{n} symbols: dispatched decoder");
            let mut base = [0usize; 256];
            for (b, &m) in base.iter_mut().zip(&map) {
                *b = if (m as usize) < models.len() { (m as usize) << 12 } else { 0 };
            }
            let mut b = vec![0u8; n];
            Dec::<LANES32>::parse(&enc).unwrap().run(&t, |i| base[ctx[i] as usize], &mut b).unwrap();
            assert_eq!(b, syms, "{n} symbols: scalar decoder");
            if n > 0 {
                assert!(decode_ctx::<LANES32>(&enc[..enc.len() - 2], &t, &ctx, &map, &mut a).is_err());
            }
        }
    }

    /// Four-lane streams (written by earlier builds) still decode, with one
    /// model and with a model per context.
    #[test]
    fn four_lane_streams_still_decode() {
        let (syms, m) = skewed(5000, 3);
        let mut enc = Vec::new();
        encode::<LANES>(&syms, &m, &mut enc);
        let mut out = vec![0u8; syms.len()];
        decode::<LANES>(&enc, &DecTables::new(std::slice::from_ref(&m)), &mut out).unwrap();
        assert_eq!(out, syms);
        let ctx: Vec<u8> = (0..syms.len()).map(|i| (i % 3) as u8).collect();
        let models = vec![m.clone(), Model::uniform(12)];
        let mut map = [0u8; 256];
        map[1] = 1;
        enc.clear();
        encode_ctx::<LANES>(&syms, &ctx, &map, &models, &mut enc);
        decode_ctx::<LANES>(&enc, &DecTables::new(&models), &ctx, &map, &mut out).unwrap();
        assert_eq!(out, syms);
    }
}
