"""Training numerics on real DeepSpeed engines: bf16 keeps fp32 master weights and tracks fp32's
loss over 200 demo steps; a DeepSpeed checkpoint written under one attention path resumes under
the other; ``train.compile=true`` equals eager (docs/performance.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.outputs import read_jsonl

# bf16 vs fp32 over 200 demo steps (d1, batch 8): every logged train loss within this fraction of
# fp32's (observed on the 2-core CPU: at most 2.4%, while the loss falls from 6.1 to 1.35 nats).
BF16_LOSS_REL_TOL = 0.04


def d1_engine(overrides: list[str], seed: int = 0):
    from pretrain.engine import build_engine
    from pretrain.model import build_model

    cfg = load_config(overrides=["model.size=d1", "model.cond_drop=0", "train.batch_size=4", "train.lr_peak=1e-3",
                                 "train.warmup_frac=0", *overrides])
    tok = cfg.tokenizer
    torch.manual_seed(seed)
    model = build_model(cfg.model, tok.vocab_size, tok.z_channels, tok.patch_nums)
    return build_engine(model, cfg.train, 10, 1), cfg


def fixed_batches(cfg, n: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    tok, g = cfg.tokenizer, torch.Generator().manual_seed(0)
    L = sum(p * p for p in tok.patch_nums)
    return [(torch.randint(0, cfg.model.num_classes, (4,), generator=g), torch.randn(4, L - 1, tok.z_channels, generator=g),
             torch.randint(0, tok.vocab_size, (4, L), generator=g)) for _ in range(n)]


def train_steps(engine, batches) -> list[float]:
    from pretrain.pyramid.heads import token_losses

    losses = []
    for label_B, x_BLCv, target_BL in batches:
        objective, _, _ = token_losses(engine(label_B, x_BLCv), target_BL, 0.1)
        engine.backward(objective)
        engine.step()
        losses.append(objective.item())
    return losses


def test_bf16_engine_computes_in_bf16_over_fp32_master_weights(single_rank):
    engine, cfg = d1_engine(["train.precision=bf16"])
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    master = [p for group in engine.optimizer.optimizer.param_groups for p in group["params"]]
    assert master and {p.dtype for p in master} == {torch.float32}
    label_B, x_BLCv, _ = fixed_batches(cfg, 1)[0]
    assert engine(label_B, x_BLCv).dtype == torch.float32  # logits (and so the loss) in fp32
    before = torch.cat([p.detach().flatten().clone() for p in master])
    train_steps(engine, fixed_batches(cfg, 2))
    assert not torch.equal(before, torch.cat([p.detach().flatten() for p in master]))


def test_deepspeed_checkpoint_resumes_under_the_other_attention_path(single_rank, tmp_path):
    """Written with attn_impl=dense, loaded into a differently initialised attn_impl=auto engine:
    the same weights and optimizer state, so the next steps' losses match the dense run's."""
    dense, cfg = d1_engine(["model.attn_impl=dense"])
    batches = fixed_batches(cfg, 4)
    train_steps(dense, batches[:2])
    dense.save_checkpoint(str(tmp_path), tag="step2")
    auto, _ = d1_engine(["model.attn_impl=auto"], seed=1)
    assert auto.module.attn_impl == "auto"
    auto.load_checkpoint(str(tmp_path), tag="step2")
    for (name, a), b in zip(auto.module.named_parameters(), dense.module.parameters()):
        assert torch.equal(a, b), name
    torch.testing.assert_close(train_steps(auto, batches[2:]), train_steps(dense, batches[2:]), rtol=1e-5, atol=0)


@pytest.mark.slow
def test_compiled_model_equals_eager(single_rank):
    """``train.compile=true``: forward, loss and the updated weights equal the eager engine's."""
    eager, cfg = d1_engine([])
    compiled, _ = d1_engine(["train.compile=true"])
    assert compiled.module._compiled_call_impl is not None and eager.module._compiled_call_impl is None
    assert compiled.module.state_dict().keys() == eager.module.state_dict().keys()  # checkpoints unchanged
    batches = fixed_batches(cfg, 2)
    torch.testing.assert_close(train_steps(compiled, batches), train_steps(eager, batches), rtol=1e-5, atol=0)
    for (name, a), b in zip(compiled.module.named_parameters(), eager.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_bf16_loss_tracks_fp32_over_200_demo_steps(srdd_home, pyramid_shards, tiny_tokenizer_ckpt):
    """``srdd train`` on the demo's MNIST pyramids, d1, 200 steps, fp32 and bf16 side by side."""
    common = [f"tokenizer.ckpt={tiny_tokenizer_ckpt}", f"data.pyramids_dir={pyramid_shards}", "model.size=d1",
              "train.batch_size=8", "train.lr_peak=3e-3", "train.warmup_frac=0.1", "train.max_steps=200",
              "train.log_every=10", "train.val_every=0", "train.val_batches=1", "train.ckpt_every=200",
              "train.num_workers=0", "train.wandb=disabled", "train.export_model=false"]
    env = {**os.environ, "SRDD_HOME": str(srdd_home), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    procs = {p: subprocess.Popen([sys.executable, "-m", "pretrain.cli", "train", *common, f"train.precision={p}",
                                  f"run_name={p}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for p in ("fp32", "bf16")}
    for p, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{p}: {err[-3000:]}"
    loss = {p: [r["loss"] for r in read_jsonl(Path(srdd_home) / p / "metrics.jsonl") if r["kind"] == "train"]
            for p in procs}
    assert len(loss["fp32"]) == len(loss["bf16"]) == 20
    assert loss["fp32"][-1] < loss["fp32"][0] - 2.0  # it learned (6.1 -> ~1.4 nats)
    rel = [abs(b - a) / a for a, b in zip(loss["fp32"], loss["bf16"])]
    assert max(rel) <= BF16_LOSS_REL_TOL, json.dumps({"fp32": loss["fp32"], "bf16": loss["bf16"]})
    final = {p: json.loads((Path(srdd_home) / p / "final.json").read_text()) for p in procs}
    assert final["bf16"]["flops_executed"] == final["fp32"]["flops_executed"] > 0
