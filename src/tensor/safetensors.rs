//! A safetensors reader that validates everything and never panics, and a
//! writer for the files the project makes itself (imports, derived variants,
//! test fixtures).
//!
//! Written directly rather than through the `safetensors` crate so that every
//! error can say precisely what is wrong and where (the crate rejects files
//! with a generic message), and so that the original header bytes can be kept
//! verbatim for byte-exact reconstruction.

use super::dtype::{DType, numel};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Headers larger than this are rejected (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Byte range inside the data section (after the header).
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn byte_len(&self) -> u64 {
        self.end - self.start
    }
    pub fn numel(&self) -> u64 {
        // validated at parse time
        numel(&self.shape).unwrap_or(0)
    }
}

/// A borrowed view of one tensor's bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [u64],
    pub data: &'a [u8],
}

/// A parsed, validated safetensors file borrowing its bytes (usually a mmap).
#[derive(Debug)]
pub struct SafeTensors<'a> {
    /// The 8-byte length prefix plus the JSON header, verbatim.
    pub header_bytes: &'a [u8],
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensors in the order of their data offsets.
    pub tensors: Vec<TensorInfo>,
    /// The data section.
    pub data: &'a [u8],
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(format!("malformed safetensors: {}", msg.into()))
}

impl<'a> SafeTensors<'a> {
    /// Parse and validate a whole file held in memory.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 8 {
            return Err(bad(format!("file is {} bytes, shorter than the 8-byte header length", bytes.len())));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if n > MAX_HEADER_LEN {
            return Err(bad(format!("header length {n} exceeds the {MAX_HEADER_LEN}-byte limit")));
        }
        let avail = bytes.len() as u64 - 8;
        if n > avail {
            return Err(bad(format!(
                "header length {n} runs past the end of the file ({avail} bytes after the length): truncated?"
            )));
        }
        let header_end = 8 + n as usize;
        let json = &bytes[8..header_end];
        let data = &bytes[header_end..];
        let (tensors, metadata) = parse_header(json, data.len() as u64)?;
        Ok(SafeTensors { header_bytes: &bytes[..header_end], metadata, tensors, data })
    }

    pub fn view(&self, t: &'a TensorInfo) -> TensorView<'a> {
        TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: &self.data[t.start as usize..t.end as usize],
        }
    }

    pub fn views(&'a self) -> impl Iterator<Item = TensorView<'a>> + 'a {
        self.tensors.iter().map(move |t| self.view(t))
    }

    pub fn get(&'a self, name: &str) -> Option<TensorView<'a>> {
        self.tensors.iter().find(|t| t.name == name).map(|t| self.view(t))
    }

    pub fn total_len(&self) -> u64 {
        (self.header_bytes.len() + self.data.len()) as u64
    }
}

type Header = (Vec<TensorInfo>, Option<BTreeMap<String, String>>);

/// Parse the JSON header and check it against a data section of `data_len` bytes.
pub fn parse_header(json: &[u8], data_len: u64) -> Result<Header> {
    let text =
        std::str::from_utf8(json).map_err(|e| bad(format!("header is not UTF-8 (at byte {})", e.valid_up_to() + 8)))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("header JSON does not parse: {e} (line {}, column {})", e.line(), e.column())))?;
    let obj = value.as_object().ok_or_else(|| bad("header is not a JSON object"))?;
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, entry) in obj {
        if name == "__metadata__" {
            let m = entry.as_object().ok_or_else(|| bad("__metadata__ is not an object of strings"))?;
            let mut map = BTreeMap::new();
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| bad(format!("__metadata__ value for '{k}' is not a string")))?;
                map.insert(k.clone(), v.to_string());
            }
            metadata = Some(map);
            continue;
        }
        tensors.push(parse_entry(name, entry)?);
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut pos = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        if t.start < pos {
            let prev = &tensors[i - 1];
            return Err(bad(format!(
                "tensor '{}' [{}, {}) overlaps tensor '{}' [{}, {})",
                t.name, t.start, t.end, prev.name, prev.start, prev.end
            )));
        }
        if t.start > pos {
            return Err(bad(format!(
                "hole in the data section: bytes [{pos}, {}) belong to no tensor (before '{}')",
                t.start, t.name
            )));
        }
        if t.end > data_len {
            return Err(bad(format!(
                "tensor '{}' ends at byte {} of the data section, which has only {data_len} bytes: truncated?",
                t.name, t.end
            )));
        }
        pos = t.end;
    }
    if pos != data_len {
        return Err(bad(format!(
            "data section has {data_len} bytes but the tensors cover only {pos}: {} trailing bytes",
            data_len - pos
        )));
    }
    Ok((tensors, metadata))
}

