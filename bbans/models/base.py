"""What every bbans VAE is: the interface the coder, inference and training rely on.

No layer mixes images of a batch (no batch norm), so an image's latent and likelihood never
depend on which other images share its batch: the bits-back coder relies on that.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from bbans.coding import distributions as D
from bbans.coding.compose import Codec
from bbans.errors import BBANSError
from bbans.models import layers
from bbans.models.likelihoods import Likelihood

STD_FLOOR = 1e-5  # keeps q(z|x) strictly positive after float32 softplus underflow


class VAE(nn.Module):
    """Common interface: see docs/DESIGN.md. Subclasses define `encoder`, `decoder` modules."""

    image_shape: tuple[int, int, int]
    likelihood: str  # the family's name, as in architecture()
    px: Likelihood  # p(x | z): parameters, log-likelihood, sampling, codec (bbans.models.likelihoods)
    # Stochastic layers and the scale of each layer's latent buckets (see bbans.models.hierarchy).
    latent_layers: int = 1
    latent_scales: tuple = (1.0,)

    # ---- subclass hooks ------------------------------------------------------------------
    def _encoder_input(self, x: torch.Tensor, noise_std: float = 0.0, generator=None) -> torch.Tensor:
        """Pixels -> floats on a [0, 1] intensity scale (binary images stay {0, 1})."""
        if self.px.binary:
            xf = (x > 0).to(torch.float32)  # {0, 1} and {0, 255} images alike, as in bernoulli_logp
        else:
            xf = x.to(torch.float32) / 255.0
        if noise_std > 0:
            xf = xf + noise_std * torch.randn(xf.shape, generator=generator, device=xf.device)
        return xf

    def latent_shape(self, image_shape=None) -> tuple:
        raise NotImplementedError

    def architecture(self) -> dict:
        raise NotImplementedError

    def latent_shapes(self, image_shape=None) -> list[tuple]:
        return [self.latent_shape(image_shape)]

    def latent_shapes_above(self, i: int, shape: tuple) -> list[tuple]:
        """Per-image shapes of the layers above layer i, whose latents have `shape`."""
        return []

    # ---- shared ------------------------------------------------------------------------------
    def infer(self, i: int, below: torch.Tensor):
        """(mu, std) of layer i's posterior given the layer below it; one layer here: q(z|x)."""
        if i != 0:
            raise BBANSError(f"{type(self).__name__} has one stochastic layer, not layer {i}")
        return self.encode(below)

    def encode(self, x_uint8: torch.Tensor, noise_std: float = 0.0, generator=None):
        raw = self.encoder(self._encoder_input(x_uint8, noise_std, generator))
        mu, s = raw.chunk(2, dim=1)
        return mu, layers.softplus(s) + STD_FLOOR

    def decode(self, z: torch.Tensor) -> dict:
        raise NotImplementedError

    def log_px(self, x_uint8: torch.Tensor, params: dict) -> torch.Tensor:
        """Per image log p(x | z) in nats, given the decoder's parameters."""
        return self.px.log_px(x_uint8, params)

    def observation_codec(self, params: dict, precision: int, mask=None) -> Codec:
        """p(x | z) as a codec of the pixels (flat, C order); mask (N, H, W) of coded pixels or None."""
        return self.px.codec(params, precision, mask)

    def neg_elbo(self, x_uint8: torch.Tensor, generator=None, noise_std: float = 0.0) -> torch.Tensor:
        """Per-image -ELBO in nats: one reparameterised sample, analytic KL to N(0, I)."""
        mu, std = self.encode(x_uint8, noise_std, generator)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps
        rec = self.log_px(x_uint8, self.decode(z))
        kl = D.gaussian_kl_std_normal(mu, std).reshape(mu.shape[0], -1).sum(1)
        return kl - rec

    def sample_prior(self, n: int, image_shape=None, generator=None, device="cpu") -> torch.Tensor:
        shape = self.latent_shape(image_shape or self.image_shape)
        return torch.randn((n,) + tuple(shape), generator=generator, device=device)

    @torch.no_grad()
    def sample_x(self, params: dict, generator=None) -> torch.Tensor:
        """Draw uint8 pixels from p(x|z) given decoder params."""
        return self.px.sample(params, generator)

    def dims(self, image_shape=None) -> int:
        return int(math.prod(image_shape or self.image_shape))


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = layers.Conv2d(ch, ch, 3, padding=1)
        self.c2 = layers.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(layers.elu(self.c1(layers.elu(x))))


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> float:
    return float(nats) / (dims * math.log(2.0))
