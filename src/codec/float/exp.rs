//! `exp`: exponent-split entropy coding of float tensors.
//!
//! For an element of W >= 2 bytes the top 16 bits (`head`) are split into
//! two byte symbols: `E = head[14:7]` and `SM = head[15] << 7 | head[6:0]`.
//! For BF16 and F32 `E` is exactly the exponent and `SM` the sign beside the
//! top 7 mantissa bits; for F16 `E` is the 5-bit exponent with the top 3
//! mantissa bits; for F64 it is the top 8 of the 11 exponent bits. `E` is
//! coded with one rANS model per chunk; `SM` with one model per value of `E`
//! (contexts too rare to pay for a table share a pooled model, or go raw), so
//! the pair costs `H(E) + H(SM | E)`, the joint entropy of the 16-bit head,
//! which is at most the order-0 float floor `H(sign, exp) + H(mant | exp)`.
//! The lower W-2 bytes (the rest of an F32/F64 mantissa) are coded per
//! exponent the same way, which degenerates to raw storage when they are
//! uniform. One-byte formats (FP8, and FP4/FP6 packed) are coded byte by byte.
//!
//! Stream: `W` (u8), then for W = 1 one entropy block, otherwise the blocks
//! for `E`, `SM` and the lower planes from the most significant down, each
//! u32-length-prefixed.

use crate::codec::entropy::{decode_parts, decode_stream, encode_stream, encode_stream_with};
use crate::codec::{ChunkInfo, Codec, Fidelity, Params, Reader, StageDef, StageKind, with_block};
use crate::error::{Error, Result};
use crate::tensor::DType;
use std::hash::Hasher;
use std::mem::MaybeUninit;

/// The default of `gain` (see [`Exp`]).
const DEFAULT_GAIN: u32 = 2;

/// `gain`: the percentage of its raw size the mantissa bytes of one exponent
/// must save to be entropy coded (default 2); the others are stored raw and
/// decode at memory speed. `gain=100` stores all mantissas raw (fastest),
/// `gain=0` codes every exponent's mantissas that save anything. Measured on
/// MiniLM-BF16 (`examples/codec_speed.rs`, one core, AVX-512): gain 1 / 2 /
/// 3 / 100 give 66.03 / 66.09 / 66.17 / 66.34 % against a floor of
/// 65.85 %, and decode at 1.66 / 1.76 / 1.86 / 2.21 times `zstd -3`
/// (compress at 1.36 / 1.51 / 1.57 / 1.86 times); 2 is the largest gain
/// within 0.3 points of the floor.
#[derive(Debug, Clone, Copy)]
pub struct Exp {
    pub gain: u32,
}

impl Default for Exp {
    fn default() -> Self {
        Exp { gain: DEFAULT_GAIN }
    }
}

pub const EXP: StageDef = StageDef {
    id: 32,
    name: "exp",
    version: 1,
    kind: StageKind::Coder,
    summary: "float exponent split: exponent rANS-coded per chunk, sign+mantissa coded per exponent (all float dtypes)",
    examples: &["exp:gain=2", "exp:gain=0", "exp:gain=100"],
    build: |p: &mut Params, next| {
        if let Some(n) = next {
            return Err(Error::invalid(format!("'exp' is a coder and cannot feed '{}'", n.spec())));
        }
        let gain = p.int("gain", DEFAULT_GAIN as i64, 0, 100)? as u32;
        Ok(Box::new(Exp { gain }))
    },
};

/// Element width the split works on: the dtype's size for byte-sized float
/// types of 2 or more bytes, else 1 (byte symbols).
fn width(dtype: DType, len: usize) -> usize {
    match dtype.size() {
        Some(w @ (2 | 4 | 8)) if dtype.is_float() && len.is_multiple_of(w) => w,
        _ => 1,
    }
}

/// Split the head u16 of every element into the `E` and `SM` symbols.
fn split_head(data: &[u8], w: usize, e: &mut Vec<u8>, sm: &mut Vec<u8>) {
    let n = data.len() / w;
    e.clear();
    sm.clear();
    e.reserve(n);
    sm.reserve(n);
    let (es, ss) = (&mut e.spare_capacity_mut()[..n], &mut sm.spare_capacity_mut()[..n]);
    match w {
        2 => split_head_w::<2>(data, es, ss),
        4 => split_head_w::<4>(data, es, ss),
        _ => split_head_w::<8>(data, es, ss),
    }
    // SAFETY: `split_head_w` wrote all `n` symbols of both.
    unsafe {
        e.set_len(n);
        sm.set_len(n);
    }
}

