"""SZ3 (pip pysz): error-bounded lossy compression of every float tensor of
the file. BF16/F16 tensors are widened to float32 exactly (SZ3 takes
float32/float64); other tensors and the header are counted at their raw size.
Args: abs=E (absolute bound, default 1e-3) or rel=E (value-range relative,
SZ3's REL mode). The error statistics compare SZ3's float32 output with the
original values."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Peer, main, pkg_version  # noqa: E402


def setup(opts, info):
    import numpy as np
    from pysz import sz, szConfig, szErrorBoundMode

    if "rel" in opts:
        mode, e, bound = szErrorBoundMode.REL, float(opts["rel"]), f"range-rel<={float(opts['rel']):e}"
    else:
        e = float(opts.get("abs", "1e-3"))
        mode, bound = szErrorBoundMode.ABS, f"abs<={e:e}"

    h0 = info["header_len"]

    def values(buf, dt, a, b):
        raw = np.frombuffer(buf, dtype=np.uint8, count=b - a, offset=h0 + a)
        if dt == "F32":
            return raw.view(np.float32)
        if dt == "F64":
            return raw.view(np.float64)
        if dt == "F16":
            return raw.view(np.float16).astype(np.float32)
        if dt == "BF16":
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        return None

    def compress(original):
        parts = []
        for name, (dt, shape, a, b) in info["tensors"].items():
            v = values(original, dt, a, b)
            if v is None or v.size < 2:
                parts.append((name, None, b - a))
                continue
            cfg = szConfig()
            cfg.errorBoundMode = mode
            if mode == szErrorBoundMode.ABS:
                cfg.absErrorBound = e
            else:
                cfg.relErrorBound = e
            c, _ = sz.compress(np.ascontiguousarray(v), cfg)
            parts.append((name, (c, v.dtype, v.shape), c.size))
        return parts

    def decompress(parts):
        out = {}
        for name, c, _ in parts:
            if c is not None:
                out[name] = sz.decompress(c[0], c[1], c[2])[0]
        return out

    def finite(v):
        return v if np.isfinite(v) else None

    def check(original, decoded):
        max_abs, max_rel, sum_sq, n, worst_ok = 0.0, 0.0, 0.0, 0, True
        # errors on the scale of each tensor's values (as the runner's rmse_rel_std
        # and max_abs_rel_absmax): numel-weighted mean of (rmse/std)^2, worst err/absmax
        sum_std_sq, worst_absmax = 0.0, 0.0
        lo, hi = float("inf"), float("-inf")
        for name, (dt, shape, a, b) in info["tensors"].items():
            if name not in decoded:
                continue
            x = values(original, dt, a, b).astype(np.float64)
            y = decoded[name].astype(np.float64).reshape(-1)
            err = np.abs(x - y)
            max_abs = max(max_abs, float(err.max()))
            nz = x != 0
            if nz.any():
                max_rel = max(max_rel, float((err[nz] / np.abs(x[nz])).max()))
            sum_sq += float((err * err).sum())
            t_rmse, t_std, t_absmax = float(np.sqrt((err * err).mean())), float(x.std()), float(np.abs(x).max())
            sum_std_sq += (0.0 if t_rmse == 0 else (t_rmse / t_std if t_std > 0 else float("inf")) ** 2) * x.size
            if err.max() > 0:
                worst_absmax = max(worst_absmax, float(err.max()) / t_absmax if t_absmax > 0 else float("inf"))
            n += x.size
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
            limit = e if mode == szErrorBoundMode.ABS else e * float(x.max() - x.min())
            worst_ok &= bool(err.max() <= limit * (1 + 1e-6))
        rmse = (sum_sq / max(n, 1)) ** 0.5
        psnr = None if rmse == 0 else 20 * np.log10(hi - lo) - 20 * np.log10(rmse)
        return {"max_abs_err": max_abs, "max_rel_err": max_rel, "rmse": rmse,
                "psnr": None if psnr is None else float(psnr), "bound_held": worst_ok,
                # JSON has no infinity: a constant tensor with an error gives null
                "rmse_rel_std": finite((sum_std_sq / max(n, 1)) ** 0.5), "max_abs_rel_absmax": finite(worst_absmax)}

    def to_safetensors(original, decoded):
        # SZ3's float32 values cast back to each tensor's dtype (BF16 and F16
        # round to nearest even: at most half a unit in the last place more
        # than the bound that `check` measured on the float32 values)
        out = bytearray(original)
        for name, (dt, shape, a, b) in info["tensors"].items():
            if name not in decoded:
                continue
            y = np.ascontiguousarray(decoded[name], dtype=np.float32).reshape(-1)
            if dt == "F32":
                raw = y.view(np.uint8)
            elif dt == "F64":
                raw = y.astype(np.float64).view(np.uint8)
            elif dt == "F16":
                raw = y.astype(np.float16).view(np.uint8)
            elif dt == "BF16":
                u = y.view(np.uint32).astype(np.uint64)
                r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
                nan = np.isnan(y)
                r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
                raw = r.view(np.uint8)
            else:
                continue
            out[h0 + a:h0 + b] = raw.tobytes()
        return bytes(out)

    peer = Peer(compress, decompress, version=pkg_version("pysz"),
                note="per float tensor as float32, other bytes counted raw", mode="bytes",
                lossless=False, bound=bound, check=check, to_safetensors=to_safetensors)
    return peer


if __name__ == "__main__":
    import _common

    # the packed "size" of a list of parts: SZ3 streams + raw bytes + header
    _orig_main = _common.main

    def _main(setup_fn):
        def wrapped(opts, info):
            p = setup_fn(opts, info)
            inner = p.compress

            class Sized(list):
                pass

            def compress(original):
                parts = Sized(inner(original))
                parts.size = sum(s for _, _, s in parts) + info["header_len"]
                return parts

            p.compress = compress
            return p

        _orig_main(wrapped)

    _main(setup)
