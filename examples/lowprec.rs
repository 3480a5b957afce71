//! Low-precision variants of a model, measured: derive fp8-e4m3, fp8-e5m2,
//! mxfp4 and nvfp4 from a safetensors file (the datasets layer's derivation),
//! then per variant the file size, the order-0 floor (packed FP4 codes as
//! 4-bit symbols, and as bytes for comparison; scales; the tensors kept in
//! BF16) and what `weightlab compress` writes with each spec given (default
//! `auto`), round trip checked bit for bit.
//!
//! cargo run --release --example lowprec -- FILE OUT_DIR [SPEC...]

use weightlab::analysis::entropy::floor_bytes;
use weightlab::container::{Archive, CompressOptions, compress};
use weightlab::datasets::derive::{Variant, derive_file};
use weightlab::datasets::lowprec::{Stored, fp4_code_tensors, layout, stored_floor_bytes};
use weightlab::tensor::SafeTensors;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: lowprec FILE OUT_DIR [SPEC...]");
        std::process::exit(2);
    }
    let src = std::fs::read(&args[1]).expect("reading the source");
    let out = std::path::Path::new(&args[2]);
    std::fs::create_dir_all(out).expect("out dir");
    let specs: Vec<String> = if args.len() > 3 { args[3..].to_vec() } else { vec!["auto".into()] };
    println!(
        "variant | file bytes | floor bytes (%) | fp4 codes: nibble floor / byte floor / bytes | scales floor / bytes | kept floor / bytes | spec: archive bytes (% of file, % of floor)"
    );
    for v in [Variant::Fp8E4m3, Variant::Fp8E5m2, Variant::Mxfp4, Variant::Nvfp4] {
        let p = out.join(format!("{v}.safetensors"));
        derive_file(&src, "-", "measure", v, &p).expect("derive");
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::parse(&bytes).unwrap();
        let codes = fp4_code_tensors(&st);
        let parts: std::collections::HashSet<String> = layout(&st)
            .into_iter()
            .flat_map(|(_, how)| match how {
                Stored::Mxfp4 { scales, .. } => vec![scales],
                Stored::Nvfp4 { scale, scale_2 } => vec![scale, scale_2],
                Stored::Fp8 { scale } => vec![scale],
                _ => vec![],
            })
            .collect();
        let (mut nib, mut nib_byte, mut nib_len, mut sc, mut sc_len, mut kept, mut kept_len) =
            (0f64, 0f64, 0u64, 0f64, 0u64, 0f64, 0u64);
        for t in st.views() {
            let n = t.data.len() as u64;
            if codes.contains(t.name) {
                nib += stored_floor_bytes(t.dtype, t.data, true);
                nib_byte += stored_floor_bytes(t.dtype, t.data, false);
                nib_len += n;
            } else if parts.contains(t.name) {
                sc += floor_bytes(t.dtype, t.data);
                sc_len += n;
            } else {
                kept += floor_bytes(t.dtype, t.data);
                kept_len += n;
            }
        }
        let floor = nib + sc + kept;
        // the packed codes alone under exp (byte-wise rANS): against their nibble floor
        let exp = weightlab::codec::build("exp").unwrap();
        let code_exp: usize = st
            .views()
            .filter(|t| codes.contains(t.name))
            .map(|t| {
                let mut o = Vec::new();
                for c in t.data.chunks(4 << 20) {
                    let info = weightlab::codec::ChunkInfo { name: t.name, dtype: t.dtype, shape: t.shape, offset: 0 };
                    exp.encode(&info, c, &mut o).unwrap();
                }
                o.len()
            })
            .sum();
        let mut row = format!(
            "{v} | {} | {:.0} ({:.2} %) | {:.0} / {:.0} / {nib_len} (exp {code_exp}) | {:.0} / {sc_len} | {:.0} / {kept_len} |",
            bytes.len(),
            floor,
            100.0 * floor / bytes.len() as f64,
            nib,
            nib_byte,
            sc,
            kept
        );
        for spec in &specs {
            let opts = CompressOptions { codec: spec.clone(), ..Default::default() };
            let mut arc = Vec::new();
            let index = compress(&bytes, "v.safetensors", &mut arc, &opts).expect("compress");
            let a = Archive::open(&arc).unwrap();
            let mut back = Vec::new();
            a.stream(&mut back, &Default::default()).unwrap();
            assert!(back == bytes, "{v} {spec}: the archive does not give the file back");
            let mut picks: std::collections::BTreeMap<&str, usize> = Default::default();
            for t in &index.tensors {
                *picks.entry(t.codec.as_str()).or_default() += 1;
            }
            row += &format!(
                " {spec}: {} ({:.2} %, {:.2} % of floor; picks {picks:?}) |",
                arc.len(),
                100.0 * arc.len() as f64 / bytes.len() as f64,
                100.0 * arc.len() as f64 / floor
            );
        }
        println!("{row}");
    }
}
