//! Experiment files (`experiments/NAME.toml`): what to measure.
//!
//! ```toml
//! name = "bf16-planes"
//! description = "Aveiro Table 4.1 on BF16 weights"
//! datasets = [{ name = "all-minilm-l6-v2", variants = ["bf16"] }, { path = "model.safetensors" }]
//! # per entry: `codecs = [...]` runs only those of the experiment's codecs on
//! # it (`peers = [...]` likewise), `fidelity = false` leaves its cells
//! # without model metrics
//! codecs = ["zstd:level=3", "planes>zstd:level=1", "lz4"]
//! peers = ["zstd-cli:-3", "zipnn"]
//! granularity = "both"      # "tensor", "file" or "both"
//! notes = "…"               # optional: a Notes section in summary.md
//! threads = [1]
//! reps = 3
//! warmup = true
//! max_tensors = 20          # optional: the first N tensors of each file
//! min_tensor_bytes = 0
//! chunk_kib = 4096          # optional: container chunk size
//! [outputs]
//! tables = true
//! charts = true
//! per_tensor = false        # a table per tensor and per tensor class
//!
//! # optional (feature `fidelity`): run the model of every whole-file cell with
//! # the decoded weights and add its quality (cosine, perplexity …) to the row
//! [fidelity]
//! lossless = false          # also run the lossless cells (their control)
//! texts = "texts.txt"       # one text per line instead of the default inputs
//! codecs = ["sz:abs=1e-3"]  # only these codecs' cells (default: all)
//!
//! # optional: a grouped table in summary.md ("Fast mode", "Maximum mode" …),
//! # one sub-table per group, rows in the order given
//! [layout]
//! title = "Table 4.1 layout"                  # section heading
//! published_label = "published (Qwen2-0.5B)"  # heading of the published column
//! notes = "how the published numbers were measured …"
//!
//! [[groups]]
//! name = "Fast mode"
//! source = "where the published numbers come from"  # default for the entries
//! entries = [
//!     { spec = "planes>zstd:level=1", published = "1.41×" },
//!     "lz4",                                          # no published number
//!     { spec = "zstd-cli:-3", published = "1.38×", source = "another source" },
//! ]
//! ```
//!
//! `[[published_tables]]` (title, source, header, rows: strings typed in as
//! published) are printed after our tables, as the "(as published)" sections.
//!
//! A group entry is a codec spec or a peer spec, and must be one of the
//! experiment's `codecs` or `peers` (compared in canonical form, so `exp`
//! matches `exp:gain=2`). `published` is free text, typed in as published;
//! `source` says where it comes from.
//!
//! Errors name the line, column and key: TOML and type errors come with the
//! `toml` crate's span, and the checks made after parsing (unknown codec,
//! bad peer, a group entry that is not measured) point at the entry's own
//! span.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Tensor cells, whole-file cells, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Tensor,
    File,
    Both,
}

impl Granularity {
    pub fn tensors(self) -> bool {
        matches!(self, Granularity::Tensor | Granularity::Both)
    }
    pub fn files(self) -> bool {
        matches!(self, Granularity::File | Granularity::Both)
    }
}

/// One dataset entry: a named dataset (with variants) or a file path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// A dataset manifest name (`datasets/NAME.toml`).
    #[serde(default)]
    pub name: Option<String>,
    /// Variants of a named dataset: "original", "bf16", "f16", "fp8-e4m3" …
    #[serde(default)]
    pub variants: Vec<String>,
    /// A safetensors file, relative to the experiment file's directory's
    /// parent (the project root) or absolute.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Skip this entry (with a warning and a note in the run) when it cannot
    /// be resolved here, e.g. a hub-only model on an offline machine.
    #[serde(default)]
    pub optional: bool,
    /// Only these of the experiment's `codecs` run on this entry's files
    /// (absent: all of them).
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    /// Only these of the experiment's `peers` run on this entry's files
    /// (absent: all of them).
    #[serde(default)]
    pub peers: Option<Vec<String>>,
    /// Give this entry's cells the model metrics of `[fidelity]` (default true).
    #[serde(default = "yes")]
    pub fidelity: bool,
}

