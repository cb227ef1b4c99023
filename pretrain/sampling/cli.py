"""`srdd sample --ckpt RUN --classes 0,1,2 --n 16`: image grids and token pyramids from a run.

The stage only: it loads the run (load.py), samples with every ``sample.*`` setting
(batches.py) and writes under ``<run>/samples/<tag>/`` (tag = ``seed<seed>-<refine>`` unless
``--out``) the files save.py describes (docs/sampling.md).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.pyramid.codec import check_sampling
from pretrain.sampling.batches import class_labels, sample_in_batches
from pretrain.sampling.load import load_for_sampling
from pretrain.sampling.refine import RefineCost
from pretrain.sampling.save import write_outputs

log = logging.getLogger("srdd.sample")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN", help="run directory (or run name under SRDD_HOME) holding model.pt")
    parser.add_argument("--classes", default=None, help="comma-separated labels (overrides sample.classes)")
    parser.add_argument("--n", type=int, default=None, help="number of images (overrides sample.n)")
    parser.add_argument("--out", default=None, help="output directory (default <run>/samples/seed<seed>-<refine>)")


def parse_classes(text: str | None, default: Sequence[int]) -> list[int]:
    if text is None:
        return list(default)
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--classes {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    s = cfg.sample
    model, vae, run, run_cfg = load_for_sampling(args.ckpt, any_cell=True)
    check_sampling(argparse.Namespace(pyramid=run_cfg.pyramid, sample=s))  # the run's cell, this call's sampler
    labels = class_labels(parse_classes(args.classes, s.classes), args.n or s.n, model.num_classes)
    cost = RefineCost()
    with torch.no_grad():
        images, pyramids = zip(*sample_in_batches(model, vae, labels, s, cost))
    pyramid = [torch.cat(p) for p in zip(*pyramids)]
    out = Path(args.out) if args.out else run / "samples" / f"seed{s.seed}-{s.refine}"
    meta = {"ckpt": str(run / "model.pt"), "n": len(labels), "classes": sorted(set(labels.tolist())),
            "sampler": {k: getattr(s, k) for k in ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "seed",
                                                    "refine", "refine_rounds", "p_resample", "refine_depth",
                                                    "refine_scales")},
            "refine_cost": cost.as_dict()}
    write_outputs(cfg, out, torch.cat(images), labels, pyramid, json.loads(json.dumps(meta, default=list)))
    log.info("wrote %d samples to %s", len(labels), out)
    print(out)
    return 0
