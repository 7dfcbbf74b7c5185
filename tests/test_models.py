import pytest
import torch

from bbans.errors import BBANSError
from bbans.models.paper import MLPVAE, ResNetVAE
from bbans.models.architecture import build_model, default_architecture


def _pixels(shape, binary=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 if binary else 256, shape, generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("lik", ["bernoulli", "logistic"])
def test_mlp_interface(lik):
    m = MLPVAE(lik, hidden=16, latent=3)
    x = _pixels((5, 1, 28, 28), binary=lik == "bernoulli")
    mu, std = m.encode(x)
    assert mu.shape == (5, 3) and (std > 0).all()
    assert m.latent_shape((1, 28, 28)) == (3,)
    p = m.decode(mu)
    assert set(p) == ({"logits"} if lik == "bernoulli" else {"mean", "log_scale"})
    lp = m.log_px(x, p)
    assert lp.shape == (5,) and (lp < 0).all()
    ne = m.neg_elbo(x, torch.Generator().manual_seed(0))
    assert ne.shape == (5,) and torch.isfinite(ne).all()


def test_resnet_fully_convolutional_and_params():
    m = ResNetVAE(width=8)
    assert m.latent_shape((3, 32, 32)) == (2, 8, 8)
    assert m.latent_shape((3, 64, 48)) == (2, 16, 12)
    p = m.decode(torch.zeros(2, 2, 16, 12))
    assert set(p) == {"mean", "log_scale", "coeffs"} and p["mean"].shape == (2, 3, 64, 48)
    x = _pixels((2, 3, 64, 48))
    assert m.neg_elbo(x).shape == (2,)
    with pytest.raises(BBANSError):
        m.latent_shape((3, 30, 32))


@pytest.mark.parametrize("m", [MLPVAE("logistic", hidden=16, latent=3), ResNetVAE(width=8)])
def test_image_loss_independent_of_batch(m):
    # The coder needs an image's posterior and likelihood to ignore its batch-mates.
    x = _pixels((4,) + m.image_shape)
    mu_all, std_all = m.encode(x)
    mu_one, std_one = m.encode(x[2:3])
    torch.testing.assert_close(mu_all[2:3], mu_one, rtol=1e-5, atol=1e-6)
    p_all, p_one = m.decode(mu_all), m.decode(mu_one)
    torch.testing.assert_close(m.log_px(x, p_all)[2:3], m.log_px(x[2:3], p_one), rtol=1e-5, atol=1e-4)


def test_architecture_round_trip():
    for ds in ("binary-mnist", "mnist", "cifar10"):
        arch = default_architecture(ds, width=8)
        m = build_model(arch)
        assert m.architecture() == arch
    with pytest.raises(BBANSError):
        build_model({"type": "transformer"})


def test_samples_are_valid_pixels():
    g = torch.Generator().manual_seed(0)
    for m in (MLPVAE("bernoulli", hidden=8, latent=2), MLPVAE("logistic", hidden=8, latent=2), ResNetVAE(width=8)):
        x = m.sample_x(m.decode(m.sample_prior(3, generator=g)), generator=g)
        assert x.dtype == torch.uint8 and x.shape == (3,) + m.image_shape
        if m.likelihood == "bernoulli":
            assert x.max() <= 1


def test_logistic_rgb_normalised():
    # Summing the discretized logistic with channel dependence over all 256 values of one channel gives 1.
    m = ResNetVAE(width=8, image_shape=(3, 4, 4))
    p = m.decode(torch.randn(1, 2, 1, 1))
    base = _pixels((1, 3, 4, 4))
    x = base.repeat(256, 1, 1, 1)
    x[:, 2] = torch.arange(256, dtype=torch.uint8).view(256, 1, 1)  # vary B only
    from bbans.coding import distributions as D

    mean = D.rgb_dependent_means(p["mean"].expand(256, -1, -1, -1), p["coeffs"].expand(256, -1, -1, -1), x)
    lp = D.discretized_logistic_logp(x, mean, p["log_scale"].expand(256, -1, -1, -1))[:, 2]
    total = torch.logsumexp(lp, dim=0).exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)
