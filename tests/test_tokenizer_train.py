"""`srdd tokenizer-train`: a real DeepSpeed engine (gloo, CPU) on real MNIST digits."""
from __future__ import annotations

import pytest
import torch

import pretrain.tokenizer.train as tokenizer_train
from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import read_jsonl, run_dir
from pretrain.tokenizer.checkpoint import load_tokenizer

TINY = ["tokenizer.ch=8", "tokenizer.ch_mult=[1,2]", "tokenizer.z_channels=4", "tokenizer.vocab_size=32",
        "tokenizer.norm_groups=4", "tokenizer.patch_nums=[1,2,4,8]", "data.resolution=16",
        "tokenizer.batch_size=16", "tokenizer.lr=3e-3", "tokenizer.log_every=10", "tokenizer.val_every=0",
        "tokenizer.val_batches=2", "tokenizer.dead_code_every=10", "train.warmup_frac=0", "train.wandb=disabled"]


@pytest.fixture
def digits(mnist_shards) -> list[str]:
    """Real MNIST image shards (data area's fixture) at 16px."""
    return [f"data.shards_dir={mnist_shards}"]


@pytest.mark.slow
def test_training_lowers_loss_keeps_codes_alive_exports_and_resumes(digits):
    cfg = load_config(None, digits + TINY + ["tokenizer.steps=40", "tokenizer.ckpt_every=20", "run_name=tok"])
    assert tokenizer_train.main(cfg, None) == 0
    out = run_dir(cfg)
    records = read_jsonl(out / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "tokenizer_train"]
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert train[-1]["recon"] < 0.6 * train[0]["recon"]
    assert train[-1]["loss"] < train[0]["loss"]
    # codebook usage floor: the finest scale keeps at least a quarter of the 32 codes in use
    assert train[-1]["usage_per_scale"][-1] >= 0.25
    assert all(len(r["perplexity_per_scale"]) == 4 for r in train)
    val = [r for r in records if r["kind"] == "tokenizer_val"]
    assert len(val) == 1 and val[0]["step"] == 40 and val[0]["psnr"] > 10.0
    vae = load_tokenizer(out / "tokenizer.pt")
    assert vae.patch_nums == (1, 2, 4, 8) and (out / "checkpoints" / "step_00000040").is_dir()
    # resume: a longer run continues from step 40 instead of starting over
    cfg2 = load_config(None, digits + TINY + ["tokenizer.steps=50", "tokenizer.ckpt_every=20", "run_name=tok"])
    assert tokenizer_train.main(cfg2, None) == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "tokenizer_train"]
    assert steps == [10, 20, 30, 40, 50]


@pytest.mark.slow
def test_stopped_and_resumed_run_repeats_the_uninterrupted_one_with_dead_code_restarts(digits):
    """Stopped mid logging window (train.stop_after=7) and resumed: the same records and weights,
    so the checkpoint carries the restart generator, the codebook counters and the window's sums."""
    common = digits + TINY + ["tokenizer.steps=15", "tokenizer.log_every=5", "tokenizer.dead_code_every=5",
                              "tokenizer.ckpt_every=15", "tokenizer.lpips=off"]
    straight = load_config(None, common + ["run_name=straight"])
    assert tokenizer_train.main(straight, None) == 0
    for extra in (["train.stop_after=7"], []):
        assert tokenizer_train.main(load_config(None, common + ["run_name=resumed", *extra]), None) == 0
    resumed = load_config(None, common + ["run_name=resumed"])
    timing = {"time_s", "images_per_s"}

    def records(cfg):
        return [{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(run_dir(cfg) / "metrics.jsonl")]

    assert records(resumed) == records(straight)
    assert sum(r.get("restarted", 0) for r in records(straight)) > 0  # restarts happened, after the resume too
    a, b = load_tokenizer(run_dir(straight) / "tokenizer.pt"), load_tokenizer(run_dir(resumed) / "tokenizer.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resolution_must_match_the_schedule(digits):
    cfg = load_config(None, digits + TINY + ["data.resolution=32"])
    with pytest.raises(ConfigError, match="data.resolution=32 .* tokenizer.patch_nums ends at 8"):
        tokenizer_train.main(cfg, None)


def test_missing_lpips_file_is_a_config_error(digits, tmp_path):
    cfg = load_config(None, digits + TINY + [f"tokenizer.lpips_path={tmp_path}/lpips.pt"])
    with pytest.raises(ConfigError, match="tokenizer.lpips_path=.*no such file"):
        tokenizer_train.main(cfg, None)


@pytest.mark.slow
def test_perceptual_and_patchgan_terms_are_trained_and_logged(digits, tmp_path):
    # the real LPIPS-alex (packaged weights, installed by `make install`) as the perceptual term
    cfg = load_config(None, digits + TINY + ["tokenizer.steps=4", "tokenizer.log_every=2", "tokenizer.disc_start=2",
                                             "tokenizer.lpips=alex", "run_name=gan"])
    assert tokenizer_train.main(cfg, None) == 0
    train = [r for r in read_jsonl(run_dir(cfg) / "metrics.jsonl") if r["kind"] == "tokenizer_train"]
    assert "g" not in train[0] and {"g", "d", "perceptual"} <= set(train[1])
    assert train[1]["perceptual"] > 0 and train[1]["d"] > 0
    assert (run_dir(cfg) / "checkpoints" / "step_00000004" / "ds_disc").is_dir()  # D is checkpointed with G
