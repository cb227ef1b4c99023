"""The next-scale transformer (VAR, arXiv 2404.02905) with VAR's exact state-dict layout.

Sequence: the K scales of a token pyramid flattened coarse to fine, L = sum(pn^2) tokens.
Scale 0's input is the class start token (``class_emb`` + ``pos_start``); scale k > 0's
input is the cumulative latent f_hat of scales < k area-downsampled to pn_k x pn_k
(Cvae channels, embedded by ``word_embed``). Every token adds ``lvl_embed`` (its scale)
and ``pos_1LC`` (its absolute position). AdaLN blocks read the class embedding; the head
predicts each token's code (V logits). ``class_emb`` has num_classes + 1 rows: the last is
the null class of classifier-free guidance.

Self-correction inputs (``refine_inputs``, built for runs trained with ``train.refine_objective``):
a *draft* of scale k enters as scale k's input plus ``word_embed``'s matrix applied to what
committing the draft's kept tokens adds to the state (the tokenizer's ``draft_delta``), plus a
learned ``draft_flag`` on every token of the draft pass and ``draft_mask`` on each removed token
(docs/sampling.md, "Self-correction"). Models built without them keep VAR's layout exactly.

The attention mask is ``attn_window`` (pretrain/model/masks.py): None = VAR, 0 = SRDD.
``attn_impl`` is how teacher forcing applies it: "auto" attends over the mask's tiles and skips
hidden pairs (pretrain/model/tiled_attention.py), "dense" is the additive -inf mask over all
L x L pairs (the reference). Both give the same outputs and share one state dict.
Keys: word_embed, class_emb, pos_start, pos_1LC, lvl_embed, blocks.i.{attn,ffn,ada_lin},
head_nm.ada_lin, head, and the buffers lvl_1L, attn_bias_for_masking, blocks.i.attn.zero_k_bias
(+ draft_flag, draft_mask with ``refine_inputs``).
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from pretrain.model.attention import Attend, masked_attention
from pretrain.model.blocks import AdaLNBeforeHead, AdaLNSelfAttn
from pretrain.model.kv_cache import KVCache
from pretrain.model.masks import attention_tiles, attn_bias, draft_stream_bias, scale_bounds, scale_ids
from pretrain.model.tiled_attention import group_tiles, tiled_attention

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
ATTN_IMPLS = ("auto", "dense")
# Lookup tables: no matmul per token, excluded from the non-embedding count (Kaplan et al. 2020).
EMBEDDING_PREFIXES = ("class_emb.", "pos_start", "pos_1LC", "lvl_embed.", "draft_flag", "draft_mask")


class VarStateDictError(ValueError):
    """A state dict that does not fit the architecture (lists the offending keys)."""


class Transformer(nn.Module):
    def __init__(self, *, vocab_size: int, z_channels: int, patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                 depth: int = 16, width: Optional[int] = None, heads: Optional[int] = None, num_classes: int = 1000,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, cond_drop: float = 0.1,
                 attn_window: Optional[int] = None, init_std: float = 0.02, attn_impl: str = "auto",
                 refine_inputs: bool = False):
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={attn_impl!r}: choose one of {list(ATTN_IMPLS)}")
        self.V, self.Cvae, self.num_classes = vocab_size, z_channels, num_classes
        self.depth = depth
        self.C = self.D = width if width is not None else 64 * depth   # VAR's rule: width 64*depth, heads = depth
        self.num_heads = heads if heads is not None else depth
        self.cond_drop_rate, self.attn_window, self.attn_impl = cond_drop, attn_window, attn_impl
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.attn_tile_groups = group_tiles(attention_tiles(self.patch_nums, attn_window))
        self.begin_ends = scale_bounds(self.patch_nums)
        self.L = self.begin_ends[-1][1]
        self.first_l = self.patch_nums[0] ** 2

        C = self.C
        self.word_embed = nn.Linear(z_channels, C)
        self.class_emb = nn.Embedding(num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        drop_path_per_block = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # VAR: linear ramp
        self.blocks = nn.ModuleList(AdaLNSelfAttn(C, self.num_heads, mlp_ratio, p) for p in drop_path_per_block)
        self.head_nm = AdaLNBeforeHead(C)
        self.head = nn.Linear(C, vocab_size)
        self.refine_inputs = refine_inputs
        if refine_inputs:
            self.draft_flag = nn.Parameter(torch.empty(1, 1, C))
            self.draft_mask = nn.Parameter(torch.empty(1, 1, C))
        self.register_buffer("lvl_1L", scale_ids(self.patch_nums)[None])
        self.register_buffer("attn_bias_for_masking", attn_bias(self.patch_nums, attn_window))
        # the mask follows attn_window, never a loaded checkpoint's (VAR's files store block-causal)
        self.register_load_state_dict_post_hook(lambda module, _: module.reset_mask())
        self.init_weights(init_std)

    # ---- construction ---------------------------------------------------------------
    def reset_mask(self) -> None:
        bias = attn_bias(self.patch_nums, self.attn_window)
        self.attn_bias_for_masking = bias.to(self.attn_bias_for_masking.device)
        self.lvl_1L = scale_ids(self.patch_nums)[None].to(self.lvl_1L.device)

    @torch.no_grad()
    def init_weights(self, init_std: float = 0.02) -> None:
        """VAR's init (models/var.py init_weights with its defaults init_adaln=0.5,
        init_adaln_gamma=1e-5, init_head=0.02): truncated normal everywhere, residual
        projections shrunk by sqrt(2*depth), AdaLN gates near zero so blocks start as identity.
        ``init_std`` 0 = VAR's automatic sqrt(1 / (3 * width))."""
        auto_std = math.sqrt(1 / self.C / 3)
        std = init_std if init_std > 0 else auto_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        nn.init.trunc_normal_(self.pos_start, std=auto_std)
        nn.init.trunc_normal_(self.pos_1LC, std=auto_std)
        if self.refine_inputs:
            nn.init.trunc_normal_(self.draft_flag, std=auto_std)
            nn.init.trunc_normal_(self.draft_mask, std=auto_std)
        self.head.weight.mul_(0.02)
        self.head_nm.ada_lin[-1].weight.mul_(0.5)
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
            block.ada_lin[-1].weight[2 * self.C:].mul_(0.5)    # scales and shifts
            block.ada_lin[-1].weight[:2 * self.C].mul_(1e-5)   # gammas
            block.attn.q_bias.zero_(), block.attn.v_bias.zero_()
            block.attn.scale_mul_1H11.fill_(math.log(4.0))

    @classmethod
    def from_var_state_dict(cls, state_dict: Mapping[str, torch.Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                            attn_window: Optional[int] = None, **overrides: Any) -> "Transformer":
        """Load a VAR transformer state dict (e.g. ``var_d16.pth``) strictly.

        Depth, width, heads, classes, vocab, Cvae and mlp_ratio come from the tensors' shapes;
        ``overrides`` (e.g. cond_drop, drop_path) set what shapes cannot tell. Any missing,
        unexpected or mis-shaped key raises ``VarStateDictError`` naming them all."""
        arch = {**infer_arch(state_dict), **overrides}
        with torch.device("meta"):
            model = cls(patch_nums=patch_nums, attn_window=attn_window, **arch)
        check_state_dict(model, state_dict)
        # fp32 copies (never the caller's tensors); the post-load hook rebuilds the mask buffers
        fp32 = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone() for k, v in state_dict.items()}
        model.load_state_dict(fp32, strict=True, assign=True)
        return model

    # ---- teacher forcing ------------------------------------------------------------
    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor,
                draft: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) of every token given the teacher-forcing input of scales 1..K-1.

        In training, labels are replaced by the null class with probability ``cond_drop``
        (what classifier-free guidance needs); in eval mode never.

        ``draft = (delta_BLCv, masked_BL)`` (``refine_inputs`` models) also runs the draft stream:
        every scale k once more with a draft of its own tokens in its input (``draft_input``),
        attending to the clean stream's visible earlier scales and to its own draft scale only, as a
        self-correction pass does at sampling; returns (clean logits, draft logits), both (B, L, V)."""
        B = x_BLCv_wo_first_l.shape[0]
        if self.training and self.cond_drop_rate > 0:
            drop_B = torch.rand(B, device=label_B.device) < self.cond_drop_rate
            label_B = torch.where(drop_B, self.num_classes, label_B)
        cond_BD = self.class_emb(label_B)
        sos_BlC = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
        x_BLCv = x_BLCv_wo_first_l.to(self.word_embed.weight.dtype)
        x_BLC = torch.cat((sos_BlC, self.word_embed(x_BLCv)), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)
        if draft is None:
            return self.logits(self.run_blocks(x_BLC, cond_BD, self.teacher_forcing_attention()), cond_BD)
        xd_BLC = self.draft_input(x_BLC, *draft)
        if self.attn_window == 0:  # Markov: the draft stream sees nothing of the clean one, a batch of its own
            out_2BLC = self.run_blocks(torch.cat((x_BLC, xd_BLC)), cond_BD.repeat(2, 1), self.teacher_forcing_attention())
            out_BLC, outd_BLC = out_2BLC.chunk(2)
        else:  # one sequence of 2L tokens under the clean mask plus the draft stream's (dense reference path)
            bias = draft_stream_bias(self.patch_nums, self.attn_window).to(x_BLC.device)
            out_B2LC = self.run_blocks(torch.cat((x_BLC, xd_BLC), dim=1), cond_BD, partial(masked_attention, bias_11LL=bias))
            out_BLC, outd_BLC = out_B2LC.split(self.L, dim=1)
        return self.logits(out_BLC, cond_BD), self.logits(outd_BLC, cond_BD)

    def run_blocks(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, attend: Attend) -> torch.Tensor:
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD, attend)
        return x_BLC

    def draft_input(self, x_BlC: torch.Tensor, delta_BlCv: torch.Tensor, masked_Bl: torch.Tensor) -> torch.Tensor:
        """A draft pass's input: the embedded input ``x_BlC`` of its scale plus ``word_embed``'s matrix
        applied to ``delta_BlCv`` (the kept draft tokens' contribution to the state, tokenizer's
        ``draft_delta``), plus ``draft_flag``, plus ``draft_mask`` where ``masked_Bl``."""
        if not self.refine_inputs:
            raise ValueError("self-correction needs a model trained with train.refine_objective (it has no draft inputs)")
        delta_BlC = delta_BlCv.to(self.word_embed.weight.dtype) @ self.word_embed.weight.T
        return x_BlC + delta_BlC + self.draft_flag + masked_Bl.unsqueeze(-1).to(x_BlC.dtype) * self.draft_mask

    def teacher_forcing_attention(self) -> Attend:
        """The mask as ``attn_impl`` applies it to all L tokens at once."""
        if self.attn_impl == "dense":
            return partial(masked_attention, bias_11LL=self.attn_bias_for_masking)
        return partial(tiled_attention, groups=self.attn_tile_groups)

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(x_BLC, cond_BD)).float()

    # ---- one scale at a time (KV-cached sampling) --------------------------------------
    def scale_input(self, k: int, cond_BD: torch.Tensor, x_BlCv: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embedded input of scale k (index into ``patch_nums``): the start token for k = 0,
        else ``word_embed`` of the Cvae-channel input x_BlCv; plus level and position."""
        begin, end = self.begin_ends[k]
        lvl_pos_1lC = self.lvl_embed(self.lvl_1L[:, begin:end]) + self.pos_1LC[:, begin:end]
        if k == 0:
            B = cond_BD.shape[0]
            return cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1) + lvl_pos_1lC
        if x_BlCv is None:
            raise ValueError(f"scale {k} needs its input x_BlCv (f_hat of the earlier scales)")
        return self.word_embed(x_BlCv.to(self.word_embed.weight.dtype)) + lvl_pos_1lC

    def forward_scale(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor, cache: KVCache, stage: bool = True) -> torch.Tensor:
        """Logits (B, pn^2, V) of one scale, attending to its own tokens and the cache's prefix.

        Stages the scale's keys/values in ``cache`` (unless ``stage`` is False: a draft pass); the
        caller commits them once the scale's tokens are final."""
        for i, block in enumerate(self.blocks):
            x_BlC = block(x_BlC, cond_BD, kv_extend=cache.extend(i, stage))
        return self.logits(x_BlC, cond_BD)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks), self.attn_window)

    # ---- sizes ------------------------------------------------------------------------------
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_non_embedding_params(self) -> int:
        """Parameters that take part in a matmul: all but class/position/level lookup tables."""
        return sum(p.numel() for name, p in self.named_parameters() if not name.startswith(EMBEDDING_PREFIXES))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, width={self.C}, heads={self.num_heads}, V={self.V}, Cvae={self.Cvae}, "
                f"classes={self.num_classes}, patch_nums={list(self.patch_nums)}, attn_window={self.attn_window}, "
                f"attn_impl={self.attn_impl}" + (", refine_inputs=True" if self.refine_inputs else ""))


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments a VAR state dict implies, read from its tensors' shapes."""
    needed = ("class_emb.weight", "head.weight", "word_embed.weight",
              "blocks.0.attn.scale_mul_1H11", "blocks.0.ffn.fc1.weight")
    absent = [k for k in needed if k not in state_dict]
    if absent:
        raise VarStateDictError(f"not a VAR transformer state dict: missing {absent} "
                                f"(first keys present: {list(state_dict)[:8]})")
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    width = state_dict["class_emb.weight"].shape[1]
    return dict(depth=depth, width=width, heads=state_dict["blocks.0.attn.scale_mul_1H11"].shape[1],
                num_classes=state_dict["class_emb.weight"].shape[0] - 1, vocab_size=state_dict["head.weight"].shape[0],
                z_channels=state_dict["word_embed.weight"].shape[1],
                mlp_ratio=state_dict["blocks.0.ffn.fc1.weight"].shape[0] / width)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``VarStateDictError`` listing every missing, unexpected and mis-shaped key."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(ours))
    misshaped = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(ours[k].shape)}"
                 for k in ours if k in state_dict and state_dict[k].shape != ours[k].shape]
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(keys)}): {keys}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        hint = f" (patch_nums={list(model.patch_nums)}, L={model.L})" if any("pos_1LC" in s or "lvl" in s for s in misshaped) else ""
        raise VarStateDictError("state dict does not match the VAR transformer" + hint + ": " + "; ".join(parts))
