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
5. Optimiser: the platform's DeepSpeed engine (pretrain.engine.build_engine) with ``train.*``
   (``train.batch_size`` global, ``train.grad_accum`` micro-batches per step), trained on the
   harness (pretrain/train/trainer.py: NaN guard, checkpoints, exact resume, preemption).

Outputs in ``<SRDD_HOME>/<run_name>/``: ``model.pt`` (loadable by `srdd sample`; consolidated fp32
weights, also under ZeRO-3), ``metrics.jsonl`` (``kind: distill`` training records, ``kind: val``
for student / teacher checks), ``distill.json`` (the quality check: student vs teacher loss and
token accuracy), ``checkpoints/`` (a rerun resumes) and ``config.yaml``.
"""
from __future__ import annotations

import argparse
import copy
import logging
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo, init_distributed
from pretrain.outputs import atomic_write_json, run_dir, save_config
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

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
    return vae.requantize(f_hat, len(student_pns), student_pns)


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
    """Teacher-forced CE and token accuracy of ``model`` on pyramids of its own schedule (in eval
    mode; the module is handed back in the mode it came in)."""
    was_training = model.training
    model.eval()
    ce = acc = n = 0.0
    for label_B, idx_list in batches:
        logits = model(label_B, vae.pyramid_to_var_input(idx_list, model.patch_nums))
        target = torch.cat(idx_list, 1)
        ce += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
        acc += float((logits.argmax(-1) == target).sum())
        n += target.numel()
    model.train(was_training)
    return {"loss": ce / n, "acc": acc / n}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="RUN", help="trained full-schedule run (directory or name)")
    parser.add_argument("--patch-nums", default=None, help="student schedule, e.g. 1,3,5,8,13,16 (default: every second scale + last)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default train.max_steps)")
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--tau", type=float, default=1.0, help="softmax temperature of the KL term")
    parser.add_argument("--val-batches", type=int, default=4)


def flat_metrics(step: int, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A ``val`` record: {"student": {"loss": x}} -> {"student_loss": x}."""
    return {"kind": "val", "step": step, **{f"{k}_{m}": v for k, d in metrics.items() for m, v in d.items()}}


