"""The hierarchical model and its Bit-Swap codec: a generalisation of the single-latent engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import engine_round_trip

from bbans.coding import codecs, engine
from bbans.coding.ans import Message
from bbans.coding.distributions import (discretized_logistic_cdf, discretized_logistic_logp,
                                        discretized_logistic_mix_logp)
from bbans.coding.engine import EngineConfig
from bbans.coding.inference import posterior
from bbans.errors import BBANSError, MismatchError
from bbans.models import likelihoods
from bbans.models.architecture import build_model, default_architecture
from bbans.models.hierarchy import HierarchicalVAE, merge_groups, split_groups
from bbans.training import calibration

SHAPE = (1, 8, 8)


def tiny(likelihood="logistic_mix", layers=3, seed=0, scales=None, pixel_groups=1):
    torch.manual_seed(seed)
    m = HierarchicalVAE(likelihood, image_shape=SHAPE, width=8, latent_channels=2, layers=layers, mixtures=2,
                        latent_scales=scales, pixel_groups=pixel_groups)
    # Sharpen the random networks a little so the posteriors are narrower than the priors and
    # the rates are not all at the top of the range; give the pixel-group heads (zero at birth)
    # weights of their own, so the groups really depend on each other.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5)
        for head in m.decoder[layers:]:
            for p in head.parameters():
                if not p.any():
                    p.normal_(0.0, 0.5)
    return m.eval()


def images(likelihood, n, seed=0):
    rng = np.random.default_rng(seed)
    if likelihood == "bernoulli":
        return rng.integers(0, 2, size=(n,) + SHAPE, dtype=np.uint8)
    base = rng.integers(0, 256, size=(n, 1, 1, 1))
    return np.clip(base + rng.integers(-20, 21, size=(n,) + SHAPE), 0, 255).astype(np.uint8)


def roundtrip(model, x, mask=None, **cfg):
    return engine_round_trip(model, x, mask, **{"lanes": 16, "batch_size": 4, "threads": 1, **cfg})


def test_latent_shapes_follow_the_image_size():
    m = tiny()
    assert m.latent_shapes((1, 28, 28)) == [(2, 14, 14), (2, 7, 7), (2, 7, 7)]
    assert m.latent_shapes((1, 32, 64)) == [(2, 16, 32), (2, 8, 16), (2, 8, 16)]
    assert m.latent_shapes_above(0, (2, 16, 32)) == [(2, 8, 16), (2, 8, 16)]
    assert m.latent_shapes_above(1, (2, 8, 16)) == [(2, 8, 16)]
    assert m.latent_shapes_above(2, (2, 8, 16)) == []


def test_architecture_rebuilds_the_same_model():
    m = tiny(scales=[0.5, 0.7, 1.0])
    again = build_model(m.architecture())
    assert again.architecture() == m.architecture()
    assert again.latent_scales == [0.5, 0.7, 1.0]
    arch = default_architecture("mnist", family="hierarchical")
    assert build_model(arch).latent_layers == 3


def test_neg_elbo_is_finite_and_trains():
    m = tiny().train()
    x = torch.as_tensor(images("logistic_mix", 6))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(30):
        loss = m.neg_elbo(x, generator=g).mean()
        assert torch.isfinite(loss)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


def test_mixture_of_one_logistic_is_the_logistic():
    torch.manual_seed(1)
    mean, ls = torch.randn(50).double() * 0.5, torch.randn(50).double() - 3
    x = torch.randint(0, 256, (50,))
    one = discretized_logistic_mix_logp(x.reshape(50, 1, 1, 1), torch.zeros(50, 1, 1, 1, 1).double(),
                                        mean.reshape(50, 1, 1, 1, 1), ls.reshape(50, 1, 1, 1, 1))
    assert torch.allclose(one.reshape(-1), discretized_logistic_logp(x, mean, ls))
    tables_mix = codecs.quantize_cdf(
        __import__("bbans.coding.distributions", fromlist=["x"]).discretized_logistic_mix_cdf(
            torch.zeros(50, 1).double(), mean[:, None], ls[:, None]), 20)
    assert torch.equal(tables_mix, codecs.quantize_cdf(discretized_logistic_cdf(mean, ls), 20))


def test_logistic_mix_codec_roundtrips_and_costs_its_log_likelihood():
    torch.manual_seed(2)
    n, m_ = 3, 3
    w, mean, ls = torch.randn(n, m_, 1, 5, 5), torch.rand(n, m_, 1, 5, 5) * 2 - 1, torch.rand(n, m_, 1, 5, 5) - 2
    x = torch.randint(0, 256, (n, 1, 5, 5))
    msg = Message(8)
    codec = likelihoods.LogisticMix(m_).codec({"logit_w": w, "mean": mean, "log_scale": ls}, 20)
    before = msg.bits()
    codec.push(msg, x)
    bits = msg.bits() - before
    assert np.array_equal(codec.pop(msg), x.numpy().reshape(-1))
    nats = -float(discretized_logistic_mix_logp(x, w, mean, ls).double().sum())
    # The message grows in 32-bit words per lane.
    assert abs(bits - nats / math.log(2)) < 8 * 32 + 0.01 * bits


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mix"])
@pytest.mark.parametrize("K", [0, 2])
def test_roundtrip_is_exact_for_every_layer_count_and_K(likelihood, K):
    for layers in (1, 2, 3):
        m = tiny(likelihood, layers=layers, scales=[0.8] * (layers - 1) + [1.0])
        x = images(likelihood, 9, seed=layers)
        _, stats, back = roundtrip(m, x, K=K, lr=1e-2)
        assert np.array_equal(back, x), (layers, K)
        assert stats["discrete_neg_elbo_bits"] > 0


def test_roundtrip_with_padding_mask_leaves_padding_uncoded():
    m = tiny()
    x = images("logistic_mix", 5)
    mask = np.ones((5,) + SHAPE[1:], dtype=bool)
    mask[:, 6:, :] = False
    _, _, back = roundtrip(m, x, mask)
    assert np.array_equal(back, x * mask[:, None])


@pytest.mark.parametrize("likelihood,pixel_groups", [("logistic_mix", 1), ("bernoulli", 4)])
def test_coded_size_matches_the_discretised_elbo(likelihood, pixel_groups):
    m = tiny(likelihood, pixel_groups=pixel_groups)
    x = images(likelihood, 40)
    payload, stats, back = roundtrip(m, x, batch_size=8)
    assert np.array_equal(back, x)
    # Everything beyond the expected code length is the initial bits and the heads' bytes.
    extra = 8 * len(payload) - stats["discrete_neg_elbo_bits"]
    assert -64 < extra < stats["initial_bits"] + 16 * 64 + 0.01 * stats["discrete_neg_elbo_bits"]


def test_bitswap_borrows_only_the_first_layers_initial_bits():
    """The first image's pops of z2 and z3 are funded by x and z1 just pushed, so a deeper
    hierarchy borrows exactly what the single layer does (same seed: same q(z1|x) weights)."""
    x = images("logistic_mix", 1)
    config = EngineConfig(lanes=1, batch_size=1, threads=1)
    initial = {}
    for layers in (1, 3):
        m = tiny(layers=layers)
        _, stats = engine.compress(m, x, None, config)
        initial[layers] = stats["initial_bits"]
    assert initial[1] > 0
    assert initial[3] == initial[1]


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mix"])
def test_only_the_first_image_borrows_initial_bits_however_many_follow(likelihood):
    """Binary images net fewer bits than their latents' pops draw, so batches sized without
    regard to the message's depth borrow fresh phantom words (2784 bits here with the doubling
    ramp); batches funded by their deepest draw borrow only the first image's."""
    m = tiny(likelihood)
    x = images(likelihood, 60)
    config = EngineConfig(lanes=16, batch_size=16, threads=1)
    _, first = engine.compress(m, x[:1], None, config)
    payload, stats = engine.compress(m, x, None, config)
    assert stats["initial_bits"] == first["initial_bits"]
    assert np.array_equal(engine.decompress(m, payload, len(x), x.shape[1:], None, stats["config"]), x)


