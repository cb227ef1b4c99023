"""`srdd shards` sources beyond folders: tar:PATH (plain and gzip), cifar10:DIR, fashion-mnist[:DIR].

A ``tar:`` of a class-folder tree must give byte-identical shards to ``folder:`` on the extracted
tree; ``cifar10:`` must give, per official split, the same samples as ``folder:`` on that split's
extracted folder; damaged inputs are skipped and counted.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.files import read_tar
from data_pipeline.image_shards.sources import FASHION_MNIST_DIR, list_source
from pretrain.cli import main as cli_main

CIFAR_DIR = Path(os.environ["SRDD_CIFAR10_DIR"]) if os.environ.get("SRDD_CIFAR10_DIR") else None  # cifar10:DIR layout


def jpeg(rng: np.random.Generator, side: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_tree(root: Path, seed: int = 0) -> Path:
    """A class-folder tree with the awkward cases: a nested subfolder, a root file (no class), a
    non-image file (ignored), a corrupt image (skipped and counted), an empty class folder."""
    rng = np.random.default_rng(seed)
    for cls, n in (("cat", 4), ("dog", 3), ("eel", 0)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i:04d}.jpg").write_bytes(jpeg(rng))
    (root / "dog" / "more").mkdir()
    (root / "dog" / "more" / "x.png").write_bytes(jpeg(rng))  # wrong extension for its bytes: PIL sniffs them
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "cat" / "9999.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "README.jpg").write_bytes(jpeg(rng))
    return root


def pack(tree: Path, out: Path, mode: str, prefix: str = "") -> Path:
    with tarfile.open(out, mode) as tar:
        for path in sorted(tree.rglob("*"), reverse=True):  # archive order must not matter
            tar.add(path, arcname=prefix + str(path.relative_to(tree)), recursive=False)
    return out


def shards(source: str, out: Path, *overrides: str) -> dict:
    assert cli_main(["shards", "--source", source, "--out", str(out), "data.val_fraction=0.3", *overrides]) == 0
    return json.loads((out / "manifest.json").read_text())


def samples(directory: Path, split: str) -> dict[str, dict[str, bytes]]:
    out = {}
    for path in sorted(directory.glob(f"{split}-*.tar")):
        out.update(dict(read_tar(path, [])))
    return out


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_source_gives_the_shards_of_the_extracted_folder(tmp_path, mode):
    tree = make_tree(tmp_path / "tree")
    archive = pack(tree, tmp_path / ("tree.tar" if mode == "w" else "tree.tar.gz"), mode)
    m_folder = shards(f"folder:{tree}", tmp_path / "a", "data.shard_size=3")
    m_tar = shards(f"tar:{archive}", tmp_path / "b", "data.shard_size=3")
    assert m_tar["classes"] == m_folder["classes"] == ["cat", "dog", "eel"]
    assert m_tar["skipped_counts"] == m_folder["skipped_counts"] == {"corrupt image": 1, "no class": 1}
    for split in ("train", "val"):
        names = [s["name"] for s in m_folder["splits"][split]["shards"]]
        assert names and names == [s["name"] for s in m_tar["splits"][split]["shards"]]
        for name in names:  # byte-identical shards (sample keys, images, labels, provenance)
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_truncated_tar_keeps_the_members_before_the_damage(tmp_path):
    tree = make_tree(tmp_path / "tree")
    whole = pack(tree, tmp_path / "tree.tar.gz", "w:gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) * 2 // 3])
    listing = list_source(f"tar:{tmp_path / 'cut.tar.gz'}")
    assert [s["reason"] for s in listing.skipped] == ["truncated tar"]
    assert 0 < len(listing.items) < len(list_source(f"tar:{tmp_path / 'tree.tar.gz'}").items)


def decoded_by_source(directory: Path, split: str, classes: list[str]) -> dict[str, tuple[str, bytes]]:
    """source path -> (class name, decoded RGB pixels) of a split's samples."""
    out = {}
    for s in samples(directory, split).values():
        src = json.loads(s["json"])["source"]
        out[src] = (classes[int(s["cls"])], np.asarray(Image.open(io.BytesIO(s["png"]))).tobytes())
    return out


