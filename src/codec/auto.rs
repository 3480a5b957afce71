//! `auto`: picks a concrete codec per tensor, the default of
//! `weightlab compress`.
//!
//! The decision, in order (cheap checks first, all deterministic):
//! 1. empty or tiny (< 64 bytes): `raw`;
//! 2. one repeated value: `const`;
//! 3. at most 256 distinct values of 2 or more bytes, or at most 16 of a
//!    one-byte integer type (checked on a sample, then on the whole tensor):
//!    `table`;
//! 4. a float dtype: `exp`, unless `planes>zstd:level=3` is 5 % smaller on a
//!    sample of up to 128 KiB (structured tensors such as position encodings);
//! 5. anything else (integers, bools, complex): a trial of `zstd:level=3`,
//!    `planes>zstd:level=3` and `exp` (byte-wise rANS) on a sample of up to
//!    128 KiB; the smallest wins.
//!
//! In an archive the container calls [`Codec::resolve`] and records the
//! pick, except for float tensors larger than [`PER_CHUNK`]: those stay
//! `auto` in the index and decide per chunk. Used standalone (`encode` on a
//! chunk), `auto` decides on the chunk and writes the chosen spec in a small
//! header before the payload. Per chunk is where large tensors differ: the
//! 402 MB token embedding of EmbeddingGemma has runs of near-identical rows
//! (tokens the training never moved) that `planes>zstd` codes far below
//! `exp`, and a 128 KiB sample of the whole tensor never sees them: per
//! tensor it wrote 66.08 % of the BF16 file, per chunk 65.89 % (lmzip 1.3.0
//! writes 66.05 %).

use super::float::special::{distinct_values, is_constant};
use super::{ChunkInfo, Codec, Fidelity, Params, Reader, StageDef, StageKind};
use crate::error::{Error, Result};
use crate::tensor::{DType, TensorView};

pub struct Auto;

pub const AUTO: StageDef = StageDef {
    id: 96,
    name: "auto",
    version: 1,
    kind: StageKind::Coder,
    summary: "picks per tensor: raw (tiny), const, table (<= 256 values), exp (floats; planes>zstd when 5 % smaller on a sample), else the best of zstd / planes>zstd / exp on a sample",
    examples: &["auto"],
    build: |_: &mut Params, next| {
        if let Some(n) = next {
            return Err(Error::invalid(format!("'auto' is a coder and cannot feed '{}'", n.spec())));
        }
        Ok(Box::new(Auto))
    },
};

/// Below this many bytes a tensor is stored raw.
pub const TINY: usize = 64;
/// Trial sample size (three parts): 128 KiB made the same picks as 1 MiB on
/// the four reference files (MiniLM BF16/F16/F32, whisper-tiny) and
/// compresses MiniLM-BF16 at 570 MB/s against 256 (`examples/codec_speed.rs`,
/// one core); 64 KiB changed picks on MiniLM-F32.
const SAMPLE: usize = 1 << 17;
/// The canonical spec of `exp` at its default gain: what `auto` records.
const EXP: &str = "exp:gain=2";
/// Float tensors above this size decide per chunk (the archive's default
/// chunk size): their parts can differ more than one sample shows.
pub const PER_CHUNK: usize = 4 << 20;

/// Up to `SAMPLE` bytes from the start, middle and end, cut at element
/// boundaries.
fn sample(dtype: DType, data: &[u8]) -> Vec<u8> {
    if data.len() <= SAMPLE {
        return data.to_vec();
    }
    let u = dtype.split_unit().max(1);
    let part = SAMPLE / 3 / u * u;
    let mid = data.len() / 2 / u * u;
    let end = (data.len() - part) / u * u;
    [&data[..part], &data[mid..mid + part], &data[end..end + part]].concat()
}

fn value_width(dtype: DType) -> usize {
    match dtype.size() {
        Some(w) if w <= 8 => w,
        Some(_) => 0,
        None => 1,
    }
}

/// The spec `auto` chooses for a tensor's bytes.
pub fn choose(dtype: DType, data: &[u8]) -> Result<String> {
    if data.len() < TINY {
        return Ok("raw".into());
    }
    if is_constant(dtype, data) {
        return Ok("const".into());
    }
    let w = value_width(dtype);
    // One-byte floats always fit a table, which would only re-code the bytes
    // `exp` codes anyway; one-byte integers (masks) use it when few values occur.
    let max = match w {
        1 if dtype.is_float() => 0,
        1 => 16,
        _ => 256,
    };
    if max > 0 && data.len().is_multiple_of(w) {
        let s = sample(dtype, data);
        if distinct_values(&s, w, max).is_some() && distinct_values(data, w, max).is_some() {
            return Ok("table".into());
        }
    }
    let s = sample(dtype, data);
    if dtype.is_float() {
        // `exp` reaches the order-0 floor; structured tensors (sinusoidal
        // position encodings, repeated rows) have matches only an LZ coder finds:
        // planes>zstd codes Whisper-tiny's position encodings (1.15 MB) 486 KB
        // smaller than exp. `exp` stays unless planes>zstd wins by 5 % on the
        // sample (at 1 % sample noise flipped F32 tensors of MiniLM, costing a
        // point over the file).
        let exp = trial_size(dtype, &s, EXP)?;
        let planes = trial_size(dtype, &s, "planes>zstd:level=3")?;
        return Ok(if planes * 100 < exp * 95 { "planes>zstd:level=3" } else { EXP }.into());
    }
    let mut best: Option<(usize, &str)> = None;
    for spec in ["zstd:level=3", "planes>zstd:level=3", EXP] {
        let n = trial_size(dtype, &s, spec)?;
        if best.is_none_or(|(b, _)| n < b) {
            best = Some((n, spec));
        }
    }
    Ok(best.expect("a candidate").1.to_string())
}