def test_k_step_posterior_is_deterministic_and_moves_every_layer():
    m = tiny()
    x = torch.as_tensor(images("logistic_mix", 4))
    below = x
    for layer in range(3):
        a = posterior(m, below, K=3, lr=1e-2, seed=5, batch_index=2, layer=layer)
        b = posterior(m, below, K=3, lr=1e-2, seed=5, batch_index=2, layer=layer)
        amort = posterior(m, below, K=0, layer=layer)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], amort[0])
        below = amort[0]


def test_calibration_keeps_the_top_at_one_and_sets_the_models_scales():
    m = tiny()
    scales = calibration.calibrate_latent_scales(m, images("logistic_mix", 20))
    assert scales[-1] == 1.0 and all(s > 0 for s in scales)
    assert m.architecture()["latent_scales"] == scales


def test_bucketed_estimate_agrees_with_what_the_coder_spends():
    m = tiny()
    x = images("logistic_mix", 64)
    _, stats = engine.compress(m, x, config=EngineConfig())
    coded = stats["discrete_neg_elbo_bits"]
    estimate = np.mean([calibration.bucketed_neg_elbo_bits(m, x, seed=s) for s in range(3)])
    assert abs(estimate - coded) < 0.02 * coded


def test_wrong_image_size_is_refused_with_a_clear_error():

    with pytest.raises(BBANSError, match="divisible by 4"):
        tiny().latent_shapes((1, 30, 28))