/// What to write besides the result rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    /// Markdown summary tables (and csv/parquet).
    pub tables: bool,
    /// plotters charts (SVG and PNG).
    pub charts: bool,
    /// The per-file entropy analysis (Aveiro Tables 3.1–3.3).
    pub analysis: bool,
    /// A table per tensor (the lossless codecs' ratios beside the order-0
    /// floor) and one per dataset and tensor class.
    pub per_tensor: bool,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs { tables: true, charts: true, analysis: false, per_tensor: false }
    }
}

/// `[fidelity]`: model-quality metrics for the whole-file cells of the
/// datasets the evaluator can run (`weightlab eval`; feature `fidelity`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FidelitySpec {
    /// Evaluate the lossless cells too (the control: identical outputs).
    pub lossless: bool,
    /// One text per line, replacing the default inputs; relative paths start
    /// at the project root, like dataset paths.
    pub texts: Option<PathBuf>,
    /// Only the cells of these codecs get model metrics (empty: every codec).
    pub codecs: Vec<String>,
}

/// Published numbers to print beside ours in the per-codec table, typed in
/// as published (`codecs = { "zstd:level=3" = "ratio 80.1 %" }`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Published {
    /// Column heading: whose numbers, on what.
    pub label: String,
    /// Canonical codec spec (or peer label) -> the published value.
    pub codecs: std::collections::BTreeMap<String, String>,
}

/// A grouped table: `[layout]` and `[[groups]]` (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Layout {
    /// Section heading in `summary.md`.
    pub title: String,
    /// Heading of the published column.
    pub published_label: String,
    /// Free text printed under the groups (how the published numbers were
    /// taken, how they compare).
    pub notes: String,
    pub groups: Vec<Group>,
}

/// One sub-table of the layout: a name and its rows, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    pub name: String,
    pub entries: Vec<GroupEntry>,
}

/// One row of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupEntry {
    /// The spec as written in the experiment.
    pub spec: String,
    /// Its `codec` column: the canonical codec spec, or the peer label
    /// (`peer:zstd-cli -3`).
    pub codec: String,
    /// The published number, as published ("" when there is none).
    pub published: String,
    /// Where `published` comes from.
    pub source: String,
}

/// `[layout]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLayout {
    title: String,
    published_label: String,
    notes: String,
}

/// `[[groups]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    #[serde(default)]
    source: String,
    entries: Spanned<Vec<Spanned<RawEntry>>>,
}

/// A group entry as written: a spec string, or a table with `spec` and,
/// optionally, `published` and `source`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryTable {
    spec: String,
    #[serde(default)]
    published: String,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Debug)]
struct RawEntry(RawEntryTable);

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a codec or peer spec string, or a table { spec, published, source }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<RawEntry, E> {
                Ok(RawEntry(RawEntryTable { spec: s.to_string(), ..Default::default() }))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, m: M) -> std::result::Result<RawEntry, M::Error> {
                RawEntryTable::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(RawEntry)
            }
        }
        d.deserialize_any(V)
    }
}

fn default_threads() -> Vec<u32> {
    vec![1]
}
fn default_reps() -> u32 {
    3
}
fn yes() -> bool {
    true
}