/// Encoded size of `sample` with `spec`.
fn trial_size(dtype: DType, sample: &[u8], spec: &str) -> Result<usize> {
    let info = ChunkInfo { name: "", dtype, shape: &[], offset: 0 };
    let mut out = Vec::new();
    super::build(spec)?.encode(&info, sample, &mut out)?;
    Ok(out.len())
}

impl Codec for Auto {
    fn spec(&self) -> String {
        "auto".into()
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn resolve(&self, t: &TensorView) -> Result<Option<Box<dyn Codec>>> {
        if t.dtype.is_float() && t.data.len() > PER_CHUNK && !is_constant(t.dtype, t.data) {
            return Ok(None); // `auto` itself: a choice per chunk
        }
        Ok(Some(super::build(&choose(t.dtype, t.data)?)?))
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let spec = choose(info.dtype, data)?;
        out.push(spec.len() as u8);
        out.extend_from_slice(spec.as_bytes());
        super::build(&spec)?.encode(info, data, out)
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let (c, rest) = recorded(input)?;
        c.decode(info, rest, out)
    }
    fn decode_xxh3(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<u64> {
        let (c, rest) = recorded(input)?;
        c.decode_xxh3(info, rest, out)
    }
}

/// The codec a chunk of `auto` records, and the stream it encoded.
fn recorded(input: &[u8]) -> Result<(Box<dyn Codec>, &[u8])> {
    let mut r = Reader::new(input, "auto");
    let n = r.u8()? as usize;
    let spec = std::str::from_utf8(r.bytes(n)?).map_err(|_| Error::corrupt("auto: codec spec is not UTF-8"))?;
    let parsed = super::CodecSpec::parse(spec).map_err(|e| Error::corrupt(format!("auto: recorded spec: {e}")))?;
    if parsed.stages.iter().any(|s| s.name == "auto") {
        return Err(Error::corrupt("auto: recorded spec refers to auto"));
    }
    let c = super::build_spec(&parsed).map_err(|e| Error::corrupt(format!("auto: recorded spec '{spec}': {e}")))?;
    Ok((c, r.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::float::testdata::{cases, gaussian};
    use crate::codec::{build, decode_all, encode_all};

    fn pick(dtype: DType, data: &[u8]) -> String {
        let t = TensorView { name: "t", dtype, shape: &[], data };
        let c = Auto.resolve(&t).unwrap().unwrap();
        let s = c.spec();
        assert_eq!(s, choose(dtype, data).unwrap());
        s
    }

    #[test]
    fn exp_constant_is_the_canonical_default() {
        assert_eq!(EXP, crate::codec::build("exp").unwrap().spec());
    }

    #[test]
    fn decisions() {
        assert_eq!(pick(DType::BF16, &gaussian(DType::BF16, 50_000, 0.02, 1)), "exp:gain=2");
        assert_eq!(pick(DType::F32, &gaussian(DType::F32, 50_000, 0.02, 1)), "exp:gain=2");
        assert_eq!(pick(DType::F8E4M3, &gaussian(DType::F8E4M3, 50_000, 0.02, 1)), "exp:gain=2");
        // Sinusoidal position encodings (as in Whisper's encoder): LZ structure
        // an order-0 coder cannot see, so planes>zstd wins the trial.
        let pe: Vec<u8> = (0..300)
            .flat_map(|pos| {
                (0..384).map(move |i| {
                    let f = (pos as f64) / 10000f64.powf((i / 2 * 2) as f64 / 384.0);
                    if i % 2 == 0 { f.sin() } else { f.cos() }
                })
            })
            .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
            .collect();
        assert_eq!(pick(DType::F16, &pe), "planes>zstd:level=3");
        assert_eq!(pick(DType::BF16, &[0u8; 8192]), "const");
        assert_eq!(pick(DType::F32, &[0u8; 40]), "raw");
        assert_eq!(pick(DType::F32, &[]), "raw");
        // An attention mask (bool and f32), and token-type ids.
        let mask: Vec<u8> = (0..64 * 64).map(|i| ((i % 64) <= (i / 64)) as u8).collect();
        assert_eq!(pick(DType::Bool, &mask), "table");
        let fmask: Vec<u8> = mask.iter().flat_map(|&b| (b as f32).to_bits().to_le_bytes()).collect();
        assert_eq!(pick(DType::F32, &fmask), "table");
        // Position ids 0..4096 as I64: too many values for a table; a generic trial.
        let pos: Vec<u8> = (0..4096u64).flat_map(|i| i.to_le_bytes()).collect();
        let p = pick(DType::I64, &pos);
        assert!(p.contains("zstd") || p.starts_with("exp"), "{p}");
        assert_ne!(p, "table");
    }

    #[test]
    fn standalone_round_trip_and_corruption() {
        let c = build("auto").unwrap();
        for case in cases() {
            let i = ChunkInfo { name: "t", dtype: case.dtype, shape: &[], offset: 0 };
            let enc = encode_all(&*c, &i, &case.data).unwrap();
            assert_eq!(decode_all(&*c, &i, &enc, case.data.len()).unwrap(), case.data, "{}", case.name);
        }
        let data = gaussian(DType::BF16, 1000, 1.0, 2);
        let i = ChunkInfo { name: "t", dtype: DType::BF16, shape: &[], offset: 0 };
        let enc = encode_all(&*c, &i, &data).unwrap();
        assert_eq!(&enc[1..11], b"exp:gain=2");
        for cut in 0..enc.len() {
            assert!(decode_all(&*c, &i, &enc[..cut], data.len()).is_err());
        }
        let mut bad = enc.clone();
        bad[1..5].copy_from_slice(b"auto");
        assert!(decode_all(&*c, &i, &bad, data.len()).is_err());
    }

    /// A float tensor larger than `PER_CHUNK` stays `auto` in the index and
    /// decides per chunk: a part a sample of the whole never sees (rows
    /// repeated as an embedding's untrained tokens are) gets the LZ coder,
    /// and the archive is smaller than with one pick for the tensor; bits
    /// come back exactly.
    #[test]
    fn large_float_tensors_decide_per_chunk() {
        use crate::container::{Archive, CompressOptions, DecodeOptions, compress};
        use crate::tensor::{OwnedTensor, safetensors};
        let (rows, cols) = (1536usize, 2048usize); // 6 MiB of BF16
        let mut data = gaussian(DType::BF16, rows * cols, 0.02, 9);
        // the last third: one row repeated (a sample at start, middle and end
        // of the whole tensor holds at most one part of it)
        let row = data[..cols * 2].to_vec();
        for r in rows * 2 / 3..rows {
            data[r * cols * 2..(r + 1) * cols * 2].copy_from_slice(&row);
        }
        let t = OwnedTensor::new("embed", DType::BF16, vec![rows as u64, cols as u64], data);
        let file = safetensors::serialize([t.view()], None).unwrap();
        let size = |codec: &str| {
            let opts = CompressOptions { codec: codec.into(), chunk_size: 1 << 20, ..Default::default() };
            let mut out = Vec::new();
            let index = compress(&file, "t.safetensors", &mut out, &opts).unwrap();
            (out, index)
        };
        let (auto, index) = size("auto");
        assert_eq!(index.tensors[0].codec, "auto", "recorded as a choice per chunk");
        let (exp, _) = size("exp:gain=2");
        assert!(auto.len() * 10 < exp.len() * 9, "per chunk {} against exp {}", auto.len(), exp.len());
        let mut back = Vec::new();
        let opts =
            DecodeOptions { check_tensor_hashes: true, check_file_hash: true, check_stored: true, progress: false };
        Archive::open(&auto).unwrap().stream(&mut back, &opts).unwrap();
        assert!(back == file);
    }

    /// The archive path: `auto` is the default, records its picks, and the
    /// archive is identical whatever the thread count.
    #[test]
    fn archive_default_is_auto_and_deterministic() {
        use crate::container::{Archive, CompressOptions, compress};
        use crate::tensor::{OwnedTensor, safetensors};
        let bf = gaussian(DType::BF16, 40_000, 0.02, 5);
        let mask: Vec<u8> = (0..4096u32).map(|i| (i % 7 == 0) as u8).collect();
        let tensors = [
            OwnedTensor::new("w", DType::BF16, vec![200, 200], bf.clone()),
            OwnedTensor::new("zeros", DType::F32, vec![1000], vec![0u8; 4000]),
            OwnedTensor::new("mask", DType::Bool, vec![4096], mask),
            OwnedTensor::new("w16", DType::F16, vec![40_000], gaussian(DType::F16, 40_000, 0.02, 6)),
        ];
        let file = safetensors::serialize(tensors.iter().map(|t| t.view()), None).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let opts = CompressOptions { chunk_size: 16_384, threads, check: true, ..Default::default() };
            assert_eq!(opts.codec, "auto");
            let mut out = Vec::new();
            let index = compress(&file, "t.safetensors", &mut out, &opts).unwrap();
            let picks: Vec<&str> = index.tensors.iter().map(|t| t.codec.as_str()).collect();
            assert_eq!(picks, ["exp:gain=2", "const", "table", "exp:gain=2"]);
            let a = Archive::open(&out).unwrap();
            for (i, t) in tensors.iter().enumerate() {
                assert!(a.read_tensor(i).unwrap() == t.data, "{}", t.name);
            }
            outs.push(out);
        }
        assert!(outs[0] == outs[1] && outs[1] == outs[2], "archive depends on the thread count");
    }
}