# ---- pixel groups ----------------------------------------------------------------------------

def test_pixel_groups_split_and_merge_are_inverse():
    t = torch.arange(2 * 3 * 8 * 6).reshape(2, 3, 8, 6)
    parts = split_groups(t)
    assert [tuple(p.shape) for p in parts] == [(2, 3, 4, 3)] * 4
    assert torch.equal(merge_groups(parts), t)
    assert sorted(int(p.sum()) for p in parts) != [int(parts[0].sum())] * 4  # four different pixel sets


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mix"])
def test_a_pixel_group_reads_only_the_groups_before_it(likelihood):
    m = tiny(likelihood, pixel_groups=4)
    x = torch.as_tensor(images(likelihood, 3))
    params = m.decode(m.sample_latents(3, SHAPE))
    other = torch.as_tensor(images(likelihood, 3, seed=9))
    for g in range(4):
        # Later groups (and this one) replaced by other pixels: the group's parameters stay.
        mixed = merge_groups(split_groups(x)[:g] + split_groups(other)[g:])
        a, b = m.group_params(params, x, g), m.group_params(params, mixed, g)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # ...and they do read the earlier ones.
    changed = m.group_params(params, other, 3)
    assert not all(torch.equal(changed[k], m.group_params(params, x, 3)[k]) for k in changed)


def test_new_pixel_group_heads_leave_the_likelihood_unchanged():
    # What lets `run_from_bundle.py --pixel-groups 4` start from a trained model's own -ELBO.
    plain = tiny("bernoulli")
    grouped = HierarchicalVAE("bernoulli", image_shape=SHAPE, width=8, latent_channels=2, layers=3, mixtures=2,
                              pixel_groups=4)
    missing, unexpected = grouped.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("decoder.3.", "decoder.4.", "decoder.5.")) for k in missing)
    x = torch.as_tensor(images("bernoulli", 4))
    z = plain.sample_latents(4, SHAPE)
    assert torch.allclose(grouped.log_px(x, grouped.decode(z)), plain.log_px(x, plain.decode(z)))


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mix"])
@pytest.mark.parametrize("K", [0, 2])
def test_roundtrip_is_exact_with_pixel_groups(likelihood, K):
    m = tiny(likelihood, pixel_groups=4, scales=[0.8, 0.8, 1.0])
    x = images(likelihood, 9, seed=K)
    mask = np.ones((9,) + SHAPE[1:], dtype=bool)
    mask[::2, 5:, 3:] = False
    for msk in (None, mask):
        _, stats, back = roundtrip(m, x, msk, K=K, lr=1e-2)
        assert np.array_equal(back, x if msk is None else x * msk[:, None])
    assert m.architecture()["pixel_groups"] == 4 and build_model(m.architecture()).pixel_groups == 4


def test_pixel_grouped_samples_have_the_image_shape():
    m = tiny("logistic_mix", pixel_groups=4)
    g = torch.Generator().manual_seed(0)
    x = m.sample_x(m.decode(m.sample_latents(3, SHAPE, generator=g)), generator=g)
    assert x.shape == (3,) + SHAPE and x.dtype == torch.uint8


def test_pixel_groups_are_refused_outside_the_hierarchy():
    with pytest.raises(BBANSError, match="hierarchical"):
        default_architecture("mnist", family="paper", pixel_groups=4)
    with pytest.raises(BBANSError, match="pixel_groups"):
        HierarchicalVAE("bernoulli", image_shape=SHAPE, pixel_groups=3)


# ---- collapsed latent channels and the latent precision ------------------------------------------


