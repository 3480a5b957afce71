//! Float codec benches: the rANS back end on exponent-like symbols, and
//! `exp` against zstd and planes>zstd on seeded Gaussian BF16 / F16 / F32
//! weights (throughput in original bytes, one thread), and each decode with
//! the xxh3 of its output as an archive read checks it (`decode then xxh3`
//! hashes after the decode, `decode_xxh3` as the codec does it).
//!
//! cargo bench --bench float

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weightlab::codec::entropy::{decode_stream, encode_stream};
use weightlab::codec::{ChunkInfo, build};
use weightlab::tensor::DType;
use weightlab::tensor::synth::Rng;

/// 2M Gaussian weights (sigma 0.02) in `dtype`: one 4 MiB BF16 chunk.
fn weights(dtype: DType, n: usize) -> Vec<u8> {
    let mut r = Rng::from_state(42);
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let x = r.normal() * 0.02;
        match dtype {
            DType::BF16 => out.extend_from_slice(&half::bf16::from_f64(x).to_bits().to_le_bytes()),
            DType::F16 => out.extend_from_slice(&half::f16::from_f64(x).to_bits().to_le_bytes()),
            _ => out.extend_from_slice(&(x as f32).to_bits().to_le_bytes()),
        }
    }
    out
}

fn rans(c: &mut Criterion) {
    // As the CLI does (see its doc): chunk-sized buffers are reused.
    weightlab::io::keep_freed_memory();
    // The exponent byte of BF16 weights: ~2.7 bits per symbol.
    let w = weights(DType::BF16, 1 << 21);
    let syms: Vec<u8> = w.chunks_exact(2).map(|e| (e[1] << 1) | (e[0] >> 7)).collect();
    let mut enc = Vec::new();
    encode_stream(&syms, None, &mut enc).unwrap();
    let mut g = c.benchmark_group("rans");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(syms.len() as u64));
    g.bench_function("encode/exponents", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            encode_stream(black_box(&syms), None, &mut out).unwrap();
            out
        })
    });
    let mut out = vec![0u8; syms.len()];
    g.bench_function("decode/exponents", |b| b.iter(|| decode_stream(black_box(&enc), None, &mut out).unwrap()));
    g.finish();
}

fn codecs(c: &mut Criterion) {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let n = if dtype == DType::F32 { 1 << 20 } else { 1 << 21 };
        let data = weights(dtype, n);
        let info = ChunkInfo { name: "w", dtype, shape: &[], offset: 0 };
        let mut g = c.benchmark_group(format!("float/{dtype}"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes(data.len() as u64));
        for spec in ["exp", "zstd:level=3", "planes>zstd:level=3"] {
            let codec = build(spec).unwrap();
            let mut enc = Vec::new();
            codec.encode(&info, &data, &mut enc).unwrap();
            g.bench_with_input(BenchmarkId::new("encode", spec), &data, |b, d| {
                b.iter(|| {
                    let mut out = Vec::new();
                    codec.encode(&info, black_box(d), &mut out).unwrap();
                    out
                })
            });
            let mut out = vec![0u8; data.len()];
            g.bench_with_input(BenchmarkId::new("decode", spec), &enc, |b, e| {
                b.iter(|| codec.decode(&info, black_box(e), &mut out).unwrap())
            });
            // What an archive read does: the decode and the xxh3 of its
            // output, hashed after the decode and as the codec does it.
            g.bench_with_input(BenchmarkId::new("decode then xxh3", spec), &enc, |b, e| {
                b.iter(|| {
                    codec.decode(&info, black_box(e), &mut out).unwrap();
                    weightlab::container::xxh3_64(&out)
                })
            });
            g.bench_with_input(BenchmarkId::new("decode_xxh3", spec), &enc, |b, e| {
                b.iter(|| codec.decode_xxh3(&info, black_box(e), &mut out).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, rans, codecs);
criterion_main!(benches);
