//! The fuzz corpora replayed without libFuzzer: every file of
//! `fuzz/corpus/TARGET/` and `fuzz/artifacts-regressions/TARGET/` goes
//! through the same `weightlab::fuzzing` entry point the fuzz target calls
//! (`fuzz/fuzz_targets/TARGET.rs`), which panics on a finding. This is how
//! the normal test suite (and CI, on a stable toolchain) runs the corpora;
//! `just fuzz` grows them.
//!
//! `WEIGHTLAB_FUZZ_SEEDS=1 cargo test --test fuzz_corpus write_seeds -- --ignored`
//! writes the generated seed inputs (`weightlab::fuzzing::seeds`) into
//! `fuzz/corpus/`.

use std::path::{Path, PathBuf};
use weightlab::fuzzing::{self, TARGETS};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fuzz target '{name}'")).1
}

/// Run `f` on every file, naming the file that panics.
fn replay(name: &str, dir: &Path) -> usize {
    let f = target(name);
    let files = files(dir);
    for p in &files {
        let data = std::fs::read(p).unwrap();
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            panic!("fuzz target {name} panics on {}", p.display());
        }
    }
    files.len()
}

#[test]
fn every_target_has_a_corpus_and_it_replays_clean() {
    for (name, _) in TARGETS {
        let n = replay(name, &root().join("corpus").join(name));
        assert!(n > 0, "fuzz/corpus/{name} is empty");
    }
}

#[test]
fn regressions_replay_clean() {
    let dir = root().join("artifacts-regressions");
    for (name, _) in TARGETS {
        replay(name, &dir.join(name));
    }
    // every regression file sits under a target's directory
    if let Some(p) = files(&dir).first() {
        panic!("{} is not under a target's directory", p.display());
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(TARGETS.iter().any(|(t, _)| *t == n), "fuzz/artifacts-regressions/{n} names no target");
        }
    }
}

#[test]
fn every_fuzz_target_file_calls_its_entry_point() {
    for (name, _) in TARGETS {
        let src = std::fs::read_to_string(root().join("fuzz_targets").join(format!("{name}.rs"))).unwrap();
        assert!(src.contains(&format!("weightlab::fuzzing::{name}(")), "fuzz/fuzz_targets/{name}.rs");
    }
}

/// The generated seeds are valid inputs that reach deep: each one replays
/// clean, and each codec seed decodes (the stream is the codec's own).
#[test]
fn seeds_replay_clean() {
    for (name, f) in TARGETS {
        for (seed, data) in fuzzing::seeds::for_target(name) {
            if std::panic::catch_unwind(|| f(&data)).is_err() {
                panic!("fuzz target {name} panics on its seed {seed}");
            }
        }
    }
}

/// Every registered stage is among the specs the codec target picks from.
#[test]
fn codec_target_reaches_every_registered_stage() {
    let specs = fuzzing::codec_specs();
    for d in weightlab::codec::REGISTRY {
        assert!(
            specs.iter().any(|s| s.split('>').any(|st| st.split(':').next() == Some(d.name))),
            "stage {} is not fuzzed: {specs:?}",
            d.name
        );
    }
}

/// The index mutator keeps the frame valid: a mutated archive's index
/// checksum matches, so `open` gets past it to the index itself.
#[test]
fn index_mutations_keep_the_checksum_valid() {
    use weightlab::container::format::Trailer;
    use weightlab::fuzzing::index_mutator::mutate;
    let base = &fuzzing::base_archives()[0];
    for program in [&[][..], &[0, 3, 0, 0, 0, 5], &[4, 9, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0], &[0xe1, 0x10, 0x00, 0x55]] {
        let m = mutate(base, program).unwrap();
        let t = Trailer::parse(&m).unwrap();
        let json = &m[t.index_offset as usize..m.len() - 40];
        assert_eq!(weightlab::container::xxh3_64(json), t.index_xxh3);
        match weightlab::container::Archive::open(&m) {
            Ok(_) => {}
            Err(e) => assert!(!e.message().contains("checksum"), "{e}"),
        }
    }
    // the empty program changes nothing but the JSON's spelling
    let same = mutate(base, &[]).unwrap();
    let a = weightlab::container::Archive::open(&same).unwrap();
    let b = weightlab::container::Archive::open(base).unwrap();
    assert_eq!(a.index, b.index);
}

#[test]
#[ignore = "writes fuzz/corpus; run with WEIGHTLAB_FUZZ_SEEDS=1"]
fn write_seeds() {
    if std::env::var_os("WEIGHTLAB_FUZZ_SEEDS").is_none() {
        return;
    }
    for (name, _) in TARGETS {
        let dir = root().join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (seed, data) in fuzzing::seeds::for_target(name) {
            std::fs::write(dir.join(seed), data).unwrap();
        }
    }
}

/// A CTranslate2 variable named `__metadata__` (the key safetensors keeps for
/// its metadata) must not turn the import into a file that does not parse.
#[test]
fn ct2_variable_named_like_the_metadata_key() {
    use weightlab::tensor::{DType, synth};
    let t = synth::tensor("__metadata__", DType::F32, &[2], 1);
    let b = weightlab::datasets::ct2::write("S", 1, &[t.view()], &[]).unwrap();
    assert!(weightlab::datasets::ct2::parse(&b).is_ok());
    fuzzing::ct2(&b);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let e = weightlab::datasets::ct2::import(&b, "00", &out).unwrap_err();
    assert_eq!(e.kind(), weightlab::ErrorKind::InvalidInput, "{e}");
    assert!(!out.exists());
}

/// An xz stream whose header asks for a 1.5 GiB dictionary is refused by
/// the decoder's memory limit, before liblzma allocates it (the limit was
/// unlimited).
#[test]
fn xz_stream_asking_for_a_huge_dictionary() {
    let data = std::fs::read(root().join("artifacts-regressions/codec_decode/xz-1.5GiB-dictionary")).unwrap();
    let stream = &data[fuzzing::CODEC_HEADER_LEN..];
    let xz = weightlab::codec::build("xz").unwrap();
    let mut out = vec![0u8; 64];
    let e = xz.decode(&weightlab::codec::ChunkInfo::bytes(), stream, &mut out).unwrap_err();
    assert_eq!(e.kind(), weightlab::ErrorKind::Corruption, "{e}");
    assert!(e.message().contains("mem"), "{e}");
    fuzzing::codec_decode(&data);
}
