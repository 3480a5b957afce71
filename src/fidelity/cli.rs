//! `weightlab eval DATASET[:VARIANT] --codec SPEC [--texts FILE] [--json]`.

use super::{Evaluator, Report, Task, texts};
use crate::datasets::FetchOptions;
use std::path::PathBuf;

/// Run a model with its original weights and with the weights a codec gives
/// back, on fixed inputs, and print what the codec did to its outputs.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// `all-minilm-l6-v2[:bf16|f16]` (sentence embeddings) or
    /// `smollm2-135m:bf16` (causal LM: its GGUF dequantized and cast, derived).
    /// `DATASET:fp8-e4m3|fp8-e5m2|mxfp4|nvfp4`: the BF16 model through that
    /// format as a lossy codec, `--codec` coding what it stores (`mxfp4>SPEC`).
    pub target: String,
    /// Codec spec applied to every tensor, as `weightlab compress --codec`.
    #[arg(long)]
    pub codec: String,
    /// One text per line, replacing the default inputs (for the causal LM the
    /// lines are joined with newlines into one text).
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for the codec (0: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    pub threads: usize,
    /// Use only the cache: no network.
    #[arg(long)]
    pub offline: bool,
    /// Also write the original model's inputs and outputs to this JSON file
    /// (texts, token ids, embeddings or perplexity): what the reference check
    /// (reports/fidelity-check) compares with transformers / sentence-transformers.
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

pub fn run(args: &EvalArgs, verbose: bool) -> anyhow::Result<()> {
    let (dataset, variant) = super::parse_target(&args.target)?;
    // a low-precision variant is a lossy codec of the BF16 model it is derived
    // from: DATASET:mxfp4 --codec C evaluates DATASET:bf16 with 'mxfp4>C'
    let (variant, codec) = match crate::codec::lowprec::variant_stage(&variant) {
        Some(head) => ("bf16".to_string(), format!("{head}>{}", args.codec)),
        None => (variant, args.codec.clone()),
    };
    let opts = FetchOptions { offline: args.offline, verbose, ..Default::default() };
    let inputs = args.texts.as_deref().map(texts::read_lines).transpose()?;
    // a bad spec fails before anything is fetched or run
    crate::codec::build(&codec)?;
    let ev = Evaluator::new(&dataset, &variant, inputs, &opts)?;
    if verbose {
        eprintln!(
            "{}:{}: {} inputs, original {} in {:.1} s",
            ev.dataset,
            ev.variant,
            ev.inputs().len(),
            if ev.original_cached { "outputs read from the cache" } else { "run" },
            ev.seconds_setup
        );
    }
    let r = ev.evaluate(&codec, args.threads)?;
    if let Some(p) = &args.dump {
        let v = ev.dump(&r);
        crate::io::write_atomic(p, |w| serde_json::to_writer(&mut *w, &v).map_err(std::io::Error::other))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", render(&r));
    }
    Ok(())
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let m = &r.metrics;
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.6}"));
    let mut s = format!(
        "{}:{}{} with {}\n  size: {} -> {} bytes, ratio {:.3}x, {:.3} bits per weight ({}{})\n",
        r.dataset,
        r.variant,
        if r.derived { " (derived)" } else { "" },
        r.codec,
        r.original_bytes,
        r.archive_bytes,
        r.ratio,
        r.bits_per_weight,
        if r.lossless { "lossless" } else { "lossy" },
        if r.identical_weights { ", decoded weights identical" } else { "" },
    );
    match r.task {
        Task::SentenceEmbedding => s.push_str(&format!(
            "  embeddings of {} texts: cosine mean {}, p1 {}, min {}; top-10 neighbour agreement {}\n",
            m.n_inputs,
            f(m.cosine_mean),
            f(m.cosine_p1),
            f(m.cosine_min),
            f(m.top10_agreement)
        )),
        Task::CausalLm => s.push_str(&format!(
            "  {} predicted tokens: perplexity {} -> {} ({:+.4} %), top-1 agreement {}, mean KL {:.3e} nats\n",
            m.n_inputs,
            f(m.ppl_original),
            f(m.ppl),
            m.ppl_delta_pct.unwrap_or(f64::NAN),
            f(m.top1_agreement),
            m.kl_mean.unwrap_or(f64::NAN)
        )),
    }
    s.push_str(&format!("  codec {:.2} s, evaluation {:.2} s\n", r.seconds_codec, r.seconds_eval));
    s
}
