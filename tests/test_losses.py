"""Codec training losses: adversarial / feature matching, spectral, balancer, CodecLoss, presets."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist

from audiocodec.discriminators import MultiDiscriminator
from audiocodec.errors import ConfigError
from audiocodec.losses import (Balancer, CodecLoss, MelLoss, MultiScaleSTFTLoss, discriminator_loss,
                               feature_matching_loss, generator_loss, waveform_l1)
from audiocodec.losses import balancer as balancer_module
from audiocodec.losses.presets import ENCODEC, PRESETS, WAVTOKENIZER, build_preset, get_preset

TINY_DISCS = [{"type": "mpd", "channels": [4, 8, 16, 16, 16], "periods": [2, 3]},
              {"type": "mrd", "channels": 4, "resolutions": [[256, 64, 256], [128, 32, 128]]}]


pytestmark = pytest.mark.usefixtures("native_cpu_convs")


def _wav(batch=2, length=4800, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    f = 150 + 300 * torch.rand(batch, 1, 1, generator=g)
    return (0.5 * torch.sin(2 * torch.pi * f * t) + 0.02 * torch.randn(batch, 1, length, generator=g)).float()


# -- adversarial ---------------------------------------------------------------------------------------
def test_discriminator_losses_zero_at_the_margins():
    big = [torch.full((2, 1, 7), 5.0), torch.full((2, 1, 3, 4), 9.0)]
    neg = [-t for t in big]
    for kind in ("hinge", "hinge_linear"):
        assert discriminator_loss(big, neg, kind) == 0
        assert discriminator_loss(neg, big, kind) > 0
    assert discriminator_loss([torch.ones(2, 5)], [torch.zeros(2, 5)], "lsgan") == 0
    assert discriminator_loss([torch.zeros(2, 5)], [torch.ones(2, 5)], "lsgan") == pytest.approx(2.0)


def test_generator_losses():
    assert generator_loss([torch.full((3, 4), 2.0)], "hinge") == 0
    assert generator_loss([torch.full((3, 4), -1.0)], "hinge") == pytest.approx(2.0)
    assert generator_loss([torch.full((3, 4), 2.0)], "hinge_linear") == pytest.approx(-2.0)
    assert generator_loss([torch.ones(3, 4)], "lsgan") == 0
    # averaged over sub-discriminators
    assert generator_loss([torch.zeros(2, 3), torch.full((2, 9), -2.0)], "lsgan") == pytest.approx((1 + 9) / 2)
    with pytest.raises(ConfigError, match="wgan"):
        generator_loss([torch.zeros(1)], "wgan")


def test_feature_matching():
    real = [[torch.ones(2, 3), torch.zeros(2, 5)], [torch.ones(4)]]
    fake = [[torch.zeros(2, 3, requires_grad=True), torch.zeros(2, 5, requires_grad=True)],
            [torch.full((4,), 3.0, requires_grad=True)]]
    assert feature_matching_loss(real, real) == 0
    total = feature_matching_loss(real, fake, "sum")
    assert total.item() == pytest.approx((1 + 0 + 2) / 2)
    assert feature_matching_loss(real, fake, "mean").item() == pytest.approx((0.5 + 2) / 2)
    real_leaf = torch.ones(2, 3, requires_grad=True)
    feature_matching_loss([[real_leaf]], [[fake[0][0]]]).backward()
    assert real_leaf.grad is None and fake[0][0].grad is not None  # real maps are detached


def test_feature_matching_on_bf16_maps_keeps_their_dtype_and_layout():
    """bf16 NHWC maps (as the discriminators give under autocast): an fp32 value within bf16 rounding of the exact
    mean |real - fake|, and the gradient sign(fake - real) / n in the map's own dtype and memory layout."""
    g = torch.Generator().manual_seed(0)
    shape = (4, 16, 50, 3)
    real = torch.randn(shape, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    fake = torch.randn(shape, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    fake.requires_grad_()
    value = feature_matching_loss([[real]], [[fake]])
    exact = (real.double() - fake.detach().double()).abs().mean()
    assert value.dtype == torch.float32 and value.item() == pytest.approx(exact.item(), rel=4e-3)
    value.backward()
    assert fake.grad.dtype == torch.bfloat16 and fake.grad.is_contiguous(memory_format=torch.channels_last)
    expected = torch.sign(fake.detach().double() - real.double()) / fake.numel()
    torch.testing.assert_close(fake.grad.double(), expected, rtol=1e-2, atol=0)


# -- spectral ------------------------------------------------------------------------------------------
def test_mel_loss_zero_for_identical_and_grows_with_noise():
    mel = MelLoss()
    x = _wav()
    assert mel(x, x) == 0
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    values = [mel(x + a * noise, x).item() for a in (0.001, 0.01, 0.1)]
    assert 0 < values[0] < values[1] < values[2]


def test_mel_loss_matches_wavtokenizer_formula():
    torchaudio = pytest.importorskip("torchaudio")
    x, y = _wav(seed=0), _wav(seed=3)
    spec = torchaudio.transforms.MelSpectrogram(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100,
                                                center=True, power=1)
    ref = torch.nn.functional.l1_loss(torch.log(spec(x).clip(min=1e-7)), torch.log(spec(y).clip(min=1e-7)))
    torch.testing.assert_close(MelLoss()(x, y), ref, rtol=1e-4, atol=1e-5)


def test_spectral_losses_fp32_under_bf16_autocast():
    x = _wav()
    y = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    losses = [MelLoss(), MultiScaleSTFTLoss(), MultiScaleSTFTLoss(**ENCODEC["loss"]["stft"])]
    for loss in losses:
        ref = loss(y, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = loss(y.bfloat16(), x)
        assert got.dtype == torch.float32 and torch.isfinite(got)
        torch.testing.assert_close(got, ref, rtol=0.05, atol=1e-3)
        assert loss(x, x) == 0
        loss(y, x).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_multiscale_stft_loss_weights_and_config_errors():
    x, y = _wav(seed=0), _wav(seed=1)
    plain = MultiScaleSTFTLoss(n_ffts=[256, 128])
    normed = MultiScaleSTFTLoss(n_ffts=[256, 128], normalize=True)
    torch.testing.assert_close(normed(x, y), plain(x, y) / 4)
    log_only = MultiScaleSTFTLoss(n_ffts=[256], mag_weight=0)
    mag_only = MultiScaleSTFTLoss(n_ffts=[256], log_weight=0)
    torch.testing.assert_close(log_only(x, y) + mag_only(x, y), MultiScaleSTFTLoss(n_ffts=[256])(x, y))
    with pytest.raises(ConfigError, match="hop"):
        MelLoss(resolutions=[{"n_fft": 512, "hop": 128, "n_mels": 40}])
    with pytest.raises(ConfigError, match="n_mels"):
        MelLoss(resolutions=[{"n_fft": 512}])
    assert waveform_l1(x, x) == 0 and waveform_l1(x, -x) == pytest.approx(2 * x.abs().mean().item())


# -- balancer ------------------------------------------------------------------------------------------
def _toy_losses(y):
    return {"a": 100 * (y ** 2).mean(), "b": (y * torch.linspace(-1, 1, y.shape[-1])).sum() * 1e-3,
            "c": (y - 1).abs().mean()}


def _partial_grads(y):
    return {k: torch.autograd.grad(v, y, retain_graph=True)[0] for k, v in _toy_losses(y).items()}


def _item_norm(g):
    return g.flatten(1).norm(dim=1).mean().item()


def test_balancer_gives_each_loss_its_share():
    torch.manual_seed(0)
    weights = {"a": 1.0, "b": 3.0, "c": 4.0}
    bal = Balancer(weights, total_norm=2.0, ema_decay=0.9)
    y = torch.randn(4, 1, 64, requires_grad=True)
    grad, effective, scales = bal.gradient(_toy_losses(y), y)
    partial = _partial_grads(y)
    for k, w in weights.items():  # first step: the average norm is the current norm
        assert _item_norm(scales[k] * partial[k]) == pytest.approx(2.0 * w / 8, rel=1e-4)
    torch.testing.assert_close(grad, sum(scales[k] * partial[k] for k in weights))
    losses = _toy_losses(y)
    assert effective.item() == pytest.approx(sum(scales[k] * losses[k].item() for k in weights), rel=1e-5)
    # second step: the norms are an EMA (bias corrected) of both steps
    y2 = (3 * torch.randn(4, 1, 64)).requires_grad_(True)
    norms1 = {k: _item_norm(g) for k, g in partial.items()}
    norms2 = {k: _item_norm(g) for k, g in _partial_grads(y2).items()}
    _, _, scales2 = bal.gradient(_toy_losses(y2), y2)
    for k, w in weights.items():
        avg = (0.9 * norms1[k] + norms2[k]) / 1.9
        assert scales2[k] == pytest.approx(w / 8 * 2.0 / avg, rel=1e-4)


def test_balancer_surrogate_backward_and_plain_weights():
    torch.manual_seed(0)
    y = torch.randn(3, 1, 32, requires_grad=True)
    bal = Balancer({"a": 1.0, "b": 1.0, "c": 2.0}, ema_decay=0.0)
    grad, effective, _ = Balancer({"a": 1.0, "b": 1.0, "c": 2.0}, ema_decay=0.0).gradient(_toy_losses(y), y)
    s = bal.surrogate(_toy_losses(y), y)
    assert s.item() == pytest.approx(effective.item(), rel=1e-5)
    s.backward()
    torch.testing.assert_close(y.grad, grad)
    y.grad = None
    plain = Balancer({"a": 2.0, "b": 0.0, "c": 0.5}, balance_grads=False)
    plain.backward(_toy_losses(y), y)
    p = _partial_grads(y)
    torch.testing.assert_close(y.grad, 2 * p["a"] + 0.5 * p["c"])
    # the moving averages can be checkpointed as plain floats
    fresh = Balancer()
    fresh.load_training_state(bal.training_state())
    assert fresh._ema == bal._ema and isinstance(bal.training_state()["ema"]["a"][0], float)


def test_balancer_averages_norms_over_ranks(monkeypatch):
    """With a process group the norms are averaged over ranks (weighted by batch size) before the EMA."""
    torch.manual_seed(0)
    other = {"a": 10.0, "b": 0.5, "c": 1.0}                      # norms reported by a second rank, batch 6

    def fake_all_reduce(t, op=None):
        t += torch.tensor([other[k] * 6 for k in ("a", "b", "c")] + [6.0])

    monkeypatch.setattr(balancer_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(balancer_module.dist, "all_reduce", fake_all_reduce)
    bal = Balancer({"a": 1.0, "b": 1.0, "c": 1.0}, total_norm=1.0)
    y = torch.randn(2, 1, 16, requires_grad=True)
    _, _, scales = bal.gradient(_toy_losses(y), y)
    mine = {k: _item_norm(g) for k, g in _partial_grads(y).items()}
    for k in mine:
        assert scales[k] == pytest.approx(1 / 3 / ((2 * mine[k] + 6 * other[k]) / 8), rel=1e-4)


def test_balancer_with_a_real_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already running")
    path = os.path.join(tempfile.mkdtemp(), "pg")
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    try:
        y = torch.randn(2, 1, 16, requires_grad=True)
        _, _, scales = Balancer({"a": 1.0, "b": 1.0, "c": 2.0}).gradient(_toy_losses(y), y)
        mine = {k: _item_norm(g) for k, g in _partial_grads(y).items()}
        assert scales["c"] == pytest.approx(0.5 / mine["c"], rel=1e-4)
    finally:
        dist.destroy_process_group()


# -- CodecLoss -----------------------------------------------------------------------------------------
def _codec_loss(**kw):
    cfg = dict(weights={"mel": 45, "adversarial": 1, "feature": 2, "commitment": 1000, "adversarial/mrd": 0.5},
               adversarial={"mpd": "hinge", "mrd": "lsgan"})
    cfg.update(kw)
    return CodecLoss(**cfg)


def test_codec_loss_generator_terms_and_total():
    torch.manual_seed(0)
    disc = MultiDiscriminator(TINY_DISCS)
    real = _wav()
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    loss = _codec_loss()
    out = loss.generator_loss(real, fake, disc, model_losses={"commitment": torch.tensor(0.002)})
    assert set(out.terms) == {"mel", "adversarial/mpd", "feature/mpd", "adversarial/mrd", "feature/mrd",
                              "commitment", "total"}
    t = out.terms
    expected = (45 * t["mel"] + t["adversarial/mpd"] + 0.5 * t["adversarial/mrd"] + 2 * t["feature/mpd"]
                + 2 * t["feature/mrd"] + 1000 * t["commitment"])
    torch.testing.assert_close(out.loss.detach(), expected)
    out.loss.backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    # the discriminator was frozen during the generator pass, and is trainable again after it
    assert all(p.grad is None and p.requires_grad for p in disc.parameters())
    # without a discriminator (reconstruction warm-up) only the other terms remain
    out = loss.generator_loss(real, fake, None, model_losses={"commitment": torch.tensor(0.0)})
    assert set(out.terms) == {"mel", "commitment", "total"}


def test_codec_loss_discriminator_side():
    torch.manual_seed(0)
    disc = MultiDiscriminator(TINY_DISCS)
    real, fake = _wav(), _wav(seed=5).requires_grad_(True)
    out = _codec_loss(weights={"mel": 1, "discriminator/mrd": 2.0}).discriminator_loss(real, fake, disc)
    assert set(out.terms) == {"discriminator/mpd", "discriminator/mrd", "discriminator/total"}
    torch.testing.assert_close(out.loss.detach(), out.terms["discriminator/mpd"] + 2 * out.terms["discriminator/mrd"])
    out.loss.backward()
    assert fake.grad is None                       # the generator output is detached
    assert all(p.grad is not None for p in disc.parameters())


def test_codec_loss_config_errors():
    disc = MultiDiscriminator(TINY_DISCS)
    real = _wav(batch=1, length=2400)
    with pytest.raises(ConfigError, match="comitment"):
        CodecLoss({"mel": 1, "comitment": 1}).generator_loss(real, real, None, {"commitment": torch.tensor(0.)})
    with pytest.raises(ConfigError, match="codebook"):
        CodecLoss({"mel": 1}).generator_loss(real, real, None, {"codebook": torch.tensor(0.)})
    with pytest.raises(ConfigError, match="mrd"):
        CodecLoss({"adversarial": 1}, adversarial={"mpd": "hinge"}).generator_loss(real, real, disc)
    with pytest.raises(ConfigError, match="msd"):
        CodecLoss({"adversarial": 1, "feature/msd": 1}).generator_loss(real, real, disc)
    with pytest.raises(ConfigError, match="bogus"):
        CodecLoss({"mel": 1}, mel={"bogus": 1})
    with pytest.raises(ConfigError, match="wgan"):
        CodecLoss({"mel": 1}, adversarial="wgan")
    with pytest.raises(ConfigError, match="emma"):
        CodecLoss({"mel": 1}, balancer={"emma_decay": 0.9})


def test_codec_loss_with_balancer_routes_balanced_gradient():
    torch.manual_seed(0)
    disc = MultiDiscriminator(TINY_DISCS[:1])
    real = _wav(batch=2, length=2400)
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    commit = torch.tensor(0.5, requires_grad=True)
    loss = CodecLoss({"mel": 2, "l1": 1, "adversarial": 1, "feature": 0, "commitment": 3},
                     balancer={"total_norm": 1.0, "ema_decay": 0.5})
    out = loss.generator_loss(real, fake, disc, {"commitment": commit})
    out.loss.backward()
    assert commit.grad.item() == pytest.approx(3.0)        # outside the balancer: plain weight
    norm = fake.grad.flatten(1).norm(dim=1).mean().item()
    assert 0.3 < norm <= 1.0 + 1e-4                         # shares of total_norm 1 (norms add up to <= 1)
    assert set(loss.balancer.metrics) == {"ratio/mel", "ratio/l1", "ratio/adversarial/mpd"}


def test_bf16_generator_and_discriminator_losses_are_finite():
    torch.manual_seed(0)
    disc = MultiDiscriminator(TINY_DISCS + [{"type": "msstft", "filters": 4, "n_ffts": [256, 128]}])
    real = _wav(batch=2, length=2400)
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    loss = CodecLoss({"mel": 45, "stft": 1, "l1": 1, "adversarial": 1, "feature": 1}, adversarial="lsgan")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_out = loss.discriminator_loss(real, fake, disc)
        g_out = loss.generator_loss(real, fake.bfloat16(), disc)
    d_out.loss.backward()
    g_out.loss.backward()
    assert all(torch.isfinite(v) for v in {**d_out.terms, **g_out.terms}.values())
    assert torch.isfinite(fake.grad).all()


def test_discriminator_learns_against_a_frozen_generator():
    """Tiny GAN loop: G is frozen; a few D steps drive the D loss down."""
    torch.manual_seed(0)
    gen = torch.nn.Conv1d(1, 1, 9, padding=4)           # a toy 'generator' that smears its input
    for p in gen.parameters():
        p.requires_grad_(False)
    disc = MultiDiscriminator([{"type": "mpd", "channels": [4, 8, 8, 8, 8], "periods": [2, 3]},
                               {"type": "mrd", "channels": 4, "resolutions": [[128, 32, 128]]}])
    loss = CodecLoss({"mel": 1, "adversarial": 1}, adversarial="hinge")
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.5, 0.9))
    real = _wav(batch=4, length=2400)
    values = []
    for _ in range(25):
        fake = gen(real)
        out = loss.discriminator_loss(real, fake, disc)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        values.append(out.loss.item())
    assert values[-1] < 0.5 * values[0], values
    g_out = loss.generator_loss(real, gen(real).requires_grad_(True), disc)
    assert g_out.terms["adversarial/mpd"] > 0


# -- presets -------------------------------------------------------------------------------------------
def test_presets_build():
    assert set(PRESETS) == {"wavtokenizer", "encodec"}
    wt = get_preset("wavtokenizer")
    assert wt == WAVTOKENIZER and wt is not WAVTOKENIZER
    with torch.device("meta"):       # full-size discriminators: only their structure and size here
        discs = MultiDiscriminator(wt["discriminators"])
    assert discs.names == ["mpd", "mrd", "dac"]
    assert sum(p.numel() for p in discs.parameters()) == 41_105_770 + 600_198 + 42_519_760
    loss = CodecLoss(**wt["loss"])
    assert loss.weight("adversarial/mrd") == 1 and loss.weight("feature/dac") == 8 and loss.kind("dac") == "lsgan"
    assert loss.mel.specs[0].n_fft == 1024 and loss.mel.specs[0].mel_fb.shape == (513, 100)
    with pytest.raises(ConfigError, match="known"):
        get_preset("soundstream")


def test_encodec_preset_runs_end_to_end():
    torch.manual_seed(0)
    disc, loss = build_preset("encodec")
    assert len(disc(_wav(batch=1, length=2400))[0]) == 5 and loss.balancer is not None
    real = _wav(batch=2, length=2400)
    fake = (real + 0.05 * torch.randn_like(real)).requires_grad_(True)
    d_out = loss.discriminator_loss(real, fake, disc)
    g_out = loss.generator_loss(real, fake, disc, {"commitment": torch.tensor(0.1)})
    g_out.loss.backward()
    assert {"stft", "l1", "adversarial/msstft", "feature/msstft"} <= set(g_out.terms)
    assert torch.isfinite(d_out.loss) and torch.isfinite(fake.grad).all()
