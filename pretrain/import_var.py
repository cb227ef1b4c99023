"""`srdd import-var --vae PATH [--var PATH]`: validate VAR's official checkpoints and import them.

The VAE (e.g. ``vae_ch160v4096z32.pth``) is loaded strictly with its architecture inferred
from tensor shapes and written in the project's tokenizer format (srdd-tokenizer-v1) to
``--out`` (default ``<SRDD_HOME>/<run_name>/tokenizer.pt``; point ``tokenizer.ckpt`` at it).
The transformer (``var_d16.pth`` ...) is validated with ``Transformer.from_var_state_dict``,
which reads VAR's file as is, so it is not rewritten. What was found goes to stdout and to
``import_var.json`` beside the tokenizer.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from pretrain.config import SRDDConfig
from pretrain.outputs import atomic_write_json, run_dir, save_config
from pretrain.tokenizer.checkpoint import (VAR_PATCH_NUMS, TokenizerCheckpointError, from_var_state_dict,
                                           read_checkpoint, save_tokenizer, tokenizer_hash)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, metavar="PATH", help="VAR VQVAE state dict (vae_ch160v4096z32.pth)")
    parser.add_argument("--var", metavar="PATH", help="VAR transformer state dict (var_d16.pth ...) to validate")
    parser.add_argument("--patch-nums", default=",".join(map(str, VAR_PATCH_NUMS)),
                        help="scale schedule, comma-separated (default VAR's 1..16)")
    parser.add_argument("--out", metavar="PATH", help="tokenizer file to write (default <run dir>/tokenizer.pt)")


def parse_patch_nums(text: str) -> list[int]:
    try:
        pns = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise SystemExit(f"srdd import-var: --patch-nums {text!r} must be comma-separated integers") from None
    if not pns or pns != sorted(set(pns)) or pns[0] <= 0:
        raise SystemExit(f"srdd import-var: --patch-nums {text!r} must be strictly increasing positive integers")
    return pns


def import_vae(path: str, patch_nums: list[int], out: Path, cfg: SRDDConfig) -> dict[str, Any]:
    sd = read_checkpoint(path)
    if not isinstance(sd, dict) or "quantize.embedding.weight" not in sd:
        raise TokenizerCheckpointError(f"{path}: not a VAR VQVAE state dict (no quantize.embedding.weight)")
    vae = from_var_state_dict(sd, patch_nums=patch_nums, source=path)
    side = patch_nums[-1] * vae.downsample
    save_tokenizer(vae, out, dataclasses.replace(cfg.tokenizer, **vae.arch, ckpt=""))
    return {"source": str(path), "tokenizer": str(out), "sha256": tokenizer_hash(out), "config": vae.arch,
            "params": sum(p.numel() for p in vae.parameters()), "downsample": vae.downsample,
            "image_side": side, "tokens_per_image": sum(p * p for p in patch_nums)}


def validate_var(path: str, patch_nums: list[int]) -> dict[str, Any]:
    from pretrain.model.transformer import Transformer

    model = Transformer.from_var_state_dict(read_checkpoint(path), patch_nums=patch_nums)
    return {"source": str(path), "depth": model.depth, "width": model.C, "num_classes": model.num_classes,
            "vocab_size": model.V, "Cvae": model.Cvae, "params": model.num_params(),
            "non_embedding_params": model.num_non_embedding_params(), "L": model.L}


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    patch_nums = parse_patch_nums(args.patch_nums)
    out_dir = run_dir(cfg)
    out = Path(args.out) if args.out else out_dir / "tokenizer.pt"
    try:
        found: dict[str, Any] = {"vae": import_vae(args.vae, patch_nums, out, cfg)}
        if args.var:
            found["var"] = validate_var(args.var, patch_nums)
    except (TokenizerCheckpointError, ValueError) as e:  # VarStateDictError is a ValueError too
        raise SystemExit(f"srdd import-var: {e}") from None
    vae, var = found["vae"], found.get("var")
    if var is not None and (var["vocab_size"], var["Cvae"]) != (vae["config"]["vocab_size"], vae["config"]["z_channels"]):
        raise SystemExit(f"srdd import-var: transformer (V={var['vocab_size']}, Cvae={var['Cvae']}) does not match "
                         f"the VAE (V={vae['config']['vocab_size']}, Cvae={vae['config']['z_channels']})")
    save_config(cfg, out.parent)
    atomic_write_json(out.parent / "import_var.json", found)
    print(json.dumps(found, indent=2))
    print(f"tokenizer written to {out}; use it with tokenizer.ckpt={out}")
    return 0
