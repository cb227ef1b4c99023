"""Config section ``pyramid``: the three Laplacian-pyramid levers (Hong & Belkadi, arXiv 2510.02826).

Every combination of space x codes x bands is trainable and sampleable by the same code
(pretrain/pyramid/codec.py); docs/ablation.md says what each switch changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import ConfigError, bounded, choice

VAR_CELL = ("latent", "discrete", "residual")  # the only cell pyramid shards (srdd pyramids) hold


@dataclass
class PyramidConfig:
    space: str = choice("latent", ("latent", "pixel"), help="latent = VQ-VAE residual quantiser; pixel = pyramid on the image")
    codes: str = choice("discrete", ("discrete", "continuous"), help="discrete = CE over codes; continuous = regress values")
    bands: str = choice("residual", ("residual", "absolute"), help="residual = Laplacian bands (VAR); absolute = Gaussian pyramid")
    pixel_levels: int = bounded(16, min=2, help="uniform quantiser levels per channel for pixel+discrete")
    data: str = choice("auto", ("auto", "images", "pyramids"),
                       help="training targets from: auto = pyramid shards for latent/discrete/residual, image shards "
                            "(encoded on the fly) otherwise; images = image shards for every cell (the ablation)")

    @property
    def cell(self) -> str:
        """Short name of the grid cell, e.g. ``latent-discrete-residual``."""
        return f"{self.space}-{self.codes}-{self.bands}"

    @property
    def uses_pyramid_shards(self) -> bool:
        return self.data == "pyramids" or (self.data == "auto" and (self.space, self.codes, self.bands) == VAR_CELL)

    def validate(self, prefix: str) -> None:
        if self.data == "pyramids" and (self.space, self.codes, self.bands) != VAR_CELL:
            raise ConfigError(f"{prefix}data=pyramids with {prefix}space={self.space} {prefix}codes={self.codes} "
                              f"{prefix}bands={self.bands}: pyramid shards hold only the VQ-VAE's latent/discrete/"
                              f"residual codes; use {prefix}data=auto or images for this cell")
