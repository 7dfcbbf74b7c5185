"""The BB-ANS engine: exact round trips, rates near the ELBO, and refusal of wrong settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import engine_round_trip as roundtrip
from torch import nn

from bbans.coding import engine
from bbans.coding.distributions import (bernoulli_logp, discretized_logistic_logp, gaussian_kl_std_normal,
                                        rgb_dependent_means)
from bbans.coding.engine import EngineConfig, batch_partition
from bbans.errors import MismatchError
from bbans.models import likelihoods
from bbans.models.base import VAE


class TinyVAE(VAE):
    """A small untrained-but-random VAE with the engine's model interface."""

    def __init__(self, likelihood: str, shape=(1, 6, 5), latent=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.likelihood = likelihood
        self.px = likelihoods.make(likelihood)
        self.image_shape = shape
        c, h, w = shape
        self.latent = latent
        d = c * h * w
        self.enc = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2 * latent))
        out = {"bernoulli": 1, "logistic": 2, "logistic_rgb": 3}[likelihood] * d
        self.dec = nn.Sequential(nn.Linear(latent, 16), nn.Tanh(), nn.Linear(16, out))

    def latent_shape(self, image_shape=None):
        return (self.latent,)

    def encode(self, x):
        x = x.to(self.enc[0].weight.dtype)
        h = self.enc(x.flatten(1) / 127.5 - 1.0)
        mu, raw = h.chunk(2, dim=1)
        return mu, nn.functional.softplus(raw) + 1e-3

    def decode(self, z):
        n = z.shape[0]
        h = self.dec(z).reshape(n, -1, *self.image_shape)
        if self.likelihood == "bernoulli":
            return {"logits": h[:, 0]}
        if self.likelihood == "logistic":
            return {"mean": torch.tanh(h[:, 0]), "log_scale": h[:, 1].clamp(-5, 1) - 2}
        return {"mean": torch.tanh(h[:, 0]), "log_scale": h[:, 1].clamp(-5, 1) - 2, "coeffs": h[:, 2]}

    def log_px(self, x, params):
        if self.likelihood == "bernoulli":
            lp = bernoulli_logp(x, params["logits"])
        elif self.likelihood == "logistic":
            lp = discretized_logistic_logp(x, params["mean"], params["log_scale"])
        else:
            mean = rgb_dependent_means(params["mean"], params["coeffs"], x)
            lp = discretized_logistic_logp(x, mean, params["log_scale"])
        return lp.flatten(1).sum(1)

    def neg_elbo(self, x, generator=None):
        mu, std = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator)
        params = self.decode(mu + std * eps)
        return gaussian_kl_std_normal(mu, std).sum(1) - self.log_px(x, params)


def random_images(likelihood, n, shape, seed=0):
    rng = np.random.default_rng(seed)
    if likelihood == "bernoulli":
        return rng.integers(0, 2, size=(n,) + shape, dtype=np.uint8)
    # Smooth-ish images so a model has something to model.
    base = rng.integers(0, 256, size=(n, 1) + shape[1:])
    return np.clip(base + rng.integers(-8, 9, size=(n,) + shape), 0, 255).astype(np.uint8)


SHAPES = {"bernoulli": (1, 6, 5), "logistic": (1, 6, 5), "logistic_rgb": (3, 4, 4)}


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic", "logistic_rgb"])
@pytest.mark.parametrize("K", [0, 2])
def test_roundtrip_is_exact_for_every_likelihood_and_K(likelihood, K):
    shape = SHAPES[likelihood]
    model = TinyVAE(likelihood, shape)
    images = random_images(likelihood, 9, shape)
    _, _, out = roundtrip(model, images, K=K, batch_size=4, lanes=16)
    assert np.array_equal(out, images)


@pytest.mark.parametrize("batch_size,lanes", [(1, 1), (3, 7), (64, 128), (5, 1000)])
def test_roundtrip_is_exact_for_any_batch_size_and_lane_count(batch_size, lanes):
    model = TinyVAE("logistic")
    images = random_images("logistic", 11, (1, 6, 5), seed=3)
    _, _, out = roundtrip(model, images, K=1, batch_size=batch_size, lanes=lanes)
    assert np.array_equal(out, images)


def test_padding_pixels_are_not_coded_and_come_back_as_zero():
    model = TinyVAE("logistic")
    images = random_images("logistic", 6, (1, 6, 5), seed=4)
    mask = np.ones((6, 6, 5), dtype=bool)
    mask[:, 4:, :] = False
    mask[:, :, 3:] = False
    full_payload, _, _ = roundtrip(model, images, lanes=8)
    payload, _, out = roundtrip(model, images, mask=mask, lanes=8)
    assert np.array_equal(out, images * mask[:, None])
    assert len(payload) < len(full_payload)


