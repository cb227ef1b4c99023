"""`srdd distill`: trajectory distillation of a full-schedule teacher onto a shorter schedule, and its
data-only control (docs/sampling.md, "Scale distillation").

SRDD (arXiv 2509.22636) reads VAR's scales as diffusion steps, so - as diffusion distillation
cuts steps - a student can sample on fewer scales (VAR's 1..16 ten-scale schedule -> 1,3,5,8,13,16:
524 tokens instead of 680). Method, as built here:

1. Schedule (pretrain/distill/schedule.py). Default: every second scale of the teacher plus the
   last (VAR 10 scales -> 1,3,5,8,13,16; MNIST 1,2,3,4,6,8 -> 1,3,6,8); ``--patch-nums`` sets any
   schedule that starts and ends at the teacher's sides.
2. Teacher samples (pretrain/distill/teacher_samples.py): the teacher samples ``--teacher-samples``
   images on its own schedule with this command's ``sample.*`` settings (its guidance and
   truncation as configured), once, into resumable pyramid shards.
3. Targets and loss (pretrain/distill/targets.py): each teacher sample's latent is
   residual-quantised on the student schedule, keeping the teacher's codes on the scales where the
   student's state is the teacher's; loss = CE to those codes + ``--kl-weight`` x KL to the
   teacher's per-scale distribution on those scales.
4. Student: the teacher's weights re-indexed to the student schedule (the ``reindexed`` baseline),
   trained with no class dropout: its targets already carry the teacher's guidance and
   truncation, so it samples plainly (``sample.cfg=0``, no top-k/top-p, temperature 1: saved in
   its config.yaml and model.pt, and what `srdd distill-study` samples it with).

``--data-only`` is the control: the same architecture on the same student schedule, initialised
from scratch and trained on the data pyramids re-quantised on that schedule (no teacher codes,
no KL), keeping class dropout and sampling with the configured guidance like the teacher;
``--flops F`` sets its steps so that its training FLOPs match F (the teacher's training plus
the distillation's, from the distilled run's distill.json).

Both train on the harness (pretrain/train/trainer.py: NaN guard, checkpoints, exact resume,
preemption, ZeRO-3 consolidated export) with the platform's DeepSpeed engine and ``train.*``.
Outputs in ``<SRDD_HOME>/<run_name>/``: ``model.pt`` (the student on its schedule, loadable by
`srdd sample`), ``distill.json`` (mode, schedules, shared prefix, teacher-forced CE/accuracy of
the student before/after and of the teacher on its own schedule, and the FLOPs ledger),
``metrics.jsonl`` (``distill`` records: loss, ce, kl, acc; ``val`` at step 0 and the end),
``checkpoints/`` and ``config.yaml``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pretrain.config import SRDDConfig
from pretrain.config.fields import ConfigError
from pretrain.dist import DistInfo, init_distributed
from pretrain.distill.schedule import check_schedule, default_student_schedule, schedule_model, shared_prefix
from pretrain.distill.targets import distill_loss, requantize, teacher_prefix_probs
from pretrain.outputs import atomic_write_json, run_dir, save_config
from pretrain.train.export import consolidated_state_dict
from pretrain.train.task import Log, Progress, Schedule, StepLoss, TaskDefaults, Window, WindowMeans
from pretrain.train.trainer import Trainer

log = logging.getLogger("srdd.distill")
PLAIN_SAMPLER = {"cfg": 0.0, "top_k": 0, "top_p": 0.0, "temperature": 1.0}  # what the distilled student samples with


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
    parser.add_argument("--teacher-samples", type=int, default=2000, help="teacher samples to distill from (train split; a tenth more are held out)")
    parser.add_argument("--samples-dir", default=None, help="teacher-sample shards (default <teacher>/teacher_samples/n<N>-<hash>)")
    parser.add_argument("--data-only", action="store_true", help="the control: the student schedule from scratch on data, no teacher")
    parser.add_argument("--flops", type=float, default=None, help="training FLOPs budget; sets the steps (for the data-only control)")


def flat_metrics(step: int, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A ``val`` record: {"student": {"loss": x}} -> {"student_loss": x}."""
    return {"kind": "val", "step": step, **{f"{k}_{m}": v for k, d in metrics.items() for m, v in d.items()}}


def read_flops(run: Path) -> dict[str, Any]:
    """The FLOPs ledger of a distilled or data-only run (its distill.json)."""
    path = run / "distill.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no distill.json (the run has not finished `srdd distill`)")
    return json.loads(path.read_text())["flops"]


