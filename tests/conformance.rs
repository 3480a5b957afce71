//! The conformance suite, driven by the codec registry
//! ([`weightlab::codec::REGISTRY`]): every stage it lists is checked through
//! the example specs of its descriptor (`StageDef::examples`), so a stage
//! added to the registry is covered without editing this file, and one
//! added without examples fails here.
//!
//! For every stage and example spec:
//! - the spec is canonical: `build(spec).spec() == spec`, and its ids are
//!   the registry's;
//! - round trips over the seeded cases (every dtype the synthetic model
//!   has; the float cases of `codec::float::testdata`: gaussian, heavy
//!   tails, zeros, NaN/inf/subnormal/-0, empty, tiny, odd lengths, a single
//!   exponent, random bits; constant and low-cardinality tensors), one
//!   chunk at a time and through the container (`container::compress`,
//!   `Archive::open`, `stream`) at several chunk sizes: lossless stages bit
//!   for bit, lossy ones within the bound they declare (the recorded bound
//!   in an archive), non-finite values and non-float tensors bit for bit;
//! - every prefix of its stream is an error, and every flipped byte (a
//!   seeded sample of them in long streams) is an error or a decode of the
//!   right length, never a panic; no decode of a damaged stream (nor of a
//!   good one into a wrong length) allocates more than
//!   [`ALLOC_FACTOR`] × the chunk's decoded length + [`ALLOC_SLACK`].
//!
//! Flipped bytes that decode: no stage format carries a checksum of its
//! own (the container checks the xxh3 of every chunk's encoded and decoded
//! bytes, see `tests/archive.rs`), so a flip can decode to other bytes:
//! - `raw`, and the raw parts of every other format (`exp`/`table`/`sz`
//!   entropy streams store incompressible symbols raw, `const` its value,
//!   `table` its values, `int8`/`int4` scales and exceptions, `sz` its
//!   exact values and error bound), decode a flip as a different value;
//! - `lz4`, `deflate`, `xz` (written without its check), `zstd` (frames
//!   without checksum) and `blosc2` decode many flips of literals;
//! - the rANS payloads fail on most flips (every lane must end in its
//!   initial state with every word used), but not all.
//!
//! The SIMD part runs the rANS coders, the context merge and `exp` at every
//! level the core has ([`weightlab::codec::simd::levels`]): each level must
//! write the bytes the scalar code writes and decode them, and damaged
//! streams must fail or decode the same at every level.
//!
//! The golden archives (one per stage id) are in `tests/archive.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use weightlab::codec::float::testdata;
use weightlab::codec::simd::{self, Level};
use weightlab::codec::{self, ChunkInfo, Codec, Fidelity, REGISTRY, StageKind, build, entropy};
use weightlab::container::{self, Archive, CompressOptions, DecodeOptions};
use weightlab::metrics::error::error_stats;
use weightlab::tensor::synth::{self, Rng};
use weightlab::tensor::{DType, SafeTensors, safetensors};

// --- allocation accounting ---------------------------------------------------

/// Counts, per thread, the bytes live and the peak since the last
/// [`peak_during`]: a decoder's allocations run on the calling thread (the
/// container's decode is not used under it).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// accounting touches only const-initialized thread-locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f` and return the most bytes it had allocated at once (on this
/// thread, beyond what was live before).
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(|p| p.get());
    (r, (peak - base).max(0) as usize)
}

/// A decode may hold this many times the chunk's decoded length: its
/// legitimate buffers are a few per element (`sz` keeps an f64 per element
/// and u32 codes, 6 bytes per byte of a BF16 chunk, plus its code planes;
/// `int8` an i32 per element and up to (4 + w) bytes of exceptions each;
/// the largest measured, on the 140 KB BF16 case, was 10.9 times, the
/// output buffer included).
const ALLOC_FACTOR: usize = 12;
/// Plus this much whatever the length: decoding tables (at most 16 rANS
/// models of 2^10 slots, or one of 2^12, at 9 bytes a slot), a context flag
/// table, a parsed spec.
const ALLOC_SLACK: usize = 512 << 10;

