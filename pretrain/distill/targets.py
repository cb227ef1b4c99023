"""What a distilled student learns from: its targets on its own schedule, the teacher's distribution
where the two are in the same state, and the loss (docs/sampling.md, "Scale distillation").

Targets (``requantize``). A teacher sample is a token pyramid on the teacher's schedule; its final
latent f_hat (the image the teacher made) is residual-quantised again on the student's schedule
(VAR Alg. 1 through the same tokenizer; no pixel round trip). On the first P scales, where the
student's state is the teacher's (``shared_prefix``), the teacher's own codes are kept instead of
the nearest ones, so on those scales the targets *are* the teacher's draws and later scales
quantise the residual they leave. The data-only control uses the same function on data
pyramids with P = 0.

KL (``teacher_prefix_probs``). A teacher's per-scale distribution is over the residual at *its*
state; the student's distribution at a scale of the same side but a different state (other
earlier scales, or another Phi conv) is over a different residual, so the two are comparable
only on the shared prefix. There the teacher's distribution is recomputed, teacher-forced on the
sample's own codes, with the guidance weight and truncation the teacher sampled with (the
distribution its draw came from). Recomputing is cheaper than keeping: the prefix is a few tokens,
so the teacher's guided passes over them cost 2 x 5 token-forwards against a student step's
3 x 85 (MNIST 1,2,4,8 from 1,2,3,4,6,8: ~4%) or 2 x 1 against 3 x 524 (VAR's 1,3,5,8,13,16:
~0.1%), while keeping V fp16 probabilities per prefix token would grow each stored sample from
its codes (260 B; VAR 1.4 KB) to 5 KB (V = 512) or 8 KB (V = 4096) and tie the shards to one
student schedule.

Loss per student token: CE(student, target; label smoothing) + kl_weight * tau^2 *
KL(teacher_tau || student_tau) on prefix tokens (0 elsewhere), averaged over the L tokens.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def requantize(vae: Any, idx_list: Sequence[torch.Tensor], teacher_pns: Sequence[int], student_pns: Sequence[int],
               keep: int = 0) -> list[torch.Tensor]:
    """The pyramid's latent residual-quantised on the student schedule, its first ``keep`` scales' codes kept."""
    f_hat = vae.fhat_from_pyramid(idx_list, patch_nums=teacher_pns)
    idx, _, _ = vae.quantize.quantize(f_hat, tuple(student_pns), with_fhat=False, prefix=list(idx_list[:keep]))
    return idx


@torch.no_grad()
def teacher_prefix_probs(teacher: Any, vae: Any, label_B: torch.Tensor, idx_list: Sequence[torch.Tensor], P: int,
                         sample_cfg: Any) -> torch.Tensor:
    """(B, tokens of the first P scales, V): the distribution the teacher drew each of the sample's
    first P scales from (its guidance weight t_k on its own K scales, temperature, top-k/top-p),
    teacher-forced on the sample's codes through the KV-cached scale passes the sampler uses."""
    from pretrain.pyramid.heads import CategoricalHead
    from pretrain.sampling.sampler import guidance_weights

    pns, B = tuple(teacher.patch_nums), label_B.shape[0]
    if P == 0:
        return torch.zeros(B, 0, teacher.V)
    s = sample_cfg
    ts = guidance_weights(s.cfg, len(pns), s.cfg_schedule)[:P]
    guided = any(t != 0 for t in ts)
    labels = torch.cat((label_B, torch.full_like(label_B, teacher.num_classes))) if guided else label_B
    cond_BD = teacher.class_emb(labels)
    head, cache, f_hat, out = CategoricalHead(teacher.V), teacher.new_cache(), None, []
    for k in range(P):
        if k == 0:
            x_BlC = teacher.scale_input(0, cond_BD)
        else:
            x_BlC = teacher.scale_input(k, cond_BD, vae.next_input(f_hat, k - 1, pns))
            x_BlC = x_BlC.repeat(2, 1, 1) if guided else x_BlC
        logits_BlV = teacher.forward_scale(x_BlC, cond_BD, cache)
        cache.commit()
        logits_BlV = head.guide(logits_BlV[:B], logits_BlV[B:], ts[k]) if guided else logits_BlV
        out.append(head.probs(logits_BlV, s.top_k, s.top_p, s.temperature))
        f_hat = vae.add_scale(f_hat, idx_list[k], k, pns)
    return torch.cat(out, 1)


def distill_loss(student_logits_BLV: torch.Tensor, target_BL: torch.Tensor, teacher_probs_BlV: torch.Tensor,
                 kl_weight: float, tau: float, label_smoothing: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CE to the targets + kl_weight * tau^2 * KL(teacher || student) on the first l = teacher_probs' tokens,
    both per token of the sequence (module docstring)."""
    B, L, V = student_logits_BLV.shape
    ce = F.cross_entropy(student_logits_BLV.reshape(-1, V), target_BL.reshape(-1), label_smoothing=label_smoothing)
    l = teacher_probs_BlV.shape[1]
    kl = student_logits_BLV.new_zeros(())
    if l:
        log_q = F.log_softmax(student_logits_BLV[:, :l].float() / tau, -1)
        p = F.softmax(teacher_probs_BlV.float().log() / tau, -1)  # p^(1/tau), renormalised; zeros stay zero
        kl_Bl = torch.special.xlogy(p, p).sum(-1) - (p * log_q).sum(-1)
        kl = kl_Bl.sum() / (B * L) * tau * tau
    acc = (student_logits_BLV.argmax(-1) == target_BL).float().mean()
    return ce + kl_weight * kl, {"ce": float(ce.detach()), "kl": float(kl.detach()), "acc": float(acc)}
