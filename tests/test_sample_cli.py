"""The sampling stages end to end on a run's model.pt (written by the training area's exporter)
and its tokenizer: `srdd sample` (PNG grids, an .npz whose token pyramids decode to its images,
meta, config), `srdd edit --task inpaint` (known tokens come back) and `srdd policy-train` (a
policy file `srdd sample sample.refine=policy` uses), on the data area's real MNIST shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.cli import main as srdd
from pretrain.config import load_config
from pretrain.model import build_model
from pretrain.sampling.save import to_uint8
from pretrain.tokenizer import load_tokenizer, tokenizer_hash
from pretrain.train.export import save_model


@pytest.fixture
def run(tiny_tokenizer_ckpt, srdd_home):
    """A run directory holding a random-init d1 SRDD transformer exported as a training run would."""
    cfg = load_config(overrides=["run_name=tiny", "model.size=d1", "model.mask=srdd",
                                 f"tokenizer.ckpt={tiny_tokenizer_ckpt}"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums)
    path = save_model(srdd_home / "tiny" / "model.pt", model.state_dict(), cfg, step=0, tokens=0,
                      tokenizer_hash=tokenizer_hash(tiny_tokenizer_ckpt))
    return path.parent


def test_sample_writes_grids_and_a_pyramid_npz_that_decodes_to_its_images(run, tiny_tokenizer_ckpt):
    assert srdd(["sample", "--ckpt", str(run), "--classes", "0,1,2", "--n", "6", "sample.batch_size=4",
                 "sample.refine=mr", "sample.seed=3"]) == 0
    out = run / "samples" / "seed3-mr"
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape == (6, 32, 32, 3) and npz["images"].dtype == np.uint8
        assert npz["labels"].tolist() == [0, 0, 1, 1, 2, 2]
        assert npz["patch_nums"].tolist() == list(vae.patch_nums)
        pyramid = [torch.from_numpy(npz[f"pyramid_s{k}"]) for k in range(len(vae.patch_nums))]
        assert [p.shape for p in pyramid] == [(6, pn * pn) for pn in vae.patch_nums]
        with torch.no_grad():  # the stored tokens are the images: decoding them reproduces the pixels
            decoded = to_uint8(vae.decode_pyramid(pyramid)).astype(int)  # (up to rounding: other batch split)
        assert np.abs(decoded - npz["images"]).max() <= 1
    with Image.open(out / "grid.png") as grid:  # 3 class rows x 2 columns of 32px images, 2px padding
        assert grid.size == (2 * 34 + 2, 3 * 34 + 2)
    assert all((out / f"class_{c}.png").is_file() for c in (0, 1, 2))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == 6 and meta["sampler"]["refine"] == "mr" and meta["refine_cost"]["passes"] > 0
    saved = load_config(out / "config.yaml")  # the resolved config of this call, beside its outputs
    assert saved.sample.refine == "mr" and saved.sample.seed == 3


def test_sample_is_reproducible_per_seed(run):
    a, b = run / "a", run / "b"
    for out in (a, b):
        assert srdd(["sample", "--ckpt", str(run), "--classes", "4", "--n", "2", "--out", str(out)]) == 0
    with np.load(a / "samples.npz") as x, np.load(b / "samples.npz") as y:
        assert np.array_equal(x["images"], y["images"]) and np.array_equal(x["pyramid_s5"], y["pyramid_s5"])


@pytest.mark.parametrize("argv, key", [(["--classes", "0,10"], "sample.classes"),
                                       (["--classes", "zero"], "--classes")])
def test_bad_classes_are_rejected_naming_the_key(run, capsys, argv, key):
    assert srdd(["sample", "--ckpt", str(run), "--n", "2", *argv]) == 2
    assert key in capsys.readouterr().err


def test_missing_run_is_a_config_error(capsys, srdd_home):
    assert srdd(["sample", "--ckpt", "no-such-run"]) == 2
    assert "--ckpt no-such-run" in capsys.readouterr().err


def test_edit_inpaint_writes_outputs_and_keeps_known_tokens(run, tiny_tokenizer_ckpt, mnist_shards):
    from data_pipeline.image_shards.loader import image_loader

    overrides = [f"data.shards_dir={mnist_shards}", "sample.refine=mr"]
    assert srdd(["edit", "--task", "inpaint", "--ckpt", str(run), "--n", "3", *overrides]) == 0
    out = run / "edits" / "inpaint"
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    source, label = next(image_loader(load_config(overrides=overrides), split="val", batch_size=3, infinite=False))
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape == npz["source"].shape == (3, 32, 32, 3)
        assert npz["labels"].tolist() == label.tolist()
        assert np.array_equal(npz["source"], to_uint8(source))  # the first val images of the shards
        truth = vae.encode_pyramid(source)
        known = 0
        for k, ref in enumerate(truth):
            mask, idx = npz[f"known_mask_s{k}"], npz[f"pyramid_s{k}"]
            assert np.array_equal(idx[mask], ref.numpy()[mask]), f"scale {k}: a known token changed"
            known += int(mask.sum())
        assert 0 < known < sum(p.numel() for p in truth)  # the border clamped, the centre box sampled
    assert (out / "grid.png").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "meta.json").read_text())["task"] == "inpaint"


def test_policy_train_writes_a_policy_that_srdd_sample_uses(run, pyramid_shards, tiny_tokenizer_ckpt):
    data = [f"data.pyramids_dir={pyramid_shards}", "sample.batch_size=8"]
    assert srdd(["policy-train", "--ckpt", str(run), "--batches", "4", "--steps", "20", *data]) == 0
    out = run / "policy"
    report = json.loads((out / "comparison.json").read_text())
    assert report["train_tokens"] == 3 * 8 * 130 and report["val_tokens"] == 8 * 130
    assert [r["variant"].split("(")[0] for r in report["comparison"]] == ["none", "mr", "policy"]
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "policy"
    assert load_config(out / "config.yaml").data.pyramids_dir == str(pyramid_shards)
    policy = ["sample.refine=policy", f"sample.policy_ckpt={out / 'policy.pt'}"]
    assert srdd(["sample", "--ckpt", str(run), "--classes", "1", "--n", "2", *policy]) == 0
    meta = json.loads((run / "samples" / "seed0-policy" / "meta.json").read_text())
    assert meta["sampler"]["refine"] == "policy" and meta["refine_cost"]["passes"] >= 0


def test_distill_cli_student_carries_the_teachers_architecture(run, pyramid_shards, srdd_home):
    """`srdd distill` given no model.* overrides (default size d2) on a d1 teacher: the student's
    model.pt records d1 on the student schedule, so `srdd sample` can load it."""
    data = [f"data.pyramids_dir={pyramid_shards}", "train.batch_size=8", "train.wandb=disabled"]
    assert srdd(["distill", "--teacher", str(run), "--patch-nums", "1,3,6,8", "--steps", "2", "--val-batches", "1",
                 "run_name=student", *data]) == 0
    student_cfg = load_config(srdd_home / "student" / "config.yaml")
    assert student_cfg.model.size == "d1" and student_cfg.model.mask == "srdd"
    assert srdd(["sample", "--ckpt", "student", "--n", "2"]) == 0
    with np.load(srdd_home / "student" / "samples" / "seed0-none" / "samples.npz") as npz:
        assert npz["patch_nums"].tolist() == [1, 3, 6, 8]
        assert [npz[f"pyramid_s{k}"].shape for k in range(4)] == [(2, 1), (2, 9), (2, 36), (2, 64)]
