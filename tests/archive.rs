//! Archive round trips over every dtype and generic codec, truncation and
//! corruption handling, and the golden archives every version must decode.

use weightlab::ErrorKind;
use weightlab::container::{self, Archive, CompressOptions, DecodeOptions};
use weightlab::tensor::{DType, SafeTensors, safetensors, synth};

#[path = "support/archive.rs"]
mod support;
use support::rewrite_index;

const GENERIC: &[&str] = &[
    "raw",
    "zstd:level=1",
    "zstd:level=19",
    "zstd:level=3,long=27,threads=2",
    "lz4",
    "xz:level=9",
    "deflate:level=9",
    "planes>zstd:level=3",
    "planes>lz4",
    #[cfg(feature = "blosc2")]
    "blosc2:codec=zstd,level=5,shuffle=byte",
];

fn model_file(seed: u64) -> Vec<u8> {
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let ts = synth::model(seed);
    safetensors::serialize(ts.iter().map(|t| t.view()), Some(&meta)).unwrap()
}

fn compress(file: &[u8], codec: &str, chunk: usize) -> Vec<u8> {
    let opts = CompressOptions { codec: codec.into(), chunk_size: chunk, ..Default::default() };
    let mut out = Vec::new();
    container::compress(file, "model.safetensors", &mut out, &opts).unwrap();
    out
}

fn decode(archive: &[u8]) -> weightlab::Result<Vec<u8>> {
    let a = Archive::open(archive)?;
    let mut out = Vec::new();
    a.stream(
        &mut out,
        &DecodeOptions { check_tensor_hashes: true, check_file_hash: true, check_stored: true, progress: false },
    )?;
    Ok(out)
}

#[test]
fn every_generic_codec_round_trips_every_dtype_bit_for_bit() {
    let file = model_file(1);
    for codec in GENERIC {
        for chunk in [100usize, 4 << 20] {
            let arch = compress(&file, codec, chunk);
            let back = decode(&arch).unwrap_or_else(|e| panic!("{codec}: {e}"));
            assert!(back == file, "{codec} chunk {chunk}: file differs");
            // random access: each tensor alone
            let a = Archive::open(&arch).unwrap();
            let st = SafeTensors::parse(&file).unwrap();
            for v in st.views() {
                let i = a.tensor_index(v.name).unwrap();
                assert!(a.read_tensor(i).unwrap() == v.data, "{codec}: tensor {}", v.name);
            }
        }
    }
}

#[test]
fn tied_tensors_are_stored_once_and_output_is_thread_independent() {
    let file = model_file(2);
    let arch = compress(&file, "zstd:level=3", 1024);
    let a = Archive::open(&arch).unwrap();
    let head = a.index.tensors.iter().find(|t| t.name == "lm_head.weight").unwrap();
    let embed = a.tensor_index("embed.weight").unwrap();
    assert_eq!(head.same_as, Some(embed));
    assert!(head.chunks.is_empty());
    let one = weightlab::progress::with_threads(1, || compress(&file, "zstd:level=3", 1024)).unwrap();
    let two = weightlab::progress::with_threads(2, || compress(&file, "zstd:level=3", 1024)).unwrap();
    assert!(one == two && one == arch, "archive bytes depend on the thread count");
}

#[test]
fn every_prefix_is_an_error_never_a_panic() {
    let file = model_file(3);
    let arch = compress(&file, "planes>zstd:level=1", 2048);
    for n in 0..arch.len() {
        let e = decode(&arch[..n]).expect_err("a prefix decoded");
        assert!(
            matches!(e.kind(), ErrorKind::Truncated | ErrorKind::Corruption),
            "prefix {n}: unexpected {:?}: {e}",
            e.kind()
        );
    }
}

#[test]
fn a_flipped_byte_in_any_tensor_is_caught_and_named() {
    let file = model_file(4);
    let arch = compress(&file, "zstd:level=3", 4 << 20);
    let a = Archive::open(&arch).unwrap();
    for t in &a.index.tensors {
        for c in &t.chunks {
            for at in [c.offset(), c.offset() + c.encoded_len() / 2, c.offset() + c.encoded_len() - 1] {
                let mut bad = arch.clone();
                bad[at as usize] ^= 0x10;
                let e = decode(&bad).expect_err("flipped byte decoded");
                assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
                assert!(e.message().contains(&format!("tensor '{}'", t.name)), "{e}");
            }
        }
    }
    // the stored header and the index are checked too
    let mut bad = arch.clone();
    bad[a.index.header.offset as usize + 3] ^= 1;
    assert_eq!(decode(&bad).unwrap_err().kind(), ErrorKind::Corruption);
    let mut bad = arch.clone();
    let idx = arch.len() - 60;
    bad[idx] ^= 1;
    assert_eq!(decode(&bad).unwrap_err().kind(), ErrorKind::Corruption);
}

