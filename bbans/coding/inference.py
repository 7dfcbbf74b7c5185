"""Posteriors for the codec: the amortized encoder, or K steps of optimal inference.

The compressor computes the posterior from the original images and the decompressor from the
images it has just decoded, so everything here must be a deterministic function of
(model, images, K, lr, seed, batch index):

- the reparameterisation noise is a function of (seed, batch, step, layer) only, drawn by the
  arithmetic (`normal`): in the exact one from a counter-based generator and polynomials, so
  it does not depend on the device, torch's generator or its vector width;
- Adam is written out with plain tensor ops rather than torch.optim, whose fused/foreach
  variants and defaults change between releases; each op rounds once (no fused multiply-adds),
  and its bias corrections are powers by repeated multiplication, not a math library's pow;
- in the exact arithmetic the gradient itself is exact: every layer's backward sums are on a
  grid (bbans.models.layers) and every other backward step is elementwise;
- the loss is a sum of per-image terms and the decoder's weights are frozen, so one image's
  gradient never mixes with another's.

In a hierarchy (bbans.models.hierarchy) each layer is refined on its own, given only the layer below
it, because that is all the decompressor holds when it must rebuild that posterior: layer i's
(mu, std) maximise the bound on log p(z_{i-1}) (log p(x) for the first layer) in which the
layers above i keep their amortized posteriors. For a single-latent model this is the ELBO.
"""


from __future__ import annotations

import torch

from bbans.coding.arithmetic import current
from bbans.coding.distributions import gaussian_kl_std_normal, gaussian_logpdf

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
STD_FLOOR = 1e-6


def step_noise(shape, seed: int, batch_index: int, step: int, device, dtype, stream: int = 0) -> torch.Tensor:
    """Standard normal noise for one step of one batch, in the current arithmetic.

    `stream` separates the draws of different layers (0 is the first layer's own noise).
    """
    return current().normal(tuple(shape), seed, batch_index, step, stream, device, dtype)


def _layer_loss(model, layer: int, below: torch.Tensor, mu, s, eps, step_eps_up) -> torch.Tensor:
    """Summed over images: the negative bound for `below` with layer `layer` at N(mu, s^2)."""
    z = mu + s * eps
    n = z.shape[0]
    if layer == 0:
        fit = -model.log_px(below, model.decode(z))
    else:
        pm, ps = model.prior(layer - 1, z)
        fit = -gaussian_logpdf(below, pm, ps).reshape(n, -1).sum(1)
    if layer == model.latent_layers - 1:
        reg = gaussian_kl_std_normal(mu, s).flatten(1).sum(1)
    else:
        reg = -current().log(s).flatten(1).sum(1) + model.upper_neg_elbo(layer, z, step_eps_up)
    return (fit + reg).sum()


def posterior(model, below: torch.Tensor, K: int = 0, lr: float = 5e-3, seed: int = 0, batch_index: int = 0,
              layer: int = 0):
    """(mu, std) of layer `layer`'s posterior for a batch given the layer below (x for layer 0):
    the amortized encoder's, refined by K Adam steps on the bound."""
    with torch.no_grad():
        mu, std = model.infer(layer, below)
    if K <= 0:
        return mu, std
    A = current()
    upper_shapes = model.latent_shapes_above(layer, tuple(mu.shape[1:]))
    mu = mu.detach().clone()
    rho = A.inverse_softplus(std.detach().clamp_min(STD_FLOOR)).clone()
    m = [torch.zeros_like(mu), torch.zeros_like(rho)]
    v = [torch.zeros_like(mu), torch.zeros_like(rho)]
    b1, b2 = ADAM_BETAS
    n = mu.shape[0]
    for step in range(1, K + 1):
        mu.requires_grad_(True)
        rho.requires_grad_(True)
        eps = step_noise(mu.shape, seed, batch_index, step, mu.device, mu.dtype, stream=layer)
        eps_up = [step_noise((n,) + tuple(sh), seed, batch_index, step, mu.device, mu.dtype, stream=64 + 64 * layer + j)
                  for j, sh in enumerate(upper_shapes)]
        with torch.enable_grad():
            loss = _layer_loss(model, layer, below, mu, A.softplus(rho), eps, eps_up)
            g_mu, g_rho = torch.autograd.grad(loss, (mu, rho))
        with torch.no_grad():
            new = []
            for i, (p, g) in enumerate(((mu, g_mu), (rho, g_rho))):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat = m[i] / (1 - A.powi(b1, step))
                v_hat = v[i] / (1 - A.powi(b2, step))
                new.append(p.detach() - lr * m_hat / (torch.sqrt(v_hat) + ADAM_EPS))
            mu, rho = new
    return mu.detach(), A.softplus(rho).clamp_min(STD_FLOOR).detach()