/// The largest peak seen per byte decoded (× 100, chunks of 4 KiB and up),
/// printed by the damage tests.
static MAX_PEAK_RATIO: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn alloc_bound(decoded_len: usize) -> usize {
    ALLOC_FACTOR * decoded_len + ALLOC_SLACK
}

// --- cases -------------------------------------------------------------------

#[derive(Clone)]
struct Case {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

impl Case {
    fn info(&self) -> ChunkInfo<'_> {
        ChunkInfo { name: &self.name, dtype: self.dtype, shape: &self.shape, offset: 0 }
    }
}

/// The shape of `bytes` bytes of `dtype`: two dims (rows of 16 elements)
/// where they divide, so that the 2-D predictors and the quantizers (which
/// keep vectors lossless) see a matrix.
fn shape_of(dtype: DType, bytes: usize) -> Vec<u64> {
    let n = bytes as u64 * 8 / dtype.bits() as u64;
    if n >= 64 && n.is_multiple_of(16) && dtype.byte_len(16).is_ok() { vec![n / 16, 16] } else { vec![n] }
}

fn case(name: String, dtype: DType, data: Vec<u8>) -> Case {
    let shape = shape_of(dtype, data.len());
    Case { name, dtype, shape, data }
}

/// Every seeded case: the float test cases of every float dtype, the
/// synthetic model (every dtype, an empty and a 0-dim tensor, odd shapes),
/// and constant and low-cardinality tensors.
fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = testdata::cases()
        .into_iter()
        .map(|c| case(format!("{}.{}", c.dtype.name().to_lowercase(), c.name.replace(' ', "_")), c.dtype, c.data))
        .collect();
    for t in synth::model(7) {
        if t.name == "lm_head.weight" {
            continue; // a copy of embed.weight
        }
        v.push(Case {
            name: format!("model.{}", t.name),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: t.data.clone(),
        });
    }
    let rep = |b: &[u8], n: usize| b.iter().copied().cycle().take(b.len() * n).collect::<Vec<u8>>();
    v.push(case("const.bf16_half".into(), DType::BF16, rep(&half::bf16::from_f32(0.5).to_le_bytes(), 3000)));
    v.push(case("const.f32_neg".into(), DType::F32, rep(&(-1.25f32).to_le_bytes(), 1000)));
    v.push(case("const.i64_seven".into(), DType::I64, rep(&7i64.to_le_bytes(), 777)));
    let mask: Vec<u8> =
        (0..64 * 64).flat_map(|i| (if i % 64 <= i / 64 { 1.0f32 } else { 0.0 }).to_le_bytes()).collect();
    v.push(case("table.f32_mask".into(), DType::F32, mask));
    let ids: Vec<u8> = (0..3001u64).flat_map(|i| (i * i % 5).to_le_bytes()).collect();
    v.push(case("table.i64_ids".into(), DType::I64, ids));
    let mut r = Rng::new(3);
    let few: Vec<u8> = (0..5000)
        .flat_map(|_| half::f16::from_f64([0.0, 0.25, -0.5, 3.0][r.below(4) as usize]).to_le_bytes())
        .collect();
    v.push(case("table.f16_four".into(), DType::F16, few));
    v
}

