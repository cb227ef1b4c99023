"""Scale distillation (`srdd distill`): a student on a shorter schedule learns from a full-schedule teacher.

SRDD (arXiv 2509.22636) reads VAR's scales as diffusion steps, so - as diffusion distillation
cuts steps - a student can sample on fewer scales (VAR's 1..16 ten-scale schedule -> 1,3,5,8,13,16:
524 tokens instead of 680, ~24% fewer FLOPs). Method, as built here:

1. Schedule. Default: keep every second scale of the teacher's schedule plus the last one
   (VAR's 10 scales -> 1,3,5,8,13,16; the embedded MNIST 1,2,3,4,6,8 -> 1,3,6,8); ``--patch-nums``
   sets any schedule ending at the teacher's final side.
2. Data. The tokenizer re-quantises each stored teacher pyramid at the student's patch_nums:
   f_hat = fhat_from_pyramid(teacher pyramid) is the latent the teacher pyramid encodes, and the
   residual quantiser (VAR Alg. 1) runs on it with the student schedule. No pixel round trip:
   the decoder/encoder pair would only add reconstruction error.
3. Initialisation and the teacher's positions. The student is the teacher's architecture built
   for the student schedule, with every weight copied. Only two tables depend on the schedule:
   the per-token absolute positions (``pos_1LC``, one pn x pn block per scale) and the per-scale
   level embedding (``lvl_embed``, one row per scale). Student scale j with side pn_j takes the
   block and level row of the teacher scale with the same side; a side the teacher lacks takes
   the teacher scale of the nearest side, its position block bicubically resized to pn_j x pn_j.
   The *teacher* is run at the student's states through exactly this mapping: a frozen copy of
   the teacher re-indexed to the student schedule (``remap_to_schedule``) is fed the student's
   teacher-forcing input (f_hat over student scales < j, area-downsampled to pn_j), with the
   student's attention mask layout (the teacher's ``attn_window``). Its logits on scale j are
   the teacher's distribution at the student's state.
4. Loss (per token, averaged over the student's L tokens):
   CE(student, re-quantised code; label smoothing ``train.label_smoothing``)
   + kl_weight * tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)).
5. Optimiser: the platform's DeepSpeed engine (pretrain.engine.build_engine) with ``train.*``.

Outputs in ``<SRDD_HOME>/<run_name>/``: ``model.pt`` (loadable by `srdd sample`), ``metrics.jsonl``
(``kind: distill`` training records, ``kind: val`` for student / teacher checks), ``distill.json``
(the quality check: student vs teacher loss and token accuracy) and ``config.yaml``.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.outputs import append_jsonl, atomic_write_json, run_dir, save_config

log = logging.getLogger("srdd.distill")
VAR_STUDENT = (1, 3, 5, 8, 13, 16)


def default_student_schedule(teacher_pns: Sequence[int]) -> tuple[int, ...]:
    """Every second scale of the teacher plus its last (VAR 10 scales -> 1,3,5,8,13,16)."""
    keep = list(teacher_pns[::2])
    if keep[-1] != teacher_pns[-1]:
        keep.append(teacher_pns[-1])
    return tuple(keep)


def check_schedule(student: Sequence[int], teacher: Sequence[int]) -> tuple[int, ...]:
    s = tuple(int(p) for p in student)
    if not s or list(s) != sorted(set(s)) or s[0] < 1:
        raise ConfigError(f"--patch-nums {list(s)}: must be strictly increasing positive ints")
    if s[0] != teacher[0] or s[-1] != teacher[-1]:
        raise ConfigError(f"--patch-nums {list(s)}: must start and end at the teacher's sides {teacher[0]} and {teacher[-1]} (same start token, same latent)")
    if len(s) >= len(teacher):
        raise ConfigError(f"--patch-nums {list(s)}: a student needs fewer scales than the teacher's {list(teacher)}")
    return s


def nearest_scale(pn: int, teacher_pns: Sequence[int]) -> int:
    """Teacher scale index whose side is closest to pn (the larger on a tie)."""
    return min(range(len(teacher_pns)), key=lambda k: (abs(teacher_pns[k] - pn), -teacher_pns[k]))


def remap_to_schedule(state_dict: dict[str, torch.Tensor], from_pns: Sequence[int], to_pns: Sequence[int]
                      ) -> dict[str, torch.Tensor]:
    """Re-index a transformer state dict's schedule-dependent tables (pos_1LC, lvl_embed) to ``to_pns``."""
    pos_1LC, lvl_KC = state_dict["pos_1LC"], state_dict["lvl_embed.weight"]
    C = pos_1LC.shape[-1]
    starts = [0]
    for p in from_pns:
        starts.append(starts[-1] + p * p)
    blocks, levels = [], []
    for pn in to_pns:
        k = nearest_scale(pn, from_pns)
        src = pos_1LC[0, starts[k]:starts[k + 1]]
        if from_pns[k] != pn:
            grid = src.T.reshape(1, C, from_pns[k], from_pns[k])
            src = F.interpolate(grid, size=(pn, pn), mode="bicubic", align_corners=False).reshape(C, pn * pn).T
        blocks.append(src)
        levels.append(lvl_KC[k])
    out = {k: v for k, v in state_dict.items() if k not in ("pos_1LC", "lvl_embed.weight")}
    out["pos_1LC"] = torch.cat(blocks).unsqueeze(0).contiguous()
    out["lvl_embed.weight"] = torch.stack(levels).contiguous()
    return out