/// The file as written (spans kept for error messages).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    name: String,
    #[serde(default)]
    description: String,
    datasets: Vec<Spanned<DatasetEntry>>,
    #[serde(default)]
    codecs: Vec<Spanned<String>>,
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    #[serde(default)]
    granularity: Granularity,
    #[serde(default)]
    threads: Option<Spanned<Vec<u32>>>,
    #[serde(default)]
    reps: Option<Spanned<u32>>,
    #[serde(default = "yes")]
    warmup: bool,
    #[serde(default)]
    max_tensors: Option<usize>,
    #[serde(default)]
    min_tensor_bytes: u64,
    #[serde(default)]
    chunk_kib: Option<Spanned<u64>>,
    #[serde(default)]
    outputs: Outputs,
    #[serde(default)]
    published: Published,
    #[serde(default)]
    layout: Option<Spanned<RawLayout>>,
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    fidelity: Option<Spanned<FidelitySpec>>,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    published_tables: Vec<crate::report::ReferenceTable>,
}

/// A validated experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    pub datasets: Vec<DatasetEntry>,
    /// Codec specs as written (the rows carry the canonical form).
    pub codecs: Vec<String>,
    /// Peer specs: `NAME` or `NAME:ARGS` (`zstd-cli:-19 -T2`).
    pub peers: Vec<String>,
    pub granularity: Granularity,
    pub threads: Vec<u32>,
    pub reps: u32,
    pub warmup: bool,
    pub max_tensors: Option<usize>,
    pub min_tensor_bytes: u64,
    /// Container chunk size in bytes.
    pub chunk_size: usize,
    pub outputs: Outputs,
    pub published: Published,
    /// The grouped table (`[layout]`, `[[groups]]`); no groups, no table.
    #[serde(default)]
    pub layout: Layout,
    /// Model-quality metrics for whole-file cells (`[fidelity]`).
    #[serde(default)]
    pub fidelity: Option<FidelitySpec>,
    /// Free text for a "Notes" section of `summary.md`.
    #[serde(default)]
    pub notes: String,
    /// Tables typed in as published (`[[published_tables]]`: title, source,
    /// header, rows), printed after ours.
    #[serde(default)]
    pub published_tables: Vec<crate::report::ReferenceTable>,
    /// Where relative dataset paths are resolved from.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |p| before.len() - p - 1) + 1;
    (line, col)
}

fn at<T>(text: &str, origin: &str, item: &Spanned<T>, key: &str, msg: impl std::fmt::Display) -> Error {
    let (line, col) = line_col(text, item.span().start);
    Error::invalid(format!("{origin}: line {line}, column {col}, key '{key}': {msg}"))
}