fn parse_entry(name: &str, entry: &serde_json::Value) -> Result<TensorInfo> {
    let ctx = |m: &str| bad(format!("tensor '{name}': {m}"));
    let o = entry.as_object().ok_or_else(|| ctx("entry is not an object"))?;
    let dtype_s = o.get("dtype").and_then(|v| v.as_str()).ok_or_else(|| ctx("missing or non-string 'dtype'"))?;
    let dtype = DType::from_name(dtype_s).map_err(|_| {
        Error::unsupported(format!("malformed safetensors: tensor '{name}': unknown dtype '{dtype_s}'"))
    })?;
    let shape = o
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or_else(|| ctx("missing or non-array 'shape'"))?
        .iter()
        .map(|d| d.as_u64().ok_or_else(|| ctx(&format!("shape entry {d} is not a non-negative integer"))))
        .collect::<Result<Vec<u64>>>()?;
    let offs =
        o.get("data_offsets").and_then(|v| v.as_array()).ok_or_else(|| ctx("missing or non-array 'data_offsets'"))?;
    if offs.len() != 2 {
        return Err(ctx(&format!("'data_offsets' has {} entries, expected 2", offs.len())));
    }
    let off = |i: usize| {
        offs[i].as_u64().ok_or_else(|| ctx(&format!("data offset {} is not a non-negative integer", offs[i])))
    };
    let (start, end) = (off(0)?, off(1)?);
    if end < start {
        return Err(ctx(&format!("data_offsets [{start}, {end}) end before they begin")));
    }
    let n = numel(&shape).map_err(|e| ctx(e.message()))?;
    let expect = dtype.byte_len(n).map_err(|e| ctx(e.message()))?;
    if expect != end - start {
        return Err(ctx(&format!(
            "shape {shape:?} of {dtype} needs {expect} bytes but data_offsets [{start}, {end}) hold {}",
            end - start
        )));
    }
    Ok(TensorInfo { name: name.to_string(), dtype, shape, start, end })
}

/// A tensor to write: name, dtype, shape and its bytes.
pub struct OwnedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Self {
        OwnedTensor { name: name.into(), dtype, shape, data }
    }
    pub fn view(&self) -> TensorView<'_> {
        TensorView { name: &self.name, dtype: self.dtype, shape: &self.shape, data: &self.data }
    }
}

/// Serialize tensors (in the given order) to safetensors bytes. The header is
/// padded with spaces to a multiple of 8 bytes, as the reference writer does.
pub fn serialize<'a>(
    tensors: impl IntoIterator<Item = TensorView<'a>>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<Vec<u8>> {
    let tensors: Vec<TensorView<'a>> = tensors.into_iter().collect();
    let header = header_json(&tensors, metadata)?;
    let total: usize = tensors.iter().map(|t| t.data.len()).sum();
    let mut out = Vec::with_capacity(8 + header.len() + total);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in &tensors {
        out.extend_from_slice(t.data);
    }
    Ok(out)
}

fn header_json(tensors: &[TensorView<'_>], metadata: Option<&BTreeMap<String, String>>) -> Result<String> {
    let mut map = serde_json::Map::new();
    if let Some(m) = metadata {
        map.insert("__metadata__".into(), serde_json::to_value(m).expect("string map"));
    }
    let mut pos = 0u64;
    for t in tensors {
        // either would overwrite a key of the header: a file that does not
        // parse, or that lost a tensor
        if t.name == "__metadata__" || map.contains_key(t.name) {
            return Err(Error::invalid(format!(
                "a tensor named '{}' cannot be written (a reserved or repeated name)",
                t.name
            )));
        }
        let n = numel(t.shape)?;
        let expect = t.dtype.byte_len(n)?;
        if expect != t.data.len() as u64 {
            return Err(Error::invalid(format!(
                "tensor '{}': shape {:?} of {} needs {expect} bytes, got {}",
                t.name,
                t.shape,
                t.dtype,
                t.data.len()
            )));
        }
        let end = pos + expect;
        map.insert(
            t.name.to_string(),
            serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [pos, end]}),
        );
        pos = end;
    }
    let mut s = serde_json::to_string(&serde_json::Value::Object(map)).expect("json");
    while !s.len().is_multiple_of(8) {
        s.push(' ');
    }
    Ok(s)
}

