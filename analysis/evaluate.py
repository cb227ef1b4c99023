"""`srdd eval --run RUN [--samples N]`: sample from a trained run and score it.

Appends one record to ``<run>/metrics.jsonl``::

    {"kind": "eval", "step", "n_samples", "FD-<net>", "IS-<net>", "IS-<net>_std",
     "precision-<net>", "recall-<net>", "KID-<net>", "KID-<net>_std", "class_acc-<net>",
     "val_loss", "val_acc", "val_loss_per_scale", "val_acc_per_scale", ["fd_by_scales"],
     "sampler": {...}, "feature_net": {"name", "sha256"}, "reference": {provenance}}

(also as ``<run>/eval/step<step>-<net>.json`` beside the eval's config.yaml)
and the quality-metric columns (plus ``fd``/``fd_metric``, ``class_acc``; not val_*) to the run's
row of ``runs.csv`` when that table exists. Quality metrics compare ``--samples`` images drawn with the configured ``sample.*``
settings (classes balanced) against the val split's cached reference features; token metrics are
teacher-forced CE and accuracy per scale on the val pyramid shards. ``class_acc-<net>``: the feature network's classifier accuracy on the class-conditional
samples (the label each image was sampled for); ``KID-<net>_std`` is null when the KID subsets
are whole sets (analysis/metrics/kid.py). ``--fd-by-scales``: FD of the same
samples decoded from their first k scales only, k = 1..K (``fd_by_scales``: how much of the
quality the first coarse-to-fine steps reach). ``--snapshots``: the same samples (seed, labels,
sampler) drawn from each of the run's ``snapshots/step<N>.pt`` (``train.snapshots``) as well, one
record per point of the training curve, the final model's included::

    {"kind": "eval_curve", "step", "tokens", "flops", "flops_executed", "n_samples", "FD-<net>",
     "class_acc-<net>", "feature_net": {...}}

(the tokens and FLOPs to reach a fixed FD, analysis/study.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError
from pretrain.outputs import append_jsonl, atomic_write_json, save_config

log = logging.getLogger("srdd.eval")

SAMPLER_KEYS = ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "seed", "schedule", "refine",
                "refine_rounds", "p_resample", "refine_depth", "refine_scales", "policy_ckpt")


def quality_metrics(net: Any, ref: Any, feats_ND: np.ndarray, probs_NC: np.ndarray | None, eval_cfg: Any,
                    labels_N: np.ndarray | None = None) -> dict[str, Any]:
    """FD, IS and class accuracy on ``labels_N`` (when the network has a classifier head),
    precision/recall and (optionally) KID of generated features vs the reference, named by network."""
    from analysis.metrics import frechet_distance_from_stats, gaussian_stats, inception_score, kernel_distance, precision_recall

    out: dict[str, Any] = {net.metric("FD"): frechet_distance_from_stats(gaussian_stats(feats_ND, "generated"), ref.stats)}
    if probs_NC is not None:
        out[net.metric("IS")], out[net.metric("IS") + "_std"] = inception_score(probs_NC, splits=min(eval_cfg.is_splits, len(probs_NC)))
        if labels_N is not None and probs_NC.shape[1] > int(np.max(labels_N)):
            out[net.metric("class_acc")] = float(np.mean(probs_NC.argmax(axis=1) == np.asarray(labels_N)))
    out[net.metric("precision")], out[net.metric("recall")] = precision_recall(ref.feats_ND, feats_ND, k=eval_cfg.pr_k)
    if eval_cfg.kid:
        out[net.metric("KID")], out[net.metric("KID") + "_std"] = kernel_distance(
            ref.feats_ND, feats_ND, subsets=eval_cfg.kid_subsets, subset_size=eval_cfg.kid_subset_size)
    return out


def runs_csv_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The runs.csv columns of an eval record: the quality metrics (the table's val_loss stays the
    training run's full val pass, what the fits read), ``fd``/``fd_metric``, ``class_acc`` and
    ``fid_inception``. Intervals are over seeds, made where runs are compared (analysis/study.py)."""
    net = record["feature_net"]["name"]
    fd_name = next(k for k in (f"FD-{net}", f"FID-{net}") if k in record)
    columns = {k: v for k, v in record.items() if "-" in k and not k.startswith("val_")}
    columns |= {"fd": record[fd_name], "fd_metric": fd_name}
    acc = next((k for k in record if k.startswith("class_acc-")), None)
    if acc:
        columns["class_acc"] = record[acc]
    fid = f"FID-{record['fid_network']['name']}" if "fid_network" in record else None
    if fid in record:  # the column the report plots beside fd, whichever resize eval.fid_resize named the metric after
        columns["fid_inception"] = record[fid]
    return columns


