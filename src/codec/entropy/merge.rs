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
    if crate::codec::simd::avx2() {
        // SAFETY: AVX2 and POPCNT are available.
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

/// The masks of whole 64-element blocks, 32 contexts at a time
/// ([`x2::FlagSet`]). Returns the elements done (a multiple of 64). Measured
/// on MiniLM-BF16: the scalar loop took about as long as decoding the
/// exponents.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn masks_avx2(ctx: &[u8], flag: &[u8; 256], masks: &mut [u64]) -> usize {
    use std::arch::x86_64::*;
    let set = x2::FlagSet::new(flag);
    let full = ctx.len() / 64;
    for (b, m) in masks.iter_mut().enumerate().take(full) {
        // SAFETY: `64 b + 64 <= 64 full <= ctx.len()`.
        let (c0, c1) = unsafe {
            (
                _mm256_loadu_si256(ctx.as_ptr().add(64 * b).cast()),
                _mm256_loadu_si256(ctx.as_ptr().add(64 * b + 32).cast()),
            )
        };
        *m = set.mask(c0) as u64 | (set.mask(c1) as u64) << 32;
    }
    full * 64
}

/// 8 bytes of `s` from `at` as a little-endian word, zeros past its end.
#[inline(always)]
fn load8(s: &[u8], at: usize) -> u64 {
    match s.get(at..at + 8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => {
            let mut b = [0u8; 8];
            let have = s.len().saturating_sub(at).min(8);
            b[..have].copy_from_slice(&s[at..at + have]);
            u64::from_le_bytes(b)
        }
    }
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
    if crate::codec::simd::ssse3() {
        // SAFETY: SSSE3 and POPCNT are available.
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
#[target_feature(enable = "ssse3,popcnt")]
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
    if crate::codec::simd::ssse3() {
        // SAFETY: SSSE3 and POPCNT are available.
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
#[target_feature(enable = "ssse3,popcnt")]
unsafe fn merge_ssse3(masks: &[u64], raw: &[u8], coded: &[u8], out: &mut [u8]) {
    let (mut ir, mut ic) = (0usize, 0usize);
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
            o8.copy_from_slice(&merge8(mb, raw, &mut ir, coded, &mut ic).to_le_bytes());
        }
    }
    merge_scalar(masks, raw, coded, out, full * 64, ir, ic);
}

/// Eight merged symbols, the elements of bit set in `mb` from `coded` at
/// `*ic`, the others from `raw` at `*ir` (both cursors advanced), spread by
/// the shuffle table: the step of [`merge_ssse3`] and [`x2::Merger`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "ssse3,popcnt")]
fn merge8(mb: u8, raw: &[u8], ir: &mut usize, coded: &[u8], ic: &mut usize) -> u64 {
    use std::arch::x86_64::*;
    let spread = |s: &[u8], at: usize, k: u8| {
        _mm_shuffle_epi8(
            _mm_cvtsi64_si128(load8(s, at) as i64),
            _mm_cvtsi64_si128(i64::from_le_bytes(EXPAND[k as usize])),
        )
    };
    let v = _mm_cvtsi128_si64(_mm_or_si128(spread(coded, *ic, mb), spread(raw, *ir, !mb))) as u64;
    let k = mb.count_ones() as usize;
    *ic += k;
    *ir += 8 - k;
    v
}

/// `out[i]` = the next coded symbol where `flag[ctx[i]]` is set, else the
/// next raw one: [`merge`] without a bitmask array on cores with
/// [`x512`], else by [`coded_masks`] and [`merge`]. The caller has checked
/// that `raw.len() + coded.len() == out.len() == ctx.len()` and that
/// `coded.len()` is the number of flagged elements.
pub fn merge_flagged(ctx: &[u8], flag: &[u8; 256], raw: &[u8], coded: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if x512::available() {
        // SAFETY: the features are available.
        return unsafe { x512::merge(ctx, flag, raw, coded, out) };
    }
    let (masks, _) = coded_masks(ctx, flag);
    merge(&masks, raw, coded, out);
}

/// The contexts of the flagged elements, in order (what the coded symbols
/// are decoded with).
pub fn flagged(ctx: &[u8], flag: &[u8; 256]) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if x512::available() {
        // SAFETY: the features are available.
        let [cc] = unsafe { x512::pack_by_flags(ctx, flag, [(ctx, false)]) };
        return cc;
    }
    let (masks, k) = coded_masks(ctx, flag);
    gather(ctx, &masks, k)
}

