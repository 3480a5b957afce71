//! Merging a context stream's two sources: the symbols of raw contexts
//! (stored) and of coded contexts (rANS), both in element order, picked by
//! whether each element's context is coded.
//!
//! In the float codecs about nine symbols in ten come from raw contexts and
//! the coded ones are scattered, so a per-symbol select (two cursors, a
//! flag lookup, a conditional move) cost more than decoding the exponents:
//! with it `exp` decoded MiniLM-BF16 at 332 MB/s, against 811 MB/s with every
//! mantissa stored raw (`examples/codec_speed.rs`, one core). Here the flags become one bit per
//! element first; then blocks of 64 elements with no coded one are copied,
//! and the others are expanded eight at a time with a shuffle table (SSSE3;
//! a scalar loop elsewhere).

/// One bit per element (bit `k` of word `b` is element `64 b + k`), set
/// where `flag[ctx]` is nonzero; and how many are set.
pub fn coded_masks(ctx: &[u8], flag: &[u8; 256]) -> (Vec<u64>, usize) {
    let mut masks = vec![0u64; ctx.len().div_ceil(64)];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available.
        done = unsafe { masks_avx2(ctx, flag, &mut masks) };
    }
    for (b, block) in ctx.chunks(64).enumerate().skip(done / 64) {
        let mut m = 0u64;
        for (k, &c) in block.iter().enumerate() {
            m |= ((flag[c as usize] != 0) as u64) << k;
        }
        masks[b] = m;
    }
    let total = masks.iter().map(|m| m.count_ones() as usize).sum();
    (masks, total)
}

/// The masks of whole 64-element blocks, 32 contexts at a time: the flag
/// table as a 256-bit set, looked up with two byte shuffles (the low nibble
/// picks a byte of the set's rows 0-7 or 8-15, the high nibble the bit).
/// Returns the elements done (a multiple of 64). Measured on MiniLM-BF16:
/// the scalar loop took about as long as decoding the exponents.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn masks_avx2(ctx: &[u8], flag: &[u8; 256], masks: &mut [u64]) -> usize {
    use std::arch::x86_64::*;
    // rows[h][l]: bit (h & 7) set when context (h << 4 | l) is flagged, in
    // the table of h < 8 (`lo_rows`) or h >= 8 (`hi_rows`).
    let mut lo_rows = [0u8; 16];
    let mut hi_rows = [0u8; 16];
    for (c, &f) in flag.iter().enumerate() {
        if f != 0 {
            let (h, l) = (c >> 4, c & 15);
            if h < 8 {
                lo_rows[l] |= 1 << h;
            } else {
                hi_rows[l] |= 1 << (h - 8);
            }
        }
    }
    let dup = |t: [u8; 16]| {
        // SAFETY: reads 16 bytes of a 16-byte array.
        let v = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
        _mm256_set_m128i(v, v)
    };
    let (lo_t, hi_t) = (dup(lo_rows), dup(hi_rows));
    let bits = dup([1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128]);
    let nib = _mm256_set1_epi8(0x0f);
    let seven = _mm256_set1_epi8(7);
    let zero = _mm256_setzero_si256();
    let full = ctx.len() / 64;
    for (b, m) in masks.iter_mut().enumerate().take(full) {
        let mut word = 0u64;
        for half in 0..2 {
            // SAFETY: `64 b + 32 half + 32 <= 64 full <= ctx.len()`.
            let c = unsafe { _mm256_loadu_si256(ctx.as_ptr().add(64 * b + 32 * half).cast()) };
            let l = _mm256_and_si256(c, nib);
            let h = _mm256_and_si256(_mm256_srli_epi16::<4>(c), nib);
            let row_lo = _mm256_shuffle_epi8(lo_t, l);
            let row_hi = _mm256_shuffle_epi8(hi_t, l);
            // h >= 8: take the high rows (h - 8 < 8 picks the bit below).
            let upper = _mm256_cmpgt_epi8(h, seven);
            let row = _mm256_blendv_epi8(row_lo, row_hi, upper);
            let bit = _mm256_shuffle_epi8(bits, _mm256_and_si256(h, seven));
            let hit = _mm256_cmpeq_epi8(_mm256_and_si256(row, bit), zero);
            let not_set = _mm256_movemask_epi8(hit) as u32;
            word |= ((!not_set) as u64) << (32 * half);
        }
        *m = word;
    }
    full * 64
}

/// The elements of `src` whose bit is set, in order (`n` of them).
pub fn gather(src: &[u8], masks: &[u64], n: usize) -> Vec<u8> {
    pack(masks, src, n, false)
}