/// [`split_head`] for elements of `W` bytes, into the `n` uninitialized
/// symbols of each output: a constant width lets the compiler vectorize
/// the loop (with the width a variable it read the input a byte at a time,
/// measured at a tenth of the encoder's time).
fn split_head_w<const W: usize>(data: &[u8], e: &mut [MaybeUninit<u8>], sm: &mut [MaybeUninit<u8>]) {
    let (els, _) = data.as_chunks::<W>();
    assert!(els.len() == e.len() && els.len() == sm.len());
    for ((el, e), sm) in els.iter().zip(e).zip(sm) {
        let h = u16::from_le_bytes([el[W - 2], el[W - 1]]);
        e.write((h >> 7) as u8);
        sm.write(((h >> 8) as u8 & 0x80) | (h as u8 & 0x7f));
    }
}

/// Byte `k` of every `W`-byte element.
fn plane_of<const W: usize>(data: &[u8], k: usize, plane: &mut [u8]) {
    let (els, _) = data.as_chunks::<W>();
    for (p, el) in plane.iter_mut().zip(els) {
        *p = el[k];
    }
}

impl Codec for Exp {
    fn spec(&self) -> String {
        format!("exp:gain={}", self.gain)
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let w = width(info.dtype, data.len());
        // A stream is at most its raw size and a few header bytes: room for
        // all of it up front, so that the output never moves as it grows.
        out.reserve(data.len() + 64 * w + 4096);
        out.push(w as u8);
        if w == 1 {
            return with_block(out, |o| encode_stream(data, None, o));
        }
        let (mut e, mut sm) = (Vec::new(), Vec::new());
        split_head(data, w, &mut e, &mut sm);
        with_block(out, |o| encode_stream(&e, None, o))?;
        let g = self.gain as f64 / 100.0;
        with_block(out, |o| encode_stream_with(&sm, Some(&e), g, o))?;
        let mut plane = sm;
        for k in (0..w - 2).rev() {
            match w {
                4 => plane_of::<4>(data, k, &mut plane),
                _ => plane_of::<8>(data, k, &mut plane),
            }
            with_block(out, |o| encode_stream_with(&plane, Some(&e), g, o))?;
        }
        Ok(())
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        decode(info, input, out, Assembly::best(), &mut |_| {})
    }
    fn decode_xxh3(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<u64> {
        let mut h = crate::container::xxh3_hasher();
        decode(info, input, out, Assembly::best(), &mut |piece| h.write(piece))?;
        Ok(h.finish())
    }
}

/// The elements the fused assemblies write between two calls of their
/// `tap` (16 KiB of BF16, 32 KiB of F32: in L1 still when it is hashed); a
/// multiple of 64.
const TAP_ELEMENTS: usize = 8192;

/// The blocks `(start, end)` of [`TAP_ELEMENTS`] elements (the last one
/// shorter) that cover elements `0..n`, in order.
#[cfg(target_arch = "x86_64")]
fn tap_blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(TAP_ELEMENTS).map(move |a| (a, (a + TAP_ELEMENTS).min(n)))
}

/// The 16-bit head of an element from its `E` and `SM` symbols (the inverse
/// of [`split_head`]).
#[inline(always)]
fn head(e: u8, s: u8) -> u16 {
    ((s as u16 & 0x80) << 8) | ((e as u16) << 7) | (s as u16 & 0x7f)
}

/// How [`decode`] puts 2- and 4-byte elements together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assembly {
    /// Each plane decoded and merged into its own buffer, then interleaved.
    Planes,
    /// One pass over 32 elements at a time (AVX2, [`fused2`]).
    Avx2,
    /// One pass over 64 elements at a time (AVX-512, [`fused`]).
    Avx512,
}

impl Assembly {
    /// The fastest the core has and the level ([`crate::codec::simd`]) allows.
    fn best() -> Assembly {
        match crate::codec::simd::level() {
            #[cfg(target_arch = "x86_64")]
            crate::codec::simd::Level::Avx512 => Assembly::Avx512,
            #[cfg(target_arch = "x86_64")]
            crate::codec::simd::Level::Avx2 => Assembly::Avx2,
            _ => Assembly::Planes,
        }
    }

