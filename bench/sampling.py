"""Sampling cost of VAR vs SRDD: transformer-loop latency, FLOPs and KV-cache peak, with and without restart.

    python bench/sampling.py                              # d2 and d16 (VAR's 256px config), batch 8
    python bench/sampling.py --sizes d2 --repeats 3 --json runs/bench/sampling.json
    python bench/sampling.py --runs demo/d3-var,demo/d3-srdd --json runs/demo/bench/sampling.json   # trained models

Variants, all at the same random weights per size (the cost of a pass does not depend on what
the weights learned, except how many tokens MR selects):

- ``var-10``  block-causal mask (attn_window None) on VAR's 10 scales 1,2,3,4,5,6,8,10,13,16;
- ``srdd-10`` SRDD's Markovian mask (window 0) on the same 10 scales;
- ``srdd-6``  window 0 on the distilled schedule 1,3,5,8,13,16: the model re-indexed to that
  schedule by ``pretrain.distill.schedule_model`` (exactly how `srdd distill` builds its student);
- ``<v>+sr``  each of them with one restart round at every scale (``sample.refine=sr``, depth 1,
  docs/sampling.md): one more pass per scale from the re-quantised state and, under the
  block-causal mask, the prefix keys/values that state needs, recomputed (SRDD's mask needs none).
  At random init the re-quantised tokens differ, so this is close to the worst case of that cost.

``--runs``: the trained models of those runs instead (variant = the run's mask, ``run`` = its
name), each on its own schedule with its own tokenizer and weights, no MR rows; what the study's
claims table reads (sampling cost of the models the study trained; docs/claims.md).

Per row: ``latency_s`` = the transformer's sampling loop (scale passes, draws, refinement and the
tokenizer's f_hat updates between scales; ``sample(stats=...)["loop_s"]``), ``decode_s`` = the final
f_hat -> image decode, reported separately (the same work for every variant). Both are the median
over ``--repeats`` timed calls after one untimed warm-up call per variant; the variants are
interleaved within each repeat so that load from other processes hits them alike. ``flops`` =
forward FLOPs of every scale pass run (pretrain.model.flops convention, guided batch 2B),
``kv_cache_bytes_peak`` = keys+values attended at the worst scale over all layers, ``passes`` =
scale passes. Ratios are against ``var-10`` of the same size measured in the same run.
Goals (docs/sampling.md, "Benchmark"): srdd-6 loop latency <= 0.78x var-10 (FLOP bound ~0.74x at d16) and KV-cache
peak <= 0.40x var-10 (bound 256/680 = 0.38: only the current scale's keys/values).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
SRDD6_PATCH_NUMS = (1, 3, 5, 8, 13, 16)
VARIANTS = ("var-10", "srdd-10", "srdd-6", "var-10+sr", "srdd-10+sr", "srdd-6+sr")
GOALS = {"latency_ratio_vs_var": 0.78, "kv_ratio_vs_var": 0.40}  # for srdd-6 (docs/sampling.md, "Benchmark")

# Tokenizer per size: VAR's vae_ch160v4096z32 at 256px for VAR's released sizes; a small one at
# 64px (also a 16x16 latent, so the same 10-scale schedule) for the tiny CI sizes.
VAR_TOKENIZER = {"ch": 160, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "z_channels": 32,
                 "vocab_size": 4096, "norm_groups": 32}
TINY_TOKENIZER = {"ch": 16, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "z_channels": 16,
                  "vocab_size": 512, "norm_groups": 8}


def tokenizer_overrides(size: str) -> dict[str, Any]:
    from pretrain.sizes import SIZES

    return VAR_TOKENIZER if SIZES[size].depth >= 16 else TINY_TOKENIZER


@dataclass
class Variant:
    name: str
    model: Any
    restart: Any  # a sampler restart (pretrain/sampling/refine.py), or None


def build_variants(size: str, variants: Sequence[str], device: torch.device) -> tuple[Any, list[Variant], int]:
    """(tokenizer, the variants at one size sharing random weights, image side in pixels)."""
    from pretrain.config import load_config
    from pretrain.distill import schedule_model
    from pretrain.model import build_model
    from pretrain.sampling.batches import build_refiner
    from pretrain.tokenizer import build_tokenizer

    tok = {**tokenizer_overrides(size), "patch_nums": list(VAR_PATCH_NUMS)}
    cfg = load_config(overrides=[f"model.size={size}", "sample.refine=sr", "sample.refine_rounds=1",
                                 *(f"tokenizer.{k}={json.dumps(v)}" for k, v in tok.items())])
    torch.manual_seed(0)
    vae = build_tokenizer(cfg.tokenizer).to(device).eval().requires_grad_(False)
    var = build_model(cfg.model, cfg.tokenizer.vocab_size, cfg.tokenizer.z_channels, VAR_PATCH_NUMS)
    srdd = build_model(dataclasses.replace(cfg.model, mask="srdd"), cfg.tokenizer.vocab_size,
                       cfg.tokenizer.z_channels, VAR_PATCH_NUMS)
    srdd.load_state_dict(var.state_dict())  # VAR's weights; the mask buffer is rebuilt from attn_window 0
    models = {"var-10": var, "srdd-10": srdd, "srdd-6": schedule_model(srdd, SRDD6_PATCH_NUMS)}
    out = []
    for name in variants:
        model = models[name.removesuffix("+sr")].to(device).eval()
        out.append(Variant(name, model, build_refiner(cfg.sample, model).restart if name.endswith("+sr") else None))
    side = VAR_PATCH_NUMS[-1] * vae.downsample
    return vae, out, side


class MeteredTokenizer:
    """The tokenizer as the sampler sees it, plus two measurements the sampler's own clock lacks.

    CPU time: the process CPU seconds of the final decode (``decode_cpu_s``), so that a call's
    loop CPU time is its total minus the decode's. Unlike wall time it does not grow when other
    processes share the cores (it does count every torch thread). CUDA: waits for the device after
    each f_hat update and after the decode, so that the sampler's host clock (loop_s / decode_s)
    measures finished work, not queued kernels."""

    def __init__(self, vae: Any, device: torch.device):
        self.vae, self.cuda = vae, device.type == "cuda"
        self.decode_cpu_s = 0.0

    def add_scale(self, *args: Any) -> torch.Tensor:
        out = self.vae.add_scale(*args)
        if self.cuda:
            torch.cuda.synchronize()
        return out

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        t0 = time.process_time()
        img = self.vae.fhat_to_img(f_hat_BChw)
        if self.cuda:
            torch.cuda.synchronize()
        self.decode_cpu_s = time.process_time() - t0
        return img

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vae, name)


def run_once(variant: Variant, vae: MeteredTokenizer, label_B: torch.Tensor, seed: int) -> dict[str, Any]:
    """One sampler call's stats plus ``loop_cpu_s`` (process CPU seconds of its loop)."""
    from pretrain.sampling import sample

    stats: dict[str, Any] = {}
    t0 = time.process_time()
    sample(variant.model, vae, label_B, cfg=1.5, seed=seed, restart=variant.restart, stats=stats)
    stats["loop_cpu_s"] = time.process_time() - t0 - vae.decode_cpu_s
    return stats