/// Write tensors to a safetensors file atomically (temp name, then rename),
/// streaming the data so no second copy is held in memory.
pub fn write_file<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = TensorView<'a>>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let tensors: Vec<TensorView<'a>> = tensors.into_iter().collect();
    let header = header_json(&tensors, metadata)?;
    crate::io::write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for t in &tensors {
            w.write_all(t.data)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_valid_file_and_round_trips() {
        let a = OwnedTensor::new("a", DType::BF16, vec![2, 2], vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let b = OwnedTensor::new("b", DType::F4, vec![3, 2], vec![0x12, 0x34, 0x56]);
        let s = OwnedTensor::new("scalar", DType::F32, vec![], vec![0, 0, 0x80, 0x7f]);
        let e = OwnedTensor::new("empty", DType::I64, vec![0, 7], vec![]);
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = serialize([a.view(), b.view(), s.view(), e.view()], Some(&meta)).unwrap();
        let st = SafeTensors::parse(&bytes).unwrap();
        assert_eq!(st.tensors.len(), 4);
        assert_eq!(st.metadata.as_ref().unwrap()["format"], "pt");
        assert_eq!(st.get("b").unwrap().data, &[0x12, 0x34, 0x56]);
        assert_eq!(st.get("scalar").unwrap().shape, &[] as &[u64]);
        assert_eq!(st.header_bytes.len() % 8, 0);
    }

    fn err_of(bytes: &[u8]) -> Error {
        SafeTensors::parse(bytes).expect_err("must fail")
    }

    #[test]
    fn rejects_malformed_headers_with_clear_errors() {
        use crate::error::ErrorKind::*;
        let e = err_of(&[1, 2, 3]);
        assert_eq!(e.kind(), InvalidInput, "a malformed input file is invalid input (exit 2), not a damaged archive");
        let mut huge = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(err_of(&huge).message().contains("limit"));
        let mut past = 100u64.to_le_bytes().to_vec();
        past.extend_from_slice(b"{}");
        assert_eq!(err_of(&past).kind(), InvalidInput);
        let e = err_of(&file("{not json", &[]));
        assert!(e.message().contains("does not parse"), "{e}");
        let e = err_of(&file(r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}}"#, &[0]));
        assert_eq!(e.kind(), Unsupported);
        assert!(e.message().contains("F12"));
        let e = err_of(&file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ));
        assert!(e.message().contains("overlaps"), "{e}");
        let e = err_of(&file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            &[0; 12],
        ));
        assert!(e.message().contains("hole"), "{e}");
        let e = err_of(&file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]));
        assert_eq!(e.kind(), InvalidInput, "a malformed input file is invalid input (exit 2), not a damaged archive");
        let e = err_of(&file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]));
        assert!(e.message().contains("needs 12 bytes"), "{e}");
        let e = err_of(&file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 6]));
        assert!(e.message().contains("trailing"), "{e}");
        let e = err_of(&file(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, &[0; 4]));
        assert!(e.message().contains("non-negative"), "{e}");
        let e = err_of(&file(r#"[1,2]"#, &[]));
        assert!(e.message().contains("not a JSON object"), "{e}");
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let a = OwnedTensor::new("w", DType::F16, vec![3], vec![1, 2, 3, 4, 5, 6]);
        let bytes = serialize([a.view()], None).unwrap();
        for n in 0..bytes.len() {
            assert!(SafeTensors::parse(&bytes[..n]).is_err());
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = SafeTensors::parse(&b);
            }
        }
    }
}
