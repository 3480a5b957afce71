//! A quick measurement on a real model, outside the lab runner (which gives
//! the committed numbers): every lossy spec through the archive container,
//! whole file, then every tensor decoded and checked. Run with
//!
//! ```text
//! WEIGHTLAB_MODEL=path/model.safetensors [WEIGHTLAB_SPECS="sz:abs=1e-3;int8"] \
//!   cargo test --release --lib codec::lossy::measure -- --ignored --nocapture
//! ```

use crate::codec::{self, Fidelity};
use crate::container::{Archive, CompressOptions, compress};
use crate::metrics::error::ErrorAccumulator;
use crate::tensor::SafeTensors;
use std::time::Instant;

const DEFAULT_SPECS: &[&str] = &[
    "zstd:level=3",
    "auto",
    "sz:abs=1e-2",
    "sz:abs=1e-3",
    "sz:abs=1e-4",
    "sz:abs=1e-5",
    "sz:rel=1e-2",
    "sz:rel=1e-3",
    "sz:rel=1e-4",
    "int8:block=32",
    "int8:block=64",
    "int8:block=128",
    "int4:block=32",
    "int4:block=64",
    "int4:block=128",
    "round:bits=0",
    "round:bits=1",
    "round:bits=2",
    "round:bits=3",
    "round:bits=4",
    "round:bits=5",
    "round:bits=6",
];

#[test]
#[ignore = "needs WEIGHTLAB_MODEL, run in release"]
fn measure_real_model() {
    let Ok(path) = std::env::var("WEIGHTLAB_MODEL") else {
        eprintln!("set WEIGHTLAB_MODEL");
        return;
    };
    let specs: Vec<String> = match std::env::var("WEIGHTLAB_SPECS") {
        Ok(s) => s.split(';').map(str::to_string).collect(),
        Err(_) => DEFAULT_SPECS.iter().map(|s| s.to_string()).collect(),
    };
    let file = std::fs::read(&path).unwrap();
    let st = SafeTensors::parse(&file).unwrap();
    let views: Vec<_> = st.views().collect();
    println!(
        "| codec | size (B) | ratio (orig/comp) | comp/orig | max abs | max rel | mean rel | RMSE | bound | held on every tensor | enc s | dec s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for spec in specs {
        let c = codec::build(&spec).unwrap();
        let opts = CompressOptions { codec: spec.clone(), ..Default::default() };
        let t0 = Instant::now();
        let mut out = Vec::new();
        compress(&file, "model.safetensors", &mut out, &opts).unwrap();
        let enc_s = t0.elapsed().as_secs_f64();
        let a = Archive::open(&out).unwrap();
        let bound = match c.fidelity() {
            Fidelity::Lossless => None,
            Fidelity::Lossy { bound } => bound,
        };
        let mut all = ErrorAccumulator::new(None);
        let mut held = true;
        let mut dec_s = 0.0;
        for (i, v) in views.iter().enumerate() {
            let t1 = Instant::now();
            let dec = a.read_tensor(i).unwrap();
            dec_s += t1.elapsed().as_secs_f64();
            if !v.dtype.is_float() {
                assert_eq!(dec, v.data);
                continue;
            }
            all.add(v.dtype, v.data, &dec).unwrap();
            if bound.is_some() {
                let s = crate::metrics::error::error_stats(v.dtype, v.data, &dec, bound).unwrap();
                held &= s.bound_held == Some(true);
            }
        }
        let s = all.finish();
        println!(
            "| `{}` | {} | {:.3} | {:.2} % | {:.3e} | {:.3e} | {:.3e} | {:.3e} | {} | {} | {:.2} | {:.2} |",
            c.spec(),
            out.len(),
            file.len() as f64 / out.len() as f64,
            100.0 * out.len() as f64 / file.len() as f64,
            s.max_abs,
            s.max_rel,
            s.mean_rel,
            s.rmse,
            bound.map_or("-".to_string(), |b| b.to_string()),
            if bound.is_some() { held.to_string() } else { "-".into() },
            enc_s,
            dec_s
        );
    }
}

/// The committed lossy experiments parse, and every codec in them builds.
#[test]
fn lossy_experiments_parse() {
    for name in ["lossless-vs-lossy", "aveiro-table-4-2"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("experiments/{name}.toml"));
        let exp = crate::experiment::spec::Experiment::load(path.to_str().unwrap()).unwrap();
        assert_eq!(exp.name, name);
        for c in &exp.codecs {
            codec::build(c).unwrap_or_else(|e| panic!("{name}: {c}: {e}"));
        }
    }
}