#[test]
fn reads_check_the_stored_bytes_only_to_place_a_failure_and_verify_always() {
    let file = model_file(4);
    let arch = compress(&file, "zstd:level=3", 4 << 20);
    let a = Archive::open(&arch).unwrap();
    let t = a.index.tensors.iter().position(|r| !r.chunks.is_empty()).unwrap();
    let c = a.index.tensors[t].chunks[0];
    // a flipped stored byte fails the decode or its xxh3, and the stored
    // bytes' xxh3 then says the archive is damaged, on every read path
    let mut bad = arch.clone();
    bad[(c.offset() + c.encoded_len() / 2) as usize] ^= 0x10;
    let b = Archive::open(&bad).unwrap();
    let mut out = vec![0u8; b.index.tensors[t].size as usize];
    let quick = DecodeOptions { check_stored: false, ..Default::default() };
    for e in [
        b.read_tensor(t).unwrap_err(),
        b.read_tensor_into(t, &mut out, false).unwrap_err(),
        b.stream(&mut Vec::new(), &quick).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.message().contains("the archive is damaged"), "{e}");
        assert!(e.message().contains(&format!("tensor '{}'", a.index.tensors[t].name)), "{e}");
    }
    // a wrong stored xxh3 beside bytes that decode right: reads, which the
    // decoded xxh3 checks, give the right bytes; a stream that checks the
    // stored bytes first (verify's) refuses it
    let mut lying = Archive::open(&arch).unwrap();
    lying.index.tensors[t].chunks[0].3 ^= 1;
    let st = SafeTensors::parse(&file).unwrap();
    assert!(lying.read_tensor(t).unwrap() == st.get(&a.index.tensors[t].name).unwrap().data);
    let mut back = Vec::new();
    lying.stream(&mut back, &quick).unwrap();
    assert!(back == file);
    let full = DecodeOptions { check_stored: true, ..quick };
    let e = lying.stream(&mut Vec::new(), &full).unwrap_err();
    assert!(e.message().contains("the archive is damaged"), "{e}");
}

#[test]
fn wrong_magic_newer_version_and_unknown_codec_each_say_so() {
    let file = model_file(5);
    let arch = compress(&file, "lz4", 4096);
    let mut bad = arch.clone();
    bad[1] = b'X';
    let e = decode(&bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption);
    assert!(e.message().contains("not a weightlab archive"), "{e}");

    let mut newer = arch.clone();
    newer[8..10].copy_from_slice(&7u16.to_le_bytes());
    newer[10..12].copy_from_slice(&7u16.to_le_bytes());
    let e = decode(&newer).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("version 7"), "{e}");

    // rewrite the index with an unknown stage id, with valid checksums
    let a = Archive::open(&arch).unwrap();
    let mut index = a.index.clone();
    let t = index.tensors.iter_mut().find(|t| !t.chunks.is_empty()).unwrap();
    t.stage_ids = vec![999];
    let name = t.name.clone();
    let e = decode(&rewrite_index(&arch, &index)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("codec id 999") && e.message().contains(&name), "{e}");
}

#[test]
fn index_lies_are_caught() {
    let file = model_file(6);
    let arch = compress(&file, "zstd:level=1", 512);
    let a = Archive::open(&arch).unwrap();
    let mut lies = Vec::new();
    let mut i = a.index.clone();
    i.tensors[0].size += 1;
    lies.push(i);
    let mut i = a.index.clone();
    i.tensors[1].data_offset += 2;
    lies.push(i);
    let mut i = a.index.clone();
    let last = i.tensors.iter_mut().rev().find(|t| !t.chunks.is_empty()).unwrap();
    last.chunks[0].1 = u64::MAX;
    lies.push(i);
    let mut i = a.index.clone();
    i.tensors[0].dtype = "F12".into();
    lies.push(i);
    let mut i = a.index.clone();
    i.header.len = u64::MAX;
    lies.push(i);
    for lie in lies {
        let e = decode(&rewrite_index(&arch, &lie)).expect_err("a lying index was accepted");
        assert!(matches!(e.kind(), ErrorKind::Corruption | ErrorKind::Unsupported), "{e}");
    }
}

