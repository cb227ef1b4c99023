"""Config section ``pyramid``: the three Laplacian-pyramid levers (Hong & Belkadi, arXiv 2510.02826)."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.configlib import bounded, choice


@dataclass
class PyramidConfig:
    space: str = choice("latent", ("latent", "pixel"), help="latent = VQ-VAE residual quantiser; pixel = pyramid on the image")
    codes: str = choice("discrete", ("discrete", "continuous"), help="discrete = CE over codes; continuous = regress values")
    bands: str = choice("residual", ("residual", "absolute"), help="residual = Laplacian bands (VAR); absolute = Gaussian pyramid")
    pixel_levels: int = bounded(16, min=2, help="uniform quantiser levels per channel for pixel+discrete")