/// The elements of `src` whose bit is clear, in order (`n` of them): with
/// [`gather`], the encoder's inverse of [`merge`].
pub fn split_clear(masks: &[u64], src: &[u8], n: usize) -> Vec<u8> {
    pack(masks, src, n, true)
}

/// The elements of `src` whose bit is set (or clear, with `clear`), in
/// order: `n` of them. Blocks of 64 with none to keep are skipped, blocks
/// of 64 to keep whole are copied, the others are packed eight at a time
/// with a shuffle table (SSSE3; a scalar loop elsewhere).
fn pack(masks: &[u64], src: &[u8], n: usize, clear: bool) -> Vec<u8> {
    debug_assert_eq!(masks.len(), src.len().div_ceil(64));
    // Eight bytes of slack: a packed group is stored whole.
    let mut out = vec![0u8; n + 8];
    let flip = if clear { !0u64 } else { 0 };
    let mut done = 0;
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("ssse3") {
        // SAFETY: SSSE3 is available.
        (done, at) = unsafe { pack_ssse3(masks, src, flip, &mut out) };
    }
    for (i, &b) in src.iter().enumerate().skip(done) {
        if (masks[i / 64] ^ flip) >> (i % 64) & 1 != 0 {
            out[at] = b;
            at += 1;
        }
    }
    assert_eq!(at, n, "pack: {at} elements kept, {n} expected");
    out.truncate(n);
    out
}

/// For each 8-bit mask: the `pshufb` control that packs the bytes whose bit
/// is set to the front, in order.
const fn pack_lut() -> [[u8; 8]; 256] {
    let mut lut = [[0x80u8; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0;
        let mut j = 0;
        while j < 8 {
            if m & (1 << j) != 0 {
                lut[m][k] = j as u8;
                k += 1;
            }
            j += 1;
        }
        m += 1;
    }
    lut
}
static PACK: [[u8; 8]; 256] = pack_lut();

/// [`pack`] over the whole 64-element blocks, keeping the elements whose
/// bit of `mask ^ flip` is set; returns the elements done and the bytes
/// written. `out` has 8 bytes of slack past the kept elements (every group
/// is stored as 8 bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn pack_ssse3(masks: &[u64], src: &[u8], flip: u64, out: &mut [u8]) -> (usize, usize) {
    use std::arch::x86_64::*;
    let full = src.len() / 64;
    let mut at = 0usize;
    for (b, &m) in masks.iter().enumerate().take(full) {
        let keep = m ^ flip;
        if keep == 0 {
            continue;
        }
        let s = &src[b * 64..b * 64 + 64];
        if keep == !0 {
            out[at..at + 64].copy_from_slice(s);
            at += 64;
            continue;
        }
        for (j, s8) in s.chunks_exact(8).enumerate() {
            let k = (keep >> (8 * j)) as u8;
            let v = _mm_cvtsi64_si128(i64::from_le_bytes(s8.try_into().expect("8 bytes")));
            let ctl = _mm_cvtsi64_si128(i64::from_le_bytes(PACK[k as usize]));
            let packed = _mm_cvtsi128_si64(_mm_shuffle_epi8(v, ctl)) as u64;
            out[at..at + 8].copy_from_slice(&packed.to_le_bytes());
            at += k.count_ones() as usize;
        }
    }
    (full * 64, at)
}

/// `out[i]` = the next coded symbol where bit `i` is set, else the next raw
/// one. The caller has checked `raw.len() + coded.len() == out.len()` and
/// that `coded.len()` is the number of set bits.
pub fn merge(masks: &[u64], raw: &[u8], coded: &[u8], out: &mut [u8]) {
    debug_assert_eq!(raw.len() + coded.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("ssse3") {
        // SAFETY: SSSE3 is available.
        return unsafe { merge_ssse3(masks, raw, coded, out) };
    }
    merge_scalar(masks, raw, coded, out, 0, 0, 0);
}

/// The scalar merge from element `start` with cursors `ir` and `ic`.
fn merge_scalar(masks: &[u64], raw: &[u8], coded: &[u8], out: &mut [u8], start: usize, mut ir: usize, mut ic: usize) {
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        if masks[i / 64] >> (i % 64) & 1 != 0 {
            *o = coded[ic];
            ic += 1;
        } else {
            *o = raw[ir];
            ir += 1;
        }
    }
}

