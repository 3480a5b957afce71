//! Import a CTranslate2 `model.bin` into safetensors, keeping every dtype.
//!
//! The layout (binary version 6, as written by ctranslate2's Python converter
//! and checked against faster-whisper-tiny.en's file), all little endian:
//!
//! ```text
//! u32 binary_version            (4..=6 read here)
//! string spec_name              (version >= 2)   e.g. "WhisperSpec"
//! u32 spec_revision             (version >= 2)
//! u32 variable_count
//! per variable:
//!   string name
//!   u8 rank, rank x u32 dims
//!   u8 dtype                    0 F32, 1 I8, 2 I16, 3 I32, 4 F16, 5 BF16
//!   u32 byte_count, then byte_count bytes of data
//! u32 alias_count               (version >= 3)
//! per alias: string alias, string target
//! ```
//!
//! A `string` is a u16 length followed by that many bytes, the last of which is
//! a NUL terminator. Aliases (tied weights, e.g. Whisper's output projection =
//! its token embedding) are not duplicated: they go to the metadata key
//! `ct2.aliases` as a JSON object `{alias: target}`.

use crate::error::{Error, Result};
use crate::tensor::{DType, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// One variable of a CTranslate2 model, borrowing its bytes.
#[derive(Debug, Clone)]
pub struct Ct2Variable<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: &'a [u8],
}

/// A parsed CTranslate2 model file.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Ct2Variable<'a>>,
    pub aliases: Vec<(String, String)>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.b.len() - self.pos < n {
            return Err(Error::invalid(format!(
                "ctranslate2 model: {what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.b.len() - self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2")))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4")))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.u16(what)? as usize;
        let raw = self.take(n, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec())
            .map_err(|_| Error::corrupt(format!("ctranslate2 model: {what} at offset {at} is not UTF-8")))
    }
}

fn ct2_dtype(code: u8) -> Option<DType> {
    Some(match code {
        0 => DType::F32,
        1 => DType::I8,
        2 => DType::I16,
        3 => DType::I32,
        4 => DType::F16,
        5 => DType::BF16,
        _ => return None,
    })
}

/// The CTranslate2 dtype code of a safetensors dtype (for writing test files).
pub fn ct2_code(dtype: DType) -> Option<u8> {
    (0..=5u8).find(|c| ct2_dtype(*c) == Some(dtype))
}