/// A duplicate must point at a stored tensor, not at another duplicate
/// (whose bytes live nowhere): the index is refused when it is opened.
#[test]
fn a_duplicate_of_a_duplicate_is_refused() {
    let data: Vec<u8> = (0..4096u32).flat_map(|i| (i.wrapping_mul(2654435761) as f32).to_le_bytes()).collect();
    let ts: Vec<safetensors::OwnedTensor> = ["a", "b", "c"]
        .iter()
        .map(|n| safetensors::OwnedTensor::new(*n, weightlab::tensor::DType::F32, vec![4096], data.clone()))
        .collect();
    let file = safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap();
    let arch = compress(&file, "zstd:level=1", 1 << 20);
    let a = Archive::open(&arch).unwrap();
    let (b, c) = (a.tensor_index("b").unwrap(), a.tensor_index("c").unwrap());
    assert!(a.index.tensors[b].same_as.is_some() && a.index.tensors[c].same_as.is_some());
    assert_eq!(decode(&arch).unwrap(), file);
    let mut lie = a.index.clone();
    lie.tensors[c].same_as = Some(b);
    let e = decode(&rewrite_index(&arch, &lie)).expect_err("a chain of duplicates was accepted");
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
}

// --- golden archives --------------------------------------------------------

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
/// Archives made by format version 1; every future version must decode them.
const GOLDEN: &[(&str, &str)] = &[
    ("v1-zstd.wlab", "zstd:level=3"),
    ("v1-planes-lz4.wlab", "planes>lz4"),
    ("v1-xz.wlab", "xz:level=6"),
    ("v1-deflate.wlab", "deflate:level=6"),
    ("v1-raw.wlab", "raw"),
];

fn golden_source() -> Vec<u8> {
    model_file(42)
}

/// Write `set`'s golden archives of `src` (chunks of `chunk` bytes) and the
/// sha256 of `src` into `sha_file`.
fn bless(set: &[(&str, &str)], src: &[u8], sha_file: &str, chunk: usize) {
    assert_eq!(std::env::var("WEIGHTLAB_BLESS").as_deref(), Ok("1"), "set WEIGHTLAB_BLESS=1");
    std::fs::write(format!("{GOLDEN_DIR}/{sha_file}"), weightlab::io::sha256_hex(src) + "\n").unwrap();
    for (name, codec) in set {
        std::fs::write(format!("{GOLDEN_DIR}/{name}"), compress(src, codec, chunk)).unwrap();
    }
}

