"""Resuming a checkpoint on another number of ranks (docs/training.md, "Elastic resume").

A checkpoint written by W ranks is resumed by W' != W ranks (a job requeued onto fewer nodes, a
run moved to a larger allocation), with the same global batch (``train.batch_size`` stays frozen;
the micro-batch becomes batch / (W' * grad_accum)):

- Engines: an optimizer state that DeepSpeed partitioned across the ranks (ZeRO 1-3, and bf16 at
  stage 0, whose optimizer shards the fp32 master weights) holds W per-rank flat shards that
  only W ranks can read. It is converted once, by rank 0, into DeepSpeed's universal checkpoint
  format (``deepspeed.checkpoint.ds_to_universal``: per parameter, the fp32 weight and each Adam
  moment as a whole tensor) in ``<checkpoint>/universal/``, then every rank loads its new
  partition from there (``load_universal``). An unpartitioned state (ZeRO 0, fp32) loads as it is.
- The other ranks wait for the conversion on the shared filesystem (``universal/complete``), not
  in a collective: converting a large model can outlast a collective's timeout.
- Per-rank state is merged by the task (``Task.resized_state``); RNG streams are derived anew
  from the saved rank-0 state and the new rank (``reseed``).

``gathered_state`` (a collective) returns the full fp32 weights, Adam moments, step counts and
hyper-parameters of an engine, and the weights the module computes with, independent of the
partitioning: what a resume must carry over.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pretrain.dist import DistInfo
from pretrain.outputs import atomic_write_text
from pretrain.train.export import consolidated_state_dict

log = logging.getLogger("srdd.train")

UNIVERSAL = "universal"
DONE = "complete"
FAILED = "failed"
CONVERSION_TIMEOUT_S = 6 * 3600.0


def partitioned(ds_dir: Path) -> bool:
    """Whether DeepSpeed wrote this engine's optimizer state as per-rank shards (``*optim_states.pt``)."""
    return any(Path(ds_dir).glob("*optim_states.pt"))


def _convert(ckpt: Path, tags: list[str]) -> None:
    """``ds_to_universal`` of every tag into ``<ckpt>/universal/<tag>``, atomically (temp dir + rename)."""
    from deepspeed.checkpoint import ds_to_universal

    tmp = ckpt / f".{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for tag in tags:
        args = argparse.Namespace(input_folder=str(ckpt / tag), output_folder=str(tmp / tag), num_extract_workers=1,
                                  num_merge_workers=1, keep_temp_folder=False, strict=True,
                                  inject_missing_state=True)  # our engines save no universal-checkpoint info
        with contextlib.redirect_stdout(io.StringIO()) as out:  # the converter prints a progress report
            ds_to_universal.main(args)
        log.debug("ds_to_universal %s: %s", tag, out.getvalue())
    atomic_write_text(tmp / DONE, " ".join(tags) + "\n")
    tmp.rename(ckpt / UNIVERSAL)


def ensure_universal(ckpt: Path, tags: list[str], info: DistInfo, timeout_s: float = CONVERSION_TIMEOUT_S) -> Path:
    """``<ckpt>/universal`` holding every tag in the universal format: converted by rank 0 unless a
    previous resize already did; the other ranks wait for its completion marker."""
    out = ckpt / UNIVERSAL
    failed = ckpt / f".{UNIVERSAL}.{FAILED}"
    if info.is_main:
        failed.unlink(missing_ok=True)  # a failed earlier attempt's note
    if dist.is_initialized():
        dist.barrier()  # no rank reads that note before it is gone
    if info.is_main and not (out / DONE).is_file():
        t0 = time.perf_counter()
        try:
            _convert(ckpt, tags)
        except BaseException as err:
            atomic_write_text(failed, f"{type(err).__name__}: {err}\n")
            raise
        log.info("converted %s to DeepSpeed's universal format for a new world size (%.1f s)", ckpt.name,
                 time.perf_counter() - t0)
    deadline = time.monotonic() + timeout_s
    while not (out / DONE).is_file():
        if failed.is_file():
            raise RuntimeError(f"rank 0 could not convert {ckpt} to the universal format: {failed.read_text().strip()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no universal checkpoint in {out} after {timeout_s:.0f} s")
        time.sleep(0.5)
    return out