def update_runs_csv(path: Path, run: str, values: dict[str, Any]) -> bool:
    """Set ``values`` as columns of ``run``'s row; False when the table or the row does not exist."""
    from analysis.runs_table import write_runs_csv

    if not path.is_file():
        return False
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    hit = [r for r in rows if r.get("run") == run]
    for r in hit:
        r.update(values)
    if hit:
        write_runs_csv(path, rows)
    return bool(hit)


def fd_by_scales(net: Any, ref: Any, vae: Any, pyramids: list[list[torch.Tensor]]) -> list[dict[str, Any]]:
    """FD of the samples decoded from their first k scales, k = 1..K: the quality
    each coarse-to-fine step reaches (the full-K row equals the eval's FD)."""
    from analysis.metrics import frechet_distance_from_stats, gaussian_stats

    K = len(pyramids[0])
    out = []
    for k in range(1, K + 1):
        images = [vae.fhat_to_img(vae.fhat_from_pyramid(idx_list, upto=k)) for idx_list in pyramids]
        feats_ND, _ = net.extract(images)
        out.append({"scales": k, "fd": frechet_distance_from_stats(gaussian_stats(feats_ND, "generated"), ref.stats)})
    return out


def val_token_metrics(run_cfg: SRDDConfig, model: Any, vae: Any, batch_size: int, max_batches: int) -> dict[str, Any]:
    """Teacher-forced CE / accuracy per scale on the val pyramid shards (the train loop's val pass)."""
    from pretrain.pyramid.codec import build_codec
    from pretrain.train.data import codes_loader, model_batches
    from pretrain.train.token_loss import ScaleStats, evaluate

    cpu = torch.device("cpu")
    codec = vae if hasattr(vae, "head") else build_codec(run_cfg, vae)  # any pyramid.* cell, as in training
    loader = codes_loader(run_cfg, codec, "val", batch_size, 0, 1, infinite=False)
    res = evaluate(model, model_batches(loader, codec, cpu), ScaleStats(model.patch_nums), max_batches, cpu,
                   loss_fn=codec.head.loss)
    model.eval()  # evaluate() hands the module back in train mode
    return {f"val_{k}": v for k, v in res.items()}


def val_reference_path(run_cfg: SRDDConfig, net: Any) -> Path:
    """``<SRDD_HOME>/eval_ref/<dataset>/<net>-val.npz``: the cache of the val split's features through ``net``."""
    from data_pipeline import source_slug

    return home_dir() / "eval_ref" / source_slug(run_cfg.data.source) / f"{net.name}-val.npz"


def val_reference(run_cfg: SRDDConfig, net: Any, batch_size: int, refresh: bool = False) -> Any:
    """The run's dataset val-split reference features through ``net``: cached under
    ``<SRDD_HOME>/eval_ref`` and tied to the image shards' manifest (analysis/metrics/reference.py)."""
    from analysis.metrics.reference import reference_for
    from data_pipeline import shards_manifest_path
    from data_pipeline.files import file_sha256
    from data_pipeline.image_shards.loader import image_loader

    manifest_sha256 = file_sha256(shards_manifest_path(run_cfg))
    cache = val_reference_path(run_cfg, net)
    val_images = lambda: image_loader(run_cfg, split="val", batch_size=batch_size, infinite=False)  # noqa: E731
    return reference_for(cache, net, manifest_sha256, "val", val_images, refresh=refresh)


