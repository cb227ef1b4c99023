"""The sampling stages end to end on a run's model.pt (written by the training area's exporter)
and its tokenizer: `srdd sample` (PNG grids, an .npz whose token pyramids decode to its images,
meta, config), `srdd edit --task inpaint` (known tokens come back), `srdd policy-train` (a
policy file `srdd sample sample.refine=policy` uses) and `srdd refine-study` (refinement.csv), on
the data area's real MNIST shards."""
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
def run(tiny_tokenizer_ckpt, mnist_shards, srdd_home):
    """A run directory holding a random-init d1 SRDD transformer exported as a training run would."""
    cfg = load_config(overrides=["run_name=tiny", "model.size=d1", "model.mask=srdd",
                                 f"tokenizer.ckpt={tiny_tokenizer_ckpt}", f"data.shards_dir={mnist_shards}"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums)
    path = save_model(srdd_home / "tiny" / "model.pt", model.state_dict(), cfg, step=0, tokens=0,
                      tokenizer_hash=tokenizer_hash(tiny_tokenizer_ckpt))
    return path.parent


def test_sample_writes_grids_and_a_pyramid_npz_that_decodes_to_its_images(run, tiny_tokenizer_ckpt):
    assert srdd(["sample", "--ckpt", str(run), "--classes", "0,1,2", "--n", "6", "sample.batch_size=4",
                 "sample.refine=sr", "sample.seed=3"]) == 0
    out = run / "samples" / "seed3-sr"
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
    assert meta["n"] == 6 and meta["sampler"]["refine"] == "sr" and meta["refine_cost"]["passes"] == 6 * 2
    assert meta["refine_cost"]["restart_rows"] == 6 * len(vae.patch_nums)  # one round per scale and image
    saved = load_config(out / "config.yaml")  # the resolved config of this call, beside its outputs
    assert saved.sample.refine == "sr" and saved.sample.seed == 3


def test_self_correction_on_a_run_without_the_objective_is_refused_by_name(run, capsys):
    assert srdd(["sample", "--ckpt", str(run), "--n", "2", "sample.refine=mr"]) == 2
    assert "train.refine_objective" in capsys.readouterr().err


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
    from pretrain.sampling.edit import known_pixels, neutral_fill

    overrides = [f"data.shards_dir={mnist_shards}", "sample.refine=sr"]
    assert srdd(["edit", "--task", "inpaint", "--ckpt", str(run), "--n", "3", *overrides]) == 0
    out = run / "edits" / "inpaint"
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    source, label = next(image_loader(load_config(overrides=overrides), split="val", batch_size=3, infinite=False))
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape == npz["source"].shape == (3, 32, 32, 3)
        assert npz["labels"].tolist() == label.tolist()
        assert np.array_equal(npz["source"], to_uint8(source))  # the first val images of the shards
        # what is known, tokenised: the box filled with the mean of the known pixels (no leak, docs/sampling.md)
        truth = vae.encode_pyramid(neutral_fill(source, known_pixels("inpaint", 32, 3, load_config().sample.edit_box)))
        known = 0
        for k, ref in enumerate(truth):
            mask, idx = npz[f"known_mask_s{k}"], npz[f"pyramid_s{k}"]
            assert np.array_equal(idx[mask], ref.numpy()[mask]), f"scale {k}: a known token changed"
            known += int(mask.sum())
        assert 0 < known < sum(p.numel() for p in truth)  # the border clamped, the centre box sampled
    assert (out / "grid.png").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "meta.json").read_text())["task"] == "inpaint"


@pytest.fixture
def eval_net(srdd_home):
    """A (random-init) mnist-cnn feature network file: the stages' plumbing, not FD quality, is under test."""
    from analysis.metrics.cnn import ClassifierCNN, save_classifier

    torch.manual_seed(0)
    path = srdd_home / "net.pt"
    save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), path, {"name": "mnist-cnn"})
    return [f"eval.net_ckpt={path}"]


def test_policy_train_writes_a_policy_that_srdd_sample_uses(run, eval_net):
    assert srdd(["policy-train", "--ckpt", str(run), "--trajectories", "8", "--steps", "20", "sample.batch_size=4",
                 "train.wandb=disabled", *eval_net]) == 0
    out = run / "policy"
    report = json.loads((out / "comparison.json").read_text())
    K = 6
    assert report["train_pairs"] == 6 * K and report["val_pairs"] == 2 * K  # 3/4 of 8 trajectories train
    assert len(report["per_scale"]) == K and 0.0 <= report["chosen_frac"] <= 1.0
    with np.load(out / "gains.npz") as z:
        assert z["features"].shape == (8 * K, 8) and json.loads(str(z["meta"]))["depth"] == 1
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "policy"
    policy = ["sample.refine=policy", f"sample.policy_ckpt={out / 'policy.pt'}"]
    assert srdd(["sample", "--ckpt", str(run), "--classes", "1", "--n", "2", *policy]) == 0
    meta = json.loads((run / "samples" / "seed0-policy" / "meta.json").read_text())
    assert meta["sampler"]["refine"] == "policy" and meta["refine_cost"]["passes"] >= 0


