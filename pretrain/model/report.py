"""`srdd sizes`: parameter and FLOP counts of every row of the size table, from built models.

Two tables: the run's own tokenizer config (the MNIST default: V=512, Cvae=16, patch_nums
1,2,3,4,6,8 at 32px, model.num_classes classes) and VAR's ImageNet 256px setting (V=4096,
Cvae=32, patch_nums 1..16, 1000 classes), where d16 must come out at VAR's 310M. Models are
built on the meta device (shapes only), so d30's 2B parameters cost no memory. FLOP
convention: pretrain/model/flops.py. ``--json PATH`` also writes the rows.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence

import torch

from pretrain.config import SRDDConfig
from pretrain.model.build import build_model
from pretrain.config.model import MASK_PRESETS, ModelConfig
from pretrain.model.flops import forward_flops_per_sample
from pretrain.model.transformer import VAR_PATCH_NUMS
from pretrain.outputs import atomic_write_json
from pretrain.sizes import SIZES

VAR_256 = dict(vocab_size=4096, z_channels=32, patch_nums=VAR_PATCH_NUMS, num_classes=1000)
COLUMNS = ("size", "depth", "width", "heads", "params", "non_embedding_params",
           "fwd_flops_per_token", "fwd_flops_per_sample_var", "fwd_flops_per_sample_srdd", "train_flops_per_sample")


def size_rows(model_cfg: ModelConfig, vocab_size: int, z_channels: int, patch_nums: Sequence[int]) -> list[dict[str, Any]]:
    """One row per size: counts, forward FLOPs under both masks, training FLOPs under the config's mask."""
    rows = []
    L = sum(pn * pn for pn in patch_nums)
    for name in SIZES:
        with torch.device("meta"):
            m = build_model(model_cfg, vocab_size, z_channels, patch_nums, size=name)
        fwd = forward_flops_per_sample(m)
        rows.append(dict(size=name, depth=m.depth, width=m.C, heads=m.num_heads, params=m.num_params(),
                         non_embedding_params=m.num_non_embedding_params(), fwd_flops_per_token=fwd / L,
                         fwd_flops_per_sample_var=forward_flops_per_sample(m, attn_window=MASK_PRESETS["var"]),
                         fwd_flops_per_sample_srdd=forward_flops_per_sample(m, attn_window=MASK_PRESETS["srdd"]),
                         train_flops_per_sample=3 * fwd))
    return rows


def human(x: float, billion: str = "G") -> str:
    """1.23G FLOPs, or 1.23B parameters with billion="B"."""
    for unit, scale in (("T", 1e12), (billion, 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_table(title: str, rows: list[dict[str, Any]]) -> str:
    header = ("size", "depth", "width", "heads", "params", "non-emb", "fwd/token", "fwd/sample var",
              "fwd/sample srdd", "train/sample")
    cells = [header] + [(r["size"], str(r["depth"]), str(r["width"]), str(r["heads"]),
                         human(r["params"], "B"), human(r["non_embedding_params"], "B"),
                         *(human(r[c]) for c in COLUMNS[6:])) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    tok, mask = cfg.tokenizer, f"mask={cfg.model.mask} (attn_window={cfg.model.window})"
    tables = {
        f"this config: V={tok.vocab_size}, Cvae={tok.z_channels}, patch_nums={list(tok.patch_nums)}, "
        f"classes={cfg.model.num_classes}, {mask}":
            size_rows(cfg.model, tok.vocab_size, tok.z_channels, tok.patch_nums),
        f"VAR ImageNet 256px: V=4096, Cvae=32, patch_nums={list(VAR_PATCH_NUMS)}, classes=1000, {mask}":
            size_rows(dataclasses.replace(cfg.model, num_classes=VAR_256["num_classes"]), VAR_256["vocab_size"],
                      VAR_256["z_channels"], VAR_256["patch_nums"]),
    }
    print("\n\n".join(format_table(t, rows) for t, rows in tables.items()))
    print("\nFLOPs: forward = 2 * non-emb params + 4 * depth * width * attended keys per token; "
          "train = 3 x forward (pretrain/model/flops.py)")
    if args.json:
        atomic_write_json(args.json, [{"table": t, **r} for t, rows in tables.items() for r in rows])
    return 0