impl Experiment {
    /// Parse and validate experiment TOML. `origin` names it in errors;
    /// `base_dir` is where relative dataset paths start.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Experiment> {
        let raw: RawExperiment =
            toml::from_str(text).map_err(|e| Error::invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        let name = raw.name.trim().to_string();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            return Err(Error::invalid(format!(
                "{origin}: key 'name': '{}' must be a non-empty name of letters, digits, '-', '_' or '.' (it names the report directory)",
                raw.name
            )));
        }
        if raw.datasets.is_empty() {
            return Err(Error::invalid(format!("{origin}: key 'datasets': at least one dataset is needed")));
        }
        for d in &raw.datasets {
            let e = d.get_ref();
            match (&e.name, &e.path) {
                (Some(_), Some(_)) => {
                    return Err(at(text, origin, d, "datasets", "give either 'name' or 'path', not both"));
                }
                (None, None) => return Err(at(text, origin, d, "datasets", "each entry needs 'name' or 'path'")),
                (None, Some(_)) if !e.variants.is_empty() => {
                    return Err(at(text, origin, d, "datasets", "'variants' apply to named datasets, not to a 'path'"));
                }
                _ => {}
            }
        }
        if raw.codecs.is_empty() && raw.peers.is_empty() && !raw.outputs.analysis {
            return Err(Error::invalid(format!(
                "{origin}: nothing to measure: give 'codecs', 'peers' or outputs.analysis = true"
            )));
        }
        // the `codec` column of every cell the experiment measures
        let mut measured = Vec::new();
        for c in &raw.codecs {
            let codec = crate::codec::build(c.get_ref()).map_err(|e| at(text, origin, c, "codecs", e.message()))?;
            measured.push(codec.spec());
        }
        for p in &raw.peers {
            let peer =
                super::peers::PeerSpec::parse(p.get_ref()).map_err(|e| at(text, origin, p, "peers", e.message()))?;
            measured.push(peer.label());
        }
        let layout = layout(text, origin, raw.layout, raw.groups, &measured)?;
        // per-entry codec lists and [fidelity] codecs name codecs the experiment measures
        let canonical = |list: &[String], key: &str, item: &dyn Fn(&str) -> Error| -> Result<Vec<String>> {
            list.iter()
                .map(|c| {
                    let spec = crate::codec::build(c).map_err(|e| item(e.message()))?.spec();
                    if !measured.contains(&spec) {
                        return Err(item(&format!("'{c}' ({key}) is not among this experiment's 'codecs'")));
                    }
                    Ok(spec)
                })
                .collect()
        };
        let mut datasets = Vec::with_capacity(raw.datasets.len());
        for d in raw.datasets {
            let mut e = d.get_ref().clone();
            if let Some(list) = &e.codecs {
                e.codecs = Some(canonical(list, "datasets.codecs", &|m| at(text, origin, &d, "datasets", m))?);
            }
            if let Some(list) = &e.peers {
                let peers = list
                    .iter()
                    .map(|p| {
                        let label = super::peers::PeerSpec::parse(p)
                            .map_err(|err| at(text, origin, &d, "datasets", err.message()))?
                            .label();
                        if !measured.contains(&label) {
                            let m = format!("'{p}' (datasets.peers) is not among this experiment's 'peers'");
                            return Err(at(text, origin, &d, "datasets", &m));
                        }
                        Ok(label)
                    })
                    .collect::<Result<Vec<_>>>()?;
                e.peers = Some(peers);
            }
            datasets.push(e);
        }
        let fidelity = match raw.fidelity {
            None => None,
            Some(f) => {
                let mut spec = f.get_ref().clone();
                spec.codecs = canonical(&spec.codecs, "fidelity.codecs", &|m| at(text, origin, &f, "fidelity", m))?;
                if !raw.granularity.files() {
                    return Err(at(
                        text,
                        origin,
                        &f,
                        "fidelity",
                        "model metrics need whole-file cells: set granularity = \"file\" or \"both\"",
                    ));
                }
                Some(spec)
            }
        };
        if let Some(t) = &raw.threads
            && (t.get_ref().is_empty() || t.get_ref().contains(&0))
        {
            return Err(at(text, origin, t, "threads", "give one or more thread counts, each at least 1"));
        }
        if let Some(r) = &raw.reps
            && (*r.get_ref() == 0 || *r.get_ref() > 1000)
        {
            return Err(at(text, origin, r, "reps", "must be between 1 and 1000"));
        }
        let chunk_size = match &raw.chunk_kib {
            None => crate::container::DEFAULT_CHUNK_SIZE,
            Some(k) if *k.get_ref() == 0 || *k.get_ref() > (1 << 22) => {
                return Err(at(text, origin, k, "chunk_kib", "must be between 1 and 4194304"));
            }
            Some(k) => (*k.get_ref() as usize) << 10,
        };
        Ok(Experiment {
            name,
            description: raw.description,
            datasets,
            codecs: raw.codecs.into_iter().map(Spanned::into_inner).collect(),
            peers: raw.peers.into_iter().map(Spanned::into_inner).collect(),
            granularity: raw.granularity,
            threads: raw.threads.map_or_else(default_threads, Spanned::into_inner),
            reps: raw.reps.map_or_else(default_reps, Spanned::into_inner),
            warmup: raw.warmup,
            max_tensors: raw.max_tensors,
            min_tensor_bytes: raw.min_tensor_bytes,
            chunk_size,
            outputs: raw.outputs,
            published: raw.published,
            layout,
            fidelity,
            notes: raw.notes,
            published_tables: raw.published_tables,
            base_dir: base_dir.to_path_buf(),
            source: None,
        })
    }

    /// Load `experiments/NAME.toml` by path, or by bare name (no `/`, no
    /// `.toml`) from `experiments/` under the current directory.
    pub fn load(name_or_path: &str) -> Result<Experiment> {
        let path = resolve_path(name_or_path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound { list_hint() } else { String::new() };
            Error::io(format!("reading experiment {}{hint}", path.display()), e)
        })?;
        // relative dataset paths: from the project root, i.e. the parent of
        // the experiments/ directory, else from the file's own directory
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if dir.file_name().is_some_and(|n| n == "experiments") {
            dir.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            dir
        };
        let mut exp = Experiment::parse(&text, &path.display().to_string(), &base)?;
        exp.source = Some(path);
        Ok(exp)
    }

    /// A dataset path made absolute against the experiment's base directory.
    pub fn dataset_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.base_dir.as_os_str().is_empty() { p.to_path_buf() } else { self.base_dir.join(p) }
    }
}

