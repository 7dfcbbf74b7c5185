"""VAE architectures: an MLP for (binarized) MNIST and a fully convolutional ResNet for colour.

No layer mixes images of a batch (no batch norm), so an image's latent and likelihood never
depend on which other images share its batch: the bits-back coder relies on that.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bbans import distributions as D
from bbans.errors import BBANSError

LIKELIHOODS = ("bernoulli", "logistic", "logistic_rgb")
STD_FLOOR = 1e-5  # keeps q(z|x) strictly positive after float32 softplus underflow
LOG_SCALE_MIN = -7.0  # narrower logistics than this add nothing at 8-bit resolution


class VAE(nn.Module):
    """Common interface: see docs/DESIGN.md. Subclasses define `encoder`, `decoder` modules."""

    image_shape: tuple[int, int, int]
    likelihood: str
    # Stochastic layers and the scale of each layer's latent buckets (see bbans.hierarchy).
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


class MLPVAE(VAE):
    """Fully connected VAE of the BB-ANS paper: 784-500-500-10 with a mirrored decoder."""

    def __init__(self, likelihood: str = "bernoulli", image_shape=(1, 28, 28), hidden: int = 500, latent: int = 10,
                 layers: int = 2):
        super().__init__()
        if likelihood not in ("bernoulli", "logistic"):
            raise BBANSError(f"MLPVAE likelihood must be bernoulli or logistic, not {likelihood!r}")
        self.likelihood = likelihood
        self.image_shape = tuple(int(v) for v in image_shape)
        self.hidden, self.latent, self.layers = int(hidden), int(latent), int(layers)
        d = self.dims()
        enc, dec = [nn.Flatten()], []
        width = d
        for _ in range(layers):
            enc += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        enc.append(nn.Linear(hidden, 2 * latent))
        width = latent
        for _ in range(layers):
            dec += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.out_per_pixel = 1 if likelihood == "bernoulli" else 2
        dec.append(nn.Linear(hidden, self.out_per_pixel * d))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def _encoder_input(self, x, noise_std=0.0, generator=None):
        xf = super()._encoder_input(x, noise_std, generator)
        # Centre the inputs so the first layer starts unbiased.
        return xf * 2.0 - 1.0

    def latent_shape(self, image_shape=None) -> tuple:
        if image_shape is not None and tuple(image_shape) != self.image_shape:
            raise BBANSError(f"MLP model takes {self.image_shape} images, not {tuple(image_shape)}")
        return (self.latent,)

    def decode(self, z):
        out = self.decoder(z)
        n = z.shape[0]
        if self.likelihood == "bernoulli":
            return {"logits": out.reshape((n,) + self.image_shape)}
        out = out.reshape((n, 2) + self.image_shape)
        return {"mean": out[:, 0], "log_scale": out[:, 1].clamp(min=LOG_SCALE_MIN)}

    def architecture(self) -> dict:
        return {"type": "mlp", "likelihood": self.likelihood, "image_shape": list(self.image_shape),
                "hidden": self.hidden, "latent": self.latent, "layers": self.layers}


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.elu(self.c1(F.elu(x))))


class ResNetVAE(VAE):
    """Conv VAE of the paper's CIFAR-10 model: two stride-2 4x4 convs, two residual blocks.

    Latents are a (latent_channels, H/4, W/4) grid, so the same weights code larger images.
    """

    def __init__(self, likelihood: str = "logistic_rgb", image_shape=(3, 32, 32), width: int = 64,
                 latent_channels: int = 2, blocks: int = 2):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise BBANSError(f"unknown likelihood {likelihood!r}")
        self.likelihood = likelihood
        self.image_shape = tuple(int(v) for v in image_shape)
        self.width, self.latent_channels, self.blocks = int(width), int(latent_channels), int(blocks)
        c = self.image_shape[0]
        w = self.width
        self.encoder = nn.Sequential(
            nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(w, w, 4, stride=2, padding=1),
            *[_ResBlock(w) for _ in range(blocks)], nn.ELU(),
            nn.Conv2d(w, 2 * latent_channels, 3, padding=1),
        )
        self.out_params = {"bernoulli": 1, "logistic": 2, "logistic_rgb": 3}[likelihood]
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w, 3, padding=1),
            *[_ResBlock(w) for _ in range(blocks)], nn.ELU(),
            nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), nn.ELU(),
            nn.ConvTranspose2d(w, self.out_params * c, 4, stride=2, padding=1),
        )

    def _encoder_input(self, x, noise_std=0.0, generator=None):
        return super()._encoder_input(x, noise_std, generator) * 2.0 - 1.0

    def latent_shape(self, image_shape=None) -> tuple:
        c, h, w = tuple(image_shape or self.image_shape)
        if h % 4 or w % 4:
            raise BBANSError(f"ResNet model needs height and width divisible by 4, got {h}x{w}")
        return (self.latent_channels, h // 4, w // 4)

    def decode(self, z):
        out = self.decoder(z)
        n, _, h, w = out.shape
        c = self.image_shape[0]
        out = out.reshape(n, self.out_params, c, h, w)
        if self.likelihood == "bernoulli":
            return {"logits": out[:, 0]}
        params = {"mean": out[:, 0], "log_scale": out[:, 1].clamp(min=LOG_SCALE_MIN)}
        if self.likelihood == "logistic_rgb":
            params["coeffs"] = out[:, 2]
        return params

    def architecture(self) -> dict:
        return {"type": "resnet", "likelihood": self.likelihood, "image_shape": list(self.image_shape),
                "width": self.width, "latent_channels": self.latent_channels, "blocks": self.blocks}


def build_model(arch: dict) -> VAE:
    """Inverse of `model.architecture()`."""
    arch = dict(arch)
    kind = arch.pop("type", None)
    if kind == "mlp":
        return MLPVAE(**arch)
    if kind == "resnet":
        return ResNetVAE(**arch)
    if kind == "hierarchical":
        from bbans.hierarchy import HierarchicalVAE  # the hierarchy builds on this module

        return HierarchicalVAE(**arch)
    raise BBANSError(f"unknown model architecture type {kind!r}")


FAMILIES = ("paper", "hierarchical")


def default_architecture(dataset: str, width: int | None = None, family: str = "paper", pixel_groups: int = 1) -> dict:
    """The paper's model for a data set, or (family "hierarchical") the three-layer conv model."""
    if pixel_groups != 1 and family != "hierarchical":
        raise BBANSError("pixel groups are a feature of the hierarchical family")
    if family == "hierarchical":
        if dataset not in ("binary-mnist", "mnist", "cifar10"):
            raise BBANSError(f"unknown data set {dataset!r}")
        shape = [3, 32, 32] if dataset == "cifar10" else [1, 28, 28]
        return {"type": "hierarchical", "likelihood": "bernoulli" if dataset == "binary-mnist" else "logistic_mix",
                "image_shape": shape, "width": width or (64 if dataset == "cifar10" else 32),
                "latent_channels": 8 if dataset == "cifar10" else 4, "layers": 3, "blocks": 1, "mixtures": 3,
                "latent_scales": [1.0, 1.0, 1.0], **({"pixel_groups": pixel_groups} if pixel_groups != 1 else {})}
    if family != "paper":
        raise BBANSError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    if dataset == "binary-mnist":
        return {"type": "mlp", "likelihood": "bernoulli", "image_shape": [1, 28, 28], "hidden": width or 500,
                "latent": 10, "layers": 2}
    if dataset == "mnist":
        return {"type": "mlp", "likelihood": "logistic", "image_shape": [1, 28, 28], "hidden": width or 500,
                "latent": 10, "layers": 2}
    if dataset == "cifar10":
        return {"type": "resnet", "likelihood": "logistic_rgb", "image_shape": [3, 32, 32], "width": width or 64,
                "latent_channels": 2, "blocks": 2}
    raise BBANSError(f"unknown data set {dataset!r}")


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> float:
    return float(nats) / (dims * math.log(2.0))
