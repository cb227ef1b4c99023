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
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pretrain.tokenizer.var_source import var_src

REPO = Path(__file__).resolve().parent.parent
BASE = {"zero": 0, "precision": "fp32", "ranks": 1}


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
    from pretrain.train.step import ScaleStats, Stepper

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
    stepper = Stepper(engine, itertools.cycle(batches), ScaleStats(tok.patch_nums), 0.1, 1, 0, device)
    stop = StopRequest(Path(tempfile.mkdtemp()))  # a private dir: no stray PREEMPT file can stop the bench
    for _ in range(warmup):
        stepper.step(stop)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        stepper.step(stop)
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
    p.add_argument("--sizes", nargs="+", default=["d2", "d4"])
    p.add_argument("--masks", nargs="+", default=["var", "srdd"])
    p.add_argument("--grid", choices=["default", "full"], default="default")
    p.add_argument("--batch-size", type=int, default=16, help="global batch")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "train_step.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker), args.batch_size, args.warmup, args.steps)
        if result is not None:
            Path(args.out).write_text(json.dumps(result))
        return 0
    rows = []
    for case in cases(args.sizes, args.masks, args.grid):
        rows.append(run_case(case, args))
        print(table(rows).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    result: dict[str, Any] = {"argv": sys.argv[1:], "rows": rows}
    src = var_src()
    if src is not None:
        result["vs_var"] = [vs_var_row(s, args.batch_size, args.warmup, args.steps, src) for s in args.sizes]
        print(f"\nvs VAR's models.VAR (VAR_SRC={src}), plain torch + AdamW fp32, same weights and batch:")
        for r in result["vs_var"]:
            print(f"  {r['size']}: ours {r['step_s'] * 1e3:.1f} ms, VAR {r['var_step_s'] * 1e3:.1f} ms per step -> "
                  f"speed ratio {r['speed_ratio_vs_var']:.3f} (goal >= 1.0)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
