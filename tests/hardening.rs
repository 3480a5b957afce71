//! Crafted inputs, tricky paths, closed pipes and signals: each class of
//! defect found by trying the tool as an attacker would (issue 11), with the
//! test that failed before its fix. Archives here have valid checksums and a
//! lying index, so only the reader's own checks stand between them and a
//! crash, an abort or a file that should not exist.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use weightlab::container::{self, Archive, CompressOptions, DecodeOptions};
use weightlab::tensor::{DType, safetensors, synth};

#[path = "support/archive.rs"]
mod support;
use support::rewrite_index;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weightlab"))
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn model(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let ts = synth::model(11);
    safetensors::write_file(&p, ts.iter().map(|t| t.view()), None).unwrap();
    p
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn no_temps(dir: &Path) {
    let n = names(dir);
    assert!(n.iter().all(|f| !f.ends_with(".tmp")), "temporary files left behind: {n:?}");
}

fn compress_bytes(file: &[u8], codec: &str, chunk: usize) -> Vec<u8> {
    let opts = CompressOptions { codec: codec.into(), chunk_size: chunk, ..Default::default() };
    let mut out = Vec::new();
    container::compress(file, "m.safetensors", &mut out, &opts).unwrap();
    out
}

fn one_tensor_file(dtype: DType, n: usize, data: Vec<u8>) -> Vec<u8> {
    let t = safetensors::OwnedTensor::new("w", dtype, vec![n as u64], data);
    safetensors::serialize(std::iter::once(t.view()), None).unwrap()
}

/// The lying archives of classes 2, 3 and 5, each with what it lies about.
fn lying_archives() -> Vec<(&'static str, Vec<u8>)> {
    let file = one_tensor_file(DType::F32, 1024, vec![0u8; 4096]);
    let arch = compress_bytes(&file, "zstd:level=1", 4096);
    let base = Archive::open(&arch).unwrap().index;
    let mut out = Vec::new();

    // One chunk that claims `len` bytes, the tensor and source sized to match.
    let one_chunk_of = |len: u64, chunk_size: u64| {
        let mut i = base.clone();
        i.chunk_size = chunk_size;
        i.tensors[0].shape = vec![len / 4];
        i.tensors[0].size = len;
        i.tensors[0].chunks[0].2 = len;
        i.source.size = i.header.len + len;
        rewrite_index(&arch, &i)
    };
    // A terabyte chunk: the old reader resized a buffer to it and aborted.
    out.push(("a 1 TiB chunk", one_chunk_of(1 << 40, 1 << 40)));
    // A 2 GiB chunk in an archive whose chunk size is 4 KiB.
    out.push(("a 2 GiB chunk in 4 KiB chunks", one_chunk_of(2 << 30, base.chunk_size)));

    // 256 chunk entries sharing one payload: 1 MiB out of a few KB.
    let mut i = base.clone();
    let e = i.tensors[0].chunks[0];
    i.tensors[0].chunks = vec![e; 256];
    i.tensors[0].shape = vec![256 * 1024];
    i.tensors[0].size = 256 * 4096;
    i.source.size = i.header.len + 256 * 4096;
    out.push(("256 chunks on one payload", rewrite_index(&arch, &i)));

    // A chunk that is not whole elements (F32, 4094 + 2 bytes).
    let mut i = base.clone();
    let e = i.tensors[0].chunks[0];
    i.tensors[0].chunks = vec![
        container::format::ChunkEntry(e.0, e.1, 4094, e.3, e.4),
        container::format::ChunkEntry(e.0 + e.1, 0, 2, 0, 0),
    ];
    out.push(("a chunk of 4094 bytes of F32", rewrite_index(&arch, &i)));

    // Recorded codec parameters out of range.
    for spec in ["zstd:level=99", "int8:block=0"] {
        let mut i = base.clone();
        i.tensors[0].codec = spec.into();
        i.tensors[0].stage_ids = weightlab::codec::stage_ids(spec.split(':').next().unwrap()).unwrap();
        out.push((
            if spec.starts_with("zstd") { "zstd:level=99 recorded" } else { "int8:block=0 recorded" },
            rewrite_index(&arch, &i),
        ));
    }

    // Tensor sizes whose running sum wraps u64.
    let two = {
        let a = safetensors::OwnedTensor::new("a", DType::U8, vec![8], vec![1; 8]);
        let b = safetensors::OwnedTensor::new("b", DType::U8, vec![8], vec![2; 8]);
        safetensors::serialize([a.view(), b.view()], None).unwrap()
    };
    let arch2 = compress_bytes(&two, "raw", 4096);
    let mut i = Archive::open(&arch2).unwrap().index;
    let wrap = u64::MAX - 7;
    i.tensors[0].shape = vec![wrap];
    i.tensors[0].size = wrap;
    i.tensors[1].data_offset = wrap;
    i.tensors[1].size = 16;
    i.tensors[1].shape = vec![16];
    i.source.size = i.header.len + 8; // what the wrapped sum gives
    out.push(("tensor sizes wrapping u64", rewrite_index(&arch2, &i)));

    // Not an archive at all.
    out.push(("wrong magic", file));
    out
}

/// Classes 2, 3, 5: every lying archive is refused by `Archive::open` as
/// damage (never accepted, never a panic or an abort).
#[test]
fn lying_indexes_are_refused_when_opened() {
    for (what, bytes) in lying_archives() {
        let r = std::panic::catch_unwind(|| {
            Archive::open(&bytes).and_then(|a| {
                a.stream(
                    &mut std::io::sink(),
                    &DecodeOptions {
                        check_tensor_hashes: true,
                        check_file_hash: true,
                        check_stored: true,
                        progress: false,
                    },
                )
            })
        });
        let e = match r {
            Ok(Ok(_)) => panic!("{what}: accepted"),
            Ok(Err(e)) => e,
            Err(_) => panic!("{what}: panicked"),
        };
        assert!(
            matches!(e.kind(), weightlab::ErrorKind::Corruption | weightlab::ErrorKind::Truncated),
            "{what}: {e} is not reported as a damaged archive"
        );
    }
}

/// The same archives through the CLI: `verify` and `decompress` exit 3
/// (not a signal, not 0, not 2), leave no output, print no panic.
#[test]
fn lying_archives_exit_3_from_verify_and_decompress() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (what, bytes)) in lying_archives().into_iter().enumerate() {
        let p = dir.path().join(format!("lie{k}.wlab"));
        std::fs::write(&p, &bytes).unwrap();
        let out = dir.path().join(format!("out{k}.safetensors"));
        // `info` reads the index without building codecs: a recorded spec
        // out of range is found by the commands that decode
        let decodes_only = what.ends_with("recorded");
        let mut commands = vec![vec!["verify", s(&p)], vec!["decompress", s(&p), "-o", s(&out)]];
        if !decodes_only {
            commands.push(vec!["info", s(&p)]);
        }
        for args in commands {
            let o = run_in(dir.path(), &args);
            assert_eq!(o.status.code(), Some(3), "{what}: {args:?} gave {:?}: {}", o.status, stderr(&o));
            assert!(!stderr(&o).contains("panicked"), "{what}: {}", stderr(&o));
        }
        assert!(!out.exists(), "{what}: an output was written");
    }
    no_temps(dir.path());
}

