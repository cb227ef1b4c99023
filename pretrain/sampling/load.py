"""Loading a trained run for sampling: its model and what decodes its codes (tokenizer or codec).

Used by every stage that samples or reads a trained model (`srdd sample`, `edit`, `eval`,
`distill`, `policy-train`); it knows nothing of sampling itself, so any of them can import it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrain.config import SRDDConfig, home_dir
from pretrain.config.fields import ConfigError
from pretrain.config.pyramid import VAR_CELL


def resolve_run(ckpt: str) -> Path:
    """``--ckpt`` is a run directory, a run name under SRDD_HOME, or a model.pt file."""
    for cand in (Path(ckpt), home_dir() / ckpt):
        if cand.is_file():
            return cand.parent
        if (cand / "model.pt").is_file():
            return cand
    raise ConfigError(f"--ckpt {ckpt}: no model.pt in {ckpt} or {home_dir() / ckpt}")


def sampler_for(run_cfg: SRDDConfig, run: Path, any_cell: bool = False) -> Any:
    """What a trained run samples with: its VQ-VAE tokenizer for VAR's pyramid cell, else its
    ``pyramid.*`` ablation cell's codec, which only callers needing no VQ code indices accept
    (``any_cell``: `srdd sample`, `srdd eval`)."""
    from pretrain.pyramid.codec import load_codec
    from pretrain.tokenizer import default_tokenizer_path, load_tokenizer

    p = run_cfg.pyramid
    if (p.space, p.codes, p.bands) == VAR_CELL:
        return load_tokenizer(default_tokenizer_path(run_cfg))
    if not any_cell:
        raise ConfigError(f"{run} is a pyramid.* ablation run ({p.cell}); this stage needs VQ code indices "
                          "(pyramid.space=latent codes=discrete bands=residual)")
    return load_codec(run_cfg)


def load_for_sampling(ckpt: str, any_cell: bool = False) -> tuple[Any, Any, Path, SRDDConfig]:
    """(model in eval mode, its run's tokenizer or codec (see ``sampler_for``), the run directory,
    the config the model was saved with) from a trained run's model.pt."""
    from pretrain.train.export import load_model

    run = resolve_run(ckpt)
    model, run_cfg, _ = load_model(run / "model.pt")
    return model, sampler_for(run_cfg, run, any_cell), run, run_cfg
