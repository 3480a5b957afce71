//! The experiment file parser: good files parse with their defaults, bad ones
//! fail with a message that names the line and the key.

use std::path::Path;
use weightlab::experiment::Experiment;
use weightlab::experiment::spec::Granularity;

fn parse(text: &str) -> weightlab::Result<Experiment> {
    Experiment::parse(text, "test.toml", Path::new("/base"))
}

#[test]
fn a_full_file_parses() {
    let e = parse(
        r#"
name = "x"
description = "d"
datasets = [{ name = "all-minilm-l6-v2", variants = ["bf16", "f16"] }, { path = "m.safetensors" }]
codecs = ["zstd:level=3", "planes>zstd:level=1", "lz4"]
peers = ["zstd-cli:-19 -T2", "zipnn"]
granularity = "both"
threads = [1, 2]
reps = 5
warmup = false
max_tensors = 3
min_tensor_bytes = 1024
chunk_kib = 256
[outputs]
tables = true
charts = false
[published]
label = "theirs"
codecs = { "zstd:level=3" = "80 %" }
"#,
    )
    .unwrap();
    assert_eq!(e.name, "x");
    assert_eq!(e.datasets.len(), 2);
    assert_eq!(e.datasets[0].variants, ["bf16", "f16"]);
    assert_eq!(e.dataset_path(e.datasets[1].path.as_ref().unwrap()), Path::new("/base/m.safetensors"));
    assert_eq!(e.codecs.len(), 3);
    assert_eq!(e.peers.len(), 2);
    assert_eq!(e.granularity, Granularity::Both);
    assert_eq!(e.threads, [1, 2]);
    assert_eq!((e.reps, e.warmup, e.max_tensors, e.min_tensor_bytes), (5, false, Some(3), 1024));
    assert_eq!(e.chunk_size, 256 << 10);
    assert!(!e.outputs.charts);
    assert_eq!(e.published.codecs["zstd:level=3"], "80 %");
}

#[test]
fn defaults_are_filled_in() {
    let e = parse("name = \"m\"\ndatasets = [{ path = \"a.safetensors\" }]\ncodecs = [\"lz4\"]\n").unwrap();
    assert_eq!(e.threads, [1]);
    assert_eq!(e.reps, 3);
    assert!(e.warmup);
    assert_eq!(e.granularity, Granularity::Tensor);
    assert_eq!(e.chunk_size, weightlab::container::DEFAULT_CHUNK_SIZE);
    assert!(e.outputs.tables && e.outputs.charts);
}

fn err(text: &str) -> String {
    let e = parse(text).expect_err("must fail");
    assert_eq!(e.kind(), weightlab::ErrorKind::InvalidInput);
    e.to_string()
}

