"""GPU training throughput, MFU and peak memory; sampling latency. Needs a CUDA GPU.

    python bench/gpu.py --json bench/results/gpu.json          # on a CUDA machine, one GPU
    python bench/gpu.py --peak-tflops 989 ...                   # a GPU missing from PEAK_BF16_TFLOPS
    python bench/gpu.py --smoke --json runs/bench/gpu.json      # tiny CPU run of the same code (tests)

Training: d16 / d20 / d24 at VAR's 256 px schedule (1,2,3,4,5,6,8,10,13,16; VAR's ImageNet
vocabulary 4096, Cvae 32, 1000 classes), VAR (block-causal) vs SRDD (window 0), each on its
tiled attention path (``model.attn_impl=auto``; ``--attn-impls auto dense`` adds the -inf mask
path), bf16 (fp32 master weights), DeepSpeed ZeRO-2 on one GPU, real engines built by
``pretrain.engine.build_engine``, random teacher-forcing batches. Each case runs in its own
process, so its peak memory (``torch.cuda.max_memory_allocated`` over the timed steps) is its own.

- ``tokens_per_s``: L = 680 tokens per sample x batch x timed steps / their wall time (the device
  synchronised before and after);
- ``mfu``: executed training FLOPs per second (``pretrain.model.flops.train_flops_executed_per_sample``:
  3 x the forward's matmuls and the attention pairs the path computes) over the device's peak
  dense bf16 FLOP/s (PEAK_BF16_TFLOPS by device name, or ``--peak-tflops``). Goal: >= 40% at d16.

Sampling: ``bench.sampling`` at d16, var-10 (block-causal, 10 scales) vs srdd-6 (window 0 on the
distilled schedule 1,3,5,8,13,16), the transformer loop's latency on the GPU.

Without a GPU the script refuses (exit 2): CPU numbers do not stand in for these.
``--smoke`` runs the same code on CPU at d1, a couple of steps, to keep it working (tests).
Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_IMAGENET = {"vocab_size": 4096, "z_channels": 32, "num_classes": 1000}
# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from the vendors' datasheets; first match of
# the device name wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("RTX 4090", 165.0))
DEFAULT_BATCH = {"d16": 64, "d20": 48, "d24": 32}  # per GPU, 256 px, bf16 (fits 80 GB with ZeRO-2)
MFU_GOAL = 0.40  # at d16, bf16, H100/H200-class
NO_GPU = ("bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False here). CPU numbers do not "
          "stand in for GPU throughput or MFU; run it on a GPU machine (--smoke runs the code on CPU at d1).")


def peak_tflops(device_name: str, override: Optional[float]) -> tuple[Optional[float], str]:
    """(peak dense bf16 TFLOP/s, where it came from)."""
    if override:
        return override, "--peak-tflops"
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops, f"table ({key})"
    return None, f"unknown device {device_name!r}: pass --peak-tflops"


# ---- one training case, in its own process ------------------------------------------------------
def train_worker(case: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pretrain.config import load_config
    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine
    from pretrain.model import build_model
    from pretrain.model.flops import train_flops_executed_per_sample
    from pretrain.train.signals import StopRequest
    from pretrain.train.step import OptimizerStep
    from pretrain.train.token_loss import ScaleStats, TokenObjective

    info = init_distributed()
    device, batch = info.device, case["batch_size"]
    cfg = load_config(overrides=[f"model.size={case['size']}", f"model.mask={case['mask']}",
                                 f"model.attn_impl={case['attn_impl']}", f"model.num_classes={VAR_IMAGENET['num_classes']}",
                                 "model.drop_path=0", "train.zero_stage=2", f"train.precision={case['precision']}",
                                 f"train.batch_size={batch}", "train.lr_peak=1e-4", "train.warmup_frac=0",
                                 f"train.compile={str(case['compile']).lower()}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, VAR_IMAGENET["vocab_size"], VAR_IMAGENET["z_channels"], case["patch_nums"])
    flops_per_sample, L, params = train_flops_executed_per_sample(model), model.L, model.num_params()
    engine = build_engine(model.to(device), cfg.train, case["warmup"] + case["steps"], info.world_size)
    g = torch.Generator().manual_seed(0)
    label_B = torch.randint(0, VAR_IMAGENET["num_classes"], (batch,), generator=g).to(device)
    x_BLCv = torch.randn(batch, L - model.first_l, VAR_IMAGENET["z_channels"], generator=g).to(device)
    target_BL = torch.randint(0, VAR_IMAGENET["vocab_size"], (batch, L), generator=g).to(device)

    harness_step = OptimizerStep({"model": engine}, 1, 0, device)  # the step training runs
    objective = TokenObjective(engine, ScaleStats(case["patch_nums"]), 0.1)
    stop = StopRequest(Path(tempfile.mkdtemp()))  # a private dir: no stray PREEMPT file can stop the bench

    def step() -> None:
        harness_step(objective, itertools.repeat((label_B, x_BLCv, target_BL)), stop)

    cuda = device.type == "cuda"
    for _ in range(case["warmup"]):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(case["steps"]):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if cuda:
        peak_bytes = torch.cuda.max_memory_allocated()
    else:
        import resource

        peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    samples = case["steps"] * batch
    return {**case, "L": L, "params": params, "step_s": elapsed / case["steps"], "tokens_per_s": samples * L / elapsed,
            "train_flops_executed_per_sample": flops_per_sample, "achieved_tflops": samples * flops_per_sample / elapsed / 1e12,
            "peak_mem_gib": peak_bytes / 2**30, "device": torch.cuda.get_device_name() if cuda else "cpu"}


def run_train_case(case: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--worker", json.dumps(case), "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "PYTHONWARNINGS": "ignore::FutureWarning"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {**case, "error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {**case, "error": " | ".join(tail) or f"exit {proc.returncode}"}
        return json.loads(out.read_text())


def add_mfu(rows: list[dict[str, Any]], peak: Optional[float]) -> None:
    for r in rows:
        if "error" not in r:
            r["mfu"] = r["achieved_tflops"] / peak if peak else None


def train_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'size':5} {'mask':5} {'attn':5} {'compile':7} {'batch':>5} {'step_s':>7} {'tokens/s':>10} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'peak_GiB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        key = f"{r['size']:5} {r['mask']:5} {r['attn_impl']:5} {str(r['compile']):7} {r['batch_size']:>5}"
        if "error" in r:
            lines.append(f"{key} ERROR {r['error'][:100]}")
            continue
        mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:5.1f}%"
        lines.append(f"{key} {r['step_s']:7.3f} {r['tokens_per_s']:10.0f} {r['achieved_tflops']:8.1f} {mfu:>6} "
                     f"{r['peak_mem_gib']:8.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["d16", "d20", "d24"])
    p.add_argument("--masks", nargs="+", default=["var", "srdd"], choices=["var", "srdd"])
    p.add_argument("--attn-impls", nargs="+", default=["auto"], choices=["auto", "dense"])
    p.add_argument("--batch", type=int, default=0, help="per-GPU batch; 0 = DEFAULT_BATCH of the size")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time every case with train.compile=true")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the device")
    p.add_argument("--sample-size", default="d16")
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--sample-repeats", type=int, default=3)
    p.add_argument("--timeout-s", type=float, default=900, help="per training case")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the same code (d1, 2 steps): no GPU numbers")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "gpu.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        Path(args.out).write_text(json.dumps(train_worker(json.loads(args.worker))))
        return 0

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.smoke:
        args.sizes, args.sample_size, args.warmup, args.steps = ["d1"], "d1", 1, 2
        args.batch, args.sample_batch, args.sample_repeats = args.batch or 2, 2, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke: not a GPU measurement)"
    peak, source = peak_tflops(name, args.peak_tflops)
    print(f"device {name}; peak bf16 {peak} TFLOP/s ({source})")
    rows = []
    for size in args.sizes:
        for mask in args.masks:
            for impl in args.attn_impls:
                for compiled in ([False, True] if args.compile else [False]):
                    case = {"size": size, "mask": mask, "attn_impl": impl, "compile": compiled, "precision": "bf16",
                            "zero": 2, "gpus": 1, "batch_size": args.batch or DEFAULT_BATCH.get(size, 8),
                            "patch_nums": list(PATCH_NUMS_256), "warmup": args.warmup, "steps": args.steps}
                    rows.append(run_train_case(case, args.timeout_s))
                    add_mfu(rows[-1:], peak)
                    print(train_table(rows).splitlines()[-1], flush=True)
    print()
    print(train_table(rows))

    from bench.sampling import bench_size, table as sampling_table

    sampling = bench_size(args.sample_size, ["var-10", "srdd-6"], args.sample_batch, args.sample_repeats, device)
    print()
    print(sampling_table(sampling))
    for r in rows:
        if r["size"] == "d16" and r.get("mfu") is not None:
            print(f"d16 {r['mask']} {r['attn_impl']} compile={r['compile']}: MFU {100 * r['mfu']:.1f}% "
                  f"(goal >= {100 * MFU_GOAL:.0f}% on an H100/H200-class GPU)")
    from pretrain.outputs import atomic_write_json

    atomic_write_json(Path(args.json), {"argv": list(sys.argv[1:] if argv is None else argv), "device": name,
                                        "smoke": args.smoke, "peak_bf16_tflops": peak, "peak_source": source,
                                        "train": rows, "sampling": sampling})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
