"""Tokenizer throughput: encode (image -> pyramid) and decode (pyramid -> image) images/s.

    python -m bench.tokenizer [--batch 2] [--repeats 5] [--json bench/results/tokenizer.json]

Rows: VAR's config (vae_ch160v4096z32, random init, 256px, 10 scales) and the embedded
default (tokenizer section defaults at data.resolution). With ``VAR_SRC`` pointing at a
checkout of FoundationVision/VAR, VAR's own ``img_to_idxBl`` runs on the same weights and
batch, interleaved with ours (A B A B ...: a busy machine slows both alike); the ratio is
ours / VAR's images/s (> 1 = faster) and the tokens are checked to be identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from pretrain.config import load_config
from pretrain.tokenizer.checkpoint import build_tokenizer
from pretrain.tokenizer.var_source import import_var_vqvae, var_src
from pretrain.tokenizer.vqvae import MultiScaleVQVAE


def seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_row(name: str, vae: MultiScaleVQVAE, side: int, batch: int, repeats: int) -> dict[str, object]:
    """Our encode/decode images/s; VAR's encode beside it when its source is there and its
    modules can express the config (VAR's GroupNorm always has 32 groups)."""
    img = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    idx = vae.encode_pyramid(img)
    fns: dict[str, Callable[[], object]] = {
        "encode": lambda: vae.encode_pyramid(img),
        "decode": lambda: torch.no_grad()(vae.decode_pyramid)(idx),
    }
    src = var_src()
    if src is not None and vae.arch["norm_groups"] == 32:
        theirs = var_vqvae_like(vae, src)
        with torch.no_grad():
            ref = theirs.img_to_idxBl(img)
        identical = all(torch.equal(a, b) for a, b in zip(idx, ref))
        fns["var_encode"] = lambda: torch.no_grad()(theirs.img_to_idxBl)(img)
    t = interleaved(fns, repeats)
    row: dict[str, object] = {
        "config": name, "side_px": side, "batch": batch, "tokens": sum(p * p for p in vae.patch_nums),
        "params_M": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2),
        "encode_img_per_s": round(batch / t["encode"], 2), "decode_img_per_s": round(batch / t["decode"], 2),
    }
    if "var_encode" in t:
        row.update(var_encode_img_per_s=round(batch / t["var_encode"], 2),
                   encode_ratio_vs_var=round(t["var_encode"] / t["encode"], 3), tokens_identical_to_var=identical)
    return row


def var_vqvae_like(vae: MultiScaleVQVAE, src: Path) -> torch.nn.Module:
    """VAR's VQVAE with our weights (same state-dict layout), its Encoder/Decoder at our ch_mult."""
    mod = import_var_vqvae(src)
    a = vae.arch
    theirs = mod.VQVAE(vocab_size=a["vocab_size"], z_channels=a["z_channels"], ch=a["ch"], test_mode=True,
                       v_patch_nums=tuple(a["patch_nums"]), share_quant_resi=a["share_quant_resi"],
                       quant_resi=a["quant_resi"])
    dd = dict(ch=a["ch"], ch_mult=tuple(a["ch_mult"]), num_res_blocks=a["num_res_blocks"],
              z_channels=a["z_channels"], dropout=0.0, in_channels=3, using_sa=True, using_mid_sa=True)
    theirs.encoder, theirs.decoder = mod.Encoder(double_z=False, **dd), mod.Decoder(**dd)
    theirs.load_state_dict(vae.state_dict(), strict=True)
    return theirs.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="images per call at VAR's 256px config")
    p.add_argument("--default-batch", type=int, default=64, help="images per call at the embedded default")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="bench/results/tokenizer.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = load_config()
    rows = [bench_row("var vae_ch160v4096z32", MultiScaleVQVAE().eval(), 256, args.batch, args.repeats)]
    default = build_tokenizer(cfg.tokenizer).eval()
    rows.append(bench_row("embedded default", default, cfg.data.resolution, args.default_batch, args.repeats))
    result = {"torch_threads": torch.get_num_threads(), "var_src": str(var_src() or ""), "rows": rows}
    cols = ["config", "side_px", "batch", "tokens", "params_M", "encode_img_per_s", "decode_img_per_s",
            "var_encode_img_per_s", "encode_ratio_vs_var", "tokens_identical_to_var"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