/// Small cases for the damage tests (every prefix, every byte flipped):
/// one per kind of stream a stage writes.
fn damage_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut bf = testdata::gaussian(DType::BF16, 1500, 0.05, 21);
    bf[100..102].copy_from_slice(&0x7fc0u16.to_le_bytes());
    v.push(case("bf16.gauss".into(), DType::BF16, bf));
    let mut f32s = testdata::gaussian(DType::F32, 600, 1.0, 22);
    f32s[40..44].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    v.push(case("f32.gauss".into(), DType::F32, f32s));
    v.push(case("f64.gauss".into(), DType::F64, testdata::gaussian(DType::F64, 200, 0.1, 23)));
    v.push(case("f8.gauss".into(), DType::F8E4M3, testdata::gaussian(DType::F8E4M3, 700, 0.3, 24)));
    let ids: Vec<u8> = (0..300u64).flat_map(|i| (i % 3).to_le_bytes()).collect();
    v.push(case("i64.ids".into(), DType::I64, ids));
    v.push(case("f16.const".into(), DType::F16, [0x00u8, 0x3c].repeat(400)));
    v
}

// --- helpers -----------------------------------------------------------------

/// Every example spec of the registry, with its stage.
fn examples() -> Vec<(&'static codec::StageDef, &'static str)> {
    REGISTRY.iter().flat_map(|d| d.examples.iter().map(move |e| (d, *e))).collect()
}

fn encode(c: &dyn Codec, case: &Case) -> Vec<u8> {
    codec::encode_all(c, &case.info(), &case.data).unwrap_or_else(|e| panic!("{}: encode {}: {e}", c.spec(), case.name))
}

/// Decode, catching a panic (reported as the test's failure with the spec
/// and the damage) and measuring the allocation.
fn try_decode(c: &dyn Codec, case: &Case, enc: &[u8], len: usize, what: &str) -> weightlab::Result<Vec<u8>> {
    let r = catch_unwind(AssertUnwindSafe(|| peak_during(|| codec::decode_all(c, &case.info(), enc, len))));
    match r {
        Ok((res, peak)) => {
            if let Err(e) = &res {
                // damage (and a length from a lying index) is the archive's fault: exit 3
                assert!(
                    matches!(e.kind(), weightlab::ErrorKind::Corruption | weightlab::ErrorKind::Truncated),
                    "{}: {} ({what}): a damaged stream gave {:?}: {e}",
                    c.spec(),
                    case.name,
                    e.kind()
                );
            }
            if len >= 4096 {
                MAX_PEAK_RATIO.fetch_max(peak * 100 / len, std::sync::atomic::Ordering::Relaxed);
            }
            assert!(
                peak <= alloc_bound(len),
                "{}: {} ({what}): decoding {len} bytes allocated {peak} bytes at once (bound {})",
                c.spec(),
                case.name,
                alloc_bound(len)
            );
            res
        }
        Err(_) => panic!("{}: {} ({what}): the decoder panicked", c.spec(), case.name),
    }
}

/// Check a decoded tensor against the original under `fidelity`: bits for
/// lossless (and for non-float tensors, which every lossy stage passes on
/// unchanged), the declared bound for lossy ones, with non-finite values
/// exact.
fn check_decoded(what: &str, fidelity: Fidelity, dtype: DType, orig: &[u8], dec: &[u8]) {
    assert_eq!(orig.len(), dec.len(), "{what}: length");
    let bound = match fidelity {
        Fidelity::Lossless => None,
        Fidelity::Lossy { bound } => Some(bound),
    };
    let Some(bound) = bound else {
        assert!(orig == dec, "{what}: lossless decode differs");
        return;
    };
    if !matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64 | DType::F8E4M3 | DType::F8E5M2) {
        // every lossy stage passes the others on unchanged
        assert!(orig == dec, "{what}: a {dtype} tensor changed under a lossy stage");
        return;
    }
    let s = error_stats(dtype, orig, dec, bound).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(s.n_nonfinite_mismatch, 0, "{what}: NaN/inf not kept");
    if bound.is_some() {
        assert_eq!(s.bound_held, Some(true), "{what}: bound {bound:?} broken: {s:?}");
    }
}

// --- the registry --------------------------------------------------------------

