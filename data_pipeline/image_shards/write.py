"""`srdd shards --source SRC --out DIR`: inputs -> WebDataset image shards + manifest.json.

Output ``<shards_dir>/{train,val}-%06d.tar``; per sample ``{key}.png|jpg`` (RGB, original
size: resizing/cropping happens when images are consumed, following VAR), ``{key}.cls``
(class index) and ``{key}.json`` (original size and mode, provenance). A seeded permutation
of the source's fixed input order assigns the val split (first ``val_fraction``) and the
sample order, so the same seed gives byte-identical shards. Bad inputs are skipped and
listed with their reason in the manifest.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_pipeline import shards_dir
from data_pipeline.files import Sample, atomic_write_json, file_sha256, write_tar
from data_pipeline.image_shards.decode import BadInput, encode_image
from data_pipeline.image_shards.sources import Item, Listing, expand_pattern, list_source
from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import save_config

log = logging.getLogger("srdd.shards")
FORMAT = "srdd-shards-v1"
SPLITS = ("train", "val")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None, help="mnist | folder:PATH | tars:PATTERN | tar:PATH | cifar10:DIR | fashion-mnist[:DIR] (sets data.source)")
    parser.add_argument("--out", default=None, help="output directory (sets data.shards_dir)")


def split_order(n: int, val_fraction: float, seed: int, limit: int = 0,
                fixed: list[str | None] | None = None) -> dict[str, np.ndarray]:
    """Input indices of each split, in shard order (the first ``limit`` of the permutation if > 0).
    ``fixed``: each input's own split (a dataset's official train/test split), kept instead of
    ``val_fraction``."""
    perm = np.random.default_rng(seed).permutation(n)
    if limit:
        perm = perm[:limit]
    if fixed is not None:
        return {split: np.array([i for i in perm if fixed[i] == split], dtype=np.int64) for split in SPLITS}
    n_val = int(round(len(perm) * val_fraction))
    return {"train": perm[n_val:], "val": perm[:n_val]}


class Tally:
    """Skipped inputs (with reasons) and converted image modes, for manifests and the log line."""

    def __init__(self) -> None:
        self.skipped: list[dict] = []
        self.converted: Counter[str] = Counter()

    def skip(self, source: str, reason: str, detail: str = "") -> None:
        self.skipped.append({"input": source, "reason": reason, **({"detail": detail} if detail else {})})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s["reason"] for s in self.skipped).items()))

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest keys every stage that reads inputs writes: skipped, skipped_counts, converted."""
        return {"skipped": self.skipped, "skipped_counts": self.counts(), "converted": dict(sorted(self.converted.items()))}

    def summary(self) -> str:
        conv = ", ".join(f"{m}->RGB {n}" for m, n in sorted(self.converted.items())) or "none"
        skipped = ", ".join(f"{r} {n}" for r, n in self.counts().items()) or "none"
        return f"skipped {len(self.skipped)} ({skipped}); converted {conv}"


def to_sample(key: str, item: Item, image_format: str, tally: Tally) -> Sample | None:
    if item.label is None:
        tally.skip(item.source, "no class")
        return None
    try:
        img, mode = item.image()
    except BadInput as e:
        tally.skip(item.source, e.reason, e.detail)
        return None
    if mode != "RGB":
        tally.converted[mode] += 1
    meta = {"source": item.source, "width": img.size[0], "height": img.size[1], "mode": mode}
    return {image_format: encode_image(img, image_format), "cls": str(item.label).encode(),
            "json": json.dumps(meta, sort_keys=True).encode()}


def split_samples(listing: Listing, order: np.ndarray, fmt: str, tally: Tally) -> Iterator[tuple[str, Sample]]:
    for i in order:
        key = f"{int(i):07d}"  # the input's position in the source's fixed order: stable across seeds
        sample = to_sample(key, listing.items[i], fmt, tally)
        if sample is not None:
            yield key, sample


def write_split(out: Path, split: str, samples: Iterator[tuple[str, Sample]], shard_size: int) -> list[dict]:
    shards: list[dict] = []
    batch: list[tuple[str, Sample]] = []
    for item in samples:
        batch.append(item)
        if len(batch) == shard_size:
            shards.append(_write_one(out, split, len(shards), batch))
            batch = []
    if batch:
        shards.append(_write_one(out, split, len(shards), batch))
    return shards


def _write_one(out: Path, split: str, index: int, samples: list[tuple[str, Sample]]) -> dict:
    path = out / f"{split}-{index:06d}.tar"
    write_tar(path, samples)
    return {"name": path.name, "count": len(samples), "sha256": file_sha256(path)}


def clear_previous(out: Path) -> None:
    """Remove the shards of an earlier `srdd shards` run in ``out`` (fewer shards this time must
    not leave stale ones behind); refuse a directory holding tars this stage did not write."""
    out.mkdir(parents=True, exist_ok=True)
    ours = [p for split in SPLITS for p in out.glob(f"{split}-*.tar")]
    manifest = out / "manifest.json"
    if ours and not (manifest.is_file() and json.loads(manifest.read_text()).get("format") == FORMAT):
        raise ConfigError(f"data.shards_dir={str(out)!r} holds tar files but no `srdd shards` manifest.json; "
                          "refusing to overwrite them: choose another --out")
    for p in ours:
        p.unlink()


def write_shards(cfg: SRDDConfig, out: Path) -> dict:
    """Write all shards of cfg.data.source into ``out``; returns the manifest."""
    d = cfg.data
    t0 = time.time()
    if d.source.startswith("tars:") and any(p.parent.resolve() == out.resolve() for p in expand_pattern(d.source[5:])):
        raise ConfigError(f"data.source={d.source!r} reads from data.shards_dir={str(out)!r}: write the new shards elsewhere")
    try:
        listing = list_source(d.source)
    except FileNotFoundError as e:
        raise ConfigError(f"data.source={d.source!r}: {e}") from None
    tally = Tally()
    tally.skipped += listing.skipped
    clear_previous(out)
    splits = {}
    fixed = [it.split for it in listing.items] if listing.items and all(it.split for it in listing.items) else None
    for split, order in split_order(len(listing.items), d.val_fraction, d.seed, d.limit, fixed).items():
        shards = write_split(out, split, split_samples(listing, order, d.image_format, tally), d.shard_size)
        splits[split] = {"count": sum(s["count"] for s in shards), "shards": shards}
    manifest = {
        "format": FORMAT, "source": d.source, "seed": d.seed, "val_fraction": d.val_fraction,
        **({"split_from": "source"} if fixed else {}),  # official train/test split; val_fraction unused
        "shard_size": d.shard_size, "limit": d.limit, "image_format": d.image_format,
        "classes": listing.classes, "num_classes": len(listing.classes),
        "inputs": len(listing.items) + len(listing.skipped), "splits": splits,
        **tally.manifest_fields(),
    }
    atomic_write_json(out / "manifest.json", manifest)
    save_config(cfg, out)
    n = sum(s["count"] for s in splits.values())
    log.info("shards: %d samples (train %d, val %d) in %d shards, %s, %.0f images/s -> %s", n,
             splits["train"]["count"], splits["val"]["count"], sum(len(s["shards"]) for s in splits.values()),
             tally.summary(), n / max(time.time() - t0, 1e-9), out)
    return manifest


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    if getattr(args, "source", None):
        cfg.data.source = args.source
        cfg.data.validate("data.")
    if getattr(args, "out", None):
        cfg.data.shards_dir = str(args.out)
    write_shards(cfg, shards_dir(cfg))
    return 0