class DistillTask(TaskDefaults):
    """`srdd distill` on the harness: the student (engine ``model``) learns from a frozen teacher view."""

    kind = "distill"

    def __init__(self, cfg: SRDDConfig, args: argparse.Namespace, info: DistInfo):
        from pretrain.sampling.load import load_for_sampling

        self.args, self.info = args, info
        self.teacher, self.vae, self.teacher_run, teacher_cfg = load_for_sampling(args.teacher)
        # The student is the teacher's network on a shorter schedule: its model.pt must say so,
        # whatever model.* / tokenizer.* this command was given.
        cfg.model, cfg.tokenizer, cfg.pyramid = teacher_cfg.model, teacher_cfg.tokenizer, teacher_cfg.pyramid
        self.cfg = cfg
        self.t_pns = tuple(self.teacher.patch_nums)
        self.s_pns = check_schedule([int(p) for p in args.patch_nums.split(",")] if args.patch_nums
                                    else default_student_schedule(self.t_pns), self.t_pns)
        if args.kl_weight < 0 or args.tau <= 0:
            raise ConfigError("--kl-weight must be >= 0 and --tau > 0")
        self.run = run_dir(cfg)
        if self.run.resolve() == self.teacher_run.resolve():
            raise ConfigError(f"run_name={cfg.run_name} is the teacher's run: pick a new run_name for the student")
        self.outputs = (self.run / "model.pt", self.run / "distill.json")
        self.schedule = Schedule.from_train(cfg.train, args.steps or cfg.train.max_steps, val_every=0)
        self.micro_batch = cfg.train.batch_size // (info.world_size * cfg.train.grad_accum)
        self.engines: dict[str, Any] = {}
        self.before: dict[str, dict[str, float]] = {}
        self.window = WindowMeans()

    def frozen(self) -> dict[str, Any]:
        t = self.cfg.train
        return {"teacher": str(self.teacher_run.resolve()), "student_patch_nums": list(self.s_pns),
                "train.batch_size": t.batch_size, "train.zero_stage": t.zero_stage, "train.precision": t.precision,
                "world_size": self.info.world_size}

    def setup(self) -> None:
        from data_pipeline.pyramid_shards.loader import PyramidLoader

        from pretrain.engine import build_engine

        cfg, info = self.cfg, self.info
        if info.is_main:
            save_config(cfg, self.run)
        self.teacher_view = schedule_model(self.teacher, self.s_pns).eval().requires_grad_(False)
        student = schedule_model(self.teacher, self.s_pns).train()
        self.engines = {"model": build_engine(student, cfg.train, self.schedule.total_steps, info.world_size)}
        torch.manual_seed(cfg.seed * 1000 + info.rank)  # class dropout differs per rank, replays on resume
        self.val = []
        for label_B, idx_list in PyramidLoader(cfg, split="val", batch_size=cfg.train.batch_size, infinite=False):
            self.val.append((label_B, idx_list))
            if len(self.val) == self.args.val_batches:
                break
        with torch.no_grad():
            self.s_val = [(lab, requantize(self.vae, idx, self.t_pns, self.s_pns)) for lab, idx in self.val]
        self.loader = PyramidLoader(cfg, split="train", batch_size=self.micro_batch, rank=info.rank,
                                    world_size=info.world_size, seed=cfg.seed, infinite=True)

    def begin(self, progress: Progress, log: Log) -> None:
        if progress.step == 0:  # the untrained student: the "before" of distill.json
            student = self.engines["model"].module
            self.before = {"student": token_metrics(student, self.vae, self.s_val),
                           "teacher_at_student_states": token_metrics(self.teacher_view, self.vae, self.s_val),
                           "teacher_own_schedule": token_metrics(self.teacher, self.vae, self.val)}
            log(flat_metrics(0, self.before))

    def batches(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        return iter(self.loader)

    def loss(self, batch: tuple[torch.Tensor, list[torch.Tensor]]) -> StepLoss:
        label_B, idx_list = batch
        with torch.no_grad():  # data and teacher: no gradients
            s_idx = requantize(self.vae, idx_list, self.t_pns, self.s_pns)
            x_BLCv = self.vae.pyramid_to_var_input(s_idx, self.s_pns)
            t_logits = self.teacher_view(label_B, x_BLCv)
        loss, parts = distill_loss(self.engines["model"](label_B, x_BLCv), t_logits, torch.cat(s_idx, 1),
                                   self.args.kl_weight, self.args.tau, self.cfg.train.label_smoothing)
        return StepLoss({"model": loss}, parts)

    def accumulate(self, out: StepLoss) -> None:
        self.window.add({"loss": out.objectives["model"].detach(), **out.metrics})

    def record(self, window: Window) -> dict[str, Any]:
        return self.window.pop()  # means over the micro-batches since the previous record

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict(), "window": self.window.state_dict(), "before": self.before}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        self.window.load_state_dict(state["window"])
        self.before = state["before"]

    def finish(self, progress: Progress, log: Log) -> None:
        from pretrain.tokenizer import default_tokenizer_path, tokenizer_hash
        from pretrain.train.export import save_model

        steps, student = progress.step, self.engines["model"].module
        after = {"student": token_metrics(student, self.vae, self.s_val),
                 **{k: v for k, v in self.before.items() if k != "student"}}
        log(flat_metrics(steps, after))
        state_dict = consolidated_state_dict(self.engines["model"])  # whole under ZeRO-3 too
        if not self.info.is_main:
            return
        student_cfg = copy.deepcopy(self.cfg)
        student_cfg.tokenizer.patch_nums = list(self.s_pns)  # the student's schedule: what load_model builds it with
        save_model(self.outputs[0], state_dict, student_cfg, step=steps,
                   tokens=steps * self.cfg.train.batch_size * student.L,
                   tokenizer_hash=tokenizer_hash(default_tokenizer_path(self.cfg)))
        before, t_pns, s_pns = self.before, list(self.t_pns), list(self.s_pns)
        report = {"teacher": str(self.teacher_run), "teacher_patch_nums": t_pns, "student_patch_nums": s_pns,
                  "steps": steps, "kl_weight": self.args.kl_weight, "tau": self.args.tau, "before": before,
                  "after": after}
        atomic_write_json(self.outputs[1], report)
        print(f"student {s_pns} vs teacher {t_pns} (val, teacher-forced):")
        for name, d in (("student before", before["student"]), ("student after", after["student"]),
                        ("teacher at student states", before["teacher_at_student_states"]),
                        ("teacher on own schedule", before["teacher_own_schedule"])):
            print(f"  {name:28s} loss {d['loss']:.4f}  acc {d['acc']:.4f}")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    info = init_distributed()
    task = DistillTask(cfg, args, info)
    Trainer(task, task.run, info, run_name=cfg.run_name,
            config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    return 0
