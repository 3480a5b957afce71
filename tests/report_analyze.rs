//! `weightlab analyze` on a tiny synthetic BF16 file: top bytes, shares,
//! plane entropies and value statistics exactly as computed by hand.

use weightlab::analysis::{analyze_safetensors, tables};
use weightlab::tensor::{DType, OwnedTensor, safetensors};

/// Two BF16 tensors and one I32 tensor.
/// "a": 0x3c10 ×3, 0xbc10 ×2, 0x3c20, 0x3f80 (1.0), 0x0000 (8 values)
/// "b": 0x3c10, 0xbc20, 0xbc10, 0x4000 (2.0) (4 values)
fn file() -> Vec<u8> {
    let le = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let a = OwnedTensor::new(
        "a",
        DType::BF16,
        vec![2, 4],
        le(&[0x3c10, 0x3c10, 0x3c10, 0xbc10, 0xbc10, 0x3c20, 0x3f80, 0]),
    );
    let b = OwnedTensor::new("b", DType::BF16, vec![4], le(&[0x3c10, 0xbc20, 0xbc10, 0x4000]));
    let c = OwnedTensor::new("ids", DType::I32, vec![1], vec![1, 0, 0, 0]);
    safetensors::serialize([a.view(), b.view(), c.view()], None).unwrap()
}

#[test]
fn whole_file_top_bytes_hand_computed() {
    let f = analyze_safetensors("t", &file(), &[]).unwrap();
    assert_eq!(f.tensors.len(), 3);
    assert_eq!(f.data_bytes, 16 + 8 + 4);
    let t = f.main_total().unwrap();
    assert_eq!((t.dtype.as_str(), t.tensors, t.numel, t.bytes), ("BF16", 2, 12, 24));
    // high bytes (plane 1) of all 12: 3c ×5, bc ×4, 3f, 00, 40
    let hi: Vec<(u8, u64)> = t.planes[1].top.iter().map(|b| (b.value, b.count)).collect();
    assert_eq!(hi, [(0x3c, 5), (0xbc, 4), (0x00, 1), (0x3f, 1), (0x40, 1)]);
    assert_eq!(t.planes[1].top[0].share, 5.0 / 12.0);
    assert_eq!(t.planes[1].top[1].cumulative, 9.0 / 12.0);
    // low bytes (plane 0): 10 ×7, 20 ×2, 80, 00 ×2
    let lo: Vec<(u8, u64)> = t.planes[0].top.iter().map(|b| (b.value, b.count)).collect();
    assert_eq!(lo, [(0x10, 7), (0x00, 2), (0x20, 2), (0x80, 1)]);
    // all 24 bytes: 10 ×7, 3c ×5, bc ×4, 00 ×3, 20 ×2, 3f, 40, 80
    let all: Vec<(u8, u64)> = t.top_bytes.iter().map(|b| (b.value, b.count)).collect();
    assert_eq!(all, [(0x10, 7), (0x3c, 5), (0xbc, 4), (0x00, 3), (0x20, 2), (0x3f, 1), (0x40, 1), (0x80, 1)]);
    assert_eq!(t.top_bytes[0].share, 7.0 / 24.0);
    assert_eq!(t.top_bytes[2].cumulative, 16.0 / 24.0);
    // entropy of plane 1: counts 5,4,1,1,1 of 12
    let h = -[5.0f64, 4.0, 1.0, 1.0, 1.0].iter().map(|c| c / 12.0 * (c / 12.0f64).log2()).sum::<f64>();
    assert!((t.planes[1].entropy - h).abs() < 1e-12);
    let s = t.stats.as_ref().unwrap();
    assert_eq!((s.count, s.zero, s.positive, s.negative), (12, 1, 7, 4));
    assert_eq!((s.min, s.max), (Some(half::bf16::from_bits(0xbc20).to_f64()), Some(2.0)));
    // all BF16 values except 1.0 and 2.0 are below 1e-2 in magnitude (0x3c10 ≈ 0.0088)
    assert_eq!(s.bands.iter().sum::<u64>(), 12);
    assert_eq!(s.bands[4], 2);
    // the integer tensor has a total of its own and no float fields
    assert_eq!(f.totals[1].dtype, "I32");
    assert!(f.totals[1].fields.is_none());
    // floor per tensor is at most 16 bits per weight
    assert!(f.floor_ratio_per_tensor > 0.0 && f.floor_ratio_per_tensor <= 1.0);
}

#[test]
fn one_tensor_and_missing_tensor() {
    let f = analyze_safetensors("t", &file(), &["b".to_string()]).unwrap();
    assert_eq!(f.tensors.len(), 1);
    assert_eq!(f.tensors[0].numel, 4);
    let err = analyze_safetensors("t", &file(), &["nope".to_string()]).unwrap_err();
    assert!(err.to_string().contains("nope"));
    assert!(analyze_safetensors("t", &file()[..20], &[]).is_err());
}

#[test]
fn aveiro_tables_have_ours_and_theirs() {
    let f = analyze_safetensors("t", &file(), &[]).unwrap();
    let md = tables::aveiro_tables(f.main_total().unwrap(), Some(&tables::aveiro_qwen2_0_5b()));
    assert!(md.contains("theirs (Qwen2-0.5B, as published)"));
    // rank 1: all bytes 0x10 (7 of 24), plane 1 0x3c (5 of 12), theirs 0x3c at 28 %
    assert!(md.contains("| 1 | 0x10 | 29.17 % | 29.17 % | 0x3c | 41.67 % | 41.67 % | 0x3c | 28 % |"), "{md}");
    assert!(md.contains("| 2 | 0x3c | 20.83 % | 50.00 % | 0xbc | 33.33 % | 75.00 % | 0xbc | 28 % |"), "{md}");
    assert!(
        md.contains("Here: 0x3c 41.67 %, 0xbc 33.33 % of the plane 1 bytes; 0x3c 20.83 %, 0xbc 16.67 % of all bytes."),
        "{md}"
    );
    assert!(md.contains("7.96 (\"high byte\")") && md.contains("2.63 (\"low byte\")"));
    // in this tiny file the high byte happens to have the higher entropy, so
    // the study's labels agree with it (real BF16 weights are the other way)
    assert!(md.contains("labels agree"), "{md}");
}

#[test]
fn cli_analyze_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, file()).unwrap();
    let exe = env!("CARGO_BIN_EXE_weightlab");
    let out = std::process::Command::new(exe).args(["analyze", "--json"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3);
    assert_eq!(v["totals"][0]["top_bytes"][0]["value"], 0x10);
    assert_eq!(v["totals"][0]["top_bytes"][0]["count"], 7);
    let out = std::process::Command::new(exe).args(["analyze", "--tensor", "a"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("plane 1 [sign + 7 exponent bits]"), "{text}");
    assert!(text.contains("note: plane 1 is the HIGH byte"), "{text}");
    let out = std::process::Command::new(exe).args(["analyze", "--tables"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("Table 3.2"));
    let out = std::process::Command::new(exe).args(["analyze", "--tensor", "zz"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