#[test]
fn every_stage_has_canonical_examples() {
    let mut names = std::collections::BTreeSet::new();
    for d in REGISTRY {
        assert!(names.insert(d.name), "stage name {} registered twice", d.name);
        assert!(
            !d.examples.is_empty(),
            "stage '{}' (id {}) has no example specs: add some to its StageDef",
            d.name,
            d.id
        );
        for ex in d.examples {
            let parsed = codec::CodecSpec::parse(ex).unwrap_or_else(|e| panic!("{ex}: {e}"));
            assert_eq!(parsed.stages[0].name, d.name, "an example of '{}' must start with it: {ex}", d.name);
            let c = build(ex).unwrap_or_else(|e| panic!("{ex}: {e}"));
            assert_eq!(c.spec(), *ex, "example of '{}' is not canonical", d.name);
            // canonical specs are fixed points
            assert_eq!(build(&c.spec()).unwrap().spec(), c.spec());
            let ids = codec::stage_ids(ex).unwrap();
            assert_eq!(ids[0], d.id, "{ex}");
            assert!(codec::build_recorded(ex, &ids).is_ok(), "{ex}: the recorded form does not build");
            if d.kind == StageKind::Coder {
                assert_eq!(parsed.stages.len(), 1, "{ex}: a coder ends its chain");
            }
        }
    }
    // the examples of the registry cover lossless and lossy stages of every kind
    assert!(examples().iter().any(|(_, e)| !build(e).unwrap().fidelity().is_lossless()));
}

// --- round trips ---------------------------------------------------------------

/// Each example on each case as one chunk: lossless bit for bit, lossy in
/// bound, deterministic (encoding twice gives the same bytes).
#[test]
fn every_example_round_trips_every_case_as_one_chunk() {
    let cases = cases();
    for (d, ex) in examples() {
        let c = build(ex).unwrap();
        for case in &cases {
            let enc = encode(&*c, case);
            if case.data.len() <= 4096 {
                assert!(enc == encode(&*c, case), "{ex}: {}: encoding is not deterministic", case.name);
            }
            let dec = try_decode(&*c, case, &enc, case.data.len(), "round trip")
                .unwrap_or_else(|e| panic!("{ex}: {}: {e}", case.name));
            check_decoded(&format!("{} {ex} {}", d.name, case.name), c.fidelity(), case.dtype, &case.data, &dec);
        }
    }
}

fn file_of(cases: &[Case]) -> Vec<u8> {
    let ts: Vec<safetensors::OwnedTensor> = cases
        .iter()
        .map(|c| safetensors::OwnedTensor::new(c.name.clone(), c.dtype, c.shape.clone(), c.data.clone()))
        .collect();
    safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap()
}

/// Each example through the container at three chunk sizes (a chunk cut
/// inside rows, several rows, whole tensors): the archive decodes (every
/// hash checked) to the file for lossless specs; for lossy ones every
/// tensor keeps the bound its record names, and the archive decodes to
/// the bytes whose sha256 it records.
#[test]
fn every_example_round_trips_through_the_container() {
    let cases = cases();
    let file = file_of(&cases);
    let st = SafeTensors::parse(&file).unwrap();
    for (d, ex) in examples() {
        // the first example of a stage at every chunk size, the others at one
        let first = d.examples[0] == ex;
        let sizes: &[usize] = if first { &[1000, 16 << 10, 4 << 20] } else { &[16 << 10] };
        for &chunk in sizes {
            let what = format!("{ex}, chunks of {chunk}");
            let opts = CompressOptions { codec: ex.into(), chunk_size: chunk, ..Default::default() };
            let mut arch = Vec::new();
            container::compress(&file, "conformance.safetensors", &mut arch, &opts)
                .unwrap_or_else(|e| panic!("{what}: compress: {e}"));
            let a = Archive::open(&arch).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            let mut out = Vec::new();
            a.stream(
                &mut out,
                &DecodeOptions {
                    check_tensor_hashes: true,
                    check_file_hash: true,
                    check_stored: true,
                    progress: false,
                },
            )
            .unwrap_or_else(|e| panic!("{what}: decode: {e}"));
            assert_eq!(weightlab::io::sha256_hex(&out), a.index.output_sha256, "{what}: output hash");
            let lossless = build(ex).unwrap().fidelity().is_lossless();
            if lossless {
                assert!(out == file, "{what}: the file differs");
                assert!(a.index.is_lossless(), "{what}");
                continue;
            }
            let back = SafeTensors::parse(&out).unwrap();
            for (i, (v, rec)) in st.views().zip(&a.index.tensors).enumerate() {
                assert_eq!(v.name, rec.name);
                let got = back.views().nth(i).unwrap();
                let storage = rec.same_as.map_or(rec, |j| &a.index.tensors[j]);
                let fidelity = build(&storage.codec)
                    .unwrap_or_else(|e| panic!("{what}: {}: recorded {}: {e}", rec.name, storage.codec))
                    .fidelity();
                if storage.lossless {
                    assert!(got.data == v.data, "{what}: {} is recorded lossless but changed", rec.name);
                }
                check_decoded(&format!("{what}: {}", rec.name), fidelity, v.dtype, v.data, got.data);
            }
        }
    }
}