    /// Every one this core has, whatever the level (the tests compare them).
    #[cfg(test)]
    fn all() -> Vec<Assembly> {
        let mut v = vec![Assembly::Planes];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::codec::simd::cpu_avx2() {
                v.push(Assembly::Avx2);
            }
            if crate::codec::simd::cpu_avx512() {
                v.push(Assembly::Avx512);
            }
        }
        v
    }
}

/// [`Exp`]'s decoder, putting elements together by `how` (which the core
/// must have: see [`Assembly::best`]). `tap` is given the whole output in
/// order, in pieces, each as soon as it is written (by the fused assemblies,
/// every [`TAP_ELEMENTS`]; otherwise all of it at the end).
fn decode(info: &ChunkInfo, input: &[u8], out: &mut [u8], how: Assembly, tap: &mut dyn FnMut(&[u8])) -> Result<()> {
    let mut r = Reader::new(input, "exp");
    let w = r.u8()? as usize;
    let want = width(info.dtype, out.len());
    if w != want {
        return Err(Error::corrupt(format!(
            "exp: element width {w} recorded, {want} expected for {} bytes of {}",
            out.len(),
            info.dtype
        )));
    }
    if w == 1 {
        decode_stream(r.block()?, None, out)?;
        r.finish()?;
        tap(out);
        return Ok(());
    }
    let n = out.len() / w;
    let mut e = EXPONENTS.take();
    e.resize(n, 0);
    let done = decode_elements(&mut r, w, &mut e, out, how, tap);
    if e.capacity() <= KEEP_EXPONENTS {
        EXPONENTS.set(e);
    }
    done
}

