"""MultiScaleVQVAE: the pyramid API, schedules, file format, bad input."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from pretrain.tokenizer.checkpoint import (TokenizerCheckpointError, build_tokenizer, load_tokenizer,
                                           save_tokenizer, tokenizer_hash)
from pretrain.config.tokenizer import TokenizerConfig
from pretrain.tokenizer.quantizer import phi_index
from pretrain.tokenizer.vqvae import MultiScaleVQVAE

SMALL = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, z_channels=4, vocab_size=32, norm_groups=4)


def small_vae(patch_nums, seed=0, **kw) -> MultiScaleVQVAE:
    torch.manual_seed(seed)
    return MultiScaleVQVAE(**{**SMALL, "patch_nums": patch_nums, **kw}).eval()


def images(B: int, side: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tiny_tokenizer_fixture_loads_at_default_config(tiny_tokenizer_ckpt):
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    cfg = TokenizerConfig()
    assert vae.patch_nums == tuple(cfg.patch_nums) and not vae.training
    side = cfg.patch_nums[-1] * vae.downsample
    idx = vae.encode_pyramid(images(2, side))
    assert [tuple(i.shape) for i in idx] == [(2, p * p) for p in cfg.patch_nums]
    assert all(i.dtype == torch.long and 0 <= int(i.min()) and int(i.max()) < cfg.vocab_size for i in idx)
    assert len(tokenizer_hash(tiny_tokenizer_ckpt)) == 64


@pytest.mark.parametrize("patch_nums,side", [((1, 3, 5, 8, 13, 16), 32), ((1, 2, 3, 4), 8),
                                             (tuple(TokenizerConfig().patch_nums), None)])
def test_schedule_round_trip(patch_nums, side):
    """encode -> decode equals the decoder applied to f_hat, and re-encoding the
    pyramid's f_hat is consistent with the pyramid for every schedule."""
    vae = small_vae(patch_nums)
    side = side or patch_nums[-1] * vae.downsample
    img = images(2, side)
    idx = vae.encode_pyramid(img)
    assert [tuple(i.shape) for i in idx] == [(2, p * p) for p in patch_nums]
    with torch.no_grad():
        f_hat = vae.fhat_from_pyramid(idx)
        torch.testing.assert_close(vae.decode_pyramid(idx), vae.decoder(vae.post_quant_conv(f_hat)).clamp(-1, 1))
        # f_hat equals the quantiser's own running sum during encoding
        _, fhats, _ = vae.quantize.quantize(vae.img_to_f(img), patch_nums)
        torch.testing.assert_close(f_hat, fhats[-1])
        for k in range(len(patch_nums)):
            torch.testing.assert_close(vae.fhat_from_pyramid(idx, upto=k + 1), fhats[k])


def test_sampling_helpers_compose_to_teacher_forcing_input():
    pns = (1, 2, 3, 4)
    vae = small_vae(pns)
    idx = vae.encode_pyramid(images(3, 8))
    with torch.no_grad():
        x_BLCv = vae.pyramid_to_var_input(idx)
        assert x_BLCv.shape == (3, sum(p * p for p in pns) - 1, vae.Cvae)
        f_hat, rows = None, []
        for k in range(len(pns) - 1):
            f_hat = vae.add_scale(f_hat, idx[k], k)
            rows.append(vae.next_input(f_hat, k))
        torch.testing.assert_close(torch.cat(rows, 1), x_BLCv)
        # scale 1's input is f_hat after scale 0, area-downsampled to 2x2, independent of a
        # re-implementation: Phi_0(bicubic(e_idx0)) averaged over 2x2 blocks
        e = vae.quantize.embedding.weight[idx[0][:, 0]][:, :, None, None]
        h = vae.quantize.quant_resi.pick(0, len(pns))(F.interpolate(e, size=(4, 4), mode="bicubic"))
        torch.testing.assert_close(x_BLCv[:, :4], F.avg_pool2d(h, 2).flatten(2).transpose(1, 2))
        torch.testing.assert_close(vae.fhat_to_img(vae.fhat_from_pyramid(idx)), vae.decode_pyramid(idx))