def schedule_model(teacher: Any, patch_nums: Sequence[int]) -> Any:
    """A copy of ``teacher`` re-indexed to ``patch_nums`` (the student's init and the teacher's view)."""
    from pretrain.model.transformer import Transformer, infer_arch

    sd = remap_to_schedule(teacher.state_dict(), teacher.patch_nums, patch_nums)
    model = Transformer(patch_nums=tuple(patch_nums), attn_window=teacher.attn_window,
                        cond_drop=teacher.cond_drop_rate, **infer_arch(sd))
    # schedule-derived buffers (level ids, mask) are the new model's own; the mask is rebuilt on load
    own = model.state_dict()
    model.load_state_dict({k: sd[k] if k in sd and sd[k].shape == v.shape else v for k, v in own.items()})
    return model


@torch.no_grad()
def requantize(vae: Any, idx_list: Sequence[torch.Tensor], teacher_pns: Sequence[int], student_pns: Sequence[int]
               ) -> list[torch.Tensor]:
    """The teacher pyramid's latent, residual-quantised again on the student schedule."""
    f_hat = vae.fhat_from_pyramid(idx_list, patch_nums=teacher_pns)
    idx, _, _ = vae.quantize.quantize(f_hat, tuple(student_pns), with_fhat=False)
    return idx