// --- damage --------------------------------------------------------------------

/// Every prefix of each example's stream is an error; every flipped byte
/// (a seeded sample of 1500 in longer streams) an error or a decode of the
/// right length; wrong output lengths never panic; nothing allocates
/// beyond [`alloc_bound`]. Prints how many flips decoded (see the module
/// docs on why they can).
#[test]
fn damaged_streams_fail_cleanly() {
    let mut rng = Rng::new(2026);
    for (_, ex) in examples() {
        let c = build(ex).unwrap();
        let (mut flips, mut decoded) = (0usize, 0usize);
        for case in damage_cases() {
            let enc = encode(&*c, &case);
            let n = case.data.len();
            for cut in 0..enc.len() {
                let r = try_decode(&*c, &case, &enc[..cut], n, &format!("prefix {cut} of {}", enc.len()));
                assert!(r.is_err(), "{ex}: {}: a prefix of {cut} of {} bytes decoded", case.name, enc.len());
            }
            let positions: Vec<usize> = if enc.len() <= 1500 {
                (0..enc.len()).collect()
            } else {
                (0..1500).map(|_| rng.below(enc.len() as u64) as usize).collect()
            };
            for at in positions {
                let mut bad = enc.clone();
                // a random bit in most bytes; the headers get every bit flipped too
                bad[at] ^= if at < 16 && rng.below(2) == 0 { 0xff } else { 1 << rng.below(8) };
                flips += 1;
                if let Ok(out) = try_decode(&*c, &case, &bad, n, &format!("byte {at} flipped")) {
                    assert_eq!(out.len(), n);
                    decoded += 1;
                }
            }
            let unit = case.dtype.split_unit().max(1);
            for len in [0, n.saturating_sub(unit), n + 1, n + unit, 2 * n + 2 * unit, 64 * n + 64] {
                let _ = try_decode(&*c, &case, &enc, len, &format!("decoded into {len} bytes"));
            }
        }
        eprintln!("{ex}: {decoded} of {flips} flipped streams decoded");
    }
    eprintln!(
        "largest decode peak so far: {:.2} x the decoded length",
        MAX_PEAK_RATIO.load(std::sync::atomic::Ordering::Relaxed) as f64 / 100.0
    );
}