/// Parse a whole `model.bin` held in memory. Never panics on bad bytes.
pub fn parse(bytes: &[u8]) -> Result<Ct2Model<'_>> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let version = c.u32("binary version")?;
    if !(4..=6).contains(&version) {
        return Err(Error::unsupported(format!(
            "ctranslate2 model: binary version {version} (this importer reads versions 4 to 6)"
        )));
    }
    let spec = c.string("spec name")?;
    let revision = c.u32("spec revision")?;
    let count = c.u32("variable count")?;
    let mut variables = Vec::with_capacity((count as usize).min(1 << 16));
    for i in 0..count {
        let name = c.string(&format!("name of variable {i}"))?;
        let ctx = |m: String| format!("ctranslate2 model: variable '{name}': {m}");
        let rank = c.u8(&ctx("rank".into()))?;
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(c.u32(&ctx("dimension".into()))? as u64);
        }
        let code = c.u8(&ctx("dtype".into()))?;
        let dtype = ct2_dtype(code).ok_or_else(|| Error::unsupported(ctx(format!("unknown dtype code {code}"))))?;
        let n = c.u32(&ctx("byte count".into()))? as u64;
        let numel = crate::tensor::numel(&shape).map_err(|e| Error::corrupt(ctx(e.message().to_string())))?;
        let expect = dtype.byte_len(numel).map_err(|e| Error::corrupt(ctx(e.message().to_string())))?;
        if expect != n {
            return Err(Error::corrupt(ctx(format!(
                "shape {shape:?} of {dtype} needs {expect} bytes but the file says {n}"
            ))));
        }
        let data = c.take(n as usize, &ctx("data".into()))?;
        variables.push(Ct2Variable { name, dtype, shape, data });
    }
    let mut aliases = Vec::new();
    if version >= 3 {
        let n = c.u32("alias count")?;
        for i in 0..n {
            let alias = c.string(&format!("alias {i}"))?;
            let target = c.string(&format!("target of alias {i}"))?;
            aliases.push((alias, target));
        }
    }
    if c.pos != bytes.len() {
        return Err(Error::corrupt(format!(
            "ctranslate2 model: {} trailing bytes after the last entry (offset {})",
            bytes.len() - c.pos,
            c.pos
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for v in &variables {
        if !seen.insert(v.name.as_str()) {
            return Err(Error::corrupt(format!("ctranslate2 model: variable '{}' appears twice", v.name)));
        }
    }
    for (a, t) in &aliases {
        if !seen.contains(t.as_str()) {
            return Err(Error::corrupt(format!("ctranslate2 model: alias '{a}' names a missing variable '{t}'")));
        }
    }
    Ok(Ct2Model { version, spec, revision, variables, aliases })
}

impl Ct2Model<'_> {
    /// The metadata written into the imported safetensors file.
    pub fn metadata(&self, source_sha256: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("format".into(), "pt".into());
        m.insert("weightlab.imported_from".into(), "ctranslate2".into());
        m.insert("weightlab.source_sha256".into(), source_sha256.into());
        m.insert("ct2.binary_version".into(), self.version.to_string());
        m.insert("ct2.spec".into(), self.spec.clone());
        m.insert("ct2.spec_revision".into(), self.revision.to_string());
        let aliases: serde_json::Map<String, serde_json::Value> =
            self.aliases.iter().map(|(a, t)| (a.clone(), serde_json::Value::String(t.clone()))).collect();
        m.insert("ct2.aliases".into(), serde_json::Value::Object(aliases).to_string());
        m
    }

    pub fn views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.variables.iter().map(|v| TensorView { name: &v.name, dtype: v.dtype, shape: &v.shape, data: v.data })
    }
}

/// Import `model.bin` bytes into a safetensors file at `out` (atomically),
/// tensors in the file's order, dtypes unchanged.
pub fn import(bytes: &[u8], source_sha256: &str, out: &Path) -> Result<()> {
    let model = parse(bytes)?;
    let meta = model.metadata(source_sha256);
    crate::tensor::safetensors::write_file(out, model.views(), Some(&meta))
}

/// Write a CTranslate2 `model.bin` (version 6): the inverse of [`parse`], for tests.
pub fn write(spec: &str, revision: u32, vars: &[TensorView<'_>], aliases: &[(&str, &str)]) -> Result<Vec<u8>> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    put_str(&mut out, spec);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        put_str(&mut out, v.name);
        out.push(v.shape.len() as u8);
        for d in v.shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        let code =
            ct2_code(v.dtype).ok_or_else(|| Error::unsupported(format!("ctranslate2 has no dtype for {}", v.dtype)))?;
        out.push(code);
        out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
        out.extend_from_slice(v.data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (a, t) in aliases {
        put_str(&mut out, a);
        put_str(&mut out, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{OwnedTensor, SafeTensors};

    fn sample() -> (Vec<OwnedTensor>, Vec<u8>) {
        let mut s = 0x1234_5678u32;
        let mut rnd = |n: usize| {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    s as u8
                })
                .collect::<Vec<u8>>()
        };
        let ts = vec![
            OwnedTensor::new("decoder/activation", DType::I8, vec![], vec![1]),
            OwnedTensor::new("decoder/alignment_heads", DType::I16, vec![], vec![6, 0]),
            OwnedTensor::new("decoder/embeddings/weight", DType::F16, vec![5, 4], rnd(40)),
            OwnedTensor::new("encoder/conv1/bias", DType::F32, vec![3], rnd(12)),
            OwnedTensor::new("encoder/x/bf", DType::BF16, vec![2, 1, 2], rnd(8)),
            OwnedTensor::new("encoder/ids", DType::I32, vec![2], rnd(8)),
        ];
        let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
        let bytes =
            write("WhisperSpec", 3, &views, &[("decoder/projection/weight", "decoder/embeddings/weight")]).unwrap();
        (ts, bytes)
    }

    #[test]
    fn imports_a_synthetic_model_keeping_dtypes_and_bytes() {
        let (ts, bytes) = sample();
        // the header as in the real file: version 6, "WhisperSpec\0", revision 3
        assert_eq!(&bytes[..6], &[6, 0, 0, 0, 12, 0]);
        assert_eq!(&bytes[6..18], b"WhisperSpec\0");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model.safetensors");
        import(&bytes, "feed", &out).unwrap();
        let file = std::fs::read(&out).unwrap();
        let st = SafeTensors::parse(&file).unwrap();
        assert_eq!(st.tensors.len(), ts.len());
        for t in &ts {
            let v = st.get(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
            assert_eq!(v.dtype, t.dtype, "{}", t.name);
            assert_eq!(v.shape, &t.shape[..], "{}", t.name);
            assert_eq!(v.data, &t.data[..], "{}", t.name);
        }
        let m = st.metadata.unwrap();
        assert_eq!(m["ct2.spec"], "WhisperSpec");
        assert_eq!(m["ct2.spec_revision"], "3");
        assert_eq!(m["ct2.aliases"], r#"{"decoder/projection/weight":"decoder/embeddings/weight"}"#);
        assert_eq!(m["weightlab.source_sha256"], "feed");
    }

    #[test]
    fn every_prefix_and_bad_field_is_an_error_not_a_panic() {
        let (_, bytes) = sample();
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = parse(&b);
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(parse(&extra).unwrap_err().message().contains("trailing"));
        let mut v9 = bytes.clone();
        v9[0] = 9;
        assert_eq!(parse(&v9).unwrap_err().kind(), crate::ErrorKind::Unsupported);
    }

    #[test]
    fn rejects_byte_count_that_disagrees_with_shape() {
        let t = OwnedTensor::new("w", DType::F32, vec![2], vec![0; 8]);
        let mut bytes = write("S", 1, &[t.view()], &[]).unwrap();
        // byte count sits right before the 8 data bytes and the 4-byte alias count
        let at = bytes.len() - 4 - 8 - 4;
        bytes[at] = 4;
        let e = parse(&bytes).unwrap_err();
        assert!(e.message().contains("needs 8 bytes"), "{e}");
    }
}
