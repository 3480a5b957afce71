//! Ratio of a codec against the per-tensor order-0 floor, and single-thread
//! encode/decode speed, on a safetensors file (optionally cast to BF16/F16 by
//! round to nearest even: a throwaway cast for measurement only; the real
//! derivation lives in the datasets layer).
//!
//! cargo run --release --example floor_check -- FILE [bf16|f16|f32] [SPEC...]
//!
//! Every tensor is cut into 4 MiB chunks as the archive does; each spec is
//! timed over the whole file on one thread (best of 3 decodes, verified).

use std::time::Instant;
use weightlab::analysis::entropy::field_entropy;
use weightlab::codec::{ChunkInfo, build};
use weightlab::tensor::{DType, SafeTensors};

const CHUNK: usize = 4 << 20;

/// CPU time of this thread in seconds (the machine may be shared: wall
/// time then overstates the codec's cost; both are printed).
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn cast(dtype: DType, data: &[u8], to: &str) -> (DType, Vec<u8>) {
    if dtype != DType::F32 || to == "f32" {
        return (dtype, data.to_vec());
    }
    let f = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
    match to {
        "bf16" => (DType::BF16, f.flat_map(|x| half::bf16::from_f32(x).to_bits().to_le_bytes()).collect()),
        "f16" => (DType::F16, f.flat_map(|x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect()),
        _ => panic!("cast to bf16, f16 or f32"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: floor_check FILE [bf16|f16|f32] [SPEC...]");
    let to = args.get(2).map(String::as_str).unwrap_or("f32");
    let specs: Vec<String> =
        if args.len() > 3 { args[3..].to_vec() } else { vec!["exp".into(), "zstd:level=3".into()] };
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::parse(&bytes).unwrap();
    let tensors: Vec<(String, DType, Vec<u64>, Vec<u8>)> = st
        .views()
        .map(|v| {
            let (d, data) = cast(v.dtype, v.data, to);
            (v.name.to_string(), d, v.shape.to_vec(), data)
        })
        .collect();
    let total: usize = tensors.iter().map(|t| t.3.len()).sum();
    let mut floor = 0.0;
    let mut float_total = 0usize;
    for (_, d, _, data) in &tensors {
        match field_entropy(*d, data) {
            Some(f) => {
                floor += f.floor_bits * f.elements as f64 / 8.0;
                float_total += data.len();
            }
            None => floor += data.len() as f64, // non-float tensors counted raw
        }
    }
    println!(
        "{path} as {to}: {} tensors, {total} bytes ({float_total} float); per-tensor order-0 floor {:.2} %",
        tensors.len(),
        100.0 * floor / total as f64
    );
    for spec in &specs {
        let c = build(spec).unwrap();
        // Resolve once per tensor (what the archive records for `auto`).
        let per: Vec<Box<dyn weightlab::codec::Codec>> = tensors
            .iter()
            .map(|(name, d, shape, data)| {
                let tv = weightlab::tensor::TensorView { name, dtype: *d, shape, data };
                c.resolve(&tv).unwrap().unwrap_or_else(|| build(spec).unwrap())
            })
            .collect();
        // (tensor, offset, length, encoded)
        let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
        for (ti, (_, d, _, data)) in tensors.iter().enumerate() {
            let step = CHUNK / d.split_unit() * d.split_unit();
            let mut off = 0;
            loop {
                let len = (data.len() - off).min(step);
                jobs.push((ti, off, len));
                off += len;
                if off >= data.len() {
                    break;
                }
            }
        }
        let info = |ti: usize, off: usize| {
            let (name, d, shape, _) = &tensors[ti];
            ChunkInfo { name, dtype: *d, shape, offset: off as u64 }
        };
        let mut enc: Vec<Vec<u8>> = Vec::with_capacity(jobs.len());
        let t0 = Instant::now();
        let c0 = cpu_s();
        for &(ti, off, len) in &jobs {
            let mut out = Vec::new();
            per[ti].encode(&info(ti, off), &tensors[ti].3[off..off + len], &mut out).unwrap();
            enc.push(out);
        }
        let enc_s = t0.elapsed().as_secs_f64();
        let enc_cpu = cpu_s() - c0;
        let size: usize = enc.iter().map(Vec::len).sum();
        let mut buf = vec![0u8; CHUNK];
        for (&(ti, off, len), e) in jobs.iter().zip(&enc) {
            per[ti].decode(&info(ti, off), e, &mut buf[..len]).unwrap();
            assert!(buf[..len] == tensors[ti].3[off..off + len], "{spec}: {} does not round-trip", tensors[ti].0);
        }
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        for _ in 0..3 {
            let t1 = Instant::now();
            let c1 = cpu_s();
            for (&(ti, off, len), e) in jobs.iter().zip(&enc) {
                per[ti].decode(&info(ti, off), e, &mut buf[..len]).unwrap();
            }
            best = best.min(t1.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_s() - c1);
        }
        println!(
            "  {spec:<24} ratio {:6.2} %  (floor {:6.2} %, {:+.2} pt)  encode {:5.0} MB/s (cpu {:5.0})  decode {:5.0} MB/s (cpu {:5.0})  [1 thread]",
            100.0 * size as f64 / total as f64,
            100.0 * floor / total as f64,
            100.0 * (size as f64 - floor) / total as f64,
            total as f64 / enc_s / 1e6,
            total as f64 / enc_cpu / 1e6,
            total as f64 / best / 1e6,
            total as f64 / best_cpu / 1e6,
        );
    }
}
