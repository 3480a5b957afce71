//! The command line people already know from zstd: default output names,
//! several inputs, -f, --rm, -c and stdin, and model directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use weightlab::tensor::{DType, safetensors, synth};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weightlab"))
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().expect("runs")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model(path: &Path, seed: u64) -> Vec<u8> {
    let ts = synth::model(seed);
    let bytes = safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn files_get_their_outputs_beside_them_and_existing_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = model(&d.join("a.safetensors"), 1);
    let b = model(&d.join("sub/b.safetensors"), 2);
    ok(&run_in(d, &["compress", "a.safetensors", "sub/b.safetensors", "-q"]));
    assert!(d.join("a.safetensors.wlab").is_file() && d.join("sub/b.safetensors.wlab").is_file());
    // -k is the default: the inputs are still there
    assert_eq!(read(&d.join("a.safetensors")), a);

    // an existing output is refused (exit 2) and left as it was, unless -f
    let before = read(&d.join("a.safetensors.wlab"));
    let o = run_in(d, &["compress", "a.safetensors", "--codec", "raw"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(read(&d.join("a.safetensors.wlab")), before);
    ok(&run_in(d, &["compress", "a.safetensors", "--codec", "raw", "-f", "-q"]));
    assert_ne!(read(&d.join("a.safetensors.wlab")), before);

    // decompress strips the suffix; the original exists, so it needs -f or -o
    let o = run_in(d, &["decompress", "a.safetensors.wlab"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_file(d.join("sub/b.safetensors")).unwrap();
    ok(&run_in(d, &["decompress", "sub/b.safetensors.wlab", "-q"]));
    assert_eq!(read(&d.join("sub/b.safetensors")), b);
    ok(&run_in(d, &["decompress", "a.safetensors.wlab", "-f", "-q"]));
    assert_eq!(read(&d.join("a.safetensors")), a);

    // a name without the suffix has no default output
    std::fs::copy(d.join("a.safetensors.wlab"), d.join("plain")).unwrap();
    let o = run_in(d, &["decompress", "plain"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("give -o"), "{}", stderr(&o));
    // -o takes one input
    let o = run_in(d, &["compress", "a.safetensors", "sub/b.safetensors", "-o", "x.wlab"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn rm_removes_the_input_only_after_a_checked_success() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = model(&d.join("a.safetensors"), 3);
    ok(&run_in(d, &["compress", "--rm", "a.safetensors", "-q"]));
    assert!(!d.join("a.safetensors").exists());
    ok(&run_in(d, &["decompress", "--rm", "a.safetensors.wlab", "-q"]));
    assert!(!d.join("a.safetensors.wlab").exists());
    assert_eq!(read(&d.join("a.safetensors")), a);

    // a failure keeps the input: a damaged archive is not removed
    ok(&run_in(d, &["compress", "a.safetensors", "-q", "--codec", "zstd:level=1"]));
    let mut bad = read(&d.join("a.safetensors.wlab"));
    bad[200] ^= 0x40;
    std::fs::write(d.join("bad.safetensors.wlab"), &bad).unwrap();
    let o = run_in(d, &["decompress", "--rm", "bad.safetensors.wlab"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(d.join("bad.safetensors.wlab").exists() && !d.join("bad.safetensors").exists());
}

#[test]
fn stdout_and_stdin_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = model(&d.join("a.safetensors"), 4);
    // compress to stdout, then decompress that from stdin to stdout
    let o = run_in(d, &["compress", "-c", "a.safetensors", "-q"]);
    ok(&o);
    let arch = o.stdout;
    assert_eq!(&arch[..8], &[0x89, b'W', b'L', b'A', b'B', b'\r', b'\n', 0x1a]);
    let mut child = bin()
        .current_dir(d)
        .args(["decompress", "-", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || stdin.write_all(&arch).unwrap());
    let o = child.wait_with_output().unwrap();
    feed.join().unwrap();
    ok(&o);
    assert_eq!(o.stdout, a);
    // compress from stdin to a file
    let mut child = bin()
        .current_dir(d)
        .args(["compress", "-", "-o", "s.wlab", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&a).unwrap();
    ok(&child.wait_with_output().unwrap());
    ok(&run_in(d, &["decompress", "s.wlab", "-o", "s.safetensors", "-q"]));
    assert_eq!(read(&d.join("s.safetensors")), a);
    // --rm with stdout is refused
    let o = run_in(d, &["compress", "--rm", "-c", "a.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(d.join("a.safetensors").exists());
}

/// The shape of a sentence-transformers repository: shards, their index,
/// config and tokenizer files, and subfolders.
fn repository(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    files.push((
        root.join("model-00001-of-00002.safetensors"),
        model(&root.join("model-00001-of-00002.safetensors"), 5),
    ));
    files.push((
        root.join("model-00002-of-00002.safetensors"),
        model(&root.join("model-00002-of-00002.safetensors"), 6),
    ));
    let dense = safetensors::OwnedTensor::new(
        "linear.weight",
        DType::F32,
        vec![16, 8],
        synth::tensor_bytes(DType::F32, 128, 7),
    );
    let p = root.join("2_Dense/model.safetensors");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    safetensors::write_file(&p, std::iter::once(dense.view()), None).unwrap();
    files.push((p.clone(), read(&p)));
    for (rel, text) in [
        ("model.safetensors.index.json", "{\"weight_map\": {}}\n"),
        ("config.json", "{\"hidden_size\": 8}\n"),
        ("tokenizer.json", "{\"model\": {}}\n"),
        ("1_Pooling/config.json", "{\"pooling_mode_mean_tokens\": true}\n"),
        ("README.md", "# a model\n"),
        ("empty.txt", ""),
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        files.push((p, text.as_bytes().to_vec()));
    }
    files
}

#[test]
fn a_model_directory_round_trips_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = repository(&d.join("model"));
    ok(&run_in(d, &["compress", "model", "-j", "2", "-q"]));
    let c = d.join("model.wlab");
    assert!(c.join("weightlab-manifest.json").is_file());
    assert!(c.join("2_Dense/model.safetensors.wlab").is_file() && c.join("1_Pooling/config.json").is_file());
    assert!(!c.join("model-00001-of-00002.safetensors").exists(), "the shard was copied, not compressed");

    let o = run_in(d, &["info", "model.wlab"]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("9 files") && text.contains("2_Dense/model.safetensors") && text.contains("archive"),
        "{text}"
    );
    ok(&run_in(d, &["verify", "model.wlab"]));

    // back under another name, byte for byte, and no stray files
    ok(&run_in(d, &["decompress", "model.wlab", "-o", "back", "-q"]));
    for (p, bytes) in &files {
        let rel = p.strip_prefix(d.join("model")).unwrap();
        assert_eq!(&read(&d.join("back").join(rel)), bytes, "{}", rel.display());
    }
    assert_eq!(weightlab::repo::list_files(&d.join("back")).unwrap().len(), files.len());

    // the default name strips .wlab; the original exists, so -f
    let o = run_in(d, &["decompress", "model.wlab"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    ok(&run_in(d, &["decompress", "model.wlab", "-f", "-q"]));

    // a copy that changed is caught by verify (4), a damaged archive by verify (3)
    std::fs::write(c.join("config.json"), "{\"hidden_size\": 9}\n").unwrap();
    assert_eq!(run_in(d, &["verify", "model.wlab"]).status.code(), Some(4));
    std::fs::write(c.join("config.json"), "{\"hidden_size\": 8}\n").unwrap();
    let shard = c.join("model-00002-of-00002.safetensors.wlab");
    let mut bad = read(&shard);
    bad[100] ^= 1;
    std::fs::write(&shard, &bad).unwrap();
    assert_eq!(run_in(d, &["verify", "model.wlab"]).status.code(), Some(3));

    // an output inside the input is refused
    let o = run_in(d, &["compress", "model", "-o", "model/inner"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!d.join("model/inner").exists());
}

/// A crafted manifest cannot make decompress write outside its output.
#[test]
fn a_manifest_path_that_leaves_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    repository(&d.join("model"));
    ok(&run_in(d, &["compress", "model", "-q"]));
    let mp = d.join("model.wlab/weightlab-manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&read(&mp)).unwrap();
    for evil in ["../escaped.json", "/tmp/escaped.json", "a/../../escaped.json"] {
        m["files"][3]["path"] = serde_json::json!(evil);
        std::fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
        let o = run_in(d, &["decompress", "model.wlab", "-o", "out/x", "-q"]);
        assert_eq!(o.status.code(), Some(3), "{evil}: {}", stderr(&o));
        assert!(stderr(&o).contains("not a plain relative path"), "{}", stderr(&o));
        assert!(!d.join("escaped.json").exists() && !d.join("out").exists());
    }
}

/// `--shard I/N` slices run as separate processes into one directory and
/// joined give exactly the one-process result, manifest included; a
/// missing slice or one of another job is refused.
#[test]
fn three_slices_join_into_the_one_process_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    repository(&d.join("model"));
    ok(&run_in(d, &["compress", "model", "-o", "whole", "-q"]));
    let children: Vec<_> = (1..=3)
        .map(|i| {
            bin()
                .current_dir(d)
                .args(["compress", "model", "-o", "sliced", "-q", "-j", "1", "--shard", &format!("{i}/3")])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    // before the join the directory is not a repository yet
    assert_eq!(run_in(d, &["verify", "sliced"]).status.code(), Some(1));
    let saved = read(&d.join("sliced/weightlab-manifest.2-of-3.json"));
    std::fs::remove_file(d.join("sliced/weightlab-manifest.2-of-3.json")).unwrap();
    let o = run_in(d, &["join-slices", "sliced"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("slice 2/3 has not finished"), "{}", stderr(&o));
    std::fs::write(d.join("sliced/weightlab-manifest.2-of-3.json"), saved).unwrap();
    ok(&run_in(d, &["join-slices", "sliced", "-q"]));

    let (a, b) = (
        weightlab::repo::list_files(&d.join("whole")).unwrap(),
        weightlab::repo::list_files(&d.join("sliced")).unwrap(),
    );
    assert_eq!(a, b);
    for rel in &a {
        assert_eq!(read(&d.join("whole").join(rel)), read(&d.join("sliced").join(rel)), "{}", rel.display());
    }
    ok(&run_in(d, &["verify", "sliced"]));
    // slices are deterministic, cover every file once and are balanced by size
    let sizes = [50u64, 10, 40, 30, 20, 5, 5];
    let all: Vec<Vec<usize>> = (1..=3).map(|i| weightlab::repo::slice_of(&sizes, i, 3)).collect();
    let mut flat: Vec<usize> = all.concat();
    flat.sort();
    assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
    let loads: Vec<u64> = all.iter().map(|s| s.iter().map(|&k| sizes[k]).sum()).collect();
    assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 10, "{loads:?}");
}
