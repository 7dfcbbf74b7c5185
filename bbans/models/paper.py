"""The BB-ANS paper's models: an MLP for (binarized) MNIST and a fully convolutional ResNet for colour."""

from __future__ import annotations

import torch.nn as nn

from bbans.errors import BBANSError
from bbans.models import likelihoods
from bbans.models.layers import ELU, Conv2d, ConvTranspose2d, Linear
from bbans.models.base import VAE, ResBlock

LIKELIHOODS = ("bernoulli", "logistic", "logistic_rgb")


class MLPVAE(VAE):
    """Fully connected VAE of the BB-ANS paper: 784-500-500-10 with a mirrored decoder."""

    def __init__(self, likelihood: str = "bernoulli", image_shape=(1, 28, 28), hidden: int = 500, latent: int = 10,
                 layers: int = 2):
        super().__init__()
        if likelihood not in ("bernoulli", "logistic"):
            raise BBANSError(f"MLPVAE likelihood must be bernoulli or logistic, not {likelihood!r}")
        self.likelihood = likelihood
        self.px = likelihoods.make(likelihood)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.hidden, self.latent, self.layers = int(hidden), int(latent), int(layers)
        d = self.dims()
        enc, dec = [nn.Flatten()], []
        width = d
        for _ in range(layers):
            enc += [Linear(width, hidden), nn.ReLU()]
            width = hidden
        enc.append(Linear(hidden, 2 * latent))
        width = latent
        for _ in range(layers):
            dec += [Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.out_per_pixel = self.px.n_params(self.image_shape[0])
        dec.append(Linear(hidden, self.out_per_pixel * d))
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
        return self.px.params(out.reshape((z.shape[0], self.out_per_pixel) + self.image_shape))

    def architecture(self) -> dict:
        return {"type": "mlp", "likelihood": self.likelihood, "image_shape": list(self.image_shape),
                "hidden": self.hidden, "latent": self.latent, "layers": self.layers}


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
        self.px = likelihoods.make(likelihood)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.width, self.latent_channels, self.blocks = int(width), int(latent_channels), int(blocks)
        c = self.image_shape[0]
        w = self.width
        self.encoder = nn.Sequential(
            Conv2d(c, w, 4, stride=2, padding=1), ELU(),
            Conv2d(w, w, 4, stride=2, padding=1),
            *[ResBlock(w) for _ in range(blocks)], ELU(),
            Conv2d(w, 2 * latent_channels, 3, padding=1),
        )
        self.out_params = self.px.n_params(c)
        self.decoder = nn.Sequential(
            Conv2d(latent_channels, w, 3, padding=1),
            *[ResBlock(w) for _ in range(blocks)], ELU(),
            ConvTranspose2d(w, w, 4, stride=2, padding=1), ELU(),
            ConvTranspose2d(w, self.out_params * c, 4, stride=2, padding=1),
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
        return self.px.params(out.reshape(n, self.out_params, c, h, w))

    def architecture(self) -> dict:
        return {"type": "resnet", "likelihood": self.likelihood, "image_shape": list(self.image_shape),
                "width": self.width, "latent_channels": self.latent_channels, "blocks": self.blocks}