/// The first example of every stage on a stream long enough for the wide
/// rANS layouts (32 lanes, 64-element merge blocks): a seeded sample of
/// prefixes and flips, as [`damaged_streams_fail_cleanly`].
#[test]
fn damaged_long_streams_fail_cleanly() {
    let mut rng = Rng::new(2027);
    let long = case("bf16.long".into(), DType::BF16, testdata::gaussian(DType::BF16, 70_001, 0.05, 25));
    for d in REGISTRY {
        let c = build(d.examples[0]).unwrap();
        let enc = encode(&*c, &long);
        let n = long.data.len();
        for _ in 0..40 {
            let cut = rng.below(enc.len() as u64) as usize;
            assert!(
                try_decode(&*c, &long, &enc[..cut], n, &format!("prefix {cut}")).is_err(),
                "{}: prefix {cut} decoded",
                d.name
            );
        }
        for _ in 0..100 {
            let mut bad = enc.clone();
            let at = rng.below(enc.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            let _ = try_decode(&*c, &long, &bad, n, &format!("byte {at} flipped"));
        }
    }
}

/// A context stream that lists 256 models of 2^12 slots (valid ones, each
/// a single symbol) for a 10-symbol chunk whose symbols are all raw: it
/// decoded, after building 9 MiB of decoding tables. Now refused: no
/// encoder writes more than 16 context models within 2^14 slots.
#[test]
fn a_stream_cannot_ask_for_megabytes_of_model_tables() {
    let n = 10;
    let mut s = vec![1u8, 255];
    for _ in 0..256 {
        s.extend_from_slice(&[(2 << 4) | 12, 0]);
    }
    s.extend_from_slice(&0u16.to_le_bytes()); // no coded contexts
    s.extend_from_slice(&(n as u32).to_le_bytes());
    s.extend(0..n as u8); // the raw symbols
    for _ in 0..4 {
        s.extend_from_slice(&(1u32 << 16).to_le_bytes()); // four lanes at their initial state
    }
    let ctx = vec![0u8; n];
    let mut out = vec![0u8; n];
    let (r, peak) = peak_during(|| entropy::decode_stream(&s, Some(&ctx), &mut out));
    assert!(peak <= alloc_bound(n), "{peak} bytes allocated to decode {n}");
    assert!(r.is_err(), "256 models of 2^12 slots accepted");
    // one model too many for a single stream
    let single = [4u8, 1, (2 << 4) | 12, 0, (2 << 4) | 12, 1];
    assert!(entropy::decode_stream(&single, None, &mut out).is_err());
}

// --- SIMD levels ---------------------------------------------------------------

/// Symbol streams around every block size of the coders: the four-lane
/// tail, 32-lane (AVX2 8 x 4 / AVX-512 16 x 2) and 64-lane groups, the
/// 64-element merge blocks, streams long enough for 32 and 64 lanes.
const STREAM_LENS: &[usize] = &[
    0,
    1,
    2,
    7,
    8,
    31,
    32,
    33,
    63,
    64,
    65,
    127,
    128,
    129,
    255,
    1000,
    4097,
    (1 << 16) - 1,
    (1 << 16) + 33,
    (1 << 19) + 17,
];

fn skewed(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| (120.0 + 4.0 * r.normal()).clamp(0.0, 255.0) as u8).collect()
}

/// Encode at every level the core has; each must write the scalar bytes
/// and read back `syms`. Returns the stream.
fn stream_at_every_level(syms: &[u8], ctx: Option<&[u8]>, gain: f64, what: &str) -> Vec<u8> {
    let mut want: Option<Vec<u8>> = None;
    for level in simd::levels() {
        simd::with_level(level, || {
            let mut enc = Vec::new();
            entropy::encode_stream_with(syms, ctx, gain, &mut enc).unwrap();
            match &want {
                None => want = Some(enc.clone()),
                Some(w) => assert!(*w == enc, "{what}: the {level} encoder writes other bytes than the scalar one"),
            }
            let mut dec = vec![0u8; syms.len()];
            entropy::decode_stream(&enc, ctx, &mut dec).unwrap_or_else(|e| panic!("{what}: {level}: {e}"));
            assert!(dec == syms, "{what}: the {level} decoder differs");
        });
    }
    want.expect("the scalar level is always there")
}