/// Class 1: an output path that leads back to the input through a
/// directory that does not exist yet, a symlink or a hard link is refused
/// (exit 2), the input is untouched and nothing is created.
#[test]
fn an_output_that_is_the_input_is_refused_however_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = model(d, "x.safetensors");
    let before = std::fs::read(&input).unwrap();
    let arch = d.join("y.wlab");
    assert!(run_in(d, &["compress", "x.safetensors", "-o", "y.wlab"]).status.success());
    let arch_before = std::fs::read(&arch).unwrap();
    std::os::unix::fs::symlink(&input, d.join("link.safetensors")).unwrap();
    std::fs::hard_link(&arch, d.join("hard.wlab")).unwrap();

    for args in [
        vec!["compress", "x.safetensors", "-o", "./nothere/../x.safetensors"],
        vec!["compress", "x.safetensors", "-o", "link.safetensors"],
        vec!["compress", "./x.safetensors", "-o", "x.safetensors"],
        vec!["decompress", "y.wlab", "-o", "./nope/../y.wlab"],
        vec!["decompress", "y.wlab", "-o", "hard.wlab"],
        vec!["decompress", "hard.wlab", "-o", "nope/deeper/../../y.wlab"],
    ] {
        let o = run_in(d, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?} {}", o.status, stderr(&o));
        assert!(stderr(&o).contains("is the input file"), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input was replaced");
    assert_eq!(std::fs::read(&arch).unwrap(), arch_before, "the archive was replaced");
    assert_eq!(names(d), ["hard.wlab", "link.safetensors", "x.safetensors", "y.wlab"], "something was created");
}

/// Class 4: a closed stdout ends the command quietly, with no panic.
#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = model(d, "m.safetensors");
    let arch = d.join("m.wlab");
    assert!(run_in(d, &["compress", s(&input), "-o", s(&arch)]).status.success());
    for args in
        [vec!["info", s(&arch)], vec!["info", s(&arch), "--json"], vec!["analyze", "--json", s(&input)], vec!["codecs"]]
    {
        let mut child = bin().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away before a byte is read
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{args:?}: {:?}: {}", o.status, stderr(&o));
        assert!(stderr(&o).is_empty(), "{args:?}: {}", stderr(&o));
    }
}