def test_cifar10_tarballs_keep_the_official_split_and_match_folder(tmp_path):
    train_tree, test_tree = make_tree(tmp_path / "train", seed=1), make_tree(tmp_path / "test", seed=2)
    data = tmp_path / "cifar"
    data.mkdir()
    pack(train_tree, data / "train.tar.gz", "w:gz", prefix="train/")
    pack(test_tree, data / "test.tar.gz", "w:gz", prefix="test/")
    m = shards(f"cifar10:{data}", tmp_path / "c")
    assert m["split_from"] == "source" and m["classes"] == ["cat", "dog", "eel"]
    for split, tree in (("train", train_tree), ("val", test_tree)):
        ref = shards(f"folder:{tree}", tmp_path / f"f-{split}", "data.val_fraction=0")
        got = decoded_by_source(tmp_path / "c", split, m["classes"])
        want = decoded_by_source(tmp_path / f"f-{split}", "train", ref["classes"])
        prefix = "train/" if split == "train" else "test/"
        assert got == {prefix + k: v for k, v in want.items()} and len(got) == 8  # 4 cat + 3 dog + 1 nested


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 0]}
        (tmp_path / name).write_bytes(pickle.dumps(batches[name]))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane", b"automobile"]}))
    m = shards(f"cifar10:{tmp_path}", tmp_path / "out")
    assert m["classes"] == ["airplane", "automobile"]
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"]) == (10, 2)
    for s in samples(tmp_path / "out", "val").values():
        i = int(json.loads(s["json"])["source"].split(":")[1])
        planes = batches["test_batch"][b"data"][i].reshape(3, 32, 32)  # R, G, B planes (the format's layout)
        assert (np.asarray(Image.open(io.BytesIO(s["png"]))) == planes.transpose(1, 2, 0)).all()
        assert int(s["cls"]) == batches["test_batch"][b"labels"][i]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in (("train", 6), ("t10k", 3))}
    for prefix, x in imgs.items():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(x)) % 10)
    m = shards(f"fashion-mnist:{tmp_path}", tmp_path / "out")
    assert m["classes"][0] == "T-shirt/top" and m["num_classes"] == 10
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"]) == (6, 3)
    for s in samples(tmp_path / "out", "val").values():
        i = int(json.loads(s["json"])["source"].split(":")[1])
        assert (np.asarray(Image.open(io.BytesIO(s["png"])))[..., 0] == imgs["t10k"][i]).all()
        assert json.loads(s["json"])["mode"] == "L" and int(s["cls"]) == i % 10


def test_bad_source_names_the_key(tmp_path, capsys):
    assert cli_main(["shards", "--source", "cifar100:/x", "--out", str(tmp_path)]) == 2
    assert "data.source='cifar100:/x'" in capsys.readouterr().err


@pytest.mark.skipif(CIFAR_DIR is None or not CIFAR_DIR.is_dir(), reason="no CIFAR-10 tarballs: set SRDD_CIFAR10_DIR (docs/data.md)")
def test_real_cifar10_tarballs_subset(tmp_path):
    m = shards(f"cifar10:{CIFAR_DIR}", tmp_path / "out", "data.limit=30")
    assert m["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert m["inputs"] == 60000 and m["skipped"] == []
    assert m["splits"]["train"]["count"] + m["splits"]["val"]["count"] == 30
    for split, prefix in (("train", "train/"), ("val", "test/")):
        for s in samples(tmp_path / "out", split).values():
            meta = json.loads(s["json"])
            assert meta["source"].startswith(prefix) and (meta["width"], meta["height"]) == (32, 32)
            assert meta["source"].split("/")[1] == m["classes"][int(s["cls"])]


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_real_fashion_mnist_package():
    listing = list_source("fashion-mnist")
    splits = [it.split for it in listing.items]
    assert (splits.count("train"), splits.count("val"), listing.classes[9]) == (60000, 10000, "Ankle boot")
    img, mode = listing.items[0].image()
    assert img.size == (28, 28) and mode == "L" and listing.items[0].label == 9  # the first training image is a boot
