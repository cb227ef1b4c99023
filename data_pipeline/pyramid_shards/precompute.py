"""`srdd pyramids --shards PATTERN --tokenizer CKPT --out DIR`: image shards -> pyramid shards.

The VQ encode runs once here instead of in every training step. Worker processes
(data.num_workers) decode and preprocess images (VAR: shorter side to mid_reso*resolution,
crop; random crop only with data.random_crop, drawn from (data.seed, key) and stored); the main
process encodes batches of data.encode_batch with the tokenizer. Each input shard becomes one
output shard of the same name (format: data_pipeline/pyramid_shards/format.py) plus a manifest
``<name>.json``; ``manifest.json`` sums them once every input shard is done.

Restart safety: a shard is written to a temp name and renamed, then its manifest; a rerun
skips a shard whose manifest matches (identity, input sha256, output sha256) and redoes the
rest. Output bytes depend only on the inputs and the identity (deterministic tar headers, fixed
batch composition), so a SIGKILLed run + rerun equals an uninterrupted run byte for byte.
A directory never mixes tokenizers: any identity mismatch is refused with the differing keys.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data_pipeline import pyramids_dir, shards_dir
from data_pipeline.files import Sample, atomic_write_json, file_sha256, read_tar, write_tar
from data_pipeline.image_shards.decode import BadInput, decode_image, preprocess, to_pm1
from data_pipeline.image_shards.sources import expand_pattern, sample_image, sample_label
from data_pipeline.image_shards.write import Tally
from data_pipeline.pyramid_shards.format import FORMAT, pack, token_dtype
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import save_config

log = logging.getLogger("srdd.pyramids")
MANIFEST = "manifest.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default=None, help="image shards: directory, glob or brace pattern (default data.shards_dir)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (sets tokenizer.ckpt)")
    parser.add_argument("--out", default=None, help="output directory (sets data.pyramids_dir)")
    parser.add_argument("--task-index", type=int, default=0, help="this task's slice: shards[i::count] (SLURM arrays)")
    parser.add_argument("--task-count", type=int, default=1)


# ---- identity: what makes two pyramid shards interchangeable ---------------------------------
def identity(cfg: SRDDConfig, tokenizer_path: Path, vae: Any) -> dict[str, Any]:
    d = cfg.data
    return {"format": FORMAT, "tokenizer_sha256": _sha(tokenizer_path), "patch_nums": list(vae.patch_nums),
            "vocab_size": int(vae.vocab_size), "token_dtype": token_dtype(vae.vocab_size).name,
            "resolution": d.resolution, "mid_reso": d.mid_reso, "flip": d.flip, "random_crop": d.random_crop,
            "crop_seed": d.seed if d.random_crop else None}


def _sha(path: Path) -> str:
    from pretrain.tokenizer import tokenizer_hash

    return tokenizer_hash(path)


def check_directory(out: Path, ident: dict[str, Any]) -> None:
    """Refuse to add to a directory holding pyramids of another tokenizer/schedule/preprocessing."""
    for path in sorted(out.glob("*.json")):
        try:
            other = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # manifests are written atomically: an unreadable one is not ours
        if other.get("format") != FORMAT:
            continue
        diff = [k for k in ident if other.get(k) != ident[k]]
        if diff:
            what = ", ".join(f"{k}: {other.get(k)!r} there vs {ident[k]!r} now" for k in diff)
            raise ConfigError(f"data.pyramids_dir={str(out)!r} holds pyramids made differently ({path.name}: {what}); "
                              "a pyramid directory never mixes tokenizers or settings: choose another --out or delete it")


# ---- workers: decode + preprocess -------------------------------------------------------------
_Job = tuple[str, dict[str, bytes], int, float, bool, int]


def prepare(job: _Job) -> tuple[Any, ...]:
    """Worker: ("ok", key, label, uint8 HxWx3, crop, mode, meta) or ("skip", key, reason, detail)."""
    key, sample, reso, mid_reso, random_crop, seed = job
    label, data = sample_label(sample), sample_image(sample)
    if label is None:
        return ("skip", key, "no class", "")
    if data is None:
        return ("skip", key, "no image", "")
    try:
        img, mode = decode_image(data)
    except BadInput as e:
        return ("skip", key, e.reason, e.detail)
    arr, crop = preprocess(img, reso, mid_reso, random_crop, seed, key)
    meta = json.loads(sample["json"]) if "json" in sample else {}
    return ("ok", key, label, arr, crop, mode, meta)


def _batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


# ---- one shard ----------------------------------------------------------------------------------
@torch.inference_mode()
def encode(vae: Any, arr_BHW3: np.ndarray, flip: bool) -> np.ndarray:
    """uint8 images -> B x F x L tokens (F = 2 with the horizontally flipped copy)."""
    imgs = np.concatenate([arr_BHW3, arr_BHW3[:, :, ::-1]]) if flip else arr_BHW3
    img_B3HW = to_pm1(np.ascontiguousarray(imgs)).to(vae.quant_conv.weight.device)
    tokens_BL = torch.cat(vae.encode_pyramid(img_B3HW), dim=1).cpu().numpy()
    B = arr_BHW3.shape[0]
    return tokens_BL.reshape(2, B, -1).transpose(1, 0, 2) if flip else tokens_BL[:, None]


def encode_device() -> torch.device:
    """A GPU when there is one. cuDNN is pinned to deterministic kernels: reruns must give the same
    bytes (untested on GPU in CI: no GPU here; CPU is the tested path)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return torch.device("cuda")