def test_empty_input_roundtrips():
    model = TinyVAE("bernoulli")
    images = np.zeros((0, 1, 6, 5), dtype=np.uint8)
    _, stats, out = roundtrip(model, images)
    assert out.shape == images.shape
    assert stats["neg_elbo_bits"] == 0


def test_batches_grow_only_as_fast_as_the_message_can_fund_them():
    from bbans.coding.engine import funded_batch_size

    assert funded_batch_size(0, None, 100, 64) == 1  # the first batch: one image's initial bits
    assert funded_batch_size(10, 100.0, 100, 64) == 2  # 320 bits hold 90% of 3.2 pops of 100
    assert funded_batch_size(0, 100.0, 100, 64) == 1  # never zero, even unfunded
    assert funded_batch_size(10 ** 6, 100.0, 100, 64) == 64
    assert funded_batch_size(10 ** 6, 100.0, 7, 64) == 7


def test_recorded_batches_are_replayed_and_checked():
    cfg = EngineConfig.from_dict({**EngineConfig().to_dict(), "batches": [[1, 2], [3, 1]]})
    assert cfg.partition(5) == [1, 1, 3]
    with pytest.raises(MismatchError):
        cfg.partition(6)
    with pytest.raises(MismatchError):
        EngineConfig.from_dict({**EngineConfig().to_dict(), "batches": [[0, 2]]})
    # Settings without recorded batches (archives from before) use the doubling ramp.
    legacy = {k: v for k, v in EngineConfig().to_dict().items() if k != "batches"}
    assert EngineConfig.from_dict(legacy).partition(20) == batch_partition(20, 256)


def test_batch_partition_ramps_up_then_stays_at_batch_size():
    assert batch_partition(0, 8) == []
    assert batch_partition(1, 8) == [1]
    assert batch_partition(20, 8) == [1, 2, 4, 8, 5]
    assert sum(batch_partition(1000, 64)) == 1000


def test_chaining_batches_costs_less_than_separate_messages():
    model = TinyVAE("logistic")
    a = random_images("logistic", 8, (1, 6, 5), seed=5)
    b = random_images("logistic", 8, (1, 6, 5), seed=6)
    cfg = EngineConfig(lanes=4, batch_size=8)
    together, _ = engine.compress(model, np.concatenate([a, b]), config=cfg)
    alone_a, _ = engine.compress(model, a, config=cfg)
    alone_b, _ = engine.compress(model, b, config=cfg)
    assert len(together) < len(alone_a) + len(alone_b)


def test_rate_approaches_the_discretised_elbo_on_many_images():
    model = TinyVAE("logistic")
    images = random_images("logistic", 400, (1, 6, 5), seed=7)
    payload, stats, out = roundtrip(model, images, lanes=4, batch_size=64)
    assert np.array_equal(out, images)
    # Fixed costs (64 bits per lane, one image's initial bits) amortise over the set.
    assert stats["bits"] <= 1.01 * stats["discrete_neg_elbo_bits"] + 64 * 4 + 32 * 8 + 300


def test_decoding_with_a_different_K_is_refused_not_silently_wrong():
    model = TinyVAE("logistic")
    images = random_images("logistic", 10, (1, 6, 5), seed=8)
    payload, stats = engine.compress(model, images, config=EngineConfig(K=2, lanes=8, batch_size=4))
    # Refused by the engine itself (the message does not return to its initial state), not
    # left to the archive's checksum.
    with pytest.raises(MismatchError):
        engine.decompress(model, payload, 10, (1, 6, 5),
                          config=dataclasses.replace(stats["config"], K=0, batch_ks=()))


def test_k_steps_that_never_pay_are_not_taken_and_the_payload_is_k0s(monkeypatch):
    model = TinyVAE("logistic")
    images = random_images("logistic", 32, (1, 6, 5), seed=8)
    plain, _ = engine.compress(model, images, config=EngineConfig(K=0, lanes=8, batch_size=4))
    amortized = engine.posterior

    def steps_that_hurt(model, below, K=0, **kw):
        mu, std = amortized(model, below, K=0, **kw)
        return (mu + 6.0 if K else mu), std  # far out in the prior's tail: dearer in every batch

    monkeypatch.setattr(engine, "posterior", steps_that_hurt)
    payload, stats, out = roundtrip(model, images, K=4, lanes=8, batch_size=4)
    assert stats["batch_ks"] == [0] * len(stats["batch_ks"])
    assert payload == plain
    assert np.array_equal(out, images)