def trained_variants(runs: Sequence[str], device: torch.device) -> tuple[list[tuple[Variant, Any]], int]:
    """([(variant named after the run's mask, its tokenizer)], image side) of trained runs."""
    from pretrain.sampling.load import load_for_sampling

    out = []
    for run in runs:
        model, vae, _, run_cfg = load_for_sampling(run)
        out.append((Variant(run_cfg.model.mask, model.to(device).eval(), None), vae.to(device).eval()))
    vae = out[0][1]
    return out, vae.patch_nums[-1] * vae.downsample


def bench_size(size: str, variants: Sequence[str], batch: int, repeats: int, device: torch.device,
               warmup_batch: Optional[int] = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    vae, built, side = build_variants(size, variants, device)
    return measure(size, [(v, vae) for v in built], side, batch, repeats, device, warmup_batch, log)


def bench_runs(runs: Sequence[str], batch: int, repeats: int, device: torch.device,
               warmup_batch: Optional[int] = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    built, side = trained_variants(runs, device)
    size = built[0][0].model.depth
    rows = measure(f"d{size}", built, side, batch, repeats, device, warmup_batch, log)
    for row, run in zip(rows, runs):
        row["run"] = run
    return rows


def measure(size: str, built: Sequence[tuple[Variant, Any]], side: int, batch: int, repeats: int, device: torch.device,
            warmup_batch: Optional[int] = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows of the variants (each with its tokenizer), timed interleaved: one warm-up, then ``repeats`` rounds."""
    metered = [(v, MeteredTokenizer(vae, device)) for v, vae in built]
    label_B = torch.arange(batch) % built[0][0].model.num_classes
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v, _ in built}
    for r in range(repeats + 1):  # r = 0 is the untimed warm-up
        for v, vae in metered:
            stats = run_once(v, vae, label_B[:warmup_batch] if r == 0 else label_B, seed=r)
            if r:
                runs[v.name].append(stats)
            log(f"  {size} {v.name:11} {'warm-up' if not r else f'repeat {r}'}: loop {stats['loop_s']:.3f}s "
                f"decode {stats['decode_s']:.3f}s")
    rows = []
    for v, _ in built:
        stats = runs[v.name]
        last = stats[-1]
        rows.append({"variant": v.name, "size": size, "batch": batch, "resolution": side,
                     "patch_nums": list(v.model.patch_nums), "attn_window": v.model.attn_window,
                     "refine": "sr(R=1,depth=1)" if v.restart else "none",
                     "latency_s": statistics.median(s["loop_s"] for s in stats),
                     "decode_s": statistics.median(s["decode_s"] for s in stats),
                     "latency_runs_s": [s["loop_s"] for s in stats],
                     "latency_cpu_s": statistics.median(s["loop_cpu_s"] for s in stats),
                     "flops": last["flops"], "kv_cache_bytes_peak": last["kv_cache_bytes_peak"],
                     "passes": last["passes"], "kv_recompute_flops": last["kv_recompute_flops"],
                     "params": v.model.num_params(), "repeats": repeats})
    return add_ratios(rows)


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``*_ratio_vs_var``: each row over the var-10 (trained runs: var) row of its size (None if it was not run)."""
    base = {r["size"]: r for r in rows if r["variant"] in ("var-10", "var")}
    for r in rows:
        b = base.get(r["size"])
        for key, col in (("latency_ratio_vs_var", "latency_s"), ("kv_ratio_vs_var", "kv_cache_bytes_peak"),
                         ("flops_ratio_vs_var", "flops"), ("cpu_ratio_vs_var", "latency_cpu_s")):
            r[key] = r[col] / b[col] if b else None
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    def ratio(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.3f}"
    head = (f"{'size':5} {'variant':11} {'passes':>6} {'loop_s':>8} {'decode_s':>8} {'loop_cpu_s':>10} {'GFLOPs':>9} "
            f"{'KV_MiB':>8} {'lat/var':>7} {'cpu/var':>7} {'kv/var':>7} {'flops/var':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['size']:5} {r['variant']:11} {r['passes']:6d} {r['latency_s']:8.3f} {r['decode_s']:8.3f} "
                     f"{r['latency_cpu_s']:10.3f} {r['flops'] / 1e9:9.1f} {r['kv_cache_bytes_peak'] / 2**20:8.1f} "
                     f"{ratio(r['latency_ratio_vs_var']):>7} {ratio(r['cpu_ratio_vs_var']):>7} {ratio(r['kv_ratio_vs_var']):>7} "
                     f"{ratio(r['flops_ratio_vs_var']):>9}")
    return "\n".join(lines)


def goal_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r["variant"] != "srdd-6" or r["latency_ratio_vs_var"] is None:
            continue
        checks = [f"{key.split('_')[0]} {r[key]:.3f}x (goal <= {goal:.2f}x: {'met' if r[key] <= goal else 'MISSED'})"
                  for key, goal in GOALS.items()] + [f"loop CPU time {r['cpu_ratio_vs_var']:.3f}x"]
        out.append(f"goals {r['size']} srdd-6 vs var-10: " + ", ".join(checks))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="d2,d16", help="comma-separated rows of pretrain/sizes.py")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--runs", default="", help="comma-separated trained runs (names under SRDD_HOME) instead of --sizes/--variants")
    p.add_argument("--batch", type=int, default=8, help="images per sampler call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (median reported), after 1 warm-up")
    p.add_argument("--warmup-batch", type=int, default=None,
                   help="images in the untimed warm-up call (default --batch; 1 saves time at d16 on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the cores this process may use")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "sampling.json"))
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or args.repeats < 1 or args.batch < 1:
        p.error(f"--variants must be in {VARIANTS} (got {unknown}); --repeats and --batch must be >= 1")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    print(f"device {device}, torch threads {threads}, batch {args.batch}, repeats {args.repeats} "
          f"(+1 warm-up at batch {args.warmup_batch or args.batch})")
    rows = []
    trained = [r for r in args.runs.split(",") if r]
    if trained:
        rows = bench_runs(trained, args.batch, args.repeats, device, args.warmup_batch)
    for size in [s for s in args.sizes.split(",") if s and not trained]:
        rows += bench_size(size, variants, args.batch, args.repeats, device, args.warmup_batch)
    for r in rows:
        r.update(device=str(device), threads=threads)
    print(table(rows))
    for line in goal_lines(rows):
        print(line)
    from pretrain.outputs import atomic_write_json

    atomic_write_json(Path(args.json), rows)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
