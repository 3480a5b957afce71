//! The runner end to end on a tiny synthetic safetensors file written here:
//! rows for every cell with the expected columns, verified round trips, peak
//! memory from the counting allocator, and a second run that resumes.

use std::path::Path;
use weightlab::experiment::{Experiment, RunOptions, cli, output};
use weightlab::tensor::{DType, OwnedTensor};

#[global_allocator]
static ALLOC: weightlab::experiment::mem::CountingAlloc = weightlab::experiment::mem::CountingAlloc;

/// splitmix64
fn rng(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Roughly normal weights (sum of uniforms), scale 0.05.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| (rng(&mut s) >> 40) as f32 / (1u64 << 24) as f32).sum::<f32>() - 2.0;
            u * 0.05
        })
        .collect()
}

fn write_model(path: &Path) {
    let w = weights(64 * 96, 1);
    let bf16: Vec<u8> = w.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect();
    let b = weights(96, 2);
    let f32b: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    let ids: Vec<u8> = (0..16i64).flat_map(|i| i.to_le_bytes()).collect();
    let tensors = [
        OwnedTensor::new("encoder.layer.0.attention.self.query.weight", DType::BF16, vec![64, 96], bf16),
        OwnedTensor::new("encoder.layer.0.attention.self.query.bias", DType::F32, vec![96], f32b),
        OwnedTensor::new("embeddings.position_ids", DType::I64, vec![1, 16], ids),
    ];
    weightlab::tensor::safetensors::write_file(path, tensors.iter().map(|t| t.view()), None).unwrap();
}

fn experiment(model: &Path, extra: &str) -> Experiment {
    let text = format!(
        r#"
name = "tiny"
datasets = [{{ path = "{}" }}]
codecs = ["zstd:level=1", "planes>zstd:level=1", "lz4"]
peers = ["zstd-cli:-1", "zipnn"]
granularity = "both"
reps = 2
chunk_kib = 4
{extra}
[outputs]
tables = false
charts = false
"#,
        model.display()
    );
    Experiment::parse(&text, "tiny.toml", Path::new("/")).unwrap()
}