/// `set`'s golden archives open as format version 1, record their codec and
/// decode to the bytes whose sha256 `sha_file` holds, which `src` still has.
fn check_golden(set: &[(&str, &str)], src: &[u8], sha_file: &str) {
    let want = std::fs::read_to_string(format!("{GOLDEN_DIR}/{sha_file}")).unwrap();
    // the generator is part of the contract: it must still make the same file
    assert_eq!(weightlab::io::sha256_hex(src), want.trim(), "synthetic generator changed");
    for (name, codec) in set {
        let arch = std::fs::read(format!("{GOLDEN_DIR}/{name}")).unwrap();
        let a = Archive::open(&arch).unwrap();
        assert_eq!(a.header.version, 1);
        assert!(a.index.tensors.iter().all(|t| t.same_as.is_some() || t.codec == *codec), "{name}");
        let out = decode(&arch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(weightlab::io::sha256_hex(&out), want.trim(), "{name}");
    }
}

/// Writes the golden files. Run once per format version, by hand:
/// `WEIGHTLAB_BLESS=1 cargo test --test archive bless_golden -- --ignored`
#[test]
#[ignore]
fn bless_golden() {
    bless(GOLDEN, &golden_source(), "v1-source.sha256", 1024);
}

/// A float archive of the entropy stream modes (1 and 6 with contexts, 1,
/// 4 and 5 without), made 2026-12-01; every future version must decode it.
const GOLDEN_FLOAT: &[(&str, &str)] = &[("v1-exp.wlab", "exp:gain=2")];

/// Floats drawn `common` in ten times as exactly `one`, else gaussian.
fn mostly(dtype: DType, n: usize, one: f64, common: u64, seed: u64) -> Vec<u8> {
    let mut r = synth::Rng::new(seed);
    let v: Vec<f64> = (0..n).map(|_| if r.below(100) < common { one } else { r.normal() * 0.02 }).collect();
    synth::encode_floats(dtype, &v)
}

/// A BF16 tensor of 2^19 + 77 weights, 97 in 100 exactly 1.0 (a 64-lane
/// exponent stream and a sign+mantissa stream with many coded symbols:
/// mode 6), an F16 one of 66 000 (a 32-lane stream) and an F32 one of 5000
/// (four lanes), each mostly one value so that the file stays small.
fn golden_float_source() -> Vec<u8> {
    let n = (1 << 19) + 77;
    let ts = [
        safetensors::OwnedTensor::new("a.bf16", DType::BF16, vec![n as u64], mostly(DType::BF16, n, 1.0, 97, 7)),
        safetensors::OwnedTensor::new("b.f16", DType::F16, vec![66, 1000], mostly(DType::F16, 66_000, 0.5, 90, 8)),
        safetensors::OwnedTensor::new("c.f32", DType::F32, vec![5000], mostly(DType::F32, 5000, -2.0, 50, 9)),
    ];
    safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap()
}

/// Writes the golden float files (made once; see [`GOLDEN_FLOAT`]):
/// `WEIGHTLAB_BLESS=1 cargo test --test archive bless_golden_float -- --ignored`
#[test]
#[ignore]
fn bless_golden_float() {
    bless(GOLDEN_FLOAT, &golden_float_source(), "v1-float-source.sha256", 4 << 20);
}

#[test]
fn golden_float_archives_still_decode() {
    check_golden(GOLDEN_FLOAT, &golden_float_source(), "v1-float-source.sha256");
}

#[test]
fn golden_archives_still_decode() {
    check_golden(GOLDEN, &golden_source(), "v1-source.sha256");
}

// --- golden archives of the other stages ---------------------------------------

/// One archive per stage id the sets above lack (made 2026-12-02 at format
/// version 1; every future version must decode them). For the lossy ones the
/// archive decodes to the bytes whose sha256 its index records; every one is
/// made again on each run and must come out byte for byte the same (all our
/// encoders are deterministic): if an encoder changes on purpose without a
/// format change, bless new files under new names and keep these.
const GOLDEN_STAGES: &[(&str, &str)] = &[
    ("v1-const.wlab", "const"),
    ("v1-table.wlab", "table"),
    ("v1-sz.wlab", "sz:abs=1e-3,coder=rans,pred=auto>zstd:level=3"),
    ("v1-int8.wlab", "int8:block=128,scale=auto,select=auto>zstd:level=3"),
    ("v1-int4.wlab", "int4:block=32,scale=auto,select=all>zstd:level=3"),
    ("v1-round.wlab", "round:bits=4>auto"),
    ("v1-auto.wlab", "auto"),
    #[cfg(feature = "blosc2")]
    ("v1-blosc2.wlab", "blosc2:codec=zstd,level=5,shuffle=byte"),
];
const GOLDEN_STAGES_CHUNK: usize = 16 << 10;

/// The synthetic model (every dtype, a tied pair, an empty and a 0-dim
/// tensor) and what the special stages are for: constant tensors, masks
/// and ids of a few values, float matrices with NaN and inf for the lossy
/// ones.
fn golden_stage_source() -> Vec<u8> {
    let mut ts = synth::model(44);
    let rep = |b: &[u8], n: usize| b.iter().copied().cycle().take(b.len() * n).collect::<Vec<u8>>();
    ts.push(safetensors::OwnedTensor::new("const.zeros", DType::F32, vec![64, 64], vec![0; 64 * 64 * 4]));
    ts.push(safetensors::OwnedTensor::new("const.half", DType::BF16, vec![32, 32], rep(&[0x00, 0x3f], 1024)));
    let mask: Vec<u8> =
        (0..64 * 64).flat_map(|i| (if i % 64 <= i / 64 { 1.0f32 } else { 0.0 }).to_le_bytes()).collect();
    ts.push(safetensors::OwnedTensor::new("mask.causal", DType::F32, vec![64, 64], mask));
    let ids: Vec<u8> = (0..512i64).flat_map(|i| (i * i % 3).to_le_bytes()).collect();
    ts.push(safetensors::OwnedTensor::new("ids.token_type", DType::I64, vec![512], ids));
    let mut w = synth::weights(96 * 70, 0.05, 45);
    w[100] = f64::NAN;
    w[5000] = f64::NEG_INFINITY;
    ts.push(safetensors::OwnedTensor::new("layer.0.w", DType::F32, vec![96, 70], synth::encode_floats(DType::F32, &w)));
    ts.push(safetensors::OwnedTensor::new(
        "layer.0.wb",
        DType::BF16,
        vec![70, 96],
        synth::encode_floats(DType::BF16, &w),
    ));
    safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap()
}

/// Writes [`GOLDEN_STAGES`] (made once):
/// `WEIGHTLAB_BLESS=1 cargo test --features full --test archive bless_golden_stages -- --ignored`
#[test]
#[ignore]
fn bless_golden_stages() {
    bless(GOLDEN_STAGES, &golden_stage_source(), "v1-stage-source.sha256", GOLDEN_STAGES_CHUNK);
}

#[test]
fn golden_stage_archives_decode_and_encode_the_same() {
    let src = golden_stage_source();
    let want = std::fs::read_to_string(format!("{GOLDEN_DIR}/v1-stage-source.sha256")).unwrap();
    assert_eq!(weightlab::io::sha256_hex(&src), want.trim(), "synthetic generator changed");
    for (name, spec) in GOLDEN_STAGES {
        let arch = std::fs::read(format!("{GOLDEN_DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let a = Archive::open(&arch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a.header.version, 1, "{name}");
        assert_eq!(a.index.source.sha256, want.trim(), "{name}");
        let lossless = weightlab::codec::build(spec).unwrap().fidelity().is_lossless();
        for t in a.index.tensors.iter().filter(|t| t.same_as.is_none()) {
            if *spec == "auto" {
                // the picks are recorded; each must still build from its ids
                assert!(
                    weightlab::codec::build_recorded(&t.codec, &t.stage_ids).is_ok(),
                    "{name}: {}: {}",
                    t.name,
                    t.codec
                );
                assert_ne!(t.codec, "auto", "{name}: {}", t.name);
            } else {
                assert_eq!(t.codec, *spec, "{name}: {}", t.name);
            }
        }
        // decode: every chunk and tensor hash, the output's sha256 as recorded
        let out = decode(&arch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(weightlab::io::sha256_hex(&out), a.index.output_sha256, "{name}");
        if lossless {
            assert!(out == src, "{name}: a lossless golden decodes to other bytes");
        } else {
            assert!(!a.index.is_lossless(), "{name}");
        }
        // encode again: the same payload bytes and the same index (but the
        // writer); the goldens were written when every tensor's sha256 was
        let again = {
            let opts = CompressOptions {
                codec: spec.to_string(),
                chunk_size: GOLDEN_STAGES_CHUNK,
                tensor_sha256: true,
                ..Default::default()
            };
            let mut out = Vec::new();
            container::compress(&src, "model.safetensors", &mut out, &opts).unwrap();
            out
        };
        let b = Archive::open(&again).unwrap();
        let mut idx = b.index.clone();
        idx.writer = a.index.writer.clone();
        // the payloads and the index but for what format version 2 changed:
        // the version (in the fixed header and the index) and the stored
        // safetensors header (now a zstd frame of the same bytes)
        assert_eq!(b.header_bytes().unwrap(), a.header_bytes().unwrap(), "{name}");
        (idx.format_version, idx.header) = (a.index.format_version, a.index.header.clone());
        let end = |a: &Archive| a.index.header.offset as usize;
        assert!(
            arch[32..end(&a)] == again[32..end(&b)] && idx == a.index,
            "{name}: {spec} now encodes the golden source differently (see GOLDEN_STAGES)"
        );
    }
}

/// Lossless tensors record no sha256 unless asked (the file's sha256 and the
/// chunks' xxh3 check them); lossy ones always record both; either way the
/// archive decodes to the same bytes, and a recorded sha256 is checked.
#[test]
fn tensor_sha256_only_when_asked_for_lossless_tensors() {
    let src = model_file(11);
    let st = SafeTensors::parse(&src).unwrap();
    for (codec, ask) in [("exp", false), ("exp", true), ("round:bits=4>zstd:level=3", false)] {
        let opts = CompressOptions { codec: codec.into(), chunk_size: 4096, tensor_sha256: ask, ..Default::default() };
        let mut arch = Vec::new();
        container::compress(&src, "model.safetensors", &mut arch, &opts).unwrap();
        let a = Archive::open(&arch).unwrap();
        for (t, v) in a.index.tensors.iter().zip(st.views()) {
            if t.lossless && !ask && !v.data.is_empty() {
                assert!(!t.has_sha256(), "{codec}: {} records a sha256 it was not asked for", t.name);
            } else if t.lossless {
                assert_eq!(t.sha256, weightlab::io::sha256_hex(v.data), "{codec} {ask}: {}", t.name);
            } else {
                assert!(t.has_sha256() && t.original_sha256.as_deref() == Some(&weightlab::io::sha256_hex(v.data)));
            }
        }
        let out = decode(&arch).unwrap();
        assert_eq!(weightlab::io::sha256_hex(&out), a.index.output_sha256, "{codec} {ask}");
        if a.index.is_lossless() {
            assert!(out == src, "{codec} {ask}");
        }
        // a recorded sha256 that no longer matches is found by a full decode
        if ask {
            let i = a.index.tensors.iter().position(|t| t.size > 0).unwrap();
            let mut idx = a.index.clone();
            idx.tensors[i].sha256 = "0".repeat(64);
            let bad = rewrite_index(&arch, &idx);
            let e = decode(&bad).unwrap_err();
            assert!(e.to_string().contains(&idx.tensors[i].name), "{e}");
        }
    }
}

// --- format version 2: the index and the safetensors header as zstd frames ---

#[test]
fn index_and_header_are_stored_as_zstd_frames() {
    use weightlab::container::format::Trailer;
    let file = model_file(7);
    let arch = compress(&file, "zstd:level=3", 1 << 20);
    let a = Archive::open(&arch).unwrap();
    assert_eq!(a.header.version, 2);
    let t = Trailer::parse(&arch).unwrap();
    let json = serde_json::to_vec(&a.index).unwrap();
    assert!(t.index_json_len > 0 && t.index_len < t.index_json_len, "{t:?}");
    // the stored bytes are a zstd frame of the index's JSON
    let raw = zstd::decode_all(&arch[t.index_offset as usize..arch.len() - 40]).unwrap();
    assert_eq!(raw.len() as u64, t.index_json_len);
    let again: weightlab::container::Index = serde_json::from_slice(&raw).unwrap();
    assert_eq!(again, a.index);
    assert!(json.len() as u64 >= t.index_len);
    let h = &a.index.header;
    let st = SafeTensors::parse(&file).unwrap();
    assert_eq!(h.raw_len, Some(st.header_bytes.len() as u64));
    assert!(h.len < st.header_bytes.len() as u64, "{h:?}");
    assert_eq!(a.header_bytes().unwrap(), st.header_bytes);
    assert!(decode(&arch).unwrap() == file);
}

#[test]
fn lying_lengths_of_the_stored_index_and_header_are_refused() {
    let file = model_file(8);
    let arch = compress(&file, "zstd:level=3", 1 << 20);
    let n = arch.len();
    let json_len = |arch: &[u8]| u64::from_le_bytes(arch[n - 16..n - 8].try_into().unwrap());
    let with_len = |len: u64| {
        let mut b = arch.clone();
        b[n - 16..n - 8].copy_from_slice(&len.to_le_bytes());
        b
    };
    let real = json_len(&arch);
    for (lie, what) in [(real - 1, "decodes to"), (real + 1, "decodes to"), (1 << 29, "claim"), (u64::MAX, "claim")] {
        let e = Archive::open(&with_len(lie)).err().unwrap_or_else(|| panic!("length {lie} was accepted"));
        assert_eq!(e.kind(), ErrorKind::Corruption, "{lie}: {e}");
        assert!(e.message().contains(what), "{lie}: {e}");
    }
    // the header's: a raw_len that does not add up with the tensors is refused
    // on open; one that does but lies about the frame, when it is read
    let a = Archive::open(&arch).unwrap();
    let mut i = a.index.clone();
    i.header.raw_len = i.header.raw_len.map(|x| x + 8);
    let e = Archive::open(&rewrite_index(&arch, &i)).err().expect("a lying header length was accepted");
    assert!(e.message().contains("do not add up"), "{e}");
    let mut i = a.index.clone();
    i.header.raw_len = i.header.raw_len.map(|x| x + 8);
    i.source.size += 8;
    let lying = rewrite_index(&arch, &i);
    let b = Archive::open(&lying).unwrap();
    let e = b.header_bytes().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption);
    assert!(e.message().contains("stored safetensors header"), "{e}");
    assert!(decode(&lying).is_err());
}