thread_local! {
    /// The exponent buffer of this thread's last decode, so that the next
    /// chunk's is not zero-filled again (1 MiB per 2 MiB of BF16).
    static EXPONENTS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest exponent buffer a thread keeps: that of a default 4 MiB
/// chunk of 2-byte elements.
const KEEP_EXPONENTS: usize = 2 << 20;

/// [`decode`] after the element width `w`, with `e` the buffer of the
/// exponents (one per element; its old contents are overwritten).
fn decode_elements(
    r: &mut Reader,
    w: usize,
    e: &mut [u8],
    out: &mut [u8],
    how: Assembly,
    tap: &mut dyn FnMut(&[u8]),
) -> Result<()> {
    let n = e.len();
    decode_stream(r.block()?, None, e)?;
    #[cfg(target_arch = "x86_64")]
    if (w == 2 || w == 4) && how != Assembly::Planes {
        let sm = decode_parts(r.block()?, Some(&*e), n)?;
        let (b1, b0) = if w == 4 {
            (Some(decode_parts(r.block()?, Some(&*e), n)?), Some(decode_parts(r.block()?, Some(&*e), n)?))
        } else {
            (None, None)
        };
        r.finish()?;
        // SAFETY: the caller picked an assembly the core has.
        unsafe {
            if how == Assembly::Avx512 {
                fused::assemble(e, sm, b1, b0, out, tap)
            } else {
                fused2::assemble(e, sm, b1, b0, out, tap)
            }
        };
        return Ok(());
    }
    let mut sm = vec![0u8; n];
    decode_stream(r.block()?, Some(&*e), &mut sm)?;
    if w == 2 {
        for ((o, &e), &s) in out.chunks_exact_mut(2).zip(&*e).zip(&sm) {
            o.copy_from_slice(&head(e, s).to_le_bytes());
        }
    } else if w == 4 {
        // F32: both lower planes, then every element in one pass (three
        // strided byte passes measured slower).
        let mut b1 = vec![0u8; n];
        decode_stream(r.block()?, Some(&*e), &mut b1)?;
        let mut b0 = vec![0u8; n];
        decode_stream(r.block()?, Some(&*e), &mut b0)?;
        for ((((o, &e), &s), &b1), &b0) in out.chunks_exact_mut(4).zip(&*e).zip(&sm).zip(&b1).zip(&b0) {
            let v = (head(e, s) as u32) << 16 | (b1 as u32) << 8 | b0 as u32;
            o.copy_from_slice(&v.to_le_bytes());
        }
    } else {
        for ((o, &e), &s) in out.chunks_exact_mut(w).zip(&*e).zip(&sm) {
            o[w - 2..].copy_from_slice(&head(e, s).to_le_bytes());
        }
        // The lower planes reuse the buffer.
        let plane = &mut sm;
        for k in (0..w - 2).rev() {
            decode_stream(r.block()?, Some(&*e), plane)?;
            for (o, &b) in out.chunks_exact_mut(w).zip(plane.iter()) {
                o[k] = b;
            }
        }
    }
    r.finish()?;
    tap(out);
    Ok(())
}

/// The AVX-512 decode of 2- and 4-byte elements: every plane's raw and
/// coded symbols merged ([`crate::codec::entropy::merge::x512`]) and the
/// bytes of 64 elements assembled in registers, in one pass over the
/// exponents, instead of a pass per plane and one to interleave them
/// (measured on MiniLM-BF16 with `examples/codec_speed.rs`: see the README).
#[cfg(target_arch = "x86_64")]
mod fused {
    use crate::codec::entropy::Parts;
    use crate::codec::entropy::merge::x512::{Merger, load, store, valid};
    use std::arch::x86_64::*;

    /// One plane's source of 64 bytes at a time.
    trait Source {
        /// The plane's bytes of the 64 elements from `i` with exponents
        /// `e`, of which those in `k` exist.
        fn next(&mut self, i: usize, e: __m512i, k: u64) -> __m512i;
    }

    struct Bytes<'a>(&'a [u8]);
    struct Const(__m512i);

    impl Source for Bytes<'_> {
        #[inline(always)]
        fn next(&mut self, i: usize, _: __m512i, _: u64) -> __m512i {
            // SAFETY: the caller has the features (every `Source` is used
            // inside `assemble` only).
            unsafe { load(self.0, i) }
        }
    }

    impl Source for Const {
        #[inline(always)]
        fn next(&mut self, _: usize, _: __m512i, _: u64) -> __m512i {
            self.0
        }
    }

    impl Source for Merger<'_> {
        #[inline(always)]
        fn next(&mut self, _: usize, e: __m512i, k: u64) -> __m512i {
            // SAFETY: as for `Bytes`.
            unsafe { Merger::next(self, e, k) }
        }
    }

    /// A plane whose kind is known only at run time (the lower planes of
    /// 4-byte elements; the sign+mantissa plane picks its loop by kind).
    #[allow(clippy::large_enum_variant)]
    enum Plane<'a> {
        Bytes(Bytes<'a>),
        Const(Const),
        Split(Merger<'a>),
    }

    impl Source for Plane<'_> {
        #[inline(always)]
        fn next(&mut self, i: usize, e: __m512i, k: u64) -> __m512i {
            match self {
                Plane::Bytes(p) => p.next(i, e, k),
                Plane::Const(p) => p.next(i, e, k),
                Plane::Split(p) => Source::next(p, i, e, k),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    fn plane<'a>(p: &'a Parts<'a>) -> Plane<'a> {
        match p {
            Parts::Bytes(b) => Plane::Bytes(Bytes(b)),
            Parts::Const(s) => Plane::Const(Const(_mm512_set1_epi8(*s as i8))),
            Parts::Split { flag, raw, coded } => Plane::Split(Merger::new(flag, raw, coded)),
        }
    }

    /// Byte `j` of the result: byte `j / 2 + base` of `a` for even `j`, of
    /// `b` for odd (the two-source permute's index, 64 + i for `b`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    fn zip_bytes(base: u8) -> __m512i {
        let idx: [u8; 64] = std::array::from_fn(|j| (j as u8 / 2 + base) | if j % 2 == 1 { 64 } else { 0 });
        // SAFETY: a 64-byte load from a 64-byte array.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    }

    /// As [`zip_bytes`] for 16-bit words (index 32 + i for `b`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    fn zip_words(base: u16) -> __m512i {
        let idx: [u16; 32] = std::array::from_fn(|j| (j as u16 / 2 + base) | if j % 2 == 1 { 32 } else { 0 });
        // SAFETY: a 64-byte load from a 64-byte array.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    }

    /// Write the elements (`out.len() / e.len()` bytes each, 2 or 4) from
    /// their exponents `e` and planes (for 4 bytes, `b1` and `b0` given),
    /// whose parts were checked against `e` by the entropy decoder. The
    /// loop is compiled for each kind of sign+mantissa plane (a match per
    /// block on it and the lower planes took about a third of the decode
    /// of whisper-tiny). `tap` gets the output in order, every
    /// [`super::TAP_ELEMENTS`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn assemble(
        e: &[u8],
        sm: Parts,
        b1: Option<Parts>,
        b0: Option<Parts>,
        out: &mut [u8],
        tap: &mut dyn FnMut(&[u8]),
    ) {
        let lower = b1.as_ref().zip(b0.as_ref()).map(|(b1, b0)| (plane(b1), plane(b0)));
        match plane(&sm) {
            Plane::Bytes(p) => run(e, p, lower, out, tap),
            Plane::Const(p) => run(e, p, lower, out, tap),
            Plane::Split(p) => run(e, p, lower, out, tap),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    fn run<S: Source>(e: &[u8], mut sm: S, lower: Option<(Plane, Plane)>, out: &mut [u8], tap: &mut dyn FnMut(&[u8])) {
        let n = e.len();
        debug_assert!(out.len() == 2 * n && lower.is_none() || out.len() == 4 * n && lower.is_some());
        let m7f = _mm512_set1_epi8(0x7f);
        let (zb0, zb1) = (zip_bytes(0), zip_bytes(32));
        let (zw0, zw1) = (zip_words(0), zip_words(16));
        // The 16-bit heads of the 64 elements from `i`, in two registers.
        let mut heads = |i: usize, k: u64| {
            let ev = load(e, i);
            let s = sm.next(i, ev, k);
            // The head's low byte: the mantissa's top 7 bits and the
            // exponent's low bit; its high byte: the sign and the rest of
            // the exponent (bit c of the mask picks the first operand).
            let lo = _mm512_ternarylogic_epi32::<0xE4>(s, _mm512_slli_epi16::<7>(ev), m7f);
            let hi = _mm512_ternarylogic_epi32::<0xE4>(_mm512_srli_epi16::<1>(ev), s, m7f);
            (ev, _mm512_permutex2var_epi8(lo, zb0, hi), _mm512_permutex2var_epi8(lo, zb1, hi))
        };
        match lower {
            None => {
                for (a, b) in super::tap_blocks(n) {
                    for i in (a..b).step_by(64) {
                        let left = (n - i).min(64);
                        let (_, h0, h1) = heads(i, valid(left));
                        store(out, 2 * i, h0, (2 * left).min(64));
                        if left > 32 {
                            store(out, 2 * i + 64, h1, 2 * left - 64);
                        }
                    }
                    tap(&out[2 * a..2 * b]);
                }
            }
            Some((mut p1, mut p0)) => {
                for (a, b) in super::tap_blocks(n) {
                    for i in (a..b).step_by(64) {
                        let left = (n - i).min(64);
                        let k = valid(left);
                        let (ev, h0, h1) = heads(i, k);
                        let v1 = p1.next(i, ev, k);
                        let v0 = p0.next(i, ev, k);
                        let l0 = _mm512_permutex2var_epi8(v0, zb0, v1);
                        let l1 = _mm512_permutex2var_epi8(v0, zb1, v1);
                        let words = [(l0, zw0, h0), (l0, zw1, h0), (l1, zw0, h1), (l1, zw1, h1)];
                        for (q, (l, z, h)) in words.into_iter().enumerate() {
                            let bytes = (4 * left).saturating_sub(64 * q).min(64);
                            if bytes > 0 {
                                store(out, 4 * i + 64 * q, _mm512_permutex2var_epi16(l, z, h), bytes);
                            }
                        }
                    }
                    tap(&out[4 * a..4 * b]);
                }
            }
        }
    }
}

/// The AVX2 decode of 2- and 4-byte elements: as [`fused`], 32 elements at
/// a time ([`crate::codec::entropy::merge::x2`]), the last partial block one
/// element at a time.
#[cfg(target_arch = "x86_64")]
mod fused2 {
    use crate::codec::entropy::Parts;
    use crate::codec::entropy::merge::x2::Merger;
    use std::arch::x86_64::*;

    /// One plane's source: 32 bytes at a time, or one.
    trait Source {
        /// The plane's bytes of the 32 elements from `i`, exponents `e`.
        fn next(&mut self, i: usize, e: __m256i) -> __m256i;
        /// The plane's byte of element `i`, exponent `e`.
        fn one(&mut self, i: usize, e: u8) -> u8;
    }

    struct Bytes<'a>(&'a [u8]);
    struct Const(u8, __m256i);

    impl Source for Bytes<'_> {
        #[inline(always)]
        fn next(&mut self, i: usize, _: __m256i) -> __m256i {
            let b = &self.0[i..i + 32];
            // SAFETY: 32 bytes (sliced above).
            unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
        }
        fn one(&mut self, i: usize, _: u8) -> u8 {
            self.0[i]
        }
    }

    impl Source for Const {
        #[inline(always)]
        fn next(&mut self, _: usize, _: __m256i) -> __m256i {
            self.1
        }
        fn one(&mut self, _: usize, _: u8) -> u8 {
            self.0
        }
    }

    impl Source for Merger<'_> {
        #[inline(always)]
        fn next(&mut self, _: usize, e: __m256i) -> __m256i {
            // SAFETY: the caller has the features (every `Source` is used
            // inside `assemble` only).
            unsafe { Merger::next(self, e) }
        }
        fn one(&mut self, _: usize, e: u8) -> u8 {
            Merger::one(self, e)
        }
    }

    /// A plane whose kind is known only at run time.
    enum Plane<'a> {
        Bytes(Bytes<'a>),
        Const(Const),
        Split(Box<Merger<'a>>),
    }

    impl Source for Plane<'_> {
        #[inline(always)]
        fn next(&mut self, i: usize, e: __m256i) -> __m256i {
            match self {
                Plane::Bytes(p) => p.next(i, e),
                Plane::Const(p) => p.next(i, e),
                Plane::Split(p) => Source::next(p.as_mut(), i, e),
            }
        }
        fn one(&mut self, i: usize, e: u8) -> u8 {
            match self {
                Plane::Bytes(p) => p.one(i, e),
                Plane::Const(p) => p.one(i, e),
                Plane::Split(p) => Source::one(p.as_mut(), i, e),
            }
        }
    }

    #[target_feature(enable = "avx2,popcnt")]
    fn plane<'a>(p: &'a Parts<'a>) -> Plane<'a> {
        match p {
            Parts::Bytes(b) => Plane::Bytes(Bytes(b)),
            Parts::Const(s) => Plane::Const(Const(*s, _mm256_set1_epi8(*s as i8))),
            Parts::Split { flag, raw, coded } => Plane::Split(Box::new(Merger::new(flag, raw, coded))),
        }
    }

    /// [`super::fused::assemble`] on AVX2.
    #[target_feature(enable = "avx2,popcnt")]
    pub fn assemble(
        e: &[u8],
        sm: Parts,
        b1: Option<Parts>,
        b0: Option<Parts>,
        out: &mut [u8],
        tap: &mut dyn FnMut(&[u8]),
    ) {
        let lower = b1.as_ref().zip(b0.as_ref()).map(|(b1, b0)| (plane(b1), plane(b0)));
        match plane(&sm) {
            Plane::Bytes(p) => run(e, p, lower, out, tap),
            Plane::Const(p) => run(e, p, lower, out, tap),
            Plane::Split(mut p) => run(e, p.as_mut(), lower, out, tap),
        }
    }

    impl<S: Source + ?Sized> Source for &mut S {
        #[inline(always)]
        fn next(&mut self, i: usize, e: __m256i) -> __m256i {
            (**self).next(i, e)
        }
        fn one(&mut self, i: usize, e: u8) -> u8 {
            (**self).one(i, e)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    fn run<S: Source>(e: &[u8], mut sm: S, lower: Option<(Plane, Plane)>, out: &mut [u8], tap: &mut dyn FnMut(&[u8])) {
        let n = e.len();
        debug_assert!(out.len() == 2 * n && lower.is_none() || out.len() == 4 * n && lower.is_some());
        let full = n / 32 * 32;
        let m7f = _mm256_set1_epi8(0x7f);
        // The heads of the 32 elements from `i` as two registers of 16-bit
        // words, per 128-bit half: (0-7, 16-23) and (8-15, 24-31).
        let mut heads = |i: usize| {
            // SAFETY: `i + 32 <= full <= e.len()`.
            let ev = unsafe { _mm256_loadu_si256(e.as_ptr().add(i).cast()) };
            let s = sm.next(i, ev);
            let lo = _mm256_or_si256(_mm256_and_si256(s, m7f), _mm256_andnot_si256(m7f, _mm256_slli_epi16::<7>(ev)));
            let hi = _mm256_or_si256(_mm256_andnot_si256(m7f, s), _mm256_and_si256(m7f, _mm256_srli_epi16::<1>(ev)));
            (ev, _mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi))
        };
        let store = |out: &mut [u8], at: usize, v: __m256i| {
            let o = &mut out[at..at + 32];
            // SAFETY: 32 bytes (sliced above).
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), v) }
        };
        match lower {
            None => {
                for (a, b) in super::tap_blocks(full) {
                    for i in (a..b).step_by(32) {
                        let (_, h0, h1) = heads(i);
                        store(out, 2 * i, _mm256_permute2x128_si256::<0x20>(h0, h1));
                        store(out, 2 * i + 32, _mm256_permute2x128_si256::<0x31>(h0, h1));
                    }
                    tap(&out[2 * a..2 * b]);
                }
                for i in full..n {
                    let s = sm.one(i, e[i]);
                    out[2 * i..2 * i + 2].copy_from_slice(&super::head(e[i], s).to_le_bytes());
                }
                tap(&out[2 * full..]);
            }
            Some((mut p1, mut p0)) => {
                for (a, b) in super::tap_blocks(full) {
                    for i in (a..b).step_by(32) {
                        let (ev, h0, h1) = heads(i);
                        let (v1, v0) = (p1.next(i, ev), p0.next(i, ev));
                        let (l0, l1) = (_mm256_unpacklo_epi8(v0, v1), _mm256_unpackhi_epi8(v0, v1));
                        // Elements (0-3, 16-19), (4-7, 20-23), (8-11, 24-27), (12-15, 28-31).
                        let w = [
                            _mm256_unpacklo_epi16(l0, h0),
                            _mm256_unpackhi_epi16(l0, h0),
                            _mm256_unpacklo_epi16(l1, h1),
                            _mm256_unpackhi_epi16(l1, h1),
                        ];
                        store(out, 4 * i, _mm256_permute2x128_si256::<0x20>(w[0], w[1]));
                        store(out, 4 * i + 32, _mm256_permute2x128_si256::<0x20>(w[2], w[3]));
                        store(out, 4 * i + 64, _mm256_permute2x128_si256::<0x31>(w[0], w[1]));
                        store(out, 4 * i + 96, _mm256_permute2x128_si256::<0x31>(w[2], w[3]));
                    }
                    tap(&out[4 * a..4 * b]);
                }
                for i in full..n {
                    let s = sm.one(i, e[i]);
                    let [lo, hi] = super::head(e[i], s).to_le_bytes();
                    let (b1, b0) = (p1.one(i, e[i]), p0.one(i, e[i]));
                    out[4 * i..4 * i + 4].copy_from_slice(&[b0, b1, lo, hi]);
                }
                tap(&out[4 * full..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::float::testdata::{Case, cases};
    use crate::codec::{build, decode_all, encode_all};

    fn info(dtype: DType) -> ChunkInfo<'static> {
        ChunkInfo { name: "t", dtype, shape: &[], offset: 0 }
    }

    #[test]
    fn round_trips_every_float_dtype_and_shape() {
        let c = build("exp").unwrap();
        assert_eq!(c.spec(), "exp:gain=2");
        assert_eq!(build("exp:gain=100").unwrap().spec(), "exp:gain=100");
        assert!(build("exp:gain=101").is_err());
        for Case { name, dtype, data } in cases() {
            let i = info(dtype);
            let enc = encode_all(&*c, &i, &data).unwrap();
            let dec = decode_all(&*c, &i, &enc, data.len()).unwrap();
            assert!(dec == data, "{name} ({dtype}): round trip differs");
        }
    }

    /// A thread's exponent buffer, kept from one decode to the next, never
    /// shows through: a long chunk of other exponents and then each case,
    /// longer and shorter, with every assembly; a buffer over the limit is
    /// not kept.
    #[test]
    fn a_kept_exponent_buffer_does_not_leak_into_the_next_decode() {
        let c = Exp::default();
        let big = crate::codec::float::testdata::gaussian(DType::BF16, 300_001, 3.0, 9);
        let big_enc = encode_all(&c, &info(DType::BF16), &big).unwrap();
        for how in Assembly::all() {
            for Case { name, dtype, data } in cases() {
                let mut out = vec![0u8; big.len()];
                decode(&info(DType::BF16), &big_enc, &mut out, how, &mut |_| {}).unwrap();
                assert!(out == big);
                let i = info(dtype);
                let enc = encode_all(&c, &i, &data).unwrap();
                let mut out = vec![0xA5u8; data.len()];
                decode(&i, &enc, &mut out, how, &mut |_| {}).unwrap();
                assert!(out == data, "{name} ({dtype}) after a longer chunk, {how:?}");
            }
        }
        let over = crate::codec::float::testdata::gaussian(DType::BF16, KEEP_EXPONENTS + 64, 0.1, 3);
        let enc = encode_all(&c, &info(DType::BF16), &over).unwrap();
        let mut out = vec![0u8; over.len()];
        decode(&info(DType::BF16), &enc, &mut out, Assembly::best(), &mut |_| {}).unwrap();
        assert!(out == over);
        let kept = EXPONENTS.take();
        assert!(kept.capacity() <= KEEP_EXPONENTS, "kept {} bytes", kept.capacity());
    }

    /// The one-pass assemblies the core has (AVX2, AVX-512) and the
    /// plane-by-plane decoder give the same bytes, on every case and at every
    /// gain (all contexts raw, some coded, all coded), and agree on which
    /// damaged streams fail.
    #[test]
    fn fused_and_plane_decoders_agree() {
        let mut rng = crate::tensor::synth::Rng::from_state(11);
        let mut cases = cases();
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            // Long enough for sampled plans and many 64-element blocks.
            let name = format!("wide gaussian {dtype}");
            cases.push(Case { name, dtype, data: crate::codec::float::testdata::gaussian(dtype, 70_001, 0.3, 5) });
        }
        for gain in [0, 3, 100] {
            let c = Exp { gain };
            for Case { name, dtype, data } in &cases {
                let i = info(*dtype);
                let raw = encode_all(&c, &i, data).unwrap();
                let mut b = vec![0u8; data.len()];
                decode(&i, &raw, &mut b, Assembly::Planes, &mut |_| {}).unwrap();
                assert!(b == *data, "{name} ({dtype}), gain {gain}, planes");
                for how in Assembly::all() {
                    // the tap sees every byte of the output, in order
                    let (mut a, mut tapped) = (vec![0u8; data.len()], Vec::new());
                    decode(&i, &raw, &mut a, how, &mut |p| tapped.extend_from_slice(p)).unwrap();
                    assert!(a == *data, "{name} ({dtype}), gain {gain}, {how:?}");
                    assert!(tapped == *data, "{name} ({dtype}), gain {gain}, {how:?}: the tap's bytes");
                }
                let mut a = vec![0u8; data.len()];
                assert_eq!(c.decode_xxh3(&i, &raw, &mut a).unwrap(), crate::container::xxh3_64(data), "{name}");
                for _ in 0..40 {
                    let mut bad = raw.clone();
                    if bad.is_empty() {
                        break;
                    }
                    let at = (rng.next_u64() % bad.len() as u64) as usize;
                    bad[at] ^= 1 << (rng.next_u64() % 8);
                    let rb = decode(&i, &bad, &mut b, Assembly::Planes, &mut |_| {});
                    for how in Assembly::all() {
                        let mut a = vec![0u8; data.len()];
                        let ra = decode(&i, &bad, &mut a, how, &mut |_| {});
                        assert_eq!(ra.is_ok(), rb.is_ok(), "{name}: byte {at} flipped, {how:?}");
                        if ra.is_ok() {
                            assert!(a == b, "{name}: byte {at} flipped, {how:?}: outputs differ");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_gaussian_is_within_the_floor() {
        let data = crate::codec::float::testdata::gaussian(DType::BF16, 1 << 19, 0.02, 7);
        let f = crate::analysis::entropy::field_entropy(DType::BF16, &data).unwrap();
        let enc = encode_all(&Exp::default(), &info(DType::BF16), &data).unwrap();
        let ratio = enc.len() as f64 / data.len() as f64;
        // The floor counts no model cost; allow 0.3 points.
        assert!(ratio < f.floor_ratio() + 0.003, "ratio {ratio:.4} vs floor {:.4}", f.floor_ratio());
        // And the coder is not cheating: it cannot beat the joint entropy.
        assert!(ratio > 0.5, "{ratio}");
    }

    #[test]
    fn truncated_and_corrupt_streams_give_errors() {
        let mut rng = crate::tensor::synth::Rng::from_state(3);
        for dtype in [DType::BF16, DType::F16, DType::F32, DType::F8E4M3] {
            let data = crate::codec::float::testdata::gaussian(dtype, 3000, 0.05, 1);
            let i = info(dtype);
            let enc = encode_all(&Exp::default(), &i, &data).unwrap();
            for cut in (0..enc.len()).step_by(7).chain([enc.len() - 1]) {
                assert!(decode_all(&Exp::default(), &i, &enc[..cut], data.len()).is_err(), "{dtype} cut {cut}");
            }
            for _ in 0..300 {
                let mut b = enc.clone();
                let at = (rng.next_u64() % b.len() as u64) as usize;
                b[at] ^= 1 << (rng.next_u64() % 8);
                let _ = decode_all(&Exp::default(), &i, &b, data.len());
            }
            assert!(decode_all(&Exp::default(), &i, &enc, data.len() - 2).is_err());
        }
    }
}