/// The encoder's split of `syms` by `flag[ctx]`: the unflagged symbols
/// (stored raw), the flagged ones and their contexts (coded), each in order.
pub fn split_flagged(syms: &[u8], ctx: &[u8], flag: &[u8; 256]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    debug_assert_eq!(syms.len(), ctx.len());
    #[cfg(target_arch = "x86_64")]
    if x512::available() {
        // SAFETY: the features are available.
        return unsafe { x512::split(syms, ctx, flag) };
    }
    let (masks, k) = coded_masks(ctx, flag);
    (split_clear(&masks, syms, syms.len() - k), gather(syms, &masks, k), gather(ctx, &masks, k))
}

/// The histogram of the symbols whose flag is zero (rare where the flags
/// are a sample's support): a lookup per 64 symbols by [`x512`], a
/// per-symbol test elsewhere.
pub fn count_unflagged(syms: &[u8], flag: &[u8; 256]) -> [u64; 256] {
    #[cfg(target_arch = "x86_64")]
    if x512::available() {
        // SAFETY: the features are available.
        return unsafe { x512::count_unflagged(syms, flag) };
    }
    let mut h = [0u64; 256];
    for &s in syms {
        if flag[s as usize] == 0 {
            h[s as usize] += 1;
        }
    }
    h
}

/// AVX2 merging, for the fused float decode on cores without AVX-512: the
/// flags of 32 contexts looked up at once in a 256-bit set, and the raw and
/// coded symbols spread over their positions eight at a time by shuffle
/// tables.
///
/// # Safety
/// Every function here needs the CPU features that [`x2::available`]
/// checks: code without them enabled must call it first.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod x2 {
    use super::merge8;
    use std::arch::x86_64::*;

    /// The core has the features and the level ([`crate::codec::simd`])
    /// allows them.
    pub fn available() -> bool {
        crate::codec::simd::avx2()
    }

    /// A 256-entry flag table as a 256-bit set in two 16-byte rows
    /// (duplicated in both halves of a register): bit `h & 7` of byte `l` of
    /// row `h >> 3` is set when context `h << 4 | l` is flagged. Looked up
    /// with two byte shuffles: the low nibble picks a byte of each row, the
    /// high nibble the row and the bit.
    #[derive(Clone, Copy)]
    pub struct FlagSet {
        lo: __m256i,
        hi: __m256i,
        bits: __m256i,
    }

    impl FlagSet {
        #[target_feature(enable = "avx2,popcnt")]
        pub fn new(flag: &[u8; 256]) -> FlagSet {
            let mut rows = [[0u8; 16]; 2];
            for (c, &f) in flag.iter().enumerate() {
                if f != 0 {
                    let (h, l) = (c >> 4, c & 15);
                    rows[h >> 3][l] |= 1 << (h & 7);
                }
            }
            let dup = |t: [u8; 16]| {
                // SAFETY: reads 16 bytes of a 16-byte array.
                let v = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
                _mm256_set_m128i(v, v)
            };
            FlagSet {
                lo: dup(rows[0]),
                hi: dup(rows[1]),
                bits: dup([1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128]),
            }
        }

        /// Bit `k` set where context byte `k` of `c` is flagged.
        #[inline]
        #[target_feature(enable = "avx2,popcnt")]
        pub fn mask(&self, c: __m256i) -> u32 {
            let nib = _mm256_set1_epi8(0x0f);
            let l = _mm256_and_si256(c, nib);
            let h = _mm256_and_si256(_mm256_srli_epi16::<4>(c), nib);
            let row = _mm256_blendv_epi8(
                _mm256_shuffle_epi8(self.lo, l),
                _mm256_shuffle_epi8(self.hi, l),
                _mm256_cmpgt_epi8(h, _mm256_set1_epi8(7)),
            );
            let bit = _mm256_shuffle_epi8(self.bits, _mm256_and_si256(h, _mm256_set1_epi8(7)));
            !(_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_and_si256(row, bit), _mm256_setzero_si256())) as u32)
        }
    }

    /// A context stream's two sources, merged 32 elements at a time.
    pub struct Merger<'a> {
        set: FlagSet,
        flag: &'a [u8; 256],
        raw: &'a [u8],
        coded: &'a [u8],
        ir: usize,
        ic: usize,
    }

    impl<'a> Merger<'a> {
        #[target_feature(enable = "avx2,popcnt")]
        pub fn new(flag: &'a [u8; 256], raw: &'a [u8], coded: &'a [u8]) -> Merger<'a> {
            Merger { set: FlagSet::new(flag), flag, raw, coded, ir: 0, ic: 0 }
        }

        /// The symbols of the next 32 elements, with contexts `c`.
        #[inline]
        #[target_feature(enable = "avx2,popcnt")]
        pub fn next(&mut self, c: __m256i) -> __m256i {
            let m = self.set.mask(c);
            let q: [i64; 4] = std::array::from_fn(|j| {
                merge8((m >> (8 * j)) as u8, self.raw, &mut self.ir, self.coded, &mut self.ic) as i64
            });
            _mm256_set_epi64x(q[3], q[2], q[1], q[0])
        }

        /// The symbol of the next element, with context `c`.
        #[inline]
        pub fn one(&mut self, c: u8) -> u8 {
            let (src, at) =
                if self.flag[c as usize] != 0 { (self.coded, &mut self.ic) } else { (self.raw, &mut self.ir) };
            let s = src.get(*at).copied().unwrap_or(0);
            *at += 1;
            s
        }
    }
}