def distill_loss(student_logits_BLV: torch.Tensor, teacher_logits_BLV: torch.Tensor, target_BL: torch.Tensor,
                 kl_weight: float, tau: float, label_smoothing: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CE to the re-quantised codes + kl_weight * tau^2 * KL(teacher || student), mean over tokens."""
    V = student_logits_BLV.shape[-1]
    ce = F.cross_entropy(student_logits_BLV.reshape(-1, V), target_BL.reshape(-1), label_smoothing=label_smoothing)
    log_s = F.log_softmax(student_logits_BLV.reshape(-1, V) / tau, -1)
    log_t = F.log_softmax(teacher_logits_BLV.reshape(-1, V).float() / tau, -1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * tau * tau
    acc = (student_logits_BLV.argmax(-1) == target_BL).float().mean()
    return ce + kl_weight * kl, {"ce": float(ce.detach()), "kl": float(kl.detach()), "acc": float(acc)}


@torch.no_grad()
def token_metrics(model: Any, vae: Any, batches: Sequence[tuple[torch.Tensor, list[torch.Tensor]]]) -> dict[str, float]:
    """Teacher-forced CE and token accuracy of ``model`` on pyramids of its own schedule."""
    model.eval()
    ce = acc = n = 0.0
    for label_B, idx_list in batches:
        logits = model(label_B, vae.pyramid_to_var_input(idx_list, model.patch_nums))
        target = torch.cat(idx_list, 1)
        ce += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
        acc += float((logits.argmax(-1) == target).sum())
        n += target.numel()
    return {"loss": ce / n, "acc": acc / n}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="RUN", help="trained full-schedule run (directory or name)")
    parser.add_argument("--patch-nums", default=None, help="student schedule, e.g. 1,3,5,8,13,16 (default: every second scale + last)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default train.max_steps)")
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--tau", type=float, default=1.0, help="softmax temperature of the KL term")
    parser.add_argument("--val-batches", type=int, default=4)


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    from data_pipeline.pyramid_shards.loader import PyramidLoader

    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine
    from pretrain.tokenizer import default_tokenizer_path, tokenizer_hash
    from pretrain.train.export import save_model
    from pretrain.sampling.load import load_for_sampling

    info = init_distributed()
    teacher, vae, teacher_run, teacher_cfg = load_for_sampling(args.teacher)
    # The student is the teacher's network on a shorter schedule: its model.pt must say so,
    # whatever model.* / tokenizer.* this command was given.
    cfg.model, cfg.tokenizer, cfg.pyramid = teacher_cfg.model, teacher_cfg.tokenizer, teacher_cfg.pyramid
    t_pns = tuple(teacher.patch_nums)
    s_pns = check_schedule([int(p) for p in args.patch_nums.split(",")] if args.patch_nums else default_student_schedule(t_pns), t_pns)
    if args.kl_weight < 0 or args.tau <= 0:
        raise ConfigError("--kl-weight must be >= 0 and --tau > 0")
    steps = args.steps or cfg.train.max_steps
    out = run_dir(cfg)
    if out.resolve() == teacher_run.resolve():
        raise ConfigError(f"run_name={cfg.run_name} is the teacher's run: pick a new run_name for the student")
    save_config(cfg, out)
    teacher_view = schedule_model(teacher, s_pns).eval().requires_grad_(False)
    student = schedule_model(teacher, s_pns).train()

    val = []
    for label_B, idx_list in PyramidLoader(cfg, split="val", batch_size=cfg.train.batch_size, infinite=False):
        val.append((label_B, idx_list))
        if len(val) == args.val_batches:
            break
    with torch.no_grad():
        s_val = [(lab, requantize(vae, idx, t_pns, s_pns)) for lab, idx in val]
    before = {"student": token_metrics(student, vae, s_val), "teacher_at_student_states": token_metrics(teacher_view, vae, s_val),
              "teacher_own_schedule": token_metrics(teacher, vae, val)}
    append_jsonl(out / "metrics.jsonl", {"kind": "val", "step": 0, **{f"{k}_{m}": v for k, d in before.items() for m, v in d.items()}})

    engine = build_engine(student, cfg.train, steps, info.world_size)
    loader = PyramidLoader(cfg, split="train", batch_size=cfg.train.batch_size // info.world_size,
                           rank=info.rank, world_size=info.world_size, seed=cfg.seed, infinite=True)
    t0 = time.time()
    for step, (label_B, idx_list) in zip(range(1, steps + 1), loader):
        with torch.no_grad():  # data and teacher: no gradients
            s_idx = requantize(vae, idx_list, t_pns, s_pns)
            x_BLCv = vae.pyramid_to_var_input(s_idx, s_pns)
            t_logits = teacher_view(label_B, x_BLCv)
        loss, parts = distill_loss(engine(label_B, x_BLCv), t_logits, torch.cat(s_idx, 1), args.kl_weight, args.tau,
                                   cfg.train.label_smoothing)
        engine.backward(loss)
        engine.step()
        if info.is_main and (step % cfg.train.log_every == 0 or step == steps):
            append_jsonl(out / "metrics.jsonl", {"kind": "distill", "step": step, "loss": loss.item(), **parts,
                                                 "lr": engine.get_lr()[0], "time_s": time.time() - t0})
    after = {"student": token_metrics(student, vae, s_val), **{k: v for k, v in before.items() if k != "student"}}
    if info.is_main:
        append_jsonl(out / "metrics.jsonl", {"kind": "val", "step": steps, **{f"{k}_{m}": v for k, d in after.items() for m, v in d.items()}})
        cfg.tokenizer.patch_nums = list(s_pns)  # the student's schedule: what load_model builds it with
        save_model(out / "model.pt", student.state_dict(), cfg, step=steps, tokens=steps * cfg.train.batch_size * student.L,
                   tokenizer_hash=tokenizer_hash(default_tokenizer_path(cfg)))
        report = {"teacher": str(teacher_run), "teacher_patch_nums": list(t_pns), "student_patch_nums": list(s_pns),
                  "steps": steps, "kl_weight": args.kl_weight, "tau": args.tau, "before": before, "after": after}
        atomic_write_json(out / "distill.json", report)
        print(f"student {list(s_pns)} vs teacher {list(t_pns)} (val, teacher-forced):")
        for name, d in (("student before", before["student"]), ("student after", after["student"]),
                        ("teacher at student states", before["teacher_at_student_states"]),
                        ("teacher on own schedule", before["teacher_own_schedule"])):
            print(f"  {name:28s} loss {d['loss']:.4f}  acc {d['acc']:.4f}")
    return 0

