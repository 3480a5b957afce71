"""weightlab.transformers: run only where torch and transformers are installed
(`pip install torch transformers` in the test venv). The MiniLM check runs
when its directory is at hand: WEIGHTLAB_MINILM_DIR, or the copy the Rust
tests fetch into target/tmp/weightlab-cache."""

import os

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the transformers loader tests are skipped")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: the loader tests are skipped")

import weightlab  # noqa: E402
import weightlab.transformers as wtf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MINILM = os.environ.get("WEIGHTLAB_MINILM_DIR") or os.path.join(
    HERE, "..", "..", "target", "tmp", "weightlab-cache", "datasets", "all-minilm-l6-v2", "files")


def tiny_bert(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(cfg).eval()
    d = tmp_path / "tiny"
    model.save_pretrained(d, safe_serialization=True)
    return model, d


def test_a_compressed_model_gives_the_same_outputs(tmp_path):
    ref, d = tiny_bert(tmp_path)
    weightlab.compress_file(d)
    m = wtf.from_pretrained(str(d) + ".wlab", transformers.AutoModel)
    assert type(m) is type(ref) and not m.training
    x = torch.tensor([[1, 5, 7, 99, 2]])
    with torch.no_grad():
        assert torch.equal(ref(x).last_hidden_state, m(x).last_hidden_state)
    sd = wtf.load_state_dict(str(d) + ".wlab")
    for k, v in ref.state_dict().items():
        if k in sd:
            assert torch.equal(sd[k], v), k


def test_a_bf16_model_stays_bf16(tmp_path):
    ref, d = tiny_bert(tmp_path)
    ref = ref.to(torch.bfloat16)
    ref.save_pretrained(d, safe_serialization=True)
    weightlab.compress_file(d)
    m = wtf.from_pretrained(str(d) + ".wlab")
    assert next(m.parameters()).dtype == torch.bfloat16
    x = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(ref(x).last_hidden_state, m(x).last_hidden_state)


def test_not_a_compressed_directory(tmp_path):
    with pytest.raises(weightlab.InvalidInputError, match="not a compressed model directory"):
        wtf.from_pretrained(tmp_path)


@pytest.mark.skipif(not os.path.isfile(os.path.join(MINILM, "model.safetensors")),
                    reason="all-MiniLM-L6-v2 is not at hand (set WEIGHTLAB_MINILM_DIR, or run the Rust tests once)")
def test_minilm_embeddings_are_identical(tmp_path):
    out = tmp_path / "minilm.wlab"
    weightlab.compress_file(MINILM, out)
    ref = transformers.AutoModel.from_pretrained(MINILM).eval()
    m = wtf.from_pretrained(out, transformers.AutoModel)
    tok = transformers.AutoTokenizer.from_pretrained(out)  # tokenizer files are copies
    batch = tok(["The quick brown fox.", "Compressed weights, the same embeddings."], padding=True, return_tensors="pt")

    def embed(model):
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(e, dim=-1)

    assert torch.equal(embed(ref), embed(m))
