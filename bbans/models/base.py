"""What every bbans VAE is: the interface the coder, inference and training rely on.

No layer mixes images of a batch (no batch norm), so an image's latent and likelihood never
depend on which other images share its batch: the bits-back coder relies on that.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bbans.coding import distributions as D
from bbans.errors import BBANSError

STD_FLOOR = 1e-5  # keeps q(z|x) strictly positive after float32 softplus underflow
LOG_SCALE_MIN = -7.0  # narrower logistics than this add nothing at 8-bit resolution


class VAE(nn.Module):
    """Common interface: see docs/DESIGN.md. Subclasses define `encoder`, `decoder` modules."""

    image_shape: tuple[int, int, int]
    likelihood: str
    # Stochastic layers and the scale of each layer's latent buckets (see bbans.models.hierarchy).
    latent_layers: int = 1
    latent_scales: tuple = (1.0,)

    # ---- subclass hooks ------------------------------------------------------------------
    def _encoder_input(self, x: torch.Tensor, noise_std: float = 0.0, generator=None) -> torch.Tensor:
        """Pixels -> floats on a [0, 1] intensity scale (binary images stay {0, 1})."""
        if self.likelihood == "bernoulli":
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
        return mu, F.softplus(s) + STD_FLOOR

    def decode(self, z: torch.Tensor) -> dict:
        raise NotImplementedError

    def log_px(self, x_uint8: torch.Tensor, params: dict) -> torch.Tensor:
        n = x_uint8.shape[0]
        if self.likelihood == "bernoulli":
            lp = D.bernoulli_logp(x_uint8, params["logits"])
        elif self.likelihood == "logistic":
            lp = D.discretized_logistic_logp(x_uint8, params["mean"], params["log_scale"])
        else:
            mean = D.rgb_dependent_means(params["mean"], params["coeffs"], x_uint8)
            lp = D.discretized_logistic_logp(x_uint8, mean, params["log_scale"])
        return lp.reshape(n, -1).sum(1)

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
        if self.likelihood == "bernoulli":
            p = torch.sigmoid(params["logits"])
            return torch.bernoulli(p, generator=generator).to(torch.uint8)

        def draw(mean, log_scale):
            u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-6, 1 - 1e-6)
            v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round((v + 1.0) * 127.5).clamp(0, 255)

        if self.likelihood == "logistic":
            return draw(params["mean"], params["log_scale"]).to(torch.uint8)
        mean, ls, co = params["mean"], params["log_scale"], params["coeffs"]
        a, b, c = torch.tanh(co[:, 0]), torch.tanh(co[:, 1]), torch.tanh(co[:, 2])
        r = draw(mean[:, 0], ls[:, 0])
        rs = r / 127.5 - 1.0
        g = draw(mean[:, 1] + a * rs, ls[:, 1])
        gs = g / 127.5 - 1.0
        bl = draw(mean[:, 2] + b * rs + c * gs, ls[:, 2])
        return torch.stack([r, g, bl], dim=1).to(torch.uint8)

    def dims(self, image_shape=None) -> int:
        return int(math.prod(image_shape or self.image_shape))


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.elu(self.c1(F.elu(x))))


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> float:
    return float(nats) / (dims * math.log(2.0))