def test_phi_tick_rule_matches_var_definition():
    # VAR, 10 scales, 4 shared convs at ticks linspace(1/12, 11/12, 4) = 3/36, 13/36, 23/36, 33/36,
    # the nearest to k/9 (worked by hand)
    assert [phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    # 6-scale distilled schedule: k/5 = 0, .2, .4, .6, .8, 1
    assert [phi_index(k, 6, 4) for k in range(6)] == [0, 0, 1, 2, 3, 3]
    # n != 4 uses linspace(1/(2n), 1 - 1/(2n), n): n = 2 -> ticks 1/4, 3/4
    assert [phi_index(k, 5, 2) for k in range(5)] == [0, 0, 0, 1, 1]


def test_var_config_has_var_state_dict_layout():
    with torch.device("meta"):
        vae = MultiScaleVQVAE()  # VAR's vae_ch160v4096z32
    sd = vae.state_dict()
    for key, shape in [("quantize.embedding.weight", (4096, 32)), ("quantize.ema_vocab_hit_SV", (10, 4096)),
                       ("quantize.quant_resi.qresi_ls.3.weight", (32, 32, 3, 3)), ("quant_conv.weight", (32, 32, 3, 3)),
                       ("encoder.down.4.attn.1.qkv.weight", (1920, 640, 1, 1)),
                       ("encoder.down.2.block.0.nin_shortcut.weight", (320, 160, 1, 1)),
                       ("decoder.up.4.attn.2.proj_out.weight", (640, 640, 1, 1)),
                       ("decoder.up.1.upsample.conv.weight", (160, 160, 3, 3)),
                       ("encoder.mid.attn_1.norm.weight", (640,))]:
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("quantize.quant_resi.qresi_ls.4") for k in sd)
    assert vae.downsample == 16


def test_save_load_round_trip_and_patch_nums_override(tmp_path):
    cfg = TokenizerConfig(**{**SMALL, "patch_nums": [1, 2, 4]})
    torch.manual_seed(0)
    vae = build_tokenizer(cfg).eval()
    path = save_tokenizer(vae, tmp_path / "t.pt", cfg)
    loaded = load_tokenizer(path)
    img = images(2, 8)
    assert all(torch.equal(a, b) for a, b in zip(vae.encode_pyramid(img), loaded.encode_pyramid(img)))
    other = load_tokenizer(path, patch_nums=[1, 4])  # per-schedule hit statistics are not an error
    assert [i.shape[1] for i in other.encode_pyramid(img)] == [1, 16]
    assert tokenizer_hash(path) == tokenizer_hash(tmp_path / "t.pt") != tokenizer_hash(
        save_tokenizer(other, tmp_path / "o.pt", cfg))


def test_bad_images_are_rejected_with_a_clear_message():
    vae = small_vae((1, 2, 4))
    with pytest.raises(ValueError, match="not a multiple of the tokenizer's downsampling factor 2"):
        vae.encode_pyramid(images(1, 9))
    with pytest.raises(ValueError, match="must have 3 channels.*got 1"):
        vae.encode_pyramid(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="patch_nums ends at 4: use 8px"):
        vae.encode_pyramid(images(1, 16))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        vae.encode_pyramid(torch.zeros(3, 8, 8))
    with pytest.warns(UserWarning, match=r"outside \[-1, 1\]"):
        vae.encode_pyramid(images(1, 8) * 127.5 + 127.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vae.encode_pyramid(images(1, 8))
    with pytest.raises(ValueError, match=r"scale 1: expected \(B, 4\) tokens"):
        vae.decode_pyramid([torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long),
                            torch.zeros(1, 16, dtype=torch.long)])


def test_truncated_and_foreign_checkpoints_are_named(tmp_path, tiny_tokenizer_ckpt):
    data = tiny_tokenizer_ckpt.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenizerCheckpointError, match=r"cut.pt \(\d+ bytes\) cannot be read: truncated"):
        load_tokenizer(cut)
    with pytest.raises(TokenizerCheckpointError, match="no such file"):
        load_tokenizer(tmp_path / "absent.pt")
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TokenizerCheckpointError, match="neither an srdd-tokenizer-v1 file nor a VAR VQVAE"):
        load_tokenizer(tmp_path / "other.pt")