/// Validate `[layout]` and `[[groups]]`: named, non-empty groups whose
/// entries are specs the experiment measures (`measured`: the `codec` column
/// of its codecs and peers), each once per group.
fn layout(
    text: &str,
    origin: &str,
    raw: Option<Spanned<RawLayout>>,
    groups: Vec<Spanned<RawGroup>>,
    measured: &[String],
) -> Result<Layout> {
    if let Some(l) = &raw
        && groups.is_empty()
    {
        return Err(at(text, origin, l, "layout", "a [layout] needs one or more [[groups]]"));
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let g = g.into_inner();
        let name = g.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(at(text, origin, &g.name, "groups.name", "a group needs a non-empty name"));
        }
        if out.iter().any(|o: &Group| o.name == name) {
            return Err(at(text, origin, &g.name, "groups.name", format!("a second group named '{name}'")));
        }
        if g.entries.get_ref().is_empty() {
            return Err(at(text, origin, &g.entries, "groups.entries", format!("group '{name}' has no entries")));
        }
        let mut entries: Vec<GroupEntry> = Vec::with_capacity(g.entries.get_ref().len());
        for e in g.entries.into_inner() {
            let spec = e.get_ref().0.spec.trim().to_string();
            let codec = match crate::codec::build(&spec) {
                Ok(c) => c.spec(),
                Err(ce) => match super::peers::PeerSpec::parse(&spec) {
                    Ok(p) => p.label(),
                    Err(pe) => {
                        return Err(at(
                            text,
                            origin,
                            &e,
                            "groups.entries",
                            format!("'{spec}' is neither a codec ({}) nor a peer ({})", ce.message(), pe.message()),
                        ));
                    }
                },
            };
            if !measured.contains(&codec) {
                return Err(at(
                    text,
                    origin,
                    &e,
                    "groups.entries",
                    format!("'{spec}' ({codec}) is not among this experiment's 'codecs' or 'peers'"),
                ));
            }
            if entries.iter().any(|x| x.codec == codec) {
                return Err(at(text, origin, &e, "groups.entries", format!("'{spec}' is twice in group '{name}'")));
            }
            let RawEntryTable { published, source, .. } = e.into_inner().0;
            entries.push(GroupEntry { spec, codec, published, source: source.unwrap_or_else(|| g.source.clone()) });
        }
        out.push(Group { name, entries });
    }
    let l = raw.map(Spanned::into_inner).unwrap_or_default();
    Ok(Layout { title: l.title, published_label: l.published_label, notes: l.notes, groups: out })
}

/// `NAME` -> `experiments/NAME.toml`; anything with a `/` or ending in
/// `.toml` is a path.
pub fn resolve_path(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        PathBuf::from(name_or_path)
    } else {
        Path::new("experiments").join(format!("{name_or_path}.toml"))
    }
}

