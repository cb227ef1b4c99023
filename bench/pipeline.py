"""Data pipeline throughput, measured side by side in one run on the embedded MNIST default.

    python bench/pipeline.py                       # 2,000 images, batch 64
    python bench/pipeline.py --images 5000 --json bench/results/pipeline.json

Rows (all in this process, OMP_NUM_THREADS as set by the caller):
  shards            images/s of `srdd shards` (decode, convert to RGB, PNG-encode, tar, sha256)
  precompute w=1,2  pyramids/s of `srdd pyramids` with 1 and 2 decode workers (main process encodes)
  loader            samples/s of PyramidLoader (precomputed pyramids, batch --batch)
  on-the-fly        samples/s of image_loader + tokenizer encode per batch (the baseline)
  train step        samples/s of one tiny-model step (model.size, fwd+bwd+AdamW, incl. the
                    tokenizer's teacher-forcing input rebuild), no data loading
Derived: data_cost_ratio = on-the-fly data time per step / precomputed data time per step;
supply_ratio = loader samples/s / train-step samples/s (goal >= 10); step_speedup = full
step time (data + step) on-the-fly / precomputed. The tokenizer is the default config with
random weights: encode cost does not depend on the weights.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data_pipeline.image_shards.loader import image_loader  # noqa: E402
from data_pipeline.image_shards.write import write_shards  # noqa: E402
from data_pipeline.pyramid_shards.loader import PyramidLoader  # noqa: E402
from data_pipeline.pyramid_shards.precompute import run_slice  # noqa: E402
from pretrain.config import SRDDConfig, load_config  # noqa: E402


def rate(batches: Iterable[Any], n_batches: int, size: Callable[[Any], int], warmup: int = 2) -> float:
    """Samples/s over n_batches after ``warmup`` batches (fills the shuffle buffer, forks workers)."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t0, n = time.perf_counter(), 0
    for batch in itertools.islice(it, n_batches):
        n += size(batch)
    return n / (time.perf_counter() - t0)


def on_the_fly(cfg: SRDDConfig, vae: Any, batch: int):
    """The baseline: images streamed and encoded in the loop, as if nothing were precomputed."""
    for img_B3HW, label_B in image_loader(cfg, "train", batch_size=batch, seed=cfg.seed):
        with torch.inference_mode():
            yield label_B, vae.encode_pyramid(img_B3HW)


def train_step_rate(cfg: SRDDConfig, vae: Any, loader: PyramidLoader, steps: int) -> float:
    """Samples/s of the harness's optimizer step (pretrain/train/step.py, one rank) on ``steps``
    pre-read batches; the teacher-forcing input rebuild runs inside each step, as in training."""
    import dataclasses

    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine
    from pretrain.model import build_model
    from pretrain.train.data import model_batches
    from pretrain.train.signals import StopRequest
    from pretrain.train.step import OptimizerStep
    from pretrain.train.token_loss import ScaleStats, TokenObjective

    info = init_distributed()
    batches = list(itertools.islice(iter(loader), steps + 2))
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums)
    train = dataclasses.replace(cfg.train, batch_size=len(batches[0][0]), grad_accum=1, lr_peak=1e-4)
    engine = build_engine(model, train, steps + 2, info.world_size)
    step = OptimizerStep({"model": engine}, 1, 0, info.device)
    objective = TokenObjective(engine, ScaleStats(vae.patch_nums), 0.0)
    stream = model_batches(iter(batches), vae, info.device)
    stop = StopRequest(Path(tempfile.mkdtemp()))  # a private dir: no stray PREEMPT file can stop the bench
    try:
        return rate((step(objective, stream, stop) for _ in batches), steps, lambda _: train.batch_size)
    finally:
        stop.restore()


def run(images: int, batch: int, steps: int, work: Path) -> dict[str, Any]:
    from pretrain.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer

    shards, tok = work / "shards", work / "tokenizer.pt"
    cfg = load_config(overrides=[f"data.limit={images}", "data.shard_size=500", f"data.shards_dir={shards}",
                                 f"tokenizer.ckpt={tok}"])
    t0 = time.perf_counter()
    n_img = sum(s["count"] for s in write_shards(cfg, shards)["splits"].values())
    res: dict[str, Any] = {"images": n_img, "batch": batch, "shards_images_per_s": n_img / (time.perf_counter() - t0)}
    torch.manual_seed(0)
    save_tokenizer(build_tokenizer(cfg.tokenizer), tok, cfg.tokenizer)
    for workers in (1, 2):
        cfg.data.num_workers = workers
        out = work / f"pyramids_w{workers}"
        stats = run_slice(cfg, str(shards), str(tok), str(out))
        res[f"precompute_w{workers}_pyramids_per_s"] = stats["samples_written"] / stats["time_s"]
    cfg.data.pyramids_dir = str(work / "pyramids_w1")
    vae = load_tokenizer(tok)
    res["loader_samples_per_s"] = rate(PyramidLoader(cfg, batch_size=batch), steps, lambda b: len(b[0]))
    res["on_the_fly_samples_per_s"] = rate(on_the_fly(cfg, vae, batch), steps, lambda b: len(b[0]))
    res["train_step_samples_per_s"] = train_step_rate(cfg, vae, PyramidLoader(cfg, batch_size=batch), steps)
    res["model_size"] = cfg.model.size
    t_pre, t_fly, t_step = (batch / res[k] for k in ("loader_samples_per_s", "on_the_fly_samples_per_s",
                                                     "train_step_samples_per_s"))
    res["data_cost_ratio"] = t_fly / t_pre
    res["supply_ratio"] = res["loader_samples_per_s"] / res["train_step_samples_per_s"]
    res["step_speedup"] = (t_fly + t_step) / (t_pre + t_step)
    return res


def table(res: dict[str, Any]) -> str:
    rows = [("shards", "images/s", res["shards_images_per_s"]),
            ("precompute, 1 worker", "pyramids/s", res["precompute_w1_pyramids_per_s"]),
            ("precompute, 2 workers", "pyramids/s", res["precompute_w2_pyramids_per_s"]),
            ("loader (precomputed)", "samples/s", res["loader_samples_per_s"]),
            ("loader (on-the-fly encode)", "samples/s", res["on_the_fly_samples_per_s"]),
            (f"train step ({res['model_size']})", "samples/s", res["train_step_samples_per_s"]),
            ("data cost on-the-fly / precomputed", "x", res["data_cost_ratio"]),
            ("loader supply / step demand (goal >= 10)", "x", res["supply_ratio"]),
            ("full step speedup from precompute", "x", res["step_speedup"])]
    head = f"data pipeline, {res['images']} MNIST images, batch {res['batch']}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
    return "\n".join([head, *(f"  {name:<44} {value:>10.1f} {unit}" for name, unit, value in rows)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=15, help="timed batches per loader/step row")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "pipeline.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        os.environ["SRDD_HOME"] = str(Path(work) / "home")
        res = run(args.images, args.batch, args.steps, Path(work))
    print(table(res))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
