"""`srdd fid --real SPEC --fake SPEC [--n N] [--json OUT]`: FID-inception between two image sets.

Each SPEC is a `srdd shards` source (``folder:PATH``, ``tar:PATH``, ``cifar10:DIR``,
``fashion-mnist[:DIR]``, ``tars:PATTERN``, ``mnist``) or a ``samples.npz`` written by `srdd sample`.
``--n N`` takes the first N decodable images of the source in the seeded order `srdd shards`
uses (``data.seed``); an .npz gives its first N. Features go through the packaged TF-Inception
port (analysis/metrics/fid_inception.py, resize ``eval.fid_resize``) and are cached under
``<SRDD_HOME>/fid_features/`` per (input, N, seed, network): the file name carries a hash of the
input files, the cache records the network's sha256 and is refused for another network.
Prints the value and writes ``{"fid", "n_real", "n_fake", "network_sha256", ...}`` to ``--json``.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain.config import SRDDConfig, home_dir
from pretrain.config.data import DataConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import atomic_write_json

log = logging.getLogger("srdd.fid")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", required=True, metavar="SPEC", help="source (folder:, tar:, cifar10:, ...) or samples.npz")
    parser.add_argument("--fake", required=True, metavar="SPEC", help="source or samples.npz")
    parser.add_argument("--n", type=int, default=0, help="images per set (0 = all)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON here")
    parser.add_argument("--refresh", action="store_true", help="recompute cached features")


def input_fingerprint(spec: str) -> str:
    """sha256 identifying the files behind ``spec``: contents for files, (name, size, mtime) for directories."""
    from data_pipeline.files import file_sha256
    from data_pipeline.image_shards.sources import expand_pattern

    kind, _, arg = spec.partition(":")
    if spec.endswith(".npz") and ":" not in spec:
        paths = [Path(spec)]
    elif kind == "tars":
        paths = expand_pattern(arg)
    elif kind == "fashion-mnist" and not arg:
        from data_pipeline.image_shards.sources import FASHION_MNIST_DIR
        paths = [Path(FASHION_MNIST_DIR)]
    else:
        paths = [Path(arg)] if arg else []
    h = hashlib.sha256(spec.encode())
    for path in paths:
        if path.is_file():
            h.update(file_sha256(path).encode())
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                st = f.stat()
                h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def spec_images(spec: str, n: int, seed: int) -> Iterator[np.ndarray]:
    """Up to ``n`` (0 = all) uint8 H x W x 3 images of ``spec``; undecodable inputs are skipped and logged."""
    if spec.endswith(".npz") and ":" not in spec:
        with np.load(spec) as z:
            if "images" not in z:
                raise ConfigError(f"{spec}: no 'images' array (expected a samples.npz written by `srdd sample`)")
            images = z["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(f"{spec}: 'images' is {images.dtype} {images.shape}, expected uint8 N x H x W x 3")
        yield from images[: n or len(images)]
        return
    from data_pipeline.image_shards.decode import BadInput
    from data_pipeline.image_shards.sources import list_source

    listing = list_source(spec)
    done = skipped = 0
    for i in np.random.default_rng(seed).permutation(len(listing.items)):
        if n and done == n:
            break
        try:
            img, _ = listing.items[i].image()
        except BadInput as e:
            skipped += 1
            log.warning("%s: input %s skipped: %s", spec, listing.items[i].source, e)
            continue
        done += 1
        yield np.asarray(img, dtype=np.uint8)
    if skipped or listing.skipped:
        log.warning("%s: %d inputs skipped (%d lost in damaged archives)", spec, skipped, len(listing.skipped))


def check_spec(spec: str, flag: str) -> None:
    if spec.endswith(".npz") and ":" not in spec:
        if not Path(spec).is_file():
            raise ConfigError(f"{flag} {spec}: no such file")
        return
    try:
        DataConfig(source=spec).validate("")
    except ConfigError:
        raise ConfigError(f"{flag} {spec!r}: not an .npz nor a source (mnist, folder:PATH, tars:PATTERN, tar:PATH, "
                          "cifar10:DIR, fashion-mnist[:DIR])") from None


def spec_features(spec: str, n: int, seed: int, net, batch: int, refresh: bool = False):
    """Cached (features, Gaussian stats, provenance) of ``spec``'s first ``n`` images through ``net``."""
    from analysis.metrics.fid_inception import batched
    from analysis.metrics.reference import cached_features
    from data_pipeline import source_slug

    try:
        fingerprint = input_fingerprint(spec)
    except FileNotFoundError as e:
        raise ConfigError(f"{spec}: {e}") from None
    path = home_dir() / "fid_features" / f"{source_slug(spec)[:80]}-{fingerprint[:12]}-n{n}-s{seed}-{net.name}.npz"

    def compute() -> np.ndarray:
        try:
            feats = net.module.extract_uint8(batched(spec_images(spec, n, seed), batch))
        except FileNotFoundError as e:
            raise ConfigError(f"{spec}: {e}") from None
        log.info("%s: %d images through %s", spec, len(feats), net.name)
        return feats

    return cached_features(path, net, fingerprint, "all" if not n else f"first-{n}", compute, refresh)


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from analysis.metrics import MetricInputError, frechet_distance_from_stats
    from analysis.metrics.networks import fid_inception_net

    check_spec(args.real, "--real")
    check_spec(args.fake, "--fake")
    if args.n < 0:
        raise ConfigError(f"--n {args.n}: must be >= 0 (0 = all images)")
    net = fid_inception_net(cfg.eval.fid_resize)
    try:
        refs = [spec_features(spec, args.n, cfg.data.seed, net, cfg.eval.batch_size, args.refresh) for spec in (args.real, args.fake)]
        fid = frechet_distance_from_stats(refs[0].stats, refs[1].stats)
    except MetricInputError as e:  # e.g. fewer than 2 decodable images: a covariance needs 2
        raise ConfigError(str(e)) from None
    metric = net.metric("FD")
    result = {"fid": fid, "n_real": refs[0].stats.count, "n_fake": refs[1].stats.count, "network_sha256": net.sha256,
              "metric": metric, "resize": cfg.eval.fid_resize, "real": args.real, "fake": args.fake, "seed": cfg.data.seed}
    print(f"{metric} {fid:.4f}  (real {result['n_real']} images: {args.real}; fake {result['n_fake']}: {args.fake}; "
          f"network sha256 {net.sha256[:12]})")
    if args.json:
        atomic_write_json(os.fspath(args.json), result)
    return 0
