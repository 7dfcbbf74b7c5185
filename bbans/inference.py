"""Posteriors for the codec: the amortized encoder, or K steps of optimal inference.

The compressor computes the posterior from the original images and the decompressor from the
images it has just decoded, so everything here must be a deterministic function of
(model, images, K, lr, seed, batch index):

- the reparameterisation noise comes from a CPU generator seeded per batch and step, then moves
  to the device, so it does not depend on the device's RNG or on earlier draws;
- Adam is written out with plain tensor ops rather than torch.optim, whose fused/foreach
  variants and defaults change between releases;
- the loss is a sum of per-image terms and the decoder's weights are frozen, so one image's
  gradient never mixes with another's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bbans.distributions import gaussian_kl_std_normal

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
STD_FLOOR = 1e-6


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    # log(exp(y) - 1), written to stay finite for large y
    return y + torch.log(-torch.expm1(-y))


def step_noise(shape, seed: int, batch_index: int, step: int, device, dtype) -> torch.Tensor:
    """Standard normal noise for one step of one batch, identical on every device."""
    gen = torch.Generator(device="cpu")
    # Distinct, reproducible streams per (seed, batch, step) without any shared state.
    gen.manual_seed((seed * 1_000_003 + batch_index) * 1_009 + step)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def posterior(model, x: torch.Tensor, K: int = 0, lr: float = 5e-3, seed: int = 0, batch_index: int = 0):
    """(mu, std) of q(z|x) for a batch: the encoder's, refined by K Adam steps on the ELBO."""
    with torch.no_grad():
        mu, std = model.encode(x)
    if K <= 0:
        return mu, std
    mu = mu.detach().clone()
    rho = _inverse_softplus(std.detach().clamp_min(STD_FLOOR)).clone()
    m = [torch.zeros_like(mu), torch.zeros_like(rho)]
    v = [torch.zeros_like(mu), torch.zeros_like(rho)]
    b1, b2 = ADAM_BETAS
    for step in range(1, K + 1):
        mu.requires_grad_(True)
        rho.requires_grad_(True)
        with torch.enable_grad():
            s = F.softplus(rho)
            eps = step_noise(mu.shape, seed, batch_index, step, mu.device, mu.dtype)
            z = mu + s * eps
            params = model.decode(z)
            kl = gaussian_kl_std_normal(mu, s).flatten(1).sum(1)
            loss = (kl - model.log_px(x, params)).sum()
            g_mu, g_rho = torch.autograd.grad(loss, (mu, rho))
        with torch.no_grad():
            new = []
            for i, (p, g) in enumerate(((mu, g_mu), (rho, g_rho))):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat = m[i] / (1 - b1**step)
                v_hat = v[i] / (1 - b2**step)
                new.append(p.detach() - lr * m_hat / (torch.sqrt(v_hat) + ADAM_EPS))
            mu, rho = new
    return mu.detach(), F.softplus(rho).clamp_min(STD_FLOOR).detach()