/// AVX-512 (F, BW, VBMI, VBMI2) merging: the flags of 64 contexts looked
/// up at once in the 256-byte flag table held in four registers (two
/// two-source byte permutes and a blend on the context's top bit), and the
/// raw and coded symbols spread over their positions by byte expands (or
/// packed by byte compresses), so that no bitmask array is built.
///
/// # Safety
/// Every function here needs the CPU features that [`x512::available`]
/// checks: code without them enabled must call it first.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod x512 {
    use std::arch::x86_64::*;

    /// The core has the features this module's functions need and the
    /// level ([`crate::codec::simd`]: `WEIGHTLAB_SIMD`, or its alias
    /// `WEIGHTLAB_NO_AVX512`) allows them.
    pub fn available() -> bool {
        crate::codec::simd::avx512()
    }

    /// A 256-entry byte table of flags in four registers.
    #[derive(Clone, Copy)]
    pub struct Flags([__m512i; 4]);

    impl Flags {
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
        pub fn new(flag: &[u8; 256]) -> Flags {
            // SAFETY: four 64-byte loads from a 256-byte array.
            Flags(std::array::from_fn(|k| unsafe { _mm512_loadu_si512(flag.as_ptr().add(64 * k).cast()) }))
        }

        /// Byte `k`: the table's entry for context byte `k` of `c`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
        pub fn lookup(&self, c: __m512i) -> __m512i {
            let lo = _mm512_permutex2var_epi8(self.0[0], c, self.0[1]);
            let hi = _mm512_permutex2var_epi8(self.0[2], c, self.0[3]);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi)
        }

        /// Bit `k` set where the flag of context byte `k` of `c` is nonzero.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
        pub fn mask(&self, c: __m512i) -> u64 {
            let r = self.lookup(c);
            _mm512_test_epi8_mask(r, r)
        }
    }

    /// Up to 64 bytes of `s` from `at`, zeros past its end (a masked load
    /// never touches the bytes it masks off).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn load(s: &[u8], at: usize) -> __m512i {
        let at = at.min(s.len());
        let rem = s.len() - at;
        // SAFETY: `at <= s.len()`; a full load has 64 bytes left, a masked
        // one reads only the `rem` bytes left.
        unsafe {
            if rem >= 64 {
                _mm512_loadu_si512(s.as_ptr().add(at).cast())
            } else {
                _mm512_maskz_loadu_epi8(_bzhi_u64(!0, rem as u32), s.as_ptr().add(at).cast())
            }
        }
    }

    /// The mask of the first `min(n, 64)` elements of a block.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn valid(n: usize) -> u64 {
        if n >= 64 { !0 } else { _bzhi_u64(!0, n as u32) }
    }

    /// Stores the first `n` (at most 64) bytes of `v` at `out[at..]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn store(out: &mut [u8], at: usize, v: __m512i, n: usize) {
        assert!(at + n <= out.len() && n <= 64);
        // SAFETY: in bounds (asserted); a masked store writes `n` bytes.
        unsafe {
            if n == 64 {
                _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), v)
            } else {
                _mm512_mask_storeu_epi8(out.as_mut_ptr().add(at).cast(), _bzhi_u64(!0, n as u32), v)
            }
        }
    }

    /// A context stream's two sources, merged 64 elements at a time.
    pub struct Merger<'a> {
        flags: Flags,
        raw: &'a [u8],
        coded: &'a [u8],
        ir: usize,
        ic: usize,
    }

    impl<'a> Merger<'a> {
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
        pub fn new(flag: &[u8; 256], raw: &'a [u8], coded: &'a [u8]) -> Merger<'a> {
            Merger { flags: Flags::new(flag), raw, coded, ir: 0, ic: 0 }
        }

        /// The symbols of the next block of elements, with contexts `c`, of
        /// which the elements of `valid` (the low bits) exist.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
        pub fn next(&mut self, c: __m512i, valid: u64) -> __m512i {
            let k = self.flags.mask(c) & valid;
            let nk = !k & valid;
            let vc = _mm512_maskz_expand_epi8(k, load(self.coded, self.ic));
            let vr = _mm512_maskz_expand_epi8(nk, load(self.raw, self.ir));
            self.ic += k.count_ones() as usize;
            self.ir += nk.count_ones() as usize;
            _mm512_or_si512(vc, vr)
        }
    }

    /// [`super::merge_flagged`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn merge(ctx: &[u8], flag: &[u8; 256], raw: &[u8], coded: &[u8], out: &mut [u8]) {
        let mut m = Merger::new(flag, raw, coded);
        for i in (0..ctx.len()).step_by(64) {
            let n = (ctx.len() - i).min(64);
            let v = m.next(load(ctx, i), valid(n));
            store(out, i, v, n);
        }
    }

    /// [`super::count_unflagged`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn count_unflagged(syms: &[u8], flag: &[u8; 256]) -> [u64; 256] {
        let f = Flags::new(flag);
        let mut h = [0u64; 256];
        for i in (0..syms.len()).step_by(64) {
            let mut k = !f.mask(load(syms, i)) & valid(syms.len() - i);
            while k != 0 {
                h[syms[i + k.trailing_zeros() as usize] as usize] += 1;
                k &= k - 1;
            }
        }
        h
    }

    /// [`super::split_flagged`], in one pass.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn split(syms: &[u8], ctx: &[u8], flag: &[u8; 256]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let [raw, cs, cc] = pack_by_flags(ctx, flag, [(syms, true), (syms, false), (ctx, false)]);
        (raw, cs, cc)
    }

    /// For each `(src, clear)`: the elements of `src` whose `flag[ctx]` is
    /// set (clear, with `clear`), in order; all of them in one pass over
    /// `ctx`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")]
    pub fn pack_by_flags<const K: usize>(ctx: &[u8], flag: &[u8; 256], srcs: [(&[u8], bool); K]) -> [Vec<u8>; K] {
        let n = ctx.len();
        assert!(srcs.iter().all(|(s, _)| s.len() == n));
        let f = Flags::new(flag);
        // Every block is stored whole, so each output has room for all
        // elements and 64 bytes; only what is written is ever touched.
        let mut outs: [Vec<u8>; K] = std::array::from_fn(|_| Vec::with_capacity(n + 64));
        let mut at = [0usize; K];
        for i in (0..n).step_by(64) {
            let k = f.mask(load(ctx, i)) & valid(n - i);
            for (j, &(src, clear)) in srcs.iter().enumerate() {
                let kk = if clear { !k & valid(n - i) } else { k };
                // SAFETY: `at[j] <= i < n`, so 64 bytes from `at[j]` are within the capacity.
                unsafe {
                    _mm512_storeu_si512(
                        outs[j].as_mut_ptr().add(at[j]).cast(),
                        _mm512_maskz_compress_epi8(kk, load(src, i)),
                    )
                };
                at[j] += kk.count_ones() as usize;
            }
        }
        for (o, &a) in outs.iter_mut().zip(&at) {
            // SAFETY: the first `a` bytes were written by the stores above.
            unsafe { o.set_len(a) };
        }
        outs
    }
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

    /// The flag-driven merge, split and context gather (AVX-512 where the
    /// core has it) against a plain filter, on lengths around the block
    /// size and flag densities from none to all.
    #[test]
    fn flagged_merge_and_split_match_a_plain_filter() {
        let mut r = crate::tensor::synth::Rng::from_state(13);
        for n in [0usize, 1, 63, 64, 65, 127, 128, 129, 1000, 4097] {
            for density in [0u64, 5, 50, 100] {
                let ctx: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
                let syms: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
                let mut flag = [0u8; 256];
                for f in flag.iter_mut() {
                    *f = (r.next_u64() % 100 < density) as u8 * (1 + r.next_u64() as u8 % 200);
                }
                let on = |c: &u8| flag[*c as usize] != 0;
                let raw: Vec<u8> = syms.iter().zip(&ctx).filter(|(_, c)| !on(c)).map(|(s, _)| *s).collect();
                let coded: Vec<u8> = syms.iter().zip(&ctx).filter(|(_, c)| on(c)).map(|(s, _)| *s).collect();
                let cc: Vec<u8> = ctx.iter().filter(|c| on(c)).copied().collect();
                assert_eq!(flagged(&ctx, &flag), cc, "n {n}, density {density}");
                assert_eq!(
                    split_flagged(&syms, &ctx, &flag),
                    (raw.clone(), coded.clone(), cc),
                    "n {n}, density {density}"
                );
                let mut out = vec![0u8; n];
                merge_flagged(&ctx, &flag, &raw, &coded, &mut out);
                assert_eq!(out, syms, "n {n}, density {density}");
            }
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
