//! The CLI end to end: compress, info, verify, decompress, and its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weightlab::tensor::{safetensors, synth};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weightlab"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn model(dir: &Path) -> PathBuf {
    let p = dir.join("model.safetensors");
    let ts = synth::model(11);
    safetensors::write_file(&p, ts.iter().map(|t| t.view()), None).unwrap();
    p
}

fn only_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn compress_info_verify_decompress_gives_the_same_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let input = model(dir.path());
    let arch = dir.path().join("model.wlab");
    let back = dir.path().join("back.safetensors");
    let o =
        run(&["compress", s(&input), "-o", s(&arch), "--codec", "planes>zstd:level=3", "-j", "2", "--chunk-kib", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = run(&["info", s(&arch)]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("planes>zstd:level=3") && text.contains("lm_head.weight") && text.contains("= embed.weight"),
        "{text}"
    );

    let o = run(&["info", s(&arch), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), synth::model(11).len());
    assert_eq!(v["source"]["sha256"], weightlab::io::sha256_file(&input).unwrap());

    let o = run(&["verify", s(&arch), "--original", s(&input)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = run(&["decompress", s(&arch), "-o", s(&back), "-j", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(weightlab::io::sha256_file(&back).unwrap(), weightlab::io::sha256_file(&input).unwrap());
    assert_eq!(only_files(dir.path()), ["back.safetensors", "model.safetensors", "model.wlab"]);
}

#[test]
fn damaged_archives_fail_with_the_tensor_named_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = model(dir.path());
    let arch = dir.path().join("m.wlab");
    assert!(run(&["compress", s(&input), "-o", s(&arch), "--codec", "zstd:level=1"]).status.success());
    let bytes = std::fs::read(&arch).unwrap();
    let a = weightlab::container::Archive::open(&bytes).unwrap();
    let t = a.index.tensors.iter().find(|t| t.name == "embed.weight").unwrap();
    let mut bad = bytes.clone();
    bad[(t.chunks[0].offset() + 5) as usize] ^= 0x01;
    let bad_path = dir.path().join("bad.wlab");
    std::fs::write(&bad_path, &bad).unwrap();

    let o = run(&["verify", s(&bad_path)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("embed.weight"), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("out.safetensors");
    let o = run(&["decompress", s(&bad_path), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("embed.weight"));
    assert!(!out.exists());

    // truncated: exit 3, says truncated
    let cut = dir.path().join("cut.wlab");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["decompress", s(&cut), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));

    // not an archive: a damaged archive, exit 3 (the README's table)
    let o = run(&["info", s(&input)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a weightlab archive"));

    // a malformed safetensors input: clear error, no output
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let o = run(&["compress", s(&junk), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not parse"));
    assert!(!out.exists());

    // output onto the input is refused and the input untouched
    let before = std::fs::read(&input).unwrap();
    let o = run(&["compress", s(&input), "-o", s(&input)]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // a wrong --original is a hash mismatch (exit 4)
    let o = run(&["verify", s(&arch), "--original", s(&junk)]);
    assert_eq!(o.status.code(), Some(4));
    let names = only_files(dir.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "temp files left: {names:?}");
}
