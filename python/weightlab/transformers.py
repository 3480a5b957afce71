"""Loading a compressed model directory into Hugging Face transformers.

``weightlab.compress_file("all-MiniLM-L6-v2/")`` makes ``all-MiniLM-L6-v2.wlab/``:
the same files, each ``*.safetensors`` as an archive. Then::

    import weightlab.transformers as wtf
    from transformers import AutoModel
    model = wtf.from_pretrained("all-MiniLM-L6-v2.wlab", AutoModel)

builds the model from the directory's ``config.json`` and puts the decoded
tensors in as its parameters (no decompressed file is written; the tensors
are decoded straight into the memory the model then uses). The tokenizer
files are copied as they are, so ``AutoTokenizer.from_pretrained(DIR.wlab)``
works unchanged.

torch and transformers are imported only when these functions are called.
"""

import os
import re
import warnings

from . import _native
from .errors import InvalidInputError


def _archives(path):
    """The archives holding a model's own weights: the ``*.safetensors.wlab``
    files at the top of a compressed directory (its shards; subfolders such
    as ``1_Pooling/`` belong to other modules), or ``path`` itself."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        return [p]
    if not _native.is_compressed_dir(p):
        raise InvalidInputError(f"{p}: not a compressed model directory (no {_native.MANIFEST_NAME}) (invalid input)")
    out = [os.path.join(p, stored) for _, _, _, kind, stored in _native.manifest(p)
           if kind == "archive" and "/" not in stored]
    if not out:
        raise InvalidInputError(f"{p}: the directory holds no safetensors archive at its top (invalid input)")
    return sorted(out)


def load_state_dict(path, device="cpu", threads=0):
    """Every tensor of a compressed model (a directory's shards merged, or one
    archive) as ``{name: torch.Tensor}``."""
    from . import torch as wt

    sd = {}
    for a in _archives(path):
        part = wt.load_file(a, device=device, threads=threads)
        dup = sd.keys() & part.keys()
        if dup:
            raise InvalidInputError(f"{a}: tensor '{sorted(dup)[0]}' is also in another shard (invalid input)")
        sd.update(part)
    return sd


def _match_prefix(model, sd):
    """Add or strip the model's ``base_model_prefix`` (``bert.``...) the way
    ``from_pretrained`` does when a checkpoint of a head model is loaded into
    its base model, or the other way round."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    if not prefix:
        return sd
    want = set(model.state_dict().keys())
    have = set(sd)
    if len(have & want) >= len(have) // 2:
        return sd
    p = prefix + "."
    stripped = {k[len(p):] if k.startswith(p) else k: v for k, v in sd.items()}
    added = {k if k.startswith(p) else p + k: v for k, v in sd.items()}
    return max((stripped, added, sd), key=lambda d: len(set(d) & want))


def from_pretrained(path, model_class=None, *, dtype=None, device="cpu", threads=0, **config_kwargs):
    """A transformers model from a compressed model directory.

    ``model_class``: ``AutoModel`` (the default), ``AutoModelForCausalLM``, a
    concrete class... ``dtype``: the parameters' torch dtype (default: the
    archive's, e.g. BF16 stays BF16). ``config_kwargs`` go to
    ``AutoConfig.from_pretrained``. The model is returned in eval mode.
    Raises if a parameter of the model is in no archive (and is not tied to
    one that is).
    """
    import torch
    import transformers

    if model_class is None:
        model_class = transformers.AutoModel
    p = os.fspath(path)
    sd = load_state_dict(p, threads=threads)
    config = transformers.AutoConfig.from_pretrained(p, **config_kwargs)
    if dtype is None:
        floats = [t.dtype for t in sd.values() if t.is_floating_point()]
        dtype = max(set(floats), key=floats.count) if floats else torch.float32
    model = model_class.from_config(config)
    sd = _match_prefix(model, sd)
    loaded = model.load_state_dict(sd, strict=False, assign=True)
    model.tie_weights()
    params = dict(model.named_parameters(remove_duplicate=False))
    ptrs = {v.data_ptr() for v in sd.values() if v.numel()}
    missing = [k for k in loaded.missing_keys if k in params and params[k].numel() and params[k].data_ptr() not in ptrs]
    if missing:
        raise InvalidInputError(f"{p}: the model's parameter '{missing[0]}' is in no archive "
                                f"({len(missing)} missing) (invalid input)")
    # what from_pretrained passes over in silence (old buffers such as position_ids)
    ignore = [re.compile(r) for r in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    unexpected = [k for k in loaded.unexpected_keys if not any(r.search(k) for r in ignore)]
    if unexpected:
        warnings.warn(f"{p}: {len(unexpected)} tensors the model does not use, e.g. '{unexpected[0]}'", stacklevel=2)
    # parameters and buffers the archives did not give (rotary tables...)
    # follow the archive's dtype; the loaded ones already have it
    model.to(dtype)
    model.eval()
    return model.to(device) if str(device) != "cpu" else model