#[test]
fn unknown_key_names_line_and_key() {
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\nrepz = 3\n");
    assert!(m.contains("line 4"), "{m}");
    assert!(m.contains("repz"), "{m}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\n\nreps = \"three\"\n");
    assert!(m.contains("line 5"), "{m}");
    assert!(m.contains("reps") || m.contains("integer"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\ngranularity = \"chunk\"\n");
    assert!(m.contains("line 4") && m.contains("chunk"), "{m}");
}

#[test]
fn bad_codec_points_at_its_entry() {
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\n  \"lz4\",\n  \"zstd:level=99\",\n]\n");
    assert!(m.contains("line 5") && m.contains("codecs") && m.contains("outside"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"nope\"]\n");
    assert!(m.contains("line 3") && m.contains("unknown codec"), "{m}");
}

#[test]
fn bad_peer_and_values_are_rejected() {
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\npeers = [\"winzip\"]\n");
    assert!(m.contains("line 3") && m.contains("peers") && m.contains("unknown peer"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\nthreads = [0]\n");
    assert!(m.contains("line 4") && m.contains("threads"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\nreps = 0\n");
    assert!(m.contains("reps"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ name = \"a\", path = \"b\" }]\ncodecs = [\"lz4\"]\n");
    assert!(m.contains("line 2") && m.contains("not both"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ pth = \"b\" }]\ncodecs = [\"lz4\"]\n");
    assert!(m.contains("line 2") && m.contains("pth"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }]\n");
    assert!(m.contains("nothing to measure"), "{m}");
    let m = err("name = \"../x\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\n");
    assert!(m.contains("name"), "{m}");
    let m = err("name = \"m\"\ndatasets = [{ path = \"a\" }\n");
    assert!(m.contains("line 2"), "{m}");
}

#[test]
fn shipped_experiments_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let exp = Experiment::load(p.to_str().unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(Some(exp.name.as_str()), p.file_stem().and_then(|s| s.to_str()), "name matches the file");
            n += 1;
        }
    }
    assert!(n >= 4, "experiments shipped: {n}");
}

const GROUPED: &str = r#"name = "g"
datasets = [{ path = "a.safetensors" }]
codecs = ["planes>zstd:level=1", "lz4", "exp"]
peers = ["zstd-cli:-3", "zipnn"]
[layout]
title = "Table 4.1 layout"
published_label = "published (test)"
notes = "n"
[[groups]]
name = "Fast"
source = "group source"
entries = [
    { spec = "planes>zstd:level=1", published = "1.41x" },
    "lz4",
    { spec = "zstd-cli:-3", published = "1.38x", source = "own source" },
]
[[groups]]
name = "Others"
entries = ["exp", "zipnn", "lz4"]
"#;

#[test]
fn groups_parse_in_order_with_canonical_codecs() {
    let e = parse(GROUPED).unwrap();
    let l = &e.layout;
    assert_eq!(
        (l.title.as_str(), l.published_label.as_str(), l.notes.as_str()),
        ("Table 4.1 layout", "published (test)", "n")
    );
    let names: Vec<&str> = l.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["Fast", "Others"]);
    let fast = &l.groups[0].entries;
    let codecs: Vec<&str> = fast.iter().map(|x| x.codec.as_str()).collect();
    assert_eq!(codecs, ["planes>zstd:level=1", "lz4", "peer:zstd-cli -3"]);
    assert_eq!((fast[0].published.as_str(), fast[0].source.as_str()), ("1.41x", "group source"));
    assert_eq!((fast[1].published.as_str(), fast[1].source.as_str()), ("", "group source"));
    assert_eq!((fast[2].published.as_str(), fast[2].source.as_str()), ("1.38x", "own source"));
    // `exp` matches the canonical form the rows carry; peers their label
    let others = &l.groups[1].entries;
    assert_eq!(others[0].spec, "exp");
    assert_eq!(others[0].codec, weightlab::codec::build("exp").unwrap().spec());
    assert_eq!(others[1].codec, "peer:zipnn");
    assert_eq!(others[2].source, "");
    // no groups: an empty layout
    assert!(
        parse("name = \"m\"\ndatasets = [{ path = \"a\" }]\ncodecs = [\"lz4\"]\n").unwrap().layout.groups.is_empty()
    );
}

#[test]
fn bad_groups_name_line_and_key() {
    // a valid codec the experiment does not measure (line 14)
    let m = err(&GROUPED.replace("    \"lz4\",\n", "    \"zstd:level=4\",\n"));
    assert!(m.contains("line 14") && m.contains("groups.entries") && m.contains("zstd:level=4"), "{m}");
    assert!(m.contains("not among"), "{m}");
    // neither a codec nor a peer (line 19)
    let m = err(&GROUPED.replace("[\"exp\", \"zipnn\", \"lz4\"]", "[\"exp\", \"winzip\"]"));
    assert!(m.contains("line 19") && m.contains("groups.entries") && m.contains("winzip"), "{m}");
    assert!(m.contains("neither a codec") && m.contains("unknown peer"), "{m}");
    // the same codec twice in a group, in two spellings
    let m = err(&GROUPED.replace("[\"exp\", \"zipnn\", \"lz4\"]", "[\"exp\", \"exp:gain=2\"]"));
    assert!(m.contains("line 19") && m.contains("twice"), "{m}");
    // an empty group, an unnamed group, two groups of one name
    let m = err(&GROUPED.replace("[\"exp\", \"zipnn\", \"lz4\"]", "[]"));
    assert!(m.contains("line 19") && m.contains("no entries"), "{m}");
    let m = err(&GROUPED.replace("name = \"Others\"", "name = \" \""));
    assert!(m.contains("line 18") && m.contains("groups.name"), "{m}");
    let m = err(&GROUPED.replace("name = \"Others\"", "name = \"Fast\""));
    assert!(m.contains("line 18") && m.contains("second group"), "{m}");
    // a misspelt key in an entry table, an entry of the wrong type
    let m = err(&GROUPED.replace("published = \"1.41x\"", "publshed = \"1.41x\""));
    assert!(m.contains("line 13") && m.contains("publshed"), "{m}");
    let m = err(&GROUPED.replace("    \"lz4\",\n", "    4,\n"));
    assert!(m.contains("line 14"), "{m}");
    // a group without entries, a [layout] without groups
    let m = err(&GROUPED.replace("entries = [\"exp\", \"zipnn\", \"lz4\"]\n", ""));
    assert!(m.contains("entries"), "{m}");
    let cut = GROUPED.split("[[groups]]").next().unwrap();
    let m = err(cut);
    assert!(m.contains("line 5") && m.contains("layout"), "{m}");
}
