"""The student's schedule and its relation to the teacher's: defaults, checks, weight re-indexing,
and the scales at which student and teacher are in the same state.

Only two tables of the transformer depend on the schedule: the per-token absolute positions
(``pos_1LC``, one pn x pn block per scale) and the per-scale level embedding (``lvl_embed``, one
row per scale). Re-indexing (``schedule_model``) gives student scale j with side pn_j the block
and level row of the teacher scale with the same side; a side the teacher lacks takes the
teacher scale of the nearest side, its position block bicubically resized to pn_j x pn_j. That
is the student's initialisation, and with no training it is the ``reindexed`` baseline.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pretrain.config.fields import ConfigError

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
    """A copy of ``teacher`` re-indexed to ``patch_nums`` (the student's init, the ``reindexed`` baseline)."""
    from pretrain.model.transformer import Transformer, infer_arch

    sd = remap_to_schedule(teacher.state_dict(), teacher.patch_nums, patch_nums)
    model = Transformer(patch_nums=tuple(patch_nums), attn_window=teacher.attn_window,
                        cond_drop=teacher.cond_drop_rate, **infer_arch(sd))
    # schedule-derived buffers (level ids, mask) are the new model's own; the mask is rebuilt on load
    own = model.state_dict()
    model.load_state_dict({k: sd[k] if k in sd and sd[k].shape == v.shape else v for k, v in own.items()})
    return model


def shared_prefix(vae: Any, teacher_pns: Sequence[int], student_pns: Sequence[int]) -> int:
    """Number P of leading student scales whose *state* is the teacher's: scale j's input is f_hat of
    scales < j, which is the teacher's when both schedules agree on the sides of scales 0..j and the
    tokenizer adds each scale i < j through the same Phi conv (VAR's tick rule picks Phi_i by
    i / (K - 1), so it depends on the schedule's length K). On those scales the teacher's codes are
    the student's targets unchanged and its distribution is the one the student should match.
    VAR 1..16 -> 1,3,5,8,13,16: P = 1; MNIST 1,2,3,4,6,8 -> 1,2,4,8 (4 shared Phi convs): P = 2."""
    phis = vae.quantize.quant_resi
    K_t, K_s = len(teacher_pns), len(student_pns)
    P = 0
    while (P < K_s and student_pns[P] == teacher_pns[P]
           and all(phis.pick(i, K_s) is phis.pick(i, K_t) for i in range(P))):
        P += 1
    return P
