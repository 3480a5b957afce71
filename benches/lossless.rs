//! Generic byte coders and byte planes on seeded weight-like chunks (4 MiB of
//! BF16 and F32, Gaussian with heavy tails), one thread; throughput in bytes
//! of original data. `cargo bench --bench lossless`
//!
//! The counterparts for the float-aware codecs are in benches/float.rs.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weightlab::codec::{ChunkInfo, build};
use weightlab::tensor::{DType, synth};

fn specs() -> Vec<&'static str> {
    let mut v = vec![
        "lz4",
        "zstd:level=1",
        "zstd:level=3",
        "zstd:level=19",
        "deflate:level=1",
        "xz:level=6",
        "planes>zstd:level=1",
        "planes>zstd:level=3",
        "planes>lz4",
    ];
    if cfg!(feature = "blosc2") {
        v.push("blosc2:codec=zstd,level=5,shuffle=byte");
    }
    v
}

fn bench(c: &mut Criterion) {
    // As the CLI does (see its doc): chunk-sized buffers are reused.
    weightlab::io::keep_freed_memory();
    for dtype in [DType::BF16, DType::F32] {
        let n = (4 << 20) / dtype.size().unwrap();
        let data = synth::tensor_bytes(dtype, n, 1);
        let info = ChunkInfo { name: "w", dtype, shape: &[], offset: 0 };
        let mut g = c.benchmark_group(format!("lossless/{dtype}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(10);
        for spec in specs() {
            let codec = build(spec).unwrap();
            let mut enc = Vec::new();
            codec.encode(&info, &data, &mut enc).unwrap();
            let mut out = vec![0u8; data.len()];
            codec.decode(&info, &enc, &mut out).unwrap();
            assert!(out == data, "{spec} does not round-trip");
            if !spec.contains("level=19") && !spec.starts_with("xz") {
                g.bench_function(BenchmarkId::new("encode", spec), |b| {
                    b.iter(|| {
                        let mut e = Vec::with_capacity(enc.len());
                        codec.encode(&info, black_box(&data), &mut e).unwrap();
                        e
                    })
                });
            }
            g.bench_function(BenchmarkId::new("decode", spec), |b| {
                b.iter(|| codec.decode(&info, black_box(&enc), &mut out).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
