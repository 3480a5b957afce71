//! Bundle the tensors of several safetensors files into one file, each
//! tensor's name prefixed with its file's position and parent folder, for
//! measuring the tool on a file of several hundred MB made of real weights
//! when no single model that large can be fetched (the lab's machines reach
//! package registries only). The file records its sources in its metadata.
//!
//! cargo run --release --example bundle -- OUT.safetensors IN.safetensors...

use std::collections::BTreeMap;
use std::path::Path;
use weightlab::tensor::SafeTensors;
use weightlab::tensor::safetensors::{TensorView, write_file};

fn main() -> weightlab::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, inputs) = args.split_first().expect("usage: bundle OUT.safetensors IN.safetensors...");
    let maps: Vec<_> =
        inputs.iter().map(|p| weightlab::io::Mapped::open(Path::new(p))).collect::<weightlab::Result<_>>()?;
    let files: Vec<SafeTensors> =
        maps.iter().map(|m| SafeTensors::parse(m.bytes())).collect::<weightlab::Result<_>>()?;
    let mut names = Vec::new();
    for (k, (path, st)) in inputs.iter().zip(&files).enumerate() {
        let folder = Path::new(path)
            .parent()
            .and_then(|d| d.file_name())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in &st.tensors {
            names.push(format!("{k}.{folder}.{}", st.view(t).name));
        }
    }
    let mut views = Vec::new();
    let mut at = 0;
    for st in &files {
        for t in &st.tensors {
            let v = st.view(t);
            views.push(TensorView { name: &names[at], dtype: v.dtype, shape: v.shape, data: v.data });
            at += 1;
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("weightlab.bundle_of".to_string(), inputs.join(" "));
    write_file(Path::new(out), views, Some(&meta))?;
    let size = std::fs::metadata(out).map_err(|e| weightlab::Error::io(format!("reading {out}"), e))?.len();
    println!("{out}: {} tensors from {} files, {size} bytes", names.len(), inputs.len());
    Ok(())
}
