"""Training-step throughput and peak memory: sizes x mask (VAR block-causal vs SRDD Markovian),
ZeRO stage 0/2/3, fp32 vs bf16, 1 vs 2 ranks.

    python bench/train_step.py                          # short default: tiny sizes, few steps
    python bench/train_step.py --sizes d2 d4 --steps 10 --grid full --json out.json

Every case runs in its own process (``torchrun`` for 2 ranks), so its peak memory is its own:
peak RSS of the busiest rank on CPU (includes the Python/torch baseline), or
``torch.cuda.max_memory_allocated`` on a GPU. tokens/s is the global rate over the timed steps
(after warm-up), counting L = sum(pn^2) tokens per sample; batches are pre-tokenised random
pyramids, so the tokenizer's input rebuild is not in the timing. Default grid: every size x
mask at the baseline (ZeRO 0, fp32, 1 rank), then each other setting varied alone on the
first size with both masks, so ratios are measured side by side in one run.

With ``VAR_SRC`` pointing at a checkout of FoundationVision/VAR, each size is also timed against
VAR's own ``models.VAR`` on the same weights and batch (``vs_var`` in the JSON; goal: speed
ratio >= 1.0).

Masks (``--parts masks``, JSON key ``mask_rows``): SRDD vs VAR training-step time (forward +
backward + AdamW) at ``--mask-size`` (d16) on VAR's ImageNet vocabulary with VAR's 256 px
schedule (1,2,3,4,5,6,8,10,13,16) and its 512 px schedule (1,2,3,4,6,9,13,18,24,32), each mask
on the dense -inf-mask path and on the tiled path that skips masked pairs (``model.attn_impl``,
docs/model.md). All variants of a resolution share one set of weights and one optimizer and
run in one process with every core; their steps are interleaved (the order rotates each
round) so load from other processes hits them alike. Rows: ``variant`` (var | srdd), ``size``,
``resolution``, ``attn_impl``, ``step_s`` (the fastest timed step, wall seconds: load from other
processes only ever adds time, so the best of N is the code's own speed; ``step_s_median`` beside
it), ``ratio_vs_var_dense`` (step_s / var dense's step_s; ``ratio_median_vs_var_dense``: median
over rounds of the same-round ratio), ``flop_bound_vs_var_dense``
(executed training FLOPs over var dense's, ``pretrain.model.flops``), the same two against
var on its tiled path (``*_vs_var_sparse``), ``cpu_s`` (process CPU seconds) with
``cpu_ratio_vs_*`` (with ``--threads 1`` the time the step itself ran on a core, robust to other
processes on a shared machine; with more threads it also counts their spin-waits) and GFLOP/s.
Goals: every measured ratio within 0.03 of its FLOP bound; VAR's tiled path faster than its
dense path at 512 px. A variant name ending in ``+compile`` (``--mask-variants srdd-auto+compile``)
runs the model under torch.compile as ``train.compile=true`` does (compiled in the warm-up round). Results and the load they were measured under: docs/performance.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from pretrain.tokenizer.var_source import var_src

REPO = Path(__file__).resolve().parent.parent
BASE = {"zero": 0, "precision": "fp32", "ranks": 1}
# VAR's released schedules (16x-downsampling tokenizer): image side in px -> patch_nums
SCHEDULES = {256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}
VAR_IMAGENET = {"vocab_size": 4096, "z_channels": 32, "num_classes": 1000}
MASK_VARIANTS = {"var-dense": ("var", "dense"), "var-auto": ("var", "auto"),
                 "srdd-auto": ("srdd", "auto"), "srdd-dense": ("srdd", "dense")}
COMPILED = "+compile"  # a variant name with this suffix runs under torch.compile (train.compile)
RATIO_GOAL = 0.03  # |measured ratio - FLOP bound|


def cases(sizes: list[str], masks: list[str], grid: str) -> list[dict[str, Any]]:
    if grid == "full":
        return [{"size": s, "mask": m, "zero": z, "precision": p, "ranks": r}
                for s, m, z, p, r in itertools.product(sizes, masks, (0, 2, 3), ("fp32", "bf16"), (1, 2))]
    out = [{"size": s, "mask": m, **BASE} for s in sizes for m in masks]
    for change in ({"zero": 2}, {"zero": 3}, {"precision": "bf16"}, {"ranks": 2}, {"ranks": 2, "zero": 2}):
        out += [{"size": sizes[0], "mask": m, **BASE, **change} for m in masks]
    return out


# ---- one case, inside its own process (one per rank) ----------------------------------------
def worker(case: dict[str, Any], batch_size: int, warmup: int, steps: int) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    from pretrain.config import load_config
    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine
    from pretrain.model import build_model
    from pretrain.tokenizer import build_tokenizer
    from pretrain.train.budget import tokens_per_sample
    from pretrain.train.data import to_model_batch
    from pretrain.train.signals import StopRequest
    from pretrain.train.step import OptimizerStep
    from pretrain.train.token_loss import ScaleStats, TokenObjective

    info = init_distributed()
    cfg = load_config(overrides=[f"model.size={case['size']}", f"model.mask={case['mask']}",
                                 f"train.zero_stage={case['zero']}", f"train.precision={case['precision']}",
                                 f"train.batch_size={batch_size}", "train.lr_peak=1e-4"])
    tok, device = cfg.tokenizer, info.device
    torch.manual_seed(0)
    vae = build_tokenizer(tok).to(device).requires_grad_(False)
    model = build_model(cfg.model, tok.vocab_size, tok.z_channels, tok.patch_nums)
    params = model.num_params()  # before ZeRO-3 partitions the parameters
    engine = build_engine(model, cfg.train, warmup + steps, info.world_size)
    micro = batch_size // info.world_size
    g = torch.Generator().manual_seed(info.rank)
    batches = [to_model_batch(vae, torch.randint(0, cfg.model.num_classes, (micro,), generator=g),
                              [torch.randint(0, tok.vocab_size, (micro, pn * pn), generator=g) for pn in tok.patch_nums],
                              device) for _ in range(4)]
    step = OptimizerStep({"model": engine}, 1, 0, device)  # the harness's step: what training runs
    objective, stream = TokenObjective(engine, ScaleStats(tok.patch_nums), 0.1), itertools.cycle(batches)
    stop = StopRequest(Path(tempfile.mkdtemp()))  # a private dir: no stray PREEMPT file can stop the bench
    for _ in range(warmup):
        step(objective, stream, stop)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(objective, stream, stop)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    peak_t = torch.tensor([float(peak), elapsed], device=device)
    dist.all_reduce(peak_t, op=dist.ReduceOp.MAX)
    if not info.is_main:
        return None
    L = tokens_per_sample(tok.patch_nums)
    return {**case, "batch_size": batch_size, "params": params,
            "step_s": float(peak_t[1]) / steps, "tokens_per_s": steps * batch_size * L / float(peak_t[1]),
            "peak_mem_mib": float(peak_t[0]) / 2**20, "device": str(device)}


# ---- against VAR's own model (VAR_SRC) -----------------------------------------------------
def vs_var_row(size: str, batch_size: int, warmup: int, steps: int, src: Path) -> dict[str, Any]:
    """Train-step time of this repo's Transformer and of VAR's ``models.VAR`` on one config, one
    batch and the same weights (the state-dict layouts are identical), both as plain torch modules
    with AdamW, fp32, one process: the ratio isolates the model code from DeepSpeed. Steps of the
    two alternate, so a change in load on the cores hits both alike."""
    import torch
    import torch.nn.functional as F

    from pretrain.config import load_config
    from pretrain.model import build_model
    from pretrain.tokenizer.var_source import import_var_transformer
    from pretrain.train.budget import tokens_per_sample

    cfg = load_config(overrides=[f"model.size={size}", "model.mask=var", "model.drop_path=0"])
    tok, m = cfg.tokenizer, cfg.model
    torch.manual_seed(0)
    ours = build_model(m, tok.vocab_size, tok.z_channels, tok.patch_nums).train()
    var_models = import_var_transformer(src)
    var_vae = var_models.VQVAE(vocab_size=tok.vocab_size, z_channels=tok.z_channels, ch=32, test_mode=True,
                               share_quant_resi=4, v_patch_nums=tuple(tok.patch_nums))
    theirs = var_models.VAR(vae_local=var_vae, num_classes=m.num_classes, depth=ours.depth, embed_dim=ours.C,
                            num_heads=ours.num_heads, mlp_ratio=m.mlp_ratio, drop_path_rate=0.0, norm_eps=1e-6,
                            shared_aln=False, cond_drop_rate=m.cond_drop, attn_l2_norm=True,
                            patch_nums=tuple(tok.patch_nums), flash_if_available=False, fused_if_available=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.train()
    g = torch.Generator().manual_seed(0)
    L = tokens_per_sample(tok.patch_nums)
    label_B = torch.randint(0, m.num_classes, (batch_size,), generator=g)
    x_BLCv = torch.randn(batch_size, L - ours.first_l, tok.z_channels, generator=g)
    target_BL = torch.randint(0, tok.vocab_size, (batch_size, L), generator=g)
    models = {"ours": ours, "var": theirs}
    optims = {k: torch.optim.AdamW(v.parameters(), lr=1e-4) for k, v in models.items()}

    def step(name: str) -> float:
        t0 = time.perf_counter()
        logits_BLV = models[name](label_B, x_BLCv)
        F.cross_entropy(logits_BLV.flatten(0, 1), target_BL.flatten()).backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    totals = {"ours": 0.0, "var": 0.0}
    for i in range(warmup + steps):
        for name in (("ours", "var") if i % 2 else ("var", "ours")):
            seconds = step(name)
            totals[name] += seconds if i >= warmup else 0.0
    return {"size": size, "batch_size": batch_size, "steps": steps, "params": ours.num_params(),
            "step_s": totals["ours"] / steps, "var_step_s": totals["var"] / steps,
            "speed_ratio_vs_var": totals["var"] / totals["ours"]}


# ---- SRDD vs VAR: does the mask pay in training? -------------------------------------------
def mask_variant(name: str) -> tuple[str, str, bool]:
    """(mask, attn_impl, compiled) of a variant name such as ``srdd-auto`` or ``var-dense+compile``."""
    mask, impl = MASK_VARIANTS[name.removesuffix(COMPILED)]
    return mask, impl, name.endswith(COMPILED)


def mask_models(size: str, patch_nums: Sequence[int], variants: Sequence[str]) -> dict[str, Any]:
    """One model per variant, all sharing the same parameter tensors (only masks and paths differ)."""
    import dataclasses

    import torch

    from pretrain.config.model import ModelConfig
    from pretrain.model import build_model

    cfg = ModelConfig(size=size, num_classes=VAR_IMAGENET["num_classes"], drop_path=0.0)
    V, Cvae = VAR_IMAGENET["vocab_size"], VAR_IMAGENET["z_channels"]
    torch.manual_seed(0)
    shared = build_model(cfg, V, Cvae, patch_nums).state_dict(keep_vars=True)
    models = {}
    for name in variants:
        mask, impl, compiled = mask_variant(name)
        with torch.device("meta"):
            model = build_model(dataclasses.replace(cfg, mask=mask, attn_impl=impl), V, Cvae, patch_nums)
        model.load_state_dict(shared, assign=True)  # the same Parameter objects; the mask is rebuilt
        if compiled:
            model.compile()  # as train.compile does (pretrain/engine.py); compiles in the warm-up round
        models[name] = model.train()
    return models


def mask_rows(size: str, resolution: int, variants: Sequence[str], batch_size: int, warmup: int, repeats: int,
              log: Any = print) -> list[dict[str, Any]]:
    import torch

    from pretrain.model.flops import train_flops_executed_per_sample
    from pretrain.pyramid.heads import token_losses

    patch_nums = SCHEDULES[resolution]
    models = mask_models(size, patch_nums, variants)
    any_model = next(iter(models.values()))
    params = list(any_model.parameters())
    optim = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    g = torch.Generator().manual_seed(0)
    L = any_model.L
    label_B = torch.randint(0, VAR_IMAGENET["num_classes"], (batch_size,), generator=g)
    x_BLCv = torch.randn(batch_size, L - any_model.first_l, VAR_IMAGENET["z_channels"], generator=g)
    target_BL = torch.randint(0, VAR_IMAGENET["vocab_size"], (batch_size, L), generator=g)

    def step(model: Any) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        objective, _, _ = token_losses(model(label_B, x_BLCv), target_BL, 0.1)
        objective.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.process_time() - c0

    names = list(models)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no variant always goes first
            w, c = step(models[name])
            if r >= warmup:
                wall[name].append(w)
                cpu[name].append(c)
            log(f"  {size} {resolution}px {name:10} {'warm-up' if r < warmup else f'repeat {r - warmup + 1}'}: "
                f"{w:.2f} s")

    def flops(mask: str, impl: str) -> int:
        from pretrain.config.model import MASK_PRESETS

        return batch_size * train_flops_executed_per_sample(any_model, attn_window=MASK_PRESETS[mask], attn_impl=impl)

    rows = []
    for name in names:
        mask, impl, compiled = mask_variant(name)
        row = {"variant": mask, "size": size, "resolution": resolution, "attn_impl": impl, "compile": compiled,
               "patch_nums": list(patch_nums), "L": L, "batch_size": batch_size, "repeats": repeats,
               "step_s": min(wall[name]), "step_s_median": statistics.median(wall[name]), "step_s_runs": wall[name],
               "cpu_s": min(cpu[name]), "cpu_s_runs": cpu[name], "train_flops_executed": flops(mask, impl)}
        row["gflops_per_s"] = row["train_flops_executed"] / row["step_s"] / 1e9
        for base, key in (("var-dense", "var_dense"), ("var-auto", "var_sparse")):
            row[f"flop_bound_vs_{key}"] = row["train_flops_executed"] / flops(*MASK_VARIANTS[base])
            measured = base in wall
            row[f"ratio_vs_{key}"] = min(wall[name]) / min(wall[base]) if measured else None
            row[f"cpu_ratio_vs_{key}"] = min(cpu[name]) / min(cpu[base]) if measured else None
            row[f"ratio_median_vs_{key}"] = (statistics.median(a / b for a, b in zip(wall[name], wall[base]))
                                             if measured else None)
        rows.append(row)
    return rows


def mask_table(rows: list[dict[str, Any]]) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"
    head = (f"{'res':>4} {'variant':7} {'attn':13} {'step_s':>7} {'cpu_s':>7} {'GFLOP/s':>7} "
            f"{'vs_var_dense':>12} {'(cpu)':>6} {'bound':>6} {'vs_var_sparse':>13} {'(cpu)':>6} {'bound':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        attn = r["attn_impl"] + (COMPILED if r["compile"] else "")
        lines.append(f"{r['resolution']:>4} {r['variant']:7} {attn:13} {r['step_s']:7.2f} {r['cpu_s']:7.2f} "
                     f"{r['gflops_per_s']:7.1f} {num(r['ratio_vs_var_dense']):>12} {num(r['cpu_ratio_vs_var_dense']):>6} "
                     f"{num(r['flop_bound_vs_var_dense']):>6} {num(r['ratio_vs_var_sparse']):>13} "
                     f"{num(r['cpu_ratio_vs_var_sparse']):>6} {num(r['flop_bound_vs_var_sparse']):>6}")
    return "\n".join(lines)


def mask_goals(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        where = f"{r['size']} {r['resolution']}px {r['variant']} {r['attn_impl']}{COMPILED if r['compile'] else ''}"
        for key in ("var_dense", "var_sparse"):
            ratio, bound = r[f"ratio_vs_{key}"], r[f"flop_bound_vs_{key}"]
            if r["variant"] == "srdd" and not r["compile"] and ratio is not None:
                gap = ratio - bound
                out.append(f"{where} vs {key}: ratio {ratio:.3f}, bound {bound:.3f}, gap {gap:+.3f} "
                           f"({'met' if abs(gap) <= RATIO_GOAL else 'MISSED'}: goal |gap| <= {RATIO_GOAL})")
        ratio = r["ratio_vs_var_dense"]
        if r["variant"] == "var" and r["attn_impl"] == "auto" and not r["compile"] and ratio is not None:
            goal = f"; goal < 1: {'met' if ratio < 1 else 'MISSED'}" if r["resolution"] >= 512 else ""
            out.append(f"{where} vs var dense: {ratio:.3f} (bound {r['flop_bound_vs_var_dense']:.3f}{goal})")
    return out


def run_masks(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    import torch

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    meta = {"threads": threads, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "loadavg_before": os.getloadavg()}
    print(f"masks: {args.mask_size}, batch {args.mask_batch}, {args.mask_repeats} interleaved repeats "
          f"(+{args.mask_warmup} warm-up), {threads} torch threads, load average {meta['loadavg_before']}")
    rows = []
    for resolution in args.resolutions:
        rows += mask_rows(args.mask_size, resolution, args.mask_variants, args.mask_batch, args.mask_warmup,
                          args.mask_repeats)
    meta["loadavg_after"] = os.getloadavg()
    print()
    print(mask_table(rows))
    for line in mask_goals(rows):
        print(line)
    print(f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']}")
    return {"mask_rows": rows, "mask_meta": meta}


def run_case(case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Launch one case in fresh processes; returns its result dict (or the error)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    worker_args = ["--worker", json.dumps(case), "--out", out, "--batch-size", str(args.batch_size),
                   "--warmup", str(args.warmup), "--steps", str(args.steps)]
    if case["ranks"] > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={case['ranks']}",
               __file__, *worker_args]
    else:
        cmd = [sys.executable, __file__, *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=args.timeout_s)
    try:
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {**case, "error": " | ".join(tail)}
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'size':5} {'mask':5} {'zero':>4} {'prec':5} {'ranks':>5} {'step_ms':>8} {'tokens/s':>10} {'peak_MiB':>9} {'vs_var':>6}"
    var_rate = {(r["size"], r["zero"], r["precision"], r["ranks"]): r["tokens_per_s"]
                for r in rows if r["mask"] == "var" and "error" not in r}
    lines = [head, "-" * len(head)]
    for r in rows:
        key = f"{r['size']:5} {r['mask']:5} {r['zero']:>4} {r['precision']:5} {r['ranks']:>5}"
        if "error" in r:
            lines.append(f"{key} ERROR {r['error'][:80]}")
            continue
        base = var_rate.get((r["size"], r["zero"], r["precision"], r["ranks"]))
        ratio = f"{r['tokens_per_s'] / base:6.2f}" if base else "     -"
        lines.append(f"{key} {r['step_s'] * 1e3:8.1f} {r['tokens_per_s']:10.0f} {r['peak_mem_mib']:9.0f} {ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="grid,masks", help="comma-separated: grid (DeepSpeed settings), masks (SRDD vs VAR)")
    p.add_argument("--sizes", nargs="+", default=["d2", "d4"])
    p.add_argument("--masks", nargs="+", default=["var", "srdd"])
    p.add_argument("--grid", choices=["default", "full"], default="default")
    p.add_argument("--batch-size", type=int, default=16, help="global batch")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--mask-size", default="d16", help="masks: model size")
    p.add_argument("--resolutions", nargs="+", type=int, default=[256, 512], choices=sorted(SCHEDULES))
    p.add_argument("--mask-variants", nargs="+", default=["var-dense", "var-auto", "srdd-auto"],
                   choices=[*MASK_VARIANTS, *(v + COMPILED for v in MASK_VARIANTS)])
    p.add_argument("--mask-batch", type=int, default=1)
    p.add_argument("--mask-warmup", type=int, default=1, help="untimed rounds")
    p.add_argument("--mask-repeats", type=int, default=3, help="timed rounds (medians reported)")
    p.add_argument("--threads", type=int, default=0, help="masks: torch threads; 0 = the cores this process may use")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "train_step.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker), args.batch_size, args.warmup, args.steps)
        if result is not None:
            Path(args.out).write_text(json.dumps(result))
        return 0
    parts = set(args.parts.split(","))
    if not parts or parts - {"grid", "masks"}:
        p.error(f"--parts={args.parts!r}: choose from grid, masks")
    if "masks" in parts and "var-dense" not in args.mask_variants:
        p.error("--mask-variants must include var-dense (every ratio is against it)")
    result: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else list(argv), "rows": []}
    if "grid" in parts:
        rows = result["rows"]
        for case in cases(args.sizes, args.masks, args.grid):
            rows.append(run_case(case, args))
            print(table(rows).splitlines()[-1], flush=True)
        print()
        print(table(rows))
        src = var_src()
        if src is not None:
            result["vs_var"] = [vs_var_row(s, args.batch_size, args.warmup, args.steps, src) for s in args.sizes]
            print(f"\nvs VAR's models.VAR (VAR_SRC={src}), plain torch + AdamW fp32, same weights and batch:")
            for r in result["vs_var"]:
                print(f"  {r['size']}: ours {r['step_s'] * 1e3:.1f} ms, VAR {r['var_step_s'] * 1e3:.1f} ms per step -> "
                      f"speed ratio {r['speed_ratio_vs_var']:.3f} (goal >= 1.0)")
    if "masks" in parts:
        result.update(run_masks(args))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
