"""Config section ``train``: optimisation, DeepSpeed, checkpoints and logging."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pretrain.config.fields import ConfigError, bounded, choice, doc, listing


@dataclass
class TrainConfig:
    batch_size: int = bounded(64, min=1, help="global batch size (all ranks, after accumulation)")
    grad_accum: int = bounded(1, min=1, help="gradient accumulation steps")
    max_steps: int = bounded(500, min=1, help="optimizer steps; see tokens")
    tokens: int = bounded(0, min=0, help="token budget; > 0 overrides max_steps = ceil(tokens / (batch_size * L))")
    lr_base: float = bounded(1e-4, min=0.0, help="VAR's rule: peak lr = lr_base * batch_size / 256")
    lr_peak: Optional[float] = doc(None, "explicit peak lr; overrides lr_base scaling")
    lr_schedule: str = choice("cosine", ("cosine", "linear", "constant"))
    warmup_frac: float = bounded(0.05, min=0.0, max=1.0, help="fraction of steps in linear warmup")
    lr_end_ratio: float = bounded(0.01, min=0.0, max=1.0, help="final lr as a fraction of the peak")
    weight_decay: float = bounded(0.05, min=0.0)
    betas: list[float] = listing([0.9, 0.95], "AdamW betas")
    grad_clip: float = bounded(2.0, min=0.0, help="gradient norm clip; 0 = off")
    label_smoothing: float = bounded(0.1, min=0.0, max=1.0)
    zero_stage: int = bounded(0, min=0, max=3, help="DeepSpeed ZeRO stage")
    precision: str = choice("fp32", ("fp32", "bf16"), help="bf16 = bf16 compute with fp32 master weights (DeepSpeed bf16), fp32 softmax and loss")
    compile: bool = doc(False, "wrap the model in torch.compile (same outputs; measured speed: docs/performance.md)")
    log_every: int = bounded(10, min=1, help="steps between metrics.jsonl records")
    val_every: int = bounded(100, min=0, help="steps between validation passes; 0 = only at the end")
    val_batches: int = bounded(8, min=1)
    ckpt_every: int = bounded(100, min=1, help="steps between checkpoints")
    keep_last: int = bounded(2, min=1, help="recent checkpoints kept (milestones are kept too)")
    milestones: list[int] = listing([], "steps whose checkpoints are never deleted")
    snapshots: list[float] = listing([], "fractions of the step budget at which <run>/snapshots/step<N>.pt (model.pt format) is written; `srdd eval --snapshots` scores them (the FD convergence curve, docs/claims.md)")
    max_bad_steps: int = bounded(5, min=0, help="consecutive NaN/inf losses skipped before the run stops")
    wandb: str = choice("offline", ("offline", "online", "disabled"))
    num_workers: int = bounded(1, min=0, help="data-loader worker processes per rank")
    stop_after: int = bounded(0, min=0, help="checkpoint and stop after this many steps in this invocation (time slicing); 0 = off")
    wandb_project: str = doc("srdd", "wandb project; the run directory holds wandb's files")
    export_model: bool = doc(True, "write the consolidated fp32 <run>/model.pt when training ends")
    refine_objective: str = choice("off", ("off", "remask"), help="remask = also learn to re-predict each scale from a corrupted draft of it (self-correction, sample.refine=mr; docs/sampling.md); ~2x training FLOPs")
    refine_replace: float = bounded(0.2, min=0.0, max=1.0, help="remask: fraction of a draft's unmasked tokens replaced by a draw from the model (the rest stay true)")
    debug_record: bool = doc(False, "record each micro-batch's samples per rank and the gathered weights + Adam state at every save and resume in <run>/debug/ (tests; a gather per checkpoint)")

    def validate(self, prefix: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{prefix}betas={list(self.betas)} must be two floats in [0, 1)")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"{prefix}batch_size={self.batch_size} is not divisible by {prefix}grad_accum={self.grad_accum}")
        if not all(0.0 < f < 1.0 for f in self.snapshots):
            raise ConfigError(f"{prefix}snapshots={list(self.snapshots)} must be fractions in (0, 1) of the step budget")