def precompute_shard(in_path: Path, out: Path, ident: dict[str, Any], vae: Any, cfg: SRDDConfig,
                     pool: Any, bar: tqdm) -> dict[str, Any]:
    d = cfg.data
    for stale in out.glob(f".{in_path.stem}.*.tmp"):  # temp files of a killed run of this shard
        stale.unlink(missing_ok=True)
    tally = Tally()
    jobs = ((key, s, d.resolution, d.mid_reso, d.random_crop, d.seed) for key, s in read_tar(in_path, tally.skipped))
    prepared = pool.imap(prepare, jobs, chunksize=16) if pool is not None else map(prepare, jobs)
    dtype = np.dtype(ident["token_dtype"])
    samples = []
    for chunk in _batched(prepared, d.encode_batch):
        ok = [r for r in chunk if r[0] == "ok"]
        for r in chunk:
            if r[0] == "skip":
                tally.skip(f"{in_path.name}:{r[1]}", r[2], r[3])
        if ok:
            tokens_BFL = encode(vae, np.stack([r[3] for r in ok]), d.flip).astype(dtype)
            for (_, key, label, _, crop, mode, meta), tokens_FL in zip(ok, tokens_BFL):
                tally.converted.update([mode] if mode != "RGB" else [])
                samples.append((key, pack(label, tokens_FL, {"crop": list(crop), "source": meta})))
        bar.update(len(chunk))
    return write_shard(out, in_path.name, samples, {**ident, "input": in_path.name,
                                                    "input_sha256": file_sha256(in_path), **tally.manifest_fields()})


def write_shard(out: Path, name: str, samples: list[tuple[str, Sample]], fields: dict[str, Any]) -> dict[str, Any]:
    """Write the shard ``out/name`` (atomically), then its manifest: ``fields`` (the identity first)
    plus output name, sha256 and count. The manifest last, so its presence means a complete shard."""
    out_path = out / name
    write_tar(out_path, samples)
    manifest = {**fields, "output": name, "output_sha256": file_sha256(out_path), "count": len(samples)}
    atomic_write_json(shard_manifest_path(out, name), manifest)
    return manifest


def shard_manifest_path(out: Path, name: str) -> Path:
    return out / (name[: -len(".tar")] + ".json")


