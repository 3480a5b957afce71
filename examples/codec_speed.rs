//! Single-thread codec speed on the tensors of a real file, without the lab's
//! Polars stack: every tensor is cut into 4 MiB chunks (the archive's default)
//! and each codec encodes and decodes each chunk; the best of `REPS` passes is
//! kept. Decoded bytes are compared with the input.
//!
//! cargo run --release --example codec_speed -- FILE [SPEC ...]

use std::time::Instant;
use weightlab::codec::{build, ChunkInfo};
use weightlab::tensor::SafeTensors;

const REPS: usize = 5;

fn main() -> weightlab::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: codec_speed FILE [SPEC ...]");
    let specs: Vec<&str> = if args.len() > 1 {
        args[1..].iter().map(|s| s.as_str()).collect()
    } else {
        vec!["exp", "zstd:level=3", "planes>zstd:level=3"]
    };
    let map = weightlab::io::Mapped::open(std::path::Path::new(path))?;
    let st = SafeTensors::parse(map.bytes())?;
    let chunk = weightlab::container::DEFAULT_CHUNK_SIZE;
    let mut jobs = Vec::new();
    for t in &st.tensors {
        let v = st.view(t);
        for (a, b) in weightlab::container::write::chunk_ranges(t, chunk) {
            jobs.push((v, a, &v.data[a as usize..b as usize]));
        }
    }
    let total: usize = jobs.iter().map(|j| j.2.len()).sum();
    println!("{path}: {} tensors, {} chunks, {total} bytes", st.tensors.len(), jobs.len());
    println!("{:<28} {:>8} {:>12} {:>12}", "codec", "ratio %", "comp MB/s", "decomp MB/s");
    for spec in specs {
        let codec = build(spec)?;
        let mut encoded = Vec::with_capacity(jobs.len());
        let mut best_enc = f64::INFINITY;
        for _ in 0..REPS {
            encoded.clear();
            let t0 = Instant::now();
            for (v, off, data) in &jobs {
                let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: *off };
                let mut out = Vec::new();
                codec.encode(&info, data, &mut out)?;
                encoded.push(out);
            }
            best_enc = best_enc.min(t0.elapsed().as_secs_f64());
        }
        let size: usize = encoded.iter().map(|e| e.len()).sum();
        let mut bufs: Vec<Vec<u8>> = jobs.iter().map(|j| vec![0u8; j.2.len()]).collect();
        let mut best_dec = f64::INFINITY;
        for _ in 0..REPS {
            let t0 = Instant::now();
            for (((v, off, _), enc), out) in jobs.iter().zip(&encoded).zip(&mut bufs) {
                let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: *off };
                codec.decode(&info, enc, out)?;
            }
            best_dec = best_dec.min(t0.elapsed().as_secs_f64());
        }
        for ((_, _, data), out) in jobs.iter().zip(&bufs) {
            assert!(out == data, "{spec}: round trip differs");
        }
        let mb = total as f64 / 1e6;
        println!(
            "{:<28} {:>8.2} {:>12.0} {:>12.0}",
            codec.spec(),
            100.0 * size as f64 / total as f64,
            mb / best_enc,
            mb / best_dec
        );
    }
    Ok(())
}