class DistillTask(TaskDefaults):
    """`srdd distill` on the harness: the student (engine ``model``) learns from the teacher's samples
    (or, with ``--data-only``, from data)."""

    kind = "distill"

    def __init__(self, cfg: SRDDConfig, args: argparse.Namespace, info: DistInfo):
        from pretrain.model.flops import forward_flops_per_sample, train_flops_per_sample
        from pretrain.sampling.load import load_for_sampling
        from pretrain.sampling.sampler import guidance_weights

        self.args, self.info = args, info
        self.mode = "data_only" if args.data_only else "distilled"
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
        if args.teacher_samples < 1:
            raise ConfigError(f"--teacher-samples {args.teacher_samples}: need at least 1")
        self.run = run_dir(cfg)
        if self.run.resolve() == self.teacher_run.resolve():
            raise ConfigError(f"run_name={cfg.run_name} is the teacher's run: pick a new run_name for the student")
        self.prefix = 0 if args.data_only else shared_prefix(self.vae, self.t_pns, self.s_pns)
        self.student = self.build_student()
        self.flops_per_sample = train_flops_per_sample(self.student)
        # the KL's teacher passes over the prefix scales (doubled when guidance is on there, as in teacher_prefix_probs)
        rows = 2 if any(guidance_weights(cfg.sample.cfg, len(self.t_pns), cfg.sample.cfg_schedule)[:self.prefix]) else 1
        self.kl_flops_per_sample = (rows * forward_flops_per_sample(self.teacher, patch_nums=self.t_pns[:self.prefix])
                                    if self.prefix and args.kl_weight > 0 else 0)
        self.outputs = (self.run / "model.pt", self.run / "distill.json")
        self.schedule = Schedule.from_train(cfg.train, self.total_steps(), val_every=0)
        self.micro_batch = cfg.train.batch_size // (info.world_size * cfg.train.grad_accum)
        self.engines: dict[str, Any] = {}
        self.before: dict[str, dict[str, float]] = {}
        self.window = WindowMeans()

    def build_student(self) -> Any:
        """The teacher re-indexed to the student schedule (distilled; no class dropout: module
        docstring), or a fresh seeded init of the same architecture (data-only)."""
        if self.mode == "distilled":
            student = schedule_model(self.teacher, self.s_pns)
            student.cond_drop_rate = 0.0
            return student.train()
        from pretrain.model import build_model

        torch.manual_seed(self.cfg.seed)  # identical init on every rank
        return build_model(self.cfg.model, self.vae.vocab_size, self.vae.Cvae, self.s_pns).train()

    def total_steps(self) -> int:
        if self.args.flops is not None:
            if self.args.steps is not None:
                raise ConfigError("--flops and --steps both set the step count; give one")
            return max(1, math.ceil(self.args.flops / (self.cfg.train.batch_size * self.flops_per_sample)))
        return self.args.steps or self.cfg.train.max_steps

    def frozen(self) -> dict[str, Any]:
        t = self.cfg.train
        return {"teacher": str(self.teacher_run.resolve()), "student_patch_nums": list(self.s_pns), "mode": self.mode,
                "teacher_samples": self.args.teacher_samples, "train.batch_size": t.batch_size,
                "train.zero_stage": t.zero_stage, "train.precision": t.precision, "world_size": self.info.world_size}

    def targets_dir(self) -> Path:
        """Where the training pyramids come from: the teacher's samples (generated here when missing) or the data's."""
        from data_pipeline import pyramids_dir
        from pretrain.distill.teacher_samples import ensure_teacher_samples
        from pretrain.tokenizer import default_tokenizer_path, tokenizer_hash

        if self.mode == "data_only":
            return pyramids_dir(self.cfg)
        return ensure_teacher_samples(self.teacher, self.vae, self.teacher_run,
                                      tokenizer_hash(default_tokenizer_path(self.cfg)), self.cfg.sample,
                                      self.args.teacher_samples, self.args.samples_dir, self.info.rank,
                                      self.info.world_size)

    def setup(self) -> None:
        from data_pipeline.pyramid_shards.loader import PyramidLoader

        from pretrain.engine import build_engine

        cfg, info = self.cfg, self.info
        if info.is_main:
            save_config(self.student_config(), self.run)
        self.samples_dir = self.targets_dir()
        source = copy.deepcopy(cfg)
        source.data.pyramids_dir = str(self.samples_dir)
        self.engines = {"model": build_engine(self.student, cfg.train, self.schedule.total_steps, info.world_size)}
        torch.manual_seed(cfg.seed * 1000 + info.rank)  # class dropout differs per rank, replays on resume
        self.val = []
        for label_B, idx_list in PyramidLoader(source, split="val", batch_size=cfg.train.batch_size, infinite=False):
            self.val.append((label_B, idx_list))
            if len(self.val) == self.args.val_batches:
                break
        self.s_val = [(lab, self.student_targets(idx)) for lab, idx in self.val]
        self.loader = PyramidLoader(source, split="train", batch_size=self.micro_batch, rank=info.rank,
                                    world_size=info.world_size, seed=cfg.seed, infinite=True)

    def student_targets(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        return requantize(self.vae, idx_list, self.t_pns, self.s_pns, keep=self.prefix)

    def begin(self, progress: Progress, log: Log) -> None:
        if progress.step == 0:  # the untrained student: the "before" of distill.json
            self.before = {"student": token_metrics(self.student, self.vae, self.s_val),
                           "teacher_own_schedule": token_metrics(self.teacher, self.vae, self.val)}
            log(flat_metrics(0, self.before))

    def batches(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        return iter(self.loader)

    def loss(self, batch: tuple[torch.Tensor, list[torch.Tensor]]) -> StepLoss:
        label_B, idx_list = batch
        with torch.no_grad():  # targets and the teacher: no gradients
            s_idx = self.student_targets(idx_list)
            x_BLCv = self.vae.pyramid_to_var_input(s_idx, self.s_pns)
            kl_on = self.prefix and self.args.kl_weight > 0
            probs_BlV = (teacher_prefix_probs(self.teacher, self.vae, label_B, idx_list, self.prefix, self.cfg.sample)
                         if kl_on else torch.zeros(len(label_B), 0, self.teacher.V))
        loss, parts = distill_loss(self.engines["model"](label_B, x_BLCv), torch.cat(s_idx, 1), probs_BlV,
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

    def student_config(self) -> SRDDConfig:
        """The config saved with the student: its schedule (what load_model builds it with) and, for
        a distilled one, the plain sampler its targets were made for."""
        student_cfg = copy.deepcopy(self.cfg)
        student_cfg.tokenizer.patch_nums = list(self.s_pns)
        if self.mode == "distilled":
            for key, value in PLAIN_SAMPLER.items():
                setattr(student_cfg.sample, key, value)
        return student_cfg

    def flops_ledger(self, steps: int) -> dict[str, Any]:
        """Training compute behind the student (the attended-FLOPs convention, docs/model.md): its own
        steps, plus for a distilled one the teacher's training, its samples and the KL's teacher passes."""
        samples = steps * self.cfg.train.batch_size
        ledger: dict[str, Any] = {"student_train": samples * self.flops_per_sample}
        if self.mode == "distilled":
            from pretrain.distill.teacher_samples import sampling_flops

            final = self.teacher_run / "final.json"
            ledger["teacher_train"] = json.loads(final.read_text())["flops"] if final.is_file() else None
            ledger["teacher_samples"] = sampling_flops(self.samples_dir)
            ledger["teacher_kl"] = samples * self.kl_flops_per_sample
        ledger["total"] = sum(v for v in ledger.values() if v is not None)
        if self.args.flops is not None:
            ledger["budget"] = self.args.flops
        return ledger

    def finish(self, progress: Progress, log: Log) -> None:
        from pretrain.tokenizer import default_tokenizer_path, tokenizer_hash
        from pretrain.train.export import save_model

        steps = progress.step
        after = {"student": token_metrics(self.student, self.vae, self.s_val),
                 **{k: v for k, v in self.before.items() if k != "student"}}
        log(flat_metrics(steps, after))
        state_dict = consolidated_state_dict(self.engines["model"])  # whole under ZeRO-3 too
        if not self.info.is_main:
            return
        save_model(self.outputs[0], state_dict, self.student_config(), step=steps,
                   tokens=steps * self.cfg.train.batch_size * self.student.L,
                   tokenizer_hash=tokenizer_hash(default_tokenizer_path(self.cfg)))
        before, t_pns, s_pns = self.before, list(self.t_pns), list(self.s_pns)
        report = {"mode": self.mode, "teacher": str(self.teacher_run), "teacher_patch_nums": t_pns,
                  "student_patch_nums": s_pns, "shared_prefix": self.prefix, "steps": steps,
                  "kl_weight": self.args.kl_weight, "tau": self.args.tau, "targets": str(self.samples_dir),
                  "teacher_samples": self.args.teacher_samples if self.mode == "distilled" else None,
                  "before": before, "after": after, "flops": self.flops_ledger(steps)}
        atomic_write_json(self.outputs[1], report)
        print(f"{self.mode} student {s_pns} vs teacher {t_pns} (held-out {'teacher samples' if self.mode == 'distilled' else 'data'}, teacher-forced):")
        for name, d in (("student before", before["student"]), ("student after", after["student"]),
                        ("teacher on own schedule", before["teacher_own_schedule"])):
            print(f"  {name:28s} loss {d['loss']:.4f}  acc {d['acc']:.4f}")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    info = init_distributed()
    task = DistillTask(cfg, args, info)
    Trainer(task, task.run, info, run_name=cfg.run_name,
            config=OmegaConf.to_container(OmegaConf.structured(cfg))).run()
    return 0
