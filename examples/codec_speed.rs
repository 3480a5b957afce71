//! Single-thread codec speed on the tensors of a real file, without the lab's
//! Polars stack: every tensor is cut into 4 MiB chunks (the archive's default)
//! and each codec encodes and decodes each chunk; the best of `REPS` passes is
//! kept (the passes interleave the codecs). Decoded bytes are compared with
//! the input.
//!
//! With `-j N` the chunks of each pass are spread over N threads (rayon),
//! to measure how the codecs scale without the tool's hashing and writes.
//!
//! cargo run --release --example codec_speed -- [-j N] FILE [SPEC ...]

use rayon::prelude::*;
use std::time::Instant;
use weightlab::codec::{ChunkInfo, build};
use weightlab::tensor::SafeTensors;

const REPS: usize = 7;

fn main() -> weightlab::Result<()> {
    weightlab::io::keep_freed_memory();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 1;
    if args.first().is_some_and(|a| a == "-j") {
        threads = args.get(1).and_then(|n| n.parse().ok()).expect("-j N");
        args.drain(..2);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let path = args.first().expect("usage: codec_speed [-j N] FILE [SPEC ...]");
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
    println!("{path}: {} tensors, {} chunks, {total} bytes, {threads} thread(s)", st.tensors.len(), jobs.len());
    println!("{:<28} {:>8} {:>12} {:>12}", "codec", "ratio %", "comp MB/s", "decomp MB/s");
    // Passes interleave the codecs, so that a slow spell of a shared
    // machine lowers one pass of every codec, not every pass of one.
    let codecs: Vec<_> = specs.iter().map(|s| build(s)).collect::<weightlab::Result<_>>()?;
    let mut best = vec![(f64::INFINITY, f64::INFINITY); codecs.len()];
    let mut sizes = vec![0usize; codecs.len()];
    let mut bufs: Vec<Vec<u8>> = jobs.iter().map(|j| vec![0u8; j.2.len()]).collect();
    for _ in 0..REPS {
        for (c, codec) in codecs.iter().enumerate() {
            let t0 = Instant::now();
            let encoded: Vec<Vec<u8>> = pool.install(|| {
                jobs.par_iter()
                    .map(|(v, off, data)| {
                        let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: *off };
                        let mut out = Vec::new();
                        codec.encode(&info, data, &mut out).map(|()| out)
                    })
                    .collect::<weightlab::Result<_>>()
            })?;
            let te = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            pool.install(|| {
                jobs.par_iter().zip(&encoded).zip(&mut bufs).try_for_each(|(((v, off, _), enc), out)| {
                    let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: *off };
                    codec.decode(&info, enc, out)
                })
            })?;
            let td = t0.elapsed().as_secs_f64();
            for ((_, _, data), out) in jobs.iter().zip(&bufs) {
                assert!(out == data, "{}: round trip differs", codec.spec());
            }
            sizes[c] = encoded.iter().map(|e| e.len()).sum();
            best[c] = (best[c].0.min(te), best[c].1.min(td));
        }
    }
    let mb = total as f64 / 1e6;
    for ((codec, (te, td)), size) in codecs.iter().zip(best).zip(sizes) {
        println!(
            "{:<28} {:>8.3} {:>12.0} {:>12.0}",
            codec.spec(),
            100.0 * size as f64 / total as f64,
            mb / te,
            mb / td
        );
    }
    Ok(())
}