def shard_complete(out: Path, name: str, ident: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of shard ``out/name`` if it was written with this identity and its bytes are intact."""
    path = shard_manifest_path(out, name)
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    out_path = out / m.get("output", "")
    if any(m.get(k) != v for k, v in ident.items()) or not out_path.is_file():
        return None
    return m if m.get("output_sha256") == file_sha256(out_path) else None


def up_to_date(out: Path, in_path: Path, ident: dict[str, Any]) -> dict[str, Any] | None:
    """The shard's manifest if its output is complete for this input and identity, else None."""
    m = shard_complete(out, in_path.name, ident)
    return m if m is not None and m.get("input_sha256") == file_sha256(in_path) else None


# ---- a slice of shards (one SLURM array task, one submitit job, or everything) ---------------
def input_shards(pattern: str) -> list[Path]:
    paths = [p for p in expand_pattern(pattern) if p.suffix == ".tar"]
    if not paths:
        raise ConfigError(f"--shards {pattern!r} (data.shards_dir) matches no .tar image shards; run `srdd shards` first")
    return paths


def run_slice(cfg: SRDDConfig, pattern: str, tokenizer_path: str, out: str, task_index: int = 0,
              task_count: int = 1) -> dict[str, Any]:
    """Precompute shards[task_index::task_count]; returns counts for the log line. Picklable for submitit."""
    from pretrain.tokenizer import load_tokenizer

    t0 = time.time()
    out_dir, tok = Path(out), Path(tokenizer_path)
    shards = input_shards(pattern)
    if any(p.parent.resolve() == out_dir.resolve() for p in shards):
        raise ConfigError(f"data.pyramids_dir={out!r} is the image shards' directory: pyramid shards take the "
                          "same names, so they need their own directory")
    mine = shards[task_index::task_count]
    vae = load_tokenizer(tok).to(encode_device())
    ident = identity(cfg, tok, vae)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_directory(out_dir, ident)
    save_config(cfg, out_dir)
    todo = [p for p in mine if up_to_date(out_dir, p, ident) is None]
    manifests = []
    workers = cfg.data.num_workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 0 and todo else None
    try:
        with tqdm(total=None, unit="img", desc="pyramids", disable=None) as bar:
            for p in todo:
                manifests.append(precompute_shard(p, out_dir, ident, vae, cfg, pool, bar))
    finally:
        if pool is not None:
            pool.terminate()
    total = finalize(out_dir, [p.name for p in shards], ident, _source_classes(shards[0].parent))
    stats = {"task_index": task_index, "task_count": task_count, "shards": len(mine), "written": len(todo),
             "up_to_date": len(mine) - len(todo), "samples_written": sum(m["count"] for m in manifests),
             "skipped_written": sum(len(m["skipped"]) for m in manifests), "time_s": time.time() - t0,
             "complete": total is not None}
    if total is not None:
        stats["total"] = {k: total[k] for k in ("count", "splits", "skipped_counts", "converted")}
    return stats


def finalize(out: Path, names: Sequence[str], ident: dict[str, Any], classes: dict[str, Any]) -> dict[str, Any] | None:
    """Write manifest.json (``classes``: the dataset's class names and count) once every shard in
    ``names`` has a matching manifest; else None. Deterministic content, so concurrent array tasks
    that both finish last write the same bytes."""
    manifests = []
    for name in names:
        path = shard_manifest_path(out, name)
        m = json.loads(path.read_text()) if path.is_file() else None
        if m is None or any(m.get(k) != v for k, v in ident.items()):
            return None
        manifests.append(m)
    splits: dict[str, dict[str, int]] = {}
    for m in manifests:
        s = splits.setdefault(m["output"].split("-")[0], {"count": 0, "shards": 0})
        s["count"] += m["count"]
        s["shards"] += 1
    tally = Tally()
    for m in manifests:
        tally.skipped += m["skipped"]
        tally.converted.update(m["converted"])
    total = {**ident, **classes, "count": sum(m["count"] for m in manifests), "splits": splits,
             "shards": [{k: m[k] for k in ("output", "output_sha256", "count", "input", "input_sha256")} for m in manifests],
             **tally.manifest_fields()}
    atomic_write_json(out / MANIFEST, total)
    return total


def _source_classes(shards_directory: Path) -> dict[str, Any]:
    path = shards_directory / "manifest.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    return {k: m[k] for k in ("classes", "num_classes") if k in m}


# ---- the stage ----------------------------------------------------------------------------------
def summary(stats: list[dict[str, Any]], out: str) -> str:
    written = sum(s["written"] for s in stats)
    shards = sum(s["shards"] for s in stats)
    samples = sum(s["samples_written"] for s in stats)
    rate = samples / max(max(s["time_s"] for s in stats), 1e-9)
    line = f"pyramids: {shards} shards ({written} written, {shards - written} up to date), {samples} samples encoded"
    total = next((s["total"] for s in stats if "total" in s), None)
    if total:
        splits = ", ".join(f"{k} {v['count']}" for k, v in sorted(total["splits"].items()))
        skipped = ", ".join(f"{k} {v}" for k, v in total["skipped_counts"].items()) or "none"
        conv = ", ".join(f"{k}->RGB {v}" for k, v in total["converted"].items()) or "none"
        line += f"; directory complete: {total['count']} samples ({splits}), skipped {sum(total['skipped_counts'].values())} ({skipped}), converted {conv}"
    else:
        line += "; directory incomplete (other tasks pending)"
    return f"{line}; {rate:.1f} pyramids/s -> {out}"


def resolve_inputs(cfg: SRDDConfig, args: argparse.Namespace) -> tuple[str, str, str]:
    """(shards pattern, tokenizer file, output directory) from the flags and ``cfg``, which the
    flags update (``--tokenizer`` sets tokenizer.ckpt, ``--out`` data.pyramids_dir)."""
    from pretrain.tokenizer import default_tokenizer_path

    if getattr(args, "tokenizer", None):
        cfg.tokenizer.ckpt = str(args.tokenizer)
    if getattr(args, "out", None):
        cfg.data.pyramids_dir = str(args.out)
    pattern = getattr(args, "shards", None) or str(shards_dir(cfg))
    tok = default_tokenizer_path(cfg)
    if not tok.is_file():
        raise ConfigError(f"tokenizer.ckpt={str(tok)!r}: no such file; train one (`srdd tokenizer-train`) or pass --tokenizer")
    return pattern, str(tok), str(pyramids_dir(cfg))


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    """This process's slice (``--task-index`` of ``--task-count``); the SLURM array that runs every
    slice is slurm/pyramids.py (``srdd pyramids slurm.enabled=true``)."""
    pattern, tok, out = resolve_inputs(cfg, args)
    index, count = getattr(args, "task_index", 0), getattr(args, "task_count", 1)
    if not 0 <= index < count:
        raise ConfigError(f"--task-index {index} must be in [0, --task-count {count})")
    log.info(summary([run_slice(cfg, pattern, tok, out, index, count)], out))
    return 0
