"""The attention kernels alone, at one d16 layer's shapes: which path to run for each mask.

    python -m bench.attention --json bench/results/attention.json

One layer's teacher-forcing attention (batch 1, 16 heads, head dim 64: d16) at VAR's 256 px and
512 px schedules, for block-causal (VAR), window 0 (SRDD) and window 2, through:

- ``dense``: SDPA over all L x L pairs with the additive -inf mask (``model.attn_impl=dense``);
- ``tiled``: ``pretrain.model.tiled_attention`` with the fused CPU kernel (``attn_impl=auto``);
- ``tiled-sdpa``: the same tiles as plain SDPA calls under autograd (what non-CPU devices run);
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask, compiled. Torch 2.13 has no
  FlexAttention backward on CPU, so this row is forward only.

Medians over interleaved repeats (the order rotates each round), milliseconds, one process with
every core. Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from pretrain.model.attention import masked_attention
from pretrain.model.flops import executed_attention_pairs
from pretrain.model.masks import attention_tiles, attn_bias, scale_ids
from pretrain.model.tiled_attention import group_tiles, tiled_attention

REPO = Path(__file__).resolve().parent.parent
SCHEDULES = {256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}
IMPLS = ("dense", "tiled", "tiled-sdpa", "flex")


def kernels(patch_nums: Sequence[int], window: Optional[int]) -> dict[str, Callable[..., torch.Tensor]]:
    bias = attn_bias(patch_nums, window)
    groups = group_tiles(attention_tiles(patch_nums, window))
    out = {"dense": lambda q, k, v: masked_attention(q, k, v, bias_11LL=bias),
           "tiled": lambda q, k, v: tiled_attention(q, k, v, groups),
           "tiled-sdpa": lambda q, k, v: tiled_attention(q, k, v, groups, fused_cpu=False)}
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    ids_L = scale_ids(patch_nums)

    def visible(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        seen = ids_L[kv_idx] <= ids_L[q_idx]
        return seen if window is None else seen & (ids_L[kv_idx] >= ids_L[q_idx] - window)

    L = len(ids_L)
    block_mask = create_block_mask(visible, None, None, L, L, device="cpu")
    flex = torch.compile(flex_attention, dynamic=False)  # a dynamic-shape recompile emits invalid C++ on CPU (torch 2.13)
    out["flex"] = lambda q, k, v: flex(q, k, v, block_mask=block_mask, scale=1.0)
    return out


def time_rows(resolution: int, window: Optional[int], impls: Sequence[str], repeats: int,
              heads: int = 16, head_dim: int = 64) -> list[dict[str, Any]]:
    patch_nums = SCHEDULES[resolution]
    L = sum(p * p for p in patch_nums)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, L, head_dim, generator=g) for _ in range(3))
    q, k = F.normalize(q, dim=-1) * 4.0, F.normalize(k, dim=-1)
    grad_out = torch.randn(1, heads, L, head_dim, generator=g)
    fns = {name: fn for name, fn in kernels(patch_nums, window).items() if name in impls}
    fwd: dict[str, list[float]] = {n: [] for n in fns}
    both: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(repeats + 1):  # round 0 warms up (and compiles flex)
        for name in names[r % len(names):] + names[:r % len(names)]:
            train = name != "flex"  # no FlexAttention backward on CPU
            leaves = [t.detach().requires_grad_(train) for t in (q, k, v)]
            t0 = time.perf_counter()
            out = fns[name](*leaves)
            t1 = time.perf_counter()
            if train:
                torch.autograd.grad(out, leaves, grad_out)
            t2 = time.perf_counter()
            if r:
                fwd[name].append(t1 - t0)
                both[name].append(t2 - t0)
    return [{"resolution": resolution, "window": window, "impl": name, "L": L,
             "pairs": executed_attention_pairs(patch_nums, window, "dense" if name == "dense" else "auto"),
             "fwd_ms": 1e3 * statistics.median(fwd[name]),
             "fwd_bwd_ms": 1e3 * statistics.median(both[name]) if name != "flex" else None} for name in names]


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = f"{'res':>4} {'window':>6} {'impl':10} {'pairs':>9} {'fwd_ms':>8} {'fwd+bwd_ms':>10} {'vs dense':>8}"
    dense = {(r["resolution"], r["window"]): r for r in rows if r["impl"] == "dense"}
    lines = [head, "-" * len(head)]
    for r in rows:
        base = dense.get((r["resolution"], r["window"]))
        total = "-" if r["fwd_bwd_ms"] is None else f"{r['fwd_bwd_ms']:10.1f}"
        ratio = "-" if base is None or r["fwd_bwd_ms"] is None else f"{r['fwd_bwd_ms'] / base['fwd_bwd_ms']:8.3f}"
        lines.append(f"{r['resolution']:>4} {str(r['window']):>6} {r['impl']:10} {r['pairs']:>9} {r['fwd_ms']:8.1f} "
                     f"{total:>10} {ratio:>8}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", nargs="+", type=int, default=[256, 512], choices=sorted(SCHEDULES))
    p.add_argument("--windows", nargs="+", default=["none", "0", "2"], help="none = block-causal, or ints >= 0")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the cores this process may use")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "attention.json"))
    args = p.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows = []
    for res in args.resolutions:
        for w in args.windows:
            rows += time_rows(res, None if w == "none" else int(w), args.impls, args.repeats)
    print(table(rows))
    print(f"{threads} torch threads; load average before {load_before}, after {os.getloadavg()}")
    from pretrain.outputs import atomic_write_json

    atomic_write_json(Path(args.json), {"argv": list(sys.argv[1:] if argv is None else argv), "threads": threads,
                                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