/// Class 5: a malformed safetensors input is invalid input (exit 2), not a
/// damaged archive; a missing one an I/O error (exit 1) whose OS text is
/// said once (class 8); a directory is refused by name.
#[test]
fn malformed_inputs_exit_2_and_messages_say_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = model(d, "m.safetensors");
    let bytes = std::fs::read(&input).unwrap();
    for (what, b) in [
        ("truncated data", bytes[..bytes.len() - 3].to_vec()),
        ("header past the end", bytes[..40].to_vec()),
        ("shorter than 8 bytes", bytes[..5].to_vec()),
    ] {
        let p = d.join("bad.safetensors");
        std::fs::write(&p, &b).unwrap();
        let o = run_in(d, &["compress", "bad.safetensors", "-o", "bad.wlab"]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("malformed safetensors"), "{what}: {}", stderr(&o));
        let o = run_in(d, &["analyze", "bad.safetensors"]);
        assert_eq!(o.status.code(), Some(2), "{what} (analyze): {}", stderr(&o));
    }
    // a missing input is the user's input gone wrong (2), said once in a sentence
    let o = run_in(d, &["compress", "missing.safetensors", "-o", "x.wlab"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).to_lowercase().matches("no such file or directory").count(), 1, "{}", stderr(&o));
    // an I/O error's OS text is said once (it was "... (os error 2) (i/o error): ... (os error 2)")
    let e = anyhow::Error::from(weightlab::Error::io("writing x", std::io::Error::from_raw_os_error(28)));
    assert_eq!(format!("{e:#}").matches("os error 28").count(), 1, "{e:#}");
    // a directory where a file is wanted is named as such (it was "mapping .: No such device")
    let o = run_in(d, &["analyze", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    // compress takes directories, but not into themselves
    let o = run_in(d, &["compress", ".", "-o", "x.wlab"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("inside the input directory"), "{}", stderr(&o));
    assert!(!d.join("x.wlab").exists() && !d.join("bad.wlab").exists());
    no_temps(d);
}

/// Class 6: out-of-range numbers are refused (exit 2) instead of wrapping.
#[test]
fn out_of_range_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    model(d, "m.safetensors");
    for args in [
        vec!["compress", "m.safetensors", "-o", "o.wlab", "--chunk-kib", "18014398509481984"],
        vec!["compress", "m.safetensors", "-o", "o.wlab", "--chunk-kib", "0"],
        vec!["compress", "m.safetensors", "-o", "o.wlab", "--chunk-kib", "262145"],
        vec!["compress", "m.safetensors", "-o", "o.wlab", "-j", "100000"],
        vec!["verify", "o.wlab", "-j", "99999999999999999999"],
    ] {
        let o = run_in(d, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(!d.join("o.wlab").exists());
    let opts = CompressOptions { chunk_size: 0, ..Default::default() };
    let e = container::compress(&std::fs::read(d.join("m.safetensors")).unwrap(), "m", Vec::new(), &opts).unwrap_err();
    assert_eq!(e.kind(), weightlab::ErrorKind::InvalidInput, "{e}");
}

/// Class 6: `sz:rel` on an F64 tensor whose range overflows f64 stores it
/// exactly instead of failing its own check.
#[test]
fn sz_rel_on_an_overflowing_range_stores_the_tensor_exactly() {
    let vals: Vec<f64> = (0..4096).map(|i| if i % 2 == 0 { 1.7e308 } else { -1.7e308 * (i as f64 / 4096.0) }).collect();
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = one_tensor_file(DType::F64, vals.len(), data.clone());
    for spec in ["sz:rel=1e-3", "sz:rel=1e-2,pred=prev"] {
        let arch = compress_bytes(&file, spec, 8192);
        let a = Archive::open(&arch).unwrap();
        let got = a.read_tensor(0).unwrap();
        assert_eq!(got, data, "{spec}: not stored exactly");
    }
}

/// Class 7: a stale temporary of a dead process is swept by the next write
/// of the same output; one of a live process is left alone.
#[test]
fn stale_temporaries_of_dead_processes_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    model(d, "m.safetensors");
    // pid_t's largest value: no process has it
    std::fs::write(d.join(".o.wlab.2147483646.tmp"), b"left by a killed run").unwrap();
    // this test's own process is alive
    let live = format!(".o.wlab.{}.tmp", std::process::id());
    std::fs::write(d.join(&live), b"another run, still going").unwrap();
    let o = run_in(d, &["compress", "m.safetensors", "-o", "o.wlab"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(names(d), [live.as_str(), "m.safetensors", "o.wlab"]);
}

/// A file large and slow enough to compress that a signal lands mid-run.
fn slow_job(d: &Path) -> PathBuf {
    let p = d.join("big.safetensors");
    let t = safetensors::OwnedTensor::new("w", DType::F32, vec![8 << 20], synth::tensor_bytes(DType::F32, 8 << 20, 3));
    safetensors::write_file(&p, std::iter::once(t.view()), None).unwrap();
    p
}

fn wait_for_temp(d: &Path, child: &mut std::process::Child) {
    let t0 = std::time::Instant::now();
    while !names(d).iter().any(|n| n.ends_with(".tmp")) {
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be interrupted");
        assert!(t0.elapsed().as_secs() < 60, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// Class 7: SIGINT and SIGTERM mid-run remove the temporary output, and
/// the process dies of the signal as a shell expects.
#[test]
fn a_signal_mid_run_leaves_nothing_behind() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    slow_job(d);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut child = bin()
            .current_dir(d)
            .args(["compress", "big.safetensors", "-o", "big.wlab", "--codec", "xz:level=9", "-j", "1", "-q"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_temp(d, &mut child);
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.signal(), Some(sig), "{:?}: {}", o.status, stderr(&o));
        assert_eq!(names(d), ["big.safetensors"], "after signal {sig}");
    }
}

/// Class 7: the input shrinking under the map gives exit 1 and a message,
/// not a SIGBUS crash, and no temporary file.
#[test]
fn an_input_truncated_mid_run_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = slow_job(d);
    let mut child = bin()
        .current_dir(d)
        .args(["compress", "big.safetensors", "-o", "big.wlab", "--codec", "xz:level=9", "-j", "1", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_temp(d, &mut child);
    std::fs::OpenOptions::new().write(true).open(&input).unwrap().set_len(4096).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{:?}: {}", o.status, stderr(&o));
    assert!(stderr(&o).contains("changed size while it was read"), "{}", stderr(&o));
    assert_eq!(names(d), ["big.safetensors"]);
}