#[test]
fn runs_every_cell_verifies_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    write_model(&model);
    let exp = experiment(&model, "");
    let out = dir.path().join("report");
    let opts = RunOptions { out_dir: Some(out.clone()), ..Default::default() };
    let r = cli::run_experiment(&exp, &opts).unwrap();

    // 3 tensors x 3 codecs + 3 whole-file cells + 2 peers
    assert_eq!(r.rows.len(), 3 * 3 + 3 + 2, "{:#?}", r.rows.iter().map(|r| (&r.tensor, &r.codec)).collect::<Vec<_>>());
    assert_eq!(r.measured, r.rows.len());
    let codecs: Vec<&str> = r.rows.iter().filter(|r| r.tensor != "*").map(|r| r.codec.as_str()).take(3).collect();
    assert_eq!(codecs, ["zstd:level=1", "planes>zstd:level=1", "lz4"]);
    for row in r.rows.iter().filter(|r| r.family != "peer") {
        assert!(row.available && row.verified, "{row:?}");
        assert!(row.lossless);
        assert_eq!(row.reps, 2);
        let c = row.compressed_bytes.unwrap();
        assert!(c > 0);
        assert!((row.ratio.unwrap() - c as f64 / row.original_bytes as f64).abs() < 1e-12);
        let (med, lo, hi) =
            (row.compress_mbps_median.unwrap(), row.compress_mbps_min.unwrap(), row.compress_mbps_max.unwrap());
        assert!(lo <= med && med <= hi && lo > 0.0, "{row:?}");
        assert!(row.decompress_mbps_median.unwrap() > 0.0);
        assert!(row.peak_mem_bytes.is_some_and(|p| p > 0), "counting allocator installed: {row:?}");
        assert!(row.floor_ratio.is_some_and(|f| f > 0.0 && f <= 1.0 + 1e-9), "{row:?}");
    }
    let q = r.rows.iter().find(|r| r.tensor.ends_with("query.weight")).unwrap();
    assert_eq!((q.dtype.as_str(), q.tensor_class.as_str(), q.numel), ("BF16", "attention", 64 * 96));
    // a 12 KiB tensor in 4 KiB chunks: the floor is below the raw size
    assert!(q.floor_ratio.unwrap() < 0.95);
    let whole = r.rows.iter().filter(|r| r.tensor == "*" && r.family != "peer").count();
    assert_eq!(whole, 3);
    let file_len = std::fs::metadata(&model).unwrap().len();
    assert!(r.rows.iter().filter(|r| r.tensor == "*").all(|r| r.original_bytes == file_len));

    // peers: the zstd CLI is measured when installed; an absent tool gives an
    // unavailable row with a note and no numbers
    for p in r.rows.iter().filter(|r| r.family == "peer") {
        if p.available {
            // measured; a round trip that fails says so in the note
            assert!(p.verified || !p.note.is_empty(), "{p:?}");
            assert!(p.compressed_bytes.is_some() || p.note.contains("failed"), "{p:?}");
        } else {
            assert!(!p.note.is_empty() && p.compressed_bytes.is_none() && p.ratio.is_none(), "{p:?}");
        }
    }
    if weightlab::experiment::peers::which("zstd").is_some() {
        let z = r.rows.iter().find(|p| p.codec == "peer:zstd-cli -1").unwrap();
        assert!(z.available && z.verified && z.compress_mbps_median.is_some(), "{z:?}");
        if Path::new("/usr/bin/time").is_file() {
            // zstd on a 13 KB file: a few MB, not this test process's peak
            let p = z.peak_mem_bytes.unwrap();
            assert!(p > 0 && p < 64 << 20, "{z:?}");
        }
    }

    // the files
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in
        ["experiment", "tensor", "codec", "ratio", "compress_mbps_median", "decompress_mbps_max", "verified", "note"]
    {
        assert!(header.split(',').any(|c| c == col), "{col} in {header}");
    }
    assert_eq!(csv.lines().count(), r.rows.len() + 1);
    let back = output::read_jsonl(&out.join("results.jsonl")).unwrap();
    assert_eq!(back.len(), r.rows.len());
    for (a, b) in back.iter().zip(&r.rows) {
        assert_eq!(
            (&a.tensor, &a.codec, a.compressed_bytes, a.verified),
            (&b.tensor, &b.codec, b.compressed_bytes, b.verified)
        );
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
            (x, y) => x == y,
        };
        assert!(close(a.compress_mbps_median, b.compress_mbps_median));
    }
    let machine: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("machine.json")).unwrap()).unwrap();
    assert!(machine["cores"].as_u64().unwrap() >= 1);
    assert!(machine["crates"]["zstd"].is_string(), "{machine}");

    // second run: every persisted cell comes from the resume file
    let unavailable = r.rows.iter().filter(|r| !r.available).count();
    let r2 = cli::run_experiment(&exp, &opts).unwrap();
    assert_eq!(r2.resumed, r.rows.len() - unavailable);
    assert_eq!(r2.measured, unavailable);
    assert_eq!(r2.rows.len(), r.rows.len());
    let same = |a: &weightlab::experiment::ResultRow, b: &weightlab::experiment::ResultRow| {
        a.codec == b.codec
            && a.tensor == b.tensor
            && a.compressed_bytes == b.compressed_bytes
            && a.verified == b.verified
    };
    assert!(r.rows.iter().zip(&r2.rows).all(|(a, b)| same(a, b)), "resumed rows are the stored ones, in order");

    // an interrupted run: a torn last line and missing cells are measured again
    let resume = out.join(".resume");
    let text = std::fs::read_to_string(&resume).unwrap();
    let keep: Vec<&str> = text.lines().take(4).collect();
    std::fs::write(&resume, format!("{}\n{{\"experiment\":\"tin", keep.join("\n"))).unwrap();
    let r3 = cli::run_experiment(&exp, &opts).unwrap();
    assert_eq!(r3.resumed, 4);
    assert_eq!(r3.measured, r.rows.len() - 4);

    // --fresh measures everything
    let r4 = cli::run_experiment(&exp, &RunOptions { fresh: true, ..opts.clone() }).unwrap();
    assert_eq!((r4.measured, r4.resumed), (r.rows.len(), 0));
}

#[test]
fn limits_and_thread_counts_shape_the_cells() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    write_model(&model);
    let mut exp = experiment(&model, "max_tensors = 1\nthreads = [1, 2]\nmin_tensor_bytes = 200");
    exp.peers.clear();
    exp.granularity = weightlab::experiment::spec::Granularity::Tensor;
    let opts = RunOptions { out_dir: Some(dir.path().join("r")), ..Default::default() };
    let r = cli::run_experiment(&exp, &opts).unwrap();
    // min_tensor_bytes drops the 128-byte position ids, max_tensors keeps one
    assert_eq!(r.rows.len(), 3 * 2);
    assert!(r.rows.iter().all(|x| x.tensor.ends_with("query.weight") && x.verified));
    assert_eq!(r.rows.iter().filter(|x| x.threads == 2).count(), 3);
}

#[test]
fn a_missing_dataset_file_fails_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(&dir.path().join("nope.safetensors"), "");
    let opts = RunOptions { out_dir: Some(dir.path().join("r")), ..Default::default() };
    let e = cli::run_experiment(&exp, &opts).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}