fn list_hint() -> String {
    let Ok(rd) = std::fs::read_dir("experiments") else { return String::new() };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() { String::new() } else { format!(" (experiments here: {})", names.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn fidelity_section_needs_file_cells() {
        let base = "name = \"x\"\ndatasets = [{ path = \"m.safetensors\" }]\ncodecs = [\"sz:abs=1e-3\"]\n";
        let e = Experiment::parse(
            &format!("{base}granularity = \"file\"\n[fidelity]\nlossless = true\n"),
            "t",
            Path::new(""),
        )
        .unwrap();
        assert_eq!(e.fidelity, Some(FidelitySpec { lossless: true, texts: None, codecs: Vec::new() }));
        let err = Experiment::parse(&format!("{base}[fidelity]\n"), "t", Path::new("")).unwrap_err();
        assert!(err.to_string().contains("whole-file cells"), "{err}");
        let err =
            Experiment::parse(&format!("{base}granularity = \"both\"\n[fidelity]\nbogus = 1\n"), "t", Path::new(""))
                .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert_eq!(Experiment::parse(base, "t", Path::new("")).unwrap().fidelity, None);
    }

    #[test]
    fn entry_and_fidelity_codecs_are_measured_codecs() {
        let ok = "name = \"x\"\ngranularity = \"both\"\ncodecs = [\"exp\", \"zstd:level=3\"]\n\
                  datasets = [{ path = \"a.safetensors\", codecs = [\"zstd:level=3\"], fidelity = false }, { path = \"b.safetensors\" }]\n\
                  [fidelity]\ncodecs = [\"exp\"]\n";
        let e = Experiment::parse(ok, "t", Path::new("")).unwrap();
        assert_eq!(e.datasets[0].codecs, Some(vec!["zstd:level=3".to_string()]));
        assert!(!e.datasets[0].fidelity && e.datasets[1].fidelity && e.datasets[1].codecs.is_none());
        // canonical form, as the rows' codec column
        assert_eq!(e.fidelity.unwrap().codecs, vec![crate::codec::build("exp").unwrap().spec()]);
        let bad = ok.replace("codecs = [\"zstd:level=3\"], fidelity", "codecs = [\"lz4\"], fidelity");
        let err = Experiment::parse(&bad, "t", Path::new("")).unwrap_err();
        assert!(err.to_string().contains("not among"), "{err}");
        let bad = ok.replace("[fidelity]\ncodecs = [\"exp\"]", "[fidelity]\ncodecs = [\"zstd:level=1\"]");
        let err = Experiment::parse(&bad, "t", Path::new("")).unwrap_err();
        assert!(err.to_string().contains("fidelity") && err.to_string().contains("not among"), "{err}");
    }

    #[test]
    fn entry_peers_are_measured_peers() {
        let ok = "name = \"x\"\ncodecs = [\"exp\"]\npeers = [\"sz3:abs=1e-3\", \"zstd-cli\"]\n\
                  datasets = [{ path = \"a.safetensors\", peers = [\"sz3:abs=1e-3\"] }, { path = \"b.safetensors\" }]\n";
        let e = Experiment::parse(ok, "t", Path::new("")).unwrap();
        assert_eq!(e.datasets[0].peers, Some(vec!["peer:sz3 abs=1e-3".to_string()]));
        assert_eq!(e.datasets[1].peers, None);
        let bad = ok.replace("peers = [\"sz3:abs=1e-3\"] }", "peers = [\"sz3:abs=1e-2\"] }");
        let err = Experiment::parse(&bad, "t", Path::new("")).unwrap_err();
        assert!(err.to_string().contains("not among") && err.to_string().contains("peers"), "{err}");
    }

    #[test]
    fn bare_names_go_to_experiments() {
        assert_eq!(resolve_path("smoke"), PathBuf::from("experiments/smoke.toml"));
        assert_eq!(resolve_path("x/y.toml"), PathBuf::from("x/y.toml"));
    }
}