/// The same damaged stream gives the same result at every level.
fn damage_agrees(enc: &[u8], ctx: Option<&[u8]>, n: usize, rng: &mut Rng, flips: usize, what: &str) {
    for _ in 0..flips {
        if enc.is_empty() {
            return;
        }
        let mut bad = enc.to_vec();
        let at = rng.below(bad.len() as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        let mut first: Option<Option<Vec<u8>>> = None;
        for level in simd::levels() {
            let r = simd::with_level(level, || {
                let mut out = vec![0u8; n];
                catch_unwind(AssertUnwindSafe(|| entropy::decode_stream(&bad, ctx, &mut out)))
                    .unwrap_or_else(|_| panic!("{what}: byte {at} flipped: the {level} decoder panicked"))
                    .ok()
                    .map(|_| out)
            });
            match &first {
                None => first = Some(r),
                Some(f) => assert!(*f == r, "{what}: byte {at} flipped: {level} disagrees with scalar"),
            }
        }
    }
}

#[test]
fn simd_levels_write_and_read_the_same_entropy_streams() {
    eprintln!("SIMD levels of this core: {:?}", simd::levels());
    let mut rng = Rng::new(77);
    for &n in STREAM_LENS {
        // one model: rANS with 4, 32 or 64 lanes by length
        let syms = skewed(n, n as u64);
        let enc = stream_at_every_level(&syms, None, 0.02, &format!("{n} symbols"));
        damage_agrees(&enc, None, n, &mut rng, 20, &format!("{n} symbols"));
        // with contexts: some coded (rANS, 4 or 32 lanes), some raw, merged
        // by the flags of 64-element blocks; coded everywhere with gain 0
        let ctx: Vec<u8> = (0..n).map(|i| ((i * 7 + i / 64) % 9) as u8 + 100).collect();
        let syms: Vec<u8> = syms
            .iter()
            .zip(&ctx)
            .map(|(&s, &c)| if c % 3 == 0 { s } else { (rng.next_u64() as u8) & if c % 3 == 1 { 0xff } else { 0x0f } })
            .collect();
        for gain in [0.0, 0.02] {
            let what = format!("{n} symbols with contexts, gain {gain}");
            let enc = stream_at_every_level(&syms, Some(&ctx), gain, &what);
            damage_agrees(&enc, Some(&ctx), n, &mut rng, 20, &what);
        }
    }
}

/// `exp` at every level on element counts around the 32- and 64-element
/// blocks of the AVX2 and AVX-512 assemblies, every float width, every
/// gain (all mantissas raw, some coded, all coded): the same stream, and
/// the same decode at every level, also of damaged streams.
#[test]
fn simd_levels_agree_on_exp() {
    let mut rng = Rng::new(5);
    for dtype in [DType::BF16, DType::F16, DType::F32, DType::F64, DType::F8E4M3] {
        for n in [1usize, 31, 32, 33, 63, 64, 65, 95, 1000, 70_001] {
            let data = testdata::gaussian(dtype, n, 0.3, n as u64);
            let info = ChunkInfo { name: "w", dtype, shape: &[], offset: 0 };
            for gain in [0, 2, 100] {
                let c = build(&format!("exp:gain={gain}")).unwrap();
                let what = format!("exp:gain={gain} on {n} {dtype}");
                let mut want: Option<Vec<u8>> = None;
                for level in simd::levels() {
                    simd::with_level(level, || {
                        let enc = codec::encode_all(&*c, &info, &data).unwrap();
                        match &want {
                            None => want = Some(enc.clone()),
                            Some(w) => assert!(*w == enc, "{what}: the {level} encoder differs"),
                        }
                        let dec = codec::decode_all(&*c, &info, &enc, data.len())
                            .unwrap_or_else(|e| panic!("{what}: {level}: {e}"));
                        assert!(dec == data, "{what}: the {level} decoder differs");
                    });
                }
                let enc = want.unwrap();
                for _ in 0..if n > 1000 { 30 } else { 10 } {
                    let mut bad = enc.clone();
                    let at = rng.below(bad.len() as u64) as usize;
                    bad[at] ^= 1 << rng.below(8);
                    let results: Vec<Option<Vec<u8>>> = simd::levels()
                        .into_iter()
                        .map(|level| simd::with_level(level, || codec::decode_all(&*c, &info, &bad, data.len()).ok()))
                        .collect();
                    assert!(results.windows(2).all(|w| w[0] == w[1]), "{what}: byte {at} flipped: the levels disagree");
                }
            }
        }
    }
}

#[test]
fn the_level_switch_caps_every_dispatch() {
    for level in Level::ALL {
        simd::with_level(level, || {
            assert_eq!(simd::level(), level.min(simd::detected()));
            assert_eq!(simd::avx512(), simd::level() == Level::Avx512);
            assert_eq!(simd::avx2(), simd::level() >= Level::Avx2);
            if level == Level::Scalar {
                assert!(!simd::ssse3() && !simd::avx2() && !simd::avx512());
            }
        });
    }
    assert_eq!(Level::parse("scalar"), Some(Level::Scalar));
    assert_eq!(Level::parse("AVX2"), Some(Level::Avx2));
    assert_eq!(Level::parse("avx512"), Some(Level::Avx512));
    assert_eq!(Level::parse("sse2"), None);
}

/// The environment switch, end to end: the tool writes the same archive
/// under `WEIGHTLAB_SIMD=scalar|avx2|avx512`, under `WEIGHTLAB_NO_AVX512=1`
/// and by default, and reads it back under each; an unknown level is
/// reported on stderr and ignored.
#[test]
fn the_environment_switch_gives_the_same_archive() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.safetensors");
    let mut cs = vec![case("w.bf16".into(), DType::BF16, testdata::gaussian(DType::BF16, 70_001, 0.05, 31))];
    cs.push(case("w.f32".into(), DType::F32, testdata::gaussian(DType::F32, 20_000, 0.05, 32)));
    std::fs::write(&input, file_of(&cs)).unwrap();
    let envs: &[(&str, &str)] = &[
        ("", ""),
        ("WEIGHTLAB_SIMD", "scalar"),
        ("WEIGHTLAB_SIMD", "avx2"),
        ("WEIGHTLAB_SIMD", "avx512"),
        ("WEIGHTLAB_NO_AVX512", "1"),
        ("WEIGHTLAB_SIMD", "sse9"),
    ];
    let mut first: Option<Vec<u8>> = None;
    for (i, (k, v)) in envs.iter().enumerate() {
        let out = dir.path().join(format!("m{i}.wlab"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weightlab"));
        cmd.env_remove("WEIGHTLAB_SIMD").env_remove("WEIGHTLAB_NO_AVX512");
        if !k.is_empty() {
            cmd.env(k, v);
        }
        let o = cmd
            .args(["compress", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--codec", "exp"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{k}={v}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stderr).contains("ignoring WEIGHTLAB_SIMD"), *v == "sse9", "{k}={v}");
        let arch = std::fs::read(&out).unwrap();
        match &first {
            None => first = Some(arch),
            Some(f) => assert!(*f == arch, "{k}={v}: another archive than by default"),
        }
        let back = dir.path().join(format!("m{i}.safetensors"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weightlab"));
        cmd.env_remove("WEIGHTLAB_SIMD").env_remove("WEIGHTLAB_NO_AVX512");
        if !k.is_empty() {
            cmd.env(k, v);
        }
        let o = cmd
            .args(["decompress", dir.path().join("m0.wlab").to_str().unwrap(), "-o", back.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{k}={v}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::read(&back).unwrap() == std::fs::read(&input).unwrap(), "{k}={v}: decompressed file differs");
    }
}