def load_universal(engine: Any, root: Path, tag: str) -> None:
    """Load ``<root>/<tag>`` (universal format) into ``engine``, partitioned for the current ranks."""
    config = engine._config  # DeepSpeed reads this flag at load time only; set it for this load
    config.load_universal_checkpoint = True
    try:
        load_path, _ = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
    finally:
        config.load_universal_checkpoint = False
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the universal checkpoint {root / tag}")
    if engine.zero_optimization_stage() == 3:
        _repair_zero3_universal_load(engine, root / tag)


def _repair_zero3_universal_load(engine: Any, universal: Path) -> None:
    """Two faults of DeepSpeed 0.19's ZeRO-3 universal load with more than one parameter group:
    every group gets the first group's hyper-parameters (the no-decay group would get weight
    decay), and every group's Adam state gets the same ``step`` tensor object, which torch's Adam
    then increments once per group and step (wrong bias correction from the first step on)."""
    saved = torch.load(universal / "zero" / "optimizer_state.pt", weights_only=False)
    groups = saved["optimizer_state_dict"]["param_groups"]
    base = engine.optimizer.optimizer
    if len(groups) != len(base.param_groups):
        raise RuntimeError(f"{universal}: {len(groups)} saved parameter groups, the optimizer has {len(base.param_groups)}")
    for group, saved_group in zip(base.param_groups, groups):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    for state in base.state.values():  # one per flat fp32 partition (ZeRO-3 fills group params only in step)
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def reseed(saved_rng: dict[str, Any], rank: int) -> None:
    """Seed python/numpy/torch of ``rank`` from the saved rank-0 torch generator: deterministic for
    a given checkpoint and rank, different across ranks (their old streams do not map onto new ranks)."""
    digest = hashlib.sha256(saved_rng["torch"].numpy().tobytes() + f"/rank{rank}".encode()).digest()
    seed = int.from_bytes(digest[:8], "little")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _base_optimizer(engine: Any) -> Any:
    """The torch optimizer that holds the Adam state (inside DeepSpeed's ZeRO/bf16 wrappers, if any)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def gathered_state(engine: Any) -> dict[str, Any]:
    """Full fp32 weights and Adam moments per parameter name, the optimizer step counts, group
    hyper-parameters and lr-scheduler position: the same whatever the partitioning (a collective
    under ZeRO: every rank calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    base = _base_optimizer(engine)
    if getattr(engine.optimizer, "_hp_optimizer_states_linked", False):
        # DeepSpeed's ZeRO-1/2 and bf16 optimizers link each parameter to its Adam-state fragment
        # once, right after the first group's first step, when later groups have no state yet:
        # link again so that every group's moments are reachable.
        engine.optimizer._hp_optimizer_states_linked = False
        engine.optimizer._lazy_init_hp_params_optimizer_state()
    params: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in engine.module.named_parameters():
        fp32 = safe_get_full_fp32_param(p)
        if fp32 is None:  # unpartitioned (ZeRO 0, fp32): the parameter is its own master copy
            params[name] = {"fp32": p.detach().float().clone(),
                            **{k: base.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq") if k in base.state[p]}}
            continue
        params[name] = {"fp32": fp32.detach().cpu().clone(),
                        **{k: safe_get_full_optimizer_state(p, k).detach().cpu().clone() for k in ("exp_avg", "exp_avg_sq")}}
    steps = [float(state["step"]) for state in base.state.values() if "step" in state]  # one per flat partition
    groups = [{k: v for k, v in g.items() if k != "params"} for g in base.param_groups]
    scheduler = engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else {}
    return {"params": params, "module": consolidated_state_dict(engine), "steps": steps, "groups": groups,
            "scheduler_last_epoch": scheduler.get("last_epoch")}