/// For each 8-bit mask: the `pshufb` control that spreads the next bytes of
/// a source over the positions whose bit is set (0x80, a zero, elsewhere).
const fn expand_lut() -> [[u8; 8]; 256] {
    let mut lut = [[0x80u8; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0;
        let mut j = 0;
        while j < 8 {
            if m & (1 << j) != 0 {
                lut[m][j] = k;
                k += 1;
            }
            j += 1;
        }
        m += 1;
    }
    lut
}
static EXPAND: [[u8; 8]; 256] = expand_lut();

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn merge_ssse3(masks: &[u64], raw: &[u8], coded: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let (mut ir, mut ic) = (0usize, 0usize);
    let load8 = |s: &[u8], at: usize| -> __m128i {
        // 8 bytes when they exist, else the rest padded with zeros.
        let b = match s.get(at..at + 8) {
            Some(b) => b.try_into().expect("8 bytes"),
            None => {
                let mut b = [0u8; 8];
                let have = s.len().saturating_sub(at).min(8);
                b[..have].copy_from_slice(&s[at..at + have]);
                b
            }
        };
        _mm_cvtsi64_si128(i64::from_le_bytes(b))
    };
    let full = out.len() / 64;
    for (b, &m) in masks.iter().enumerate().take(full) {
        let o = &mut out[b * 64..b * 64 + 64];
        if m == 0 {
            o.copy_from_slice(&raw[ir..ir + 64]);
            ir += 64;
            continue;
        }
        for (j, o8) in o.chunks_exact_mut(8).enumerate() {
            let mb = (m >> (8 * j)) as u8;
            if mb == 0 {
                o8.copy_from_slice(&raw[ir..ir + 8]);
                ir += 8;
                continue;
            }
            let lut = |k: u8| _mm_cvtsi64_si128(i64::from_le_bytes(EXPAND[k as usize]));
            let v = _mm_or_si128(_mm_shuffle_epi8(load8(coded, ic), lut(mb)), _mm_shuffle_epi8(load8(raw, ir), lut(!mb)));
            o8.copy_from_slice(&(_mm_cvtsi128_si64(v) as u64).to_le_bytes());
            let k = mb.count_ones() as usize;
            ic += k;
            ir += 8 - k;
        }
    }
    merge_scalar(masks, raw, coded, out, full * 64, ir, ic);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_flag_every_context_right() {
        let mut r = crate::tensor::synth::Rng::from_state(9);
        let ctx: Vec<u8> = (0..256 * 5 + 17).map(|i| (i % 256) as u8 ^ (r.next_u64() as u8 & 0x11)).collect();
        for trial in 0..50 {
            let mut flag = [0u8; 256];
            for f in flag.iter_mut() {
                *f = (r.next_u64() % 100 < trial * 2) as u8;
            }
            let (masks, k) = coded_masks(&ctx, &flag);
            let mut want = 0;
            for (i, &c) in ctx.iter().enumerate() {
                let bit = masks[i / 64] >> (i % 64) & 1;
                assert_eq!(bit, flag[c as usize] as u64, "context {c} at {i}");
                want += bit as usize;
            }
            assert_eq!(k, want);
        }
    }

    #[test]
    fn merge_matches_a_plain_select() {
        let mut r = crate::tensor::synth::Rng::from_state(5);
        for n in [0usize, 1, 7, 8, 63, 64, 65, 200, 1000, 4097] {
            for density in [0u64, 3, 50, 97, 100] {
                let ctx: Vec<u8> = (0..n).map(|_| (r.next_u64() % 100 < density) as u8).collect();
                let syms: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
                let mut flag = [0u8; 256];
                flag[1] = 1;
                let (masks, k) = coded_masks(&ctx, &flag);
                for (i, &c) in ctx.iter().enumerate() {
                    assert_eq!(masks[i / 64] >> (i % 64) & 1, c as u64, "mask bit {i}");
                }
                let raw: Vec<u8> = syms.iter().zip(&ctx).filter(|(_, c)| **c == 0).map(|(s, _)| *s).collect();
                let coded: Vec<u8> = syms.iter().zip(&ctx).filter(|(_, c)| **c == 1).map(|(s, _)| *s).collect();
                assert_eq!(k, coded.len());
                assert_eq!(gather(&ctx, &masks, k), vec![1u8; k]);
                assert_eq!(gather(&syms, &masks, k), coded, "gather, n {n}, density {density}");
                let mut out = vec![0u8; n];
                merge(&masks, &raw, &coded, &mut out);
                assert_eq!(out, syms, "n {n}, density {density}");
                assert_eq!(split_clear(&masks, &syms, n - k), raw, "split, n {n}, density {density}");
                let mut out2 = vec![0u8; n];
                merge_scalar(&masks, &raw, &coded, &mut out2, 0, 0, 0);
                assert_eq!(out2, syms);
            }
        }
    }
}