def fd_scorer(cfg: SRDDConfig) -> tuple[Any, str]:
    """(callable images -> FD, metric name) with the eval area's feature network, or (None, why not)."""
    from analysis.metrics import frechet_distance_from_stats, gaussian_stats
    from analysis.metrics.networks import load_feature_net

    try:
        net = load_feature_net(cfg.eval, cfg.data.source)
    except ConfigError as err:
        return None, f"FD not computed: {err}"
    ref = val_reference(cfg, net, cfg.eval.batch_size)

    def score(img_N3HW: Any) -> float:
        feats_ND, _ = net.extract(img_N3HW.split(cfg.eval.batch_size))
        return frechet_distance_from_stats(gaussian_stats(feats_ND, "generated"), ref.stats)

    return score, net.metric("FD")


def fid_inception(run_cfg: SRDDConfig, cfg: SRDDConfig, images: list[torch.Tensor],
                  refresh: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """(``{"FID-inception": value}``, provenance for the record): the generated images against the
    val split through the packaged TF-Inception port (eval.fid_inception)."""
    from analysis.metrics import frechet_distance_from_stats, gaussian_stats
    from analysis.metrics.networks import fid_inception_net

    net = fid_inception_net(cfg.eval.fid_resize)
    ref = val_reference(run_cfg, net, cfg.eval.batch_size, refresh=refresh)
    feats_ND, _ = net.extract(images)
    value = frechet_distance_from_stats(gaussian_stats(feats_ND, "generated"), ref.stats)
    return ({net.metric("FD"): value},
            {"fid_network": {"name": net.name, "sha256": net.sha256}, "fid_reference": vars(ref.provenance)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="run directory (or run name under SRDD_HOME) holding model.pt")
    parser.add_argument("--samples", type=int, default=None, help="generated images (overrides eval.n_samples)")
    parser.add_argument("--val-batches", type=int, default=20, help="val pyramid batches for per-scale loss/accuracy (0 = skip)")
    parser.add_argument("--runs-csv", default=None,
                        help="runs table to update (default <run>/../runs.csv when it exists; none = no table)")
    parser.add_argument("--refresh-reference", action="store_true", help="recompute the cached val reference features")
    parser.add_argument("--fd-by-scales", action="store_true",
                        help="also FD of the samples decoded from their first k scales, k = 1..K (fd_by_scales)")
    parser.add_argument("--snapshots", action="store_true",
                        help="also FD and class accuracy of the run's snapshots/ (train.snapshots): eval_curve records")


def draw(model: Any, vae: Any, labels_N: torch.Tensor, sample_cfg: Any) -> list[tuple[torch.Tensor, Any]]:
    """(images, pyramid) chunks of class-conditional samples, from ``sample.seed``: every model of a
    run draws with the same random stream."""
    from pretrain.sampling.batches import sample_in_batches

    torch.manual_seed(sample_cfg.seed)
    with torch.no_grad():
        return list(sample_in_batches(model, vae, labels_N, sample_cfg))


def curve_records(run: Path, net: Any, ref: Any, vae: Any, labels_N: torch.Tensor, cfg: SRDDConfig,
                  final: dict[str, Any]) -> list[dict[str, Any]]:
    """``eval_curve`` records: each snapshot's FD and class accuracy, then ``final`` (the model.pt
    point, already scored); counters from final.json (FLOPs per sample are fixed within a run)."""
    from pretrain.train.export import load_model

    done = json.loads((run / "final.json").read_text())
    per_sample = {k: done[k] / done["samples"] for k in ("tokens", "flops", "flops_executed")}
    batch_size = done["samples"] / done["step"]
    points = []
    for path in sorted((run / "snapshots").glob("step*.pt")):
        model, _, meta = load_model(path)
        feats_ND, probs_NC = net.extract([img for img, _ in draw(model, vae, labels_N, cfg.sample)])
        q = quality_metrics(net, ref, feats_ND, probs_NC, cfg.eval, labels_N.numpy())
        points.append((meta["step"], q))
    points.append((done["step"], final))
    keys = [net.metric("FD"), net.metric("class_acc")]
    return [{"kind": "eval_curve", "step": step, **{k: round(v * step * batch_size) for k, v in per_sample.items()},
             "n_samples": len(labels_N), **{k: q[k] for k in keys if k in q},
             "feature_net": {"name": net.name, "sha256": net.sha256}} for step, q in points]


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from pretrain.sampling.load import resolve_run

    run = resolve_run(args.run)  # first: a missing run fails before anything heavy is imported or loaded
    if args.snapshots and not (run / "final.json").is_file():
        raise ConfigError(f"--snapshots: {run} has no final.json (snapshots belong to a finished `srdd train` run)")
    from analysis.metrics.networks import load_feature_net
    from pretrain.sampling.batches import class_labels
    from pretrain.sampling.load import sampler_for
    from pretrain.tokenizer import default_tokenizer_path, tokenizer_hash
    from pretrain.train.export import load_model

    n = args.samples or cfg.eval.n_samples
    if n < max(2, cfg.eval.pr_k + 1):
        raise ConfigError(f"--samples {n}: need at least {max(2, cfg.eval.pr_k + 1)} (covariance; k-NN with eval.pr_k={cfg.eval.pr_k})")
    model, run_cfg, meta = load_model(run / "model.pt")
    tok_path = default_tokenizer_path(run_cfg)
    if run_cfg.pyramid.space == "latent" and meta.get("tokenizer_hash") and tokenizer_hash(tok_path) != meta["tokenizer_hash"]:
        raise ConfigError(f"tokenizer.ckpt: {tok_path} is not the tokenizer {run.name} was trained with")
    vae = sampler_for(run_cfg, run, any_cell=True)
    net = load_feature_net(cfg.eval, run_cfg.data.source)
    ref = val_reference(run_cfg, net, cfg.eval.batch_size, refresh=args.refresh_reference)
    labels_N = class_labels([], n, model.num_classes)
    chunks = draw(model, vae, labels_N, cfg.sample)
    images = [img for img, _ in chunks]
    feats_ND, probs_NC = net.extract(images)
    quality = quality_metrics(net, ref, feats_ND, probs_NC, cfg.eval, labels_N.numpy())
    by_scales = {}
    if args.fd_by_scales:
        with torch.no_grad():
            by_scales["fd_by_scales"] = fd_by_scales(net, ref, vae, [pyr for _, pyr in chunks])
    fid: dict[str, float] = {}
    fid_provenance: dict[str, Any] = {}
    if cfg.eval.fid_inception:
        fid, fid_provenance = fid_inception(run_cfg, cfg, images, args.refresh_reference)
        quality |= fid
    tokens = val_token_metrics(run_cfg, model, vae, cfg.eval.batch_size, args.val_batches) if args.val_batches > 0 else {}
    record = {"kind": "eval", "step": meta.get("step"), "n_samples": n, **quality, **tokens, **by_scales,
              "sampler": {k: getattr(cfg.sample, k) for k in SAMPLER_KEYS},
              "feature_net": {"name": net.name, "sha256": net.sha256}, "reference": vars(ref.provenance), **fid_provenance}
    record = json.loads(json.dumps(record, default=list))  # omegaconf lists -> plain lists
    append_jsonl(run / "metrics.jsonl", record)
    for point in curve_records(run, net, ref, vae, labels_N, cfg, quality) if args.snapshots else []:
        append_jsonl(run / "metrics.jsonl", point)
    save_config(cfg, run / "eval")  # the eval's own config; the run's config.yaml stays the training one
    atomic_write_json(run / "eval" / f"step{record['step']}-{net.name}.json", record)
    columns = runs_csv_columns(record)
    table = Path(args.runs_csv) if args.runs_csv else run.parent / "runs.csv"
    if args.runs_csv != "none" and update_runs_csv(table, run.name, columns):
        log.info("updated %s", table)
    print(json.dumps({k: v for k, v in record.items() if k not in ("sampler", "reference", "fd_by_scales")},
                     sort_keys=True))
    return 0