@pytest.mark.parametrize("K", [0, 2])
def test_collapsed_channels_round_trip_and_are_neither_popped_nor_pushed(K):
    m = tiny("bernoulli", pixel_groups=4)
    x = images("bernoulli", 12)
    collapsed = ((0, 1), (2, 0))
    payload, stats, back = roundtrip(m, x, K=K, lr=1e-2, collapsed=collapsed)
    assert np.array_equal(back, x)
    assert stats["config"].collapsed == collapsed
    # Coding one channel of z1 fewer and one of z3: the coder's own figure drops those terms,
    # and what the message spends still follows it.
    extra = 8 * len(payload) - stats["discrete_neg_elbo_bits"]
    assert -64 < extra < stats["initial_bits"] + 16 * 64 + 0.01 * stats["discrete_neg_elbo_bits"]
    # Every image's z1 channel 1 holds the bucket just above 0, on both ends.
    with engine.deterministic(stats["config"]):
        s = engine.Session(m, stats["config"])
        trace = engine._Trace(0.0)
        s.batch_codec(len(x), SHAPE, None, 0, 0, trace).push(Message(16, seed=0), torch.as_tensor(x))
    idx = trace.layers[0]["idx"].reshape((len(x),) + m.latent_shapes(SHAPE)[0])
    assert (idx[:, 1] == 1 << (EngineConfig().prior_prec - 1)).all()
    assert not (idx[:, 0] == 1 << (EngineConfig().prior_prec - 1)).all()


def test_collapsing_channels_shallows_the_draw_that_funds_a_batch():
    m = tiny("bernoulli")
    x = images("bernoulli", 1)
    config = EngineConfig(lanes=1, batch_size=1, threads=1)
    _, every = engine.compress(m, x, None, config)
    _, fewer = engine.compress(m, x, None, EngineConfig(**{**config.to_dict(), "collapsed": [[0, 0]]}))
    assert fewer["initial_bits"] < every["initial_bits"]


def test_archives_name_collapsed_channels_only_when_there_are_some():
    assert "collapsed" not in EngineConfig().to_dict()
    cfg = EngineConfig(collapsed=((1, 0), (0, 3)))
    assert EngineConfig.from_dict(cfg.to_dict()).collapsed == ((0, 3), (1, 0))


def test_a_collapsed_channel_the_model_lacks_is_refused_by_name():
    m = tiny()
    x = images("logistic_mix", 2)
    payload, stats = engine.compress(m, x, None, EngineConfig(lanes=16, threads=1))
    bad = EngineConfig(**{**stats["config"].to_dict(), "collapsed": [[0, 5]]})
    with pytest.raises(MismatchError, match="latent channel 5 of layer 0"):
        engine.decompress(m, payload, len(x), x.shape[1:], None, bad)


@pytest.mark.parametrize("prior_prec", [5, 8])
def test_every_latent_precision_round_trips_and_fewer_buckets_draw_less(prior_prec):
    m = tiny("bernoulli", pixel_groups=4)
    x = images("bernoulli", 10)
    _, stats, back = roundtrip(m, x, prior_prec=prior_prec)
    assert np.array_equal(back, x)
    one = EngineConfig(lanes=1, batch_size=1, threads=1, prior_prec=prior_prec)
    _, first = engine.compress(m, x[:1], None, one)
    _, eight = engine.compress(m, x[:1], None, EngineConfig(lanes=1, batch_size=1, threads=1))
    assert (first["initial_bits"] < eight["initial_bits"]) == (prior_prec < 8)


def test_a_bundles_latent_coding_becomes_the_engine_settings():
    m = tiny()
    assert engine.model_settings(m)["collapsed"] == () and engine.model_settings(m)["prior_prec"] == 8
    m.collapsed_latents, m.latent_prec = ((2, 1), (0, 0)), 6
    assert engine.model_settings(m)["collapsed"] == ((0, 0), (2, 1))
    assert engine.model_settings(m)["prior_prec"] == 6


def test_log_px_of_coded_pixels_reuses_the_codecs_group_parameters_exactly():
    m = tiny("bernoulli", pixel_groups=4)
    x = torch.as_tensor(images("bernoulli", 3))
    with torch.no_grad():
        params = m.decode(m.encode(x)[0])
        fresh = m.log_px(x, params)
        m.observation_codec(params, 16).push(Message(8, seed=0), x)
        assert set(params["coded_groups"]) == {0, 1, 2, 3}
        assert torch.equal(m.log_px(x, params), fresh)
