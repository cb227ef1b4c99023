"""Config section ``sample``: guidance, truncation, refinement and schedule."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import ConfigError, bounded, choice, doc, listing


@dataclass
class SampleConfig:
    cfg: float = bounded(1.5, min=0.0, help="classifier-free guidance scale")
    cfg_schedule: str = choice("linear", ("linear", "constant", "off"), help="linear = VAR's ramp t_k = cfg*k/(K-1)")
    top_k: int = bounded(0, min=0, help="0 = off")
    top_p: float = bounded(0.0, min=0.0, max=1.0, help="0 = off")
    temperature: float = bounded(1.0, min=1e-6)
    seed: int = doc(0, "per-call sampling seed")
    schedule: list[int] = listing([], "patch_nums to sample on; empty = the model's own")
    refine: str = choice("none", ("none", "sr", "mr", "policy", "onepass"),
                         help="sr = restart (re-enter the Markov state), mr = self-correction (needs train.refine_objective), policy = learned per-sample restart, onepass = MR's one-pass equivalent; docs/sampling.md")
    refine_rounds: int = bounded(1, min=0, help="R: rounds per refined scale (sr/policy: restarts, mr: re-predictions; onepass: the MR rounds it equals)")
    p_resample: float = bounded(0.5, min=0.0, max=1.0, help="mr/onepass: remask tokens whose probability under their distribution < p_resample")
    refine_depth: int = bounded(1, min=1, help="sr/policy: scales a round regenerates (1 = scale k, from the state re-quantised on scales < k)")
    refine_scales: list[int] = listing([], "[first, last] scale indices to refine; empty = all")
    policy_ckpt: str = doc("", "learned restart policy (`srdd policy-train` output; refine=policy)")
    n: int = bounded(16, min=1, help="images per `srdd sample` call")
    classes: list[int] = listing([], "labels to sample; empty = cycle over all classes")
    batch_size: int = bounded(16, min=1)
    edit_box: list[float] = listing([0.25, 0.25, 0.75, 0.75], "`srdd edit`: box x0,y0,x1,y1 as image fractions; inpaint regenerates it, outpaint keeps only it")
    superres_factor: int = bounded(2, min=2, help="`srdd edit --task superres`: the low-res image is 1/factor of the side")

    def validate(self, prefix: str) -> None:
        if self.refine_scales and (len(self.refine_scales) != 2 or self.refine_scales[0] > self.refine_scales[1]):
            raise ConfigError(f"{prefix}refine_scales={list(self.refine_scales)} must be [first, last] with first <= last")
        box = list(self.edit_box)
        if len(box) != 4 or not (0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0):
            raise ConfigError(f"{prefix}edit_box={box} must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
