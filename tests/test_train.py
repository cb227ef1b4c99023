"""`srdd train`: loss bookkeeping, checkpoints, exact resume, refusal of mismatched resumes,
the NaN guard, and 2-rank gloo training with ZeRO-2 / ZeRO-3 (real DeepSpeed engines)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import read_jsonl
from pretrain.train.budget import tokens_per_sample, total_steps
from pretrain.train.checkpoint import MARKER, CheckpointManager, check_compatible, frozen_keys
from pretrain.pyramid.heads import token_losses
from pretrain.train.token_loss import ScaleStats
from tests.plugins.training_runs import STRAIGHT_TRAIN, run_srdd, train_overrides

CONTRACT_TRAIN = {"kind", "step", "tokens", "samples", "flops", "lr", "grad_norm", "loss", "acc", "loss_per_scale",
                  "acc_per_scale", "tokens_per_s", "time_s"}
CONTRACT_VAL = {"kind", "step", "tokens", "flops", "loss", "acc", "loss_per_scale", "acc_per_scale"}


# ---- fast: the arithmetic ------------------------------------------------------------------
def test_token_losses_match_torch_cross_entropy():
    torch.manual_seed(0)
    logits_BLV, target_BL = torch.randn(3, 14, 11), torch.randint(0, 11, (3, 14))
    objective, nll_BL, correct_BL = token_losses(logits_BLV, target_BL, 0.1)
    assert torch.allclose(objective, F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, label_smoothing=0.1))
    assert torch.allclose(nll_BL, F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, reduction="none"))
    assert torch.equal(correct_BL, logits_BLV.argmax(-1) == target_BL)

    stats = ScaleStats([1, 2, 3])  # token ranges [0,1), [1,5), [5,14)
    stats.add(nll_BL, correct_BL)
    out = stats.reduce(torch.device("cpu"))
    assert out["loss"] == pytest.approx(nll_BL.mean().item())
    assert out["loss_per_scale"][1] == pytest.approx(nll_BL[:, 1:5].mean().item())
    assert out["acc_per_scale"][2] == pytest.approx(correct_BL[:, 5:].float().mean().item())


def test_token_budget_sets_steps():
    cfg = load_config(overrides=["train.batch_size=8", "train.tokens=10000", "train.max_steps=3"])
    L = tokens_per_sample(cfg.tokenizer.patch_nums)
    assert L == 1 + 4 + 9 + 16 + 36 + 64
    assert total_steps(cfg.train, L) == -(-10000 // (8 * L))  # ceil
    assert total_steps(load_config(overrides=["train.max_steps=3"]).train, L) == 3


def test_mismatched_keys_are_named():
    a = frozen_keys(load_config(overrides=["model.size=d1"]))
    b = frozen_keys(load_config(overrides=["model.size=d2", "model.mask=srdd", "tokenizer.patch_nums=[1,2,4,8]"]))
    with pytest.raises(ConfigError) as err:
        check_compatible(a, b, Path("ckpt"))
    msg = str(err.value)
    for key in ("model.size", "model.attn_window", "tokenizer.patch_nums"):
        assert key in msg
    assert "tokenizer.vocab_size" not in msg
    check_compatible(a, dict(a), Path("ckpt"))  # identical: accepted


def test_checkpoint_listing_and_pruning(tmp_path):
    from pretrain.dist import DistInfo

    mgr = CheckpointManager(tmp_path, DistInfo(0, 1, 0), keep_last=2, milestones=[20])
    for step in (10, 20, 30, 40, 50):
        mgr.path(step).mkdir()
        (mgr.path(step) / MARKER).write_text(f"{step}\n")
    mgr.path(60).mkdir()  # killed mid-save: no marker
    (tmp_path / ".step_00000070.tmp").mkdir()
    assert mgr.latest() == mgr.path(50)
    mgr.prune()
    assert [s for s, _ in mgr.complete()] == [20, 40, 50]  # milestone 20 + the last two


def test_single_process_rank_variables_inherited_by_a_child_are_not_taken_for_a_launcher(monkeypatch):
    """A stage started from a process that ran a one-rank group inherits RANK/MASTER_PORT; it must
    not rendezvous on the parent's port (EADDRINUSE), while a real launcher's variables still win."""
    from pretrain import dist

    for key in ("RANK", "MASTER_PORT", dist._OWNER):
        monkeypatch.delenv(key, raising=False)
    assert not dist._launched_by_a_launcher()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert dist._launched_by_a_launcher()  # torchrun / srun: no mark
    monkeypatch.setenv(dist._OWNER, f"{os.getpid() + 1}:29500")
    assert not dist._launched_by_a_launcher()  # the parent's own single-process set-up
    monkeypatch.setenv("MASTER_PORT", "29501")
    assert dist._launched_by_a_launcher()  # a launcher ran in between and set its own port
    monkeypatch.setenv(dist._OWNER, f"{os.getpid()}:29501")
    assert dist._launched_by_a_launcher()  # our own earlier set-up: keep the group we made


def test_only_build_locks_older_than_any_compile_are_released(monkeypatch, tmp_path):
    from pretrain import dist

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    flat, nested = tmp_path / dist.SHM_OP_NAME / "lock", tmp_path / "py311_cpu" / dist.SHM_OP_NAME / "lock"
    other = tmp_path / "some_other_op" / "lock"
    for lock in (flat, nested, other):
        lock.parent.mkdir(parents=True)
        lock.touch()
    old_s = os.path.getmtime(flat) - 2 * dist.STALE_BUILD_LOCK_S
    os.utime(nested, (old_s, old_s))
    os.utime(other, (old_s, old_s))
    assert dist.release_stale_build_locks() == [nested]  # a fresh lock is a compile in progress
    assert flat.exists() and not nested.exists() and other.exists()  # other ops' locks are not ours


@pytest.mark.slow
def test_a_stale_build_lock_left_by_a_killed_compile_does_not_hang_init(tmp_path):
    """Without the release, torch's FileBaton waits forever on the dead compile's lock."""
    from pretrain import dist

    ext_dir = tmp_path / "ext"
    lock = ext_dir / dist.SHM_OP_NAME / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    old_s = lock.stat().st_mtime - 2 * dist.STALE_BUILD_LOCK_S
    os.utime(lock, (old_s, old_s))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", dist._OWNER)}
    code = "from pretrain.dist import init_distributed; print(init_distributed().world_size)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**env, "TORCH_EXTENSIONS_DIR": str(ext_dir)})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("1"), proc.stderr[-2000:]
    assert "removing a stale build lock" in proc.stderr
    assert (ext_dir / dist.SHM_OP_NAME / f"{dist.SHM_OP_NAME}.so").exists()  # and the op was built


# ---- the NaN guard on a real engine ----------------------------------------------------------
def test_nan_guard_skips_bad_batches_then_stops(monkeypatch, tiny_tokenizer_ckpt, tmp_path):
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    from pretrain.dist import _free_port, init_distributed
    from pretrain.engine import build_engine
    from pretrain.model import build_model
    from pretrain.train.signals import StopRequest
    from pretrain.train.step import NonFiniteLossError, OptimizerStep
    from pretrain.train.token_loss import TokenObjective

    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    info = init_distributed()
    cfg = load_config(overrides=["model.size=d1", "train.batch_size=4", "train.max_bad_steps=2", "train.lr_peak=1e-3"])
    tok = cfg.tokenizer
    model = build_model(cfg.model, tok.vocab_size, tok.z_channels, tok.patch_nums)
    engine = build_engine(model, cfg.train, 10, 1)
    L = tokens_per_sample(tok.patch_nums)
    good = (torch.zeros(4, dtype=torch.long), torch.randn(4, L - 1, tok.z_channels), torch.randint(0, tok.vocab_size, (4, L)))
    bad = (good[0], torch.full_like(good[1], float("nan")), good[2])
    stop = StopRequest(tmp_path)
    try:
        stream = iter([good, bad, bad, good, bad, bad, bad])
        step = OptimizerStep({"model": engine}, 1, cfg.train.max_bad_steps, info.device)
        objective = TokenObjective(engine, ScaleStats(tok.patch_nums), 0.1)
        before = [p.detach().clone() for p in engine.module.parameters()]
        assert step(objective, stream, stop).skipped_batches == 0
        after_one = [p.detach().clone() for p in engine.module.parameters()]
        outcome = step(objective, stream, stop)  # bad, bad (2 = max_bad: tolerated), then good
        assert outcome.skipped_batches == 2 and engine.global_steps == 2
        assert all(torch.isfinite(p).all() for p in engine.module.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after_one))
        with pytest.raises(NonFiniteLossError, match="3 consecutive batches.*train.max_bad_steps=2"):
            step(objective, stream, stop)
        assert engine.global_steps == 2  # no update from a bad batch
    finally:
        stop.restore()


# ---- end to end: torchrun, 2 gloo ranks ------------------------------------------------------
@pytest.fixture
def base_overrides(pyramid_shards, tiny_tokenizer_ckpt) -> list[str]:
    return train_overrides(pyramid_shards, tiny_tokenizer_ckpt)


def _losses(run: Path, kind: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == kind]


@pytest.mark.slow
def test_zero2_two_ranks_trains_and_resumes_exactly(srdd_home, base_overrides, straight_train_run):
    """2N steps straight == N steps, stop (checkpoint), resume N: identical loss sequence."""
    straight = straight_train_run
    records = read_jsonl(straight / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert all(CONTRACT_TRAIN <= set(r) for r in train)
    assert all(CONTRACT_VAL <= set(r) for r in records if r["kind"] == "val")
    assert train[-1]["loss"] < train[0]["loss"] - 0.3, [r["loss"] for r in train]
    assert len(train[0]["loss_per_scale"]) == 6 and train[0]["tokens"] == 8 * 130
    assert train[-1]["flops"] == pytest.approx(8 * train[0]["flops"])
    final = json.loads((straight / "final.json").read_text())
    assert final["status"] == "completed" and final["step"] == 8
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step_00000004", "step_00000008"]
    assert (straight / "wandb").is_dir() and (straight / "config.yaml").is_file()

    from pretrain.train.export import load_model

    model, cfg, meta = load_model(straight / "model.pt")
    assert cfg.model.size == "d1" and meta["step"] == 8 and model.num_params() == final["params"]
    # train.snapshots=[0.5]: the weights of step 4, gathered from the ranks = the module of the step-4 checkpoint
    assert sorted(p.name for p in (straight / "snapshots").iterdir()) == ["step00000004.pt"]
    snap = torch.load(straight / "snapshots" / "step00000004.pt", weights_only=True)
    module = torch.load(next((straight / "checkpoints" / "step_00000004").rglob("mp_rank_00_model_states.pt")),
                        weights_only=False)["module"]
    assert snap["step"] == 4 and snap["tokens"] == 4 * 8 * 130 and snap["state_dict"].keys() == module.keys()
    assert all(torch.equal(snap["state_dict"][k], v.float()) for k, v in module.items())
    assert not torch.equal(snap["state_dict"]["head.weight"], model.state_dict()["head.weight"])

    common = [*base_overrides, *STRAIGHT_TRAIN]
    run_srdd(srdd_home, "train", [*common, "run_name=resumed", "train.stop_after=4"], ranks=2)
    assert not (srdd_home / "resumed" / "final.json").exists()
    run_srdd(srdd_home, "train", [*common, "run_name=resumed"], ranks=2)
    assert _losses(srdd_home / "resumed", "train") == _losses(straight, "train")
    assert _losses(srdd_home / "resumed", "val") == _losses(straight, "val")
    resumed_snap = torch.load(srdd_home / "resumed" / "snapshots" / "step00000004.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed_snap[k], v) for k, v in snap["state_dict"].items())

    refused = run_srdd(srdd_home, "train", [*common, "run_name=resumed", "model.size=d2", "model.mask=srdd"],
                       check=False)
    assert refused.returncode == 2
    assert "model.size: checkpoint 'd1' != config 'd2'" in refused.stderr
    assert "model.attn_window: checkpoint None != config 0" in refused.stderr


@pytest.mark.slow
def test_zero3_two_ranks_with_grad_accumulation_lowers_loss(srdd_home, base_overrides):
    run_srdd(srdd_home, "train", [*base_overrides, "train.zero_stage=3", "train.grad_accum=2", "train.max_steps=8",
                                  "train.val_every=0", "train.ckpt_every=100", "model.mask=srdd", "run_name=z3"],
             ranks=2)
    train = _losses(srdd_home / "z3", "train")
    assert len(train) == 8 and train[-1][1] < train[0][1] - 0.3, train
    val = _losses(srdd_home / "z3", "val")
    assert len(val) == 1 and val[0][1] < train[0][1]
    assert (srdd_home / "z3" / "checkpoints" / "step_00000008" / MARKER).is_file()