@pytest.mark.slow
def test_refine_study_writes_the_refinement_table(run, eval_net, srdd_home):
    """Every method the run supports, the same images per point, intervals around each FD, FLOPs that
    grow with the restart rounds; a rerun reads its feature cache."""
    import pandas as pd

    args = ["refine-study", "--run", str(run), "--out", str(srdd_home / "study"), "--images", "12", "--seeds", "0,1,2",
            "--rounds", "1,2", "--restart-scales", "5-5", "--onepass-grid", "sample.temperature=0.9",
            "sample.batch_size=6", *eval_net]
    assert srdd(args) == 0
    table = pd.read_csv(srdd_home / "study" / "refinement.csv")
    assert list(table.columns[:9]) == ["model", "method", "rounds", "sampling_flops", "fd", "fd_ci_low", "fd_ci_high",
                                       "n_images", "n_seeds"]
    assert table["method"].tolist() == ["none", "onepass", "restart", "restart", "restart"]  # no objective, no policy
    assert (table["n_images"] == 12).all() and (table["n_seeds"] == 3).all() and (table["model"] == "tiny").all()
    assert ((table["fd_ci_low"] <= table["fd"]) & (table["fd"] <= table["fd_ci_high"])).all()
    restart = table[table["method"] == "restart"]["sampling_flops"].tolist()  # R = 1, R = 2, R = 1 on the last scale
    none = float(table.loc[table["method"] == "none", "sampling_flops"].iloc[0])
    assert restart[1] - none == pytest.approx(2 * (restart[0] - none))  # SRDD: each round costs one more pass per scale
    assert 0 < restart[2] - none < restart[0] - none
    summary = json.loads((srdd_home / "study" / "refinement.json").read_text())
    assert {v["method"] for v in summary["verdicts"]} == {"restart"}
    assert summary["command"].startswith(f"srdd refine-study --run {run} --out") and "--restart-scales 5-5" in summary["command"]
    assert all(v["outcome"] in ("beats", "worse", "inconclusive") for v in summary["verdicts"])
    assert (srdd_home / "study" / "refinement.png").is_file()
    cached = sorted((srdd_home / "study" / "refinement_cache" / "tiny").glob("*.npz"))
    assert len(cached) == 2 + 3 * table["setting"].nunique()  # tuning seed: default + grid; 3 seeds x each setting
    assert srdd(args) == 0 and sorted((srdd_home / "study" / "refinement_cache" / "tiny").glob("*.npz")) == cached
    assert pd.read_csv(srdd_home / "study" / "refinement.csv").equals(table)


def test_distill_cli_student_samples_on_its_own_schedule(run, pyramid_shards, srdd_home):
    """`srdd distill` given no model.* overrides (default size d2) on a d1 teacher: the student's
    model.pt records d1 on the student schedule with the plain sampler its targets were made for,
    `srdd sample` loads it and the sampler runs exactly the student's scales; `--data-only --flops`
    trains the control on data for the steps that budget buys."""
    from pretrain.model.flops import train_flops_per_sample
    from pretrain.sampling.load import load_for_sampling
    from pretrain.sampling.sampler import sample

    data = [f"data.pyramids_dir={pyramid_shards}", "train.batch_size=8", "train.wandb=disabled"]
    assert srdd(["distill", "--teacher", str(run), "--patch-nums", "1,3,6,8", "--steps", "2", "--val-batches", "1",
                 "--teacher-samples", "8", "run_name=student", *data]) == 0
    student_cfg = load_config(srdd_home / "student" / "config.yaml")
    assert student_cfg.model.size == "d1" and student_cfg.model.mask == "srdd"
    assert list(student_cfg.tokenizer.patch_nums) == [1, 3, 6, 8] and student_cfg.sample.cfg == 0.0
    report = json.loads((srdd_home / "student" / "distill.json").read_text())
    assert report["mode"] == "distilled" and report["shared_prefix"] == 1 and report["teacher_samples"] == 8
    ledger = report["flops"]
    assert ledger["teacher_samples"] > 0 and ledger["student_train"] > 0 and ledger["teacher_train"] is None
    assert ledger["total"] == ledger["teacher_samples"] + ledger["student_train"] + ledger["teacher_kl"]
    assert srdd(["sample", "--ckpt", "student", "--n", "2"]) == 0
    with np.load(srdd_home / "student" / "samples" / "seed0-none" / "samples.npz") as npz:
        assert npz["patch_nums"].tolist() == [1, 3, 6, 8]
        assert [npz[f"pyramid_s{k}"].shape for k in range(4)] == [(2, 1), (2, 9), (2, 36), (2, 64)]
    model, vae, _, _ = load_for_sampling("student")
    stats: dict = {}
    sample(model, vae, torch.tensor([0, 1]), cfg=0.0, seed=0, stats=stats)
    assert stats["passes"] == 4 and stats["rows"] == 2 * (1 + 9 + 36 + 64)
    # the data-only control: from scratch, data targets, steps = ceil(budget / (batch x train FLOPs per sample))
    assert srdd(["distill", "--teacher", str(run), "--patch-nums", "1,3,6,8", "--data-only", "--val-batches", "1",
                 "--flops", str(ledger["total"]), "run_name=control", *data]) == 0
    control = json.loads((srdd_home / "control" / "distill.json").read_text())
    per_step = 8 * train_flops_per_sample(model)
    assert control["mode"] == "data_only" and control["steps"] == -(-ledger["total"] // per_step)
    assert control["flops"]["total"] == control["steps"] * per_step >= ledger["total"]
    assert load_config(srdd_home / "control" / "config.yaml").sample.cfg == 1.5  # samples like the teacher