def test_steps_that_save_nothing_stop_being_tried_after_the_trial_images(monkeypatch):
    model = TinyVAE("logistic")
    images = random_images("logistic", 700, (1, 6, 5), seed=9)
    amortized = engine.posterior
    tried = []

    def steps_that_change_nothing(model, below, K=0, batch_index=0, **kw):
        if K:
            tried.append((batch_index, below.shape[0]))
        return amortized(model, below, K=0, batch_index=batch_index, **kw)

    monkeypatch.setattr(engine, "posterior", steps_that_change_nothing)
    payload, stats, out = roundtrip(model, images, K=3, lanes=8, batch_size=64)
    assert np.array_equal(out, images)
    tried_images = sum(n for _, n in tried)
    # Tried until STEP_TRIAL_IMAGES images were coded both ways, then never again.
    assert engine.STEP_TRIAL_IMAGES <= tried_images < engine.STEP_TRIAL_IMAGES + 64
    assert max(b for b, _ in tried) < len(stats["batch_ks"]) - 1
    assert stats["batch_ks"][-1] == 0


def test_batches_coded_with_and_without_steps_decode_exactly():
    model = TinyVAE("logistic")
    images = random_images("logistic", 32, (1, 6, 5), seed=8)
    payload, stats, out = roundtrip(model, images, K=4, lr=0.2, lanes=8, batch_size=4)
    assert set(stats["batch_ks"]) == {0, 4}  # this data mixes both: the case under test
    assert stats["config"].batch_ks == engine.run_lengths(stats["batch_ks"])
    assert np.array_equal(out, images)
    # Popping every batch with K steps instead is not the archive.
    with pytest.raises(MismatchError):
        engine.decompress(model, payload, 32, (1, 6, 5), config=dataclasses.replace(stats["config"], batch_ks=()))


@pytest.mark.parametrize("batch_ks,why", [([[5, 9]], "0..K"), ([[4, 3]], "cover 3 batches"), ([["a", 1]], "pairs")])
def test_batch_steps_that_do_not_fit_the_archive_are_refused(batch_ks, why):
    d = EngineConfig(K=4, batches=((1, 1), (4, 8))).to_dict()
    d["batch_ks"] = batch_ks
    with pytest.raises(MismatchError, match=why):
        engine.decompress(TinyVAE("logistic"), b"", 33, (1, 6, 5), config=EngineConfig.from_dict(d))


def test_an_archive_that_takes_k_steps_everywhere_records_no_batch_steps():
    d = EngineConfig(K=3).to_dict()
    assert "batch_ks" not in d  # readable by versions before per-batch steps


def test_decoding_with_another_model_is_refused():
    images = random_images("logistic", 10, (1, 6, 5), seed=9)
    payload, stats = engine.compress(TinyVAE("logistic", seed=0), images, config=EngineConfig(lanes=8, batch_size=4))
    with pytest.raises(MismatchError):
        engine.decompress(TinyVAE("logistic", seed=1), payload, 10, (1, 6, 5), config=stats["config"])


def test_k_step_inference_is_reproducible_and_improves_the_elbo():
    model = TinyVAE("logistic")
    images = random_images("logistic", 32, (1, 6, 5), seed=10)
    _, s0 = engine.compress(model, images, config=EngineConfig(K=0, lr=5e-2))
    p1, s1 = engine.compress(model, images, config=EngineConfig(K=8, lr=5e-2))
    p2, _ = engine.compress(model, images, config=EngineConfig(K=8, lr=5e-2))
    assert p1 == p2
    assert s1["neg_elbo_bits"] < s0["neg_elbo_bits"]


def test_float_cuda_archive_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(MismatchError, match="GPU"):
        engine.decompress(TinyVAE("bernoulli"), b"", 1, (1, 6, 5),
                          config=EngineConfig(device="cuda", arithmetic="float", dtype="float32"))


def test_exact_cuda_archive_decodes_on_a_cpu():
    x = np.random.default_rng(0).integers(0, 2, (3, 1, 6, 5), dtype=np.uint8)
    model = TinyVAE("bernoulli")
    payload, stats = engine.compress(model, x, config=EngineConfig(lanes=4))
    config = dataclasses.replace(stats["config"], device="cuda")
    assert np.array_equal(engine.decompress(model, payload, 3, (1, 6, 5), config=config), x)


def test_unknown_engine_settings_are_refused():
    with pytest.raises(MismatchError):
        EngineConfig.from_dict({**EngineConfig().to_dict(), "future_knob": 1})
