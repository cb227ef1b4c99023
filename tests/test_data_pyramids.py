"""`srdd pyramids`: tokens equal a direct encode, bad input counted, kill -9 + rerun is
byte-identical, a directory never mixes tokenizers."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.files import read_tar, write_tar
from data_pipeline.image_shards.loader import image_loader
from data_pipeline.pyramid_shards.format import unpack_tokens
from data_pipeline.pyramid_shards.loader import PyramidLoader
from pretrain.cli import main as cli_main
from pretrain.config import load_config
from pretrain.tokenizer.checkpoint import build_tokenizer, load_tokenizer, save_tokenizer
from pretrain.config.tokenizer import TokenizerConfig

REPO = Path(__file__).resolve().parent.parent


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every shard and manifest (config.yaml names its own directory, so it is left out)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in (".tar", ".json")}


def test_pyramid_tokens_equal_direct_encode(mnist_shards, pyramid_shards, tiny_tokenizer_ckpt):
    cfg = load_config(overrides=[f"data.shards_dir={mnist_shards}", f"data.pyramids_dir={pyramid_shards}"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    (img, label), = image_loader(cfg, "val", batch_size=60, infinite=False)
    (p_label, idx_list), = PyramidLoader(cfg, "val", batch_size=60, infinite=False)
    with torch.no_grad():
        ref = vae.encode_pyramid(img)
    assert torch.equal(label, p_label)
    assert [t.shape[1] for t in idx_list] == [pn * pn for pn in vae.patch_nums]
    assert all(torch.equal(a, b) for a, b in zip(ref, idx_list))
    m = json.loads((pyramid_shards / "manifest.json").read_text())
    assert m["count"] == 360 and m["splits"] == {"train": {"count": 300, "shards": 3}, "val": {"count": 60, "shards": 1}}
    assert m["token_dtype"] == "int16" and m["num_classes"] == 10
    _, sample = next(read_tar(pyramid_shards / "val-000000.tar", []))
    assert unpack_tokens(sample).dtype == np.int16


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_skipped_counted_and_logged(tmp_path, tiny_tokenizer_ckpt, caplog):
    rgb = np.random.default_rng(0).integers(0, 255, (36, 40, 3), dtype=np.uint8)
    good = _png(rgb)
    src = tmp_path / "shards"
    write_tar(src / "train-000000.tar", [
        ("k0", {"png": good, "cls": b"1"}),
        ("k1", {"png": _png(rgb, "L"), "cls": b"2"}),
        ("k2", {"png": _png(rgb, "RGBA"), "cls": b"3"}),
        ("k3", {"png": b"garbage", "cls": b"1"}),
        ("k4", {"png": good[:300], "cls": b"1"}),
        ("k5", {"png": b"", "cls": b"1"}),
        ("k6", {"png": good}),
    ])
    write_tar(src / "train-000001.tar", [(f"t{i}", {"png": good, "cls": b"0"}) for i in range(4)])
    whole = (src / "train-000001.tar").read_bytes()
    (src / "train-000001.tar").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "pyr"
    with caplog.at_level(logging.INFO, logger="srdd.pyramids"):
        rc = cli_main(["pyramids", "--shards", str(src), "--tokenizer", str(tiny_tokenizer_ckpt), "--out", str(out),
                       "data.flip=true", "data.num_workers=1"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped_counts"] == {"corrupt image": 1, "empty file": 1, "no class": 1, "truncated image": 1,
                                   "truncated tar": 1}
    assert m["converted"] == {"L": 1, "RGBA": 1}
    shard0 = dict(read_tar(out / "train-000000.tar", []))
    assert sorted(shard0) == ["k0", "k1", "k2"] and 0 < m["count"] - 3 < 4
    tokens = unpack_tokens(shard0["k0"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    flipped = torch.from_numpy(np.ascontiguousarray(rgb[2:34, 4:36][:, ::-1])).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = torch.cat(vae.encode_pyramid(flipped), 1)[0].numpy()
    assert tokens.shape == (2, 130) and (tokens[1] == ref).all()  # row 1 = the hflip's pyramid
    line = caplog.records[-1].getMessage()
    assert "skipped 5" in line and "truncated tar 1" in line and "converted L->RGB 1, RGBA->RGB 1" in line


def test_kill9_then_rerun_is_byte_identical(mnist_shards, pyramid_shards, tiny_tokenizer_ckpt, tmp_path):
    out = tmp_path / "pyr"
    cmd = [sys.executable, "-m", "pretrain.cli", "pyramids", "--shards", str(mnist_shards), "--tokenizer",
           str(tiny_tokenizer_ckpt), "--out", str(out), "data.num_workers=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its decode workers, mid-run
    proc.wait()
    assert not (out / "manifest.json").exists(), "killed too late: the run had finished"
    done_before = len(list(out.glob("*-*.json")))
    assert cli_main(["pyramids", "--shards", str(mnist_shards), "--tokenizer", str(tiny_tokenizer_ckpt),
                     "--out", str(out), "data.num_workers=2"]) == 0
    assert tree_bytes(out) == tree_bytes(pyramid_shards)
    assert not list(out.glob(".*.tmp"))
    assert done_before >= 1


@pytest.fixture(scope="module")
def other_tokenizers(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("other_tok")
    cfg = TokenizerConfig()
    torch.manual_seed(1)
    reseeded = save_tokenizer(build_tokenizer(cfg), d / "reseeded.pt", cfg)
    cfg4 = TokenizerConfig(patch_nums=[1, 2, 4, 8])
    torch.manual_seed(0)
    return {"tokenizer_sha256": reseeded, "patch_nums": save_tokenizer(build_tokenizer(cfg4), d / "pn.pt", cfg4)}


@pytest.mark.parametrize("differs", ["tokenizer_sha256", "patch_nums"])
def test_mixing_tokenizers_refused(differs, mnist_shards, pyramid_shards, other_tokenizers, tmp_path, capsys):
    out = tmp_path / "pyr"
    shutil.copytree(pyramid_shards, out)
    before = tree_bytes(out)
    rc = cli_main(["pyramids", "--shards", str(mnist_shards), "--tokenizer", str(other_tokenizers[differs]),
                   "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "never mixes tokenizers" in err and differs in err
    assert tree_bytes(out) == before
