"""A VAE with a chain of stochastic layers z1 ... zL (Bit-Swap's Markov hierarchy), convolutional.

Generative model: p(zL) = N(0, I), p(z_i | z_{i+1}) Gaussian, p(x | z1) per pixel (Bernoulli or
a mixture of discretised logistics). Inference model, also a chain: q(z1 | x), q(z_{i+1} | z_i).
Because each posterior only looks one layer down, the coder can interleave the layers
(pop z1, push x, pop z2, push z1, ...), so the bits borrowed for z_{i+1} are repaid by z_i
just pushed; see bbans.coding.engine.

Resolution: z1 is at 1/2 of the image's height and width, z2 and above at 1/4, so the same
weights code any image whose sides are multiples of 4. No layer mixes images of a batch.

Each layer's latents are coded on the equal-mass buckets of N(0, s_i^2), with s_i
(`latent_scales`) chosen after training by what the buckets cost
(`bbans.training.calibration`).

Pixel groups (`pixel_groups` 4): p(x | z1) is split over the four 2x2 sub-images of x,
p(x_a | z1) p(x_b | x_a, z1) p(x_c | x_a, x_b, z1) p(x_d | x_a, x_b, x_c, z1): a small head per
later group corrects z1's prediction from the pixels already known around it. Pixels given z1
alone are independent, which is what a VAE pays most for at edges; four groups cost four short
network passes when decoding, not one per pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from bbans.coding import distributions as D
from bbans.coding.compose import Codec, mapped, pushes, sequence
from bbans.errors import BBANSError
from bbans.models import layers, likelihoods
from bbans.models.base import STD_FLOOR, VAE, ResBlock

HIER_LIKELIHOODS = ("bernoulli", "logistic_mix")
PIXEL_GROUPS = (1, 4)
# Sub-image offsets in coding order: after the first, the diagonal one sees known pixels at its
# four corners, and the last two see known pixels on all four sides.
GROUP_OFFSETS = ((0, 0), (1, 1), (0, 1), (1, 0))


def split_groups(t: torch.Tensor) -> list[torch.Tensor]:
    """The 2x2 sub-images of t's last two dimensions, in coding order."""
    return [t[..., a::2, b::2] for a, b in GROUP_OFFSETS]


def merge_groups(parts: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of split_groups."""
    first = parts[0]
    out = first.new_zeros(first.shape[:-2] + (2 * first.shape[-2], 2 * first.shape[-1]))
    for (a, b), part in zip(GROUP_OFFSETS, parts):
        out[..., a::2, b::2] = part
    return out


def _pixels(values, shape, device) -> torch.Tensor:
    """Pixel symbols (a tensor going up, flat int64 NumPy coming down) as uint8 of `shape`."""
    if torch.is_tensor(values):
        return values.to(torch.uint8).reshape(shape)
    return torch.as_tensor(np.asarray(values, dtype=np.uint8), device=device).reshape(shape)


def _group_head(cin: int, width: int, cout: int) -> nn.Sequential:
    last = layers.Conv2d(width, cout, 1)
    # Zero-initialised: a head added to a trained model starts as "no correction".
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(layers.Conv2d(cin, width, 3, padding=1), layers.ELU(),
                         layers.Conv2d(width, width, 3, padding=1), layers.ELU(), last)


def _stack(cin: int, width: int, cout: int, blocks: int, resample: str) -> nn.Sequential:
    # Resampling happens at the stack's ends, so no full-width tensor lives at the finer resolution
    # (on a CPU those tensors were most of the training time).
    first = (layers.Conv2d(cin, width, 4, stride=2, padding=1) if resample == "down"
             else layers.Conv2d(cin, width, 3, padding=1))
    last = (layers.ConvTranspose2d(width, cout, 4, stride=2, padding=1) if resample == "up"
            else layers.Conv2d(width, cout, 3, padding=1))
    return nn.Sequential(first, *[ResBlock(width) for _ in range(blocks)], layers.ELU(), last)


def _gaussian(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, s = raw.chunk(2, dim=1)
    return mu, layers.softplus(s) + STD_FLOOR


class HierarchicalVAE(VAE):
    def __init__(self, likelihood: str = "logistic_mix", image_shape=(1, 28, 28), width: int = 32,
                 latent_channels: int = 8, layers: int = 2, blocks: int = 1, mixtures: int = 3,
                 latent_scales=None, pixel_groups: int = 1):
        super().__init__()
        if likelihood not in HIER_LIKELIHOODS:
            raise BBANSError(f"hierarchical model likelihood must be one of {HIER_LIKELIHOODS}, not {likelihood!r}")
        if layers < 1:
            raise BBANSError("a hierarchical model needs at least one stochastic layer")
        self.likelihood = likelihood
        self.image_shape = tuple(int(v) for v in image_shape)
        self.width, self.latent_channels, self.layers = int(width), int(latent_channels), int(layers)
        self.blocks, self.mixtures = int(blocks), int(mixtures)
        self.px = likelihoods.make(likelihood, self.mixtures)
        scales = [1.0] * self.layers if latent_scales is None else [float(s) for s in latent_scales]
        if len(scales) != self.layers or min(scales) <= 0:
            raise BBANSError("latent_scales needs one positive scale per layer")
        self.latent_scales = scales
        self.latent_layers = self.layers
        if pixel_groups not in PIXEL_GROUPS:
            raise BBANSError(f"pixel_groups must be one of {PIXEL_GROUPS}, not {pixel_groups!r}")
        self.pixel_groups = int(pixel_groups)
        c, w, zc = self.image_shape[0], self.width, self.latent_channels
        self.out_params = self.px.n_params(c)
        # Layer i (0-based) of the inference chain maps layer i-1 (x for i = 0) to z_{i+1}.
        inf = [_stack(c, w, 2 * zc, blocks, "down")]
        gen = [_stack(zc, w, self.out_params * c, blocks, "up")]
        for i in range(1, layers):
            resample = "down" if i == 1 else "same"
            inf.append(_stack(zc, w, 2 * zc, blocks, resample))
            gen.append(_stack(zc, w, 2 * zc, blocks, "up" if i == 1 else "same"))
        # Heads of pixel groups 2..G follow the chain's stacks in `decoder` (see group_params):
        # they belong to p(x | z1), so the refit freezes them with the rest of the decoder.
        p = self.out_params * c
        gen += [_group_head(4 * p + g * c, w, p) for g in range(1, self.pixel_groups)]
        # `encoder` / `decoder` are what the refit freezes or trains, as for the other models.
        self.encoder = nn.ModuleList(inf)
        self.decoder = nn.ModuleList(gen)

    # ---- shapes ---------------------------------------------------------------------------------
    def latent_shapes(self, image_shape=None) -> list[tuple]:
        c, h, w = tuple(image_shape or self.image_shape)
        if h % 4 or w % 4:
            raise BBANSError(f"hierarchical model needs height and width divisible by 4, got {h}x{w}")
        zc = self.latent_channels
        return [(zc, h // 2, w // 2)] + [(zc, h // 4, w // 4)] * (self.layers - 1)

    def latent_shapes_above(self, i: int, shape: tuple) -> list[tuple]:
        zc, h, w = shape
        # z1 is at half the image's resolution, the layers above at a quarter.
        image = (self.image_shape[0], 2 * h, 2 * w) if i == 0 else (self.image_shape[0], 4 * h, 4 * w)
        return self.latent_shapes(image)[i + 1:]

    def latent_shape(self, image_shape=None) -> tuple:
        return self.latent_shapes(image_shape)[0]

    # ---- the chain ------------------------------------------------------------------------------
    def infer(self, i: int, below: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, std) of q(z_{i+1} | layer below): x (uint8) for i = 0, else z_i."""
        return self.encode(below) if i == 0 else _gaussian(self.encoder[i](below))

    def prior(self, i: int, above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, std) of p(z_{i+1} | z_{i+2}) for i < layers - 1; the top layer's prior is N(0, I)."""
        return _gaussian(self.decoder[i + 1](above))

    def encode(self, x_uint8, noise_std: float = 0.0, generator=None):
        inp = self._encoder_input(x_uint8, noise_std, generator) * 2.0 - 1.0
        return _gaussian(self.encoder[0](inp))

    def _shaped(self, out: torch.Tensor) -> dict:
        n, _, h, w = out.shape
        return self.px.params(out.reshape(n, self.out_params, self.image_shape[0], h, w))

    def decode(self, z1: torch.Tensor) -> dict:
        """p(x | z1)'s parameters; with pixel groups, z1's part of them (see group_params)."""
        out = self.decoder[0](z1)
        return self._shaped(out) if self.pixel_groups == 1 else {"raw": out}

    def group_params(self, params: dict, x_uint8: torch.Tensor, g: int) -> dict:
        """Parameters of pixel group g's sub-image given z1 (`params` from decode) and groups < g of x.

        Only the earlier groups of x are read, so the decoder may pass an x whose later groups are
        not known yet: both ends compute the same numbers from the same pixels.
        """
        raw = split_groups(params["raw"])
        if g == 0:
            return self._shaped(raw[0])
        known = [self._encoder_input(part) * 2.0 - 1.0 for part in split_groups(x_uint8)[:g]]
        head = self.decoder[self.layers + g - 1]
        return self._shaped(raw[g] + head(torch.cat(raw + known, dim=1)))

    def log_px(self, x_uint8, params) -> torch.Tensor:
        """log p(x | z1) per image; `params` from decode, and where the observation codec has
        coded these very pixels with them, its group parameters are taken, not computed again."""
        if self.pixel_groups == 1:
            return self.px.log_px(x_uint8, params)
        coded = params.get("coded_groups", {})
        return sum(self.px.log_px(part, coded[g] if g in coded else self.group_params(params, x_uint8, g))
                   for g, part in enumerate(split_groups(x_uint8)))

    def observation_codec(self, params: dict, precision: int, mask=None) -> Codec:
        """With pixel groups, p(x | z1) coded group after group: pushed last group first, so the
        decoder pops the first group, which needs no pixels, first (a sequence: pop derived)."""
        if self.pixel_groups == 1:
            return super().observation_codec(params, precision, mask)
        raw = params["raw"]
        shape = (raw.shape[0], self.image_shape[0]) + tuple(raw.shape[2:])
        masks = [None] * self.pixel_groups if mask is None else split_groups(torch.as_tensor(mask))
        names = tuple(f"x{g}" for g in range(self.pixel_groups))

        def canvas(known) -> torch.Tensor:
            x = torch.zeros(shape, dtype=torch.uint8, device=raw.device)
            for part, values in zip(split_groups(x), known):
                part.copy_(_pixels(values, part.shape, raw.device))
            return x

        # Each group's parameters depend only on z1 and the groups before it, which both ends
        # hold exactly when they build the group's codec: log_px of the coded pixels reuses them.
        coded = params["coded_groups"] = {}

        def group(g: int):
            def codec(*known) -> Codec:
                with torch.no_grad():
                    gp = coded[g] = self.group_params(params, canvas(known), g)
                return self.px.codec(gp, precision, masks[g])

            return codec

        steps = [pushes(names[g], names[:g], group(g)) for g in reversed(range(self.pixel_groups))]
        return mapped(sequence(steps, data=names), split_groups,
                      lambda parts: canvas(parts).cpu().numpy().reshape(-1))

    def upper_neg_elbo(self, i: int, z: torch.Tensor, eps: list[torch.Tensor]) -> torch.Tensor:
        """-log p(z_{i+1}) bounded through the layers above, per image, in nats.

        For the top layer this is -log N(z; 0, I). Below it, z_{i+2} = mu + std * eps[0] from the
        amortized q(z_{i+2} | z_{i+1}), and so on up: a one-sample bound whose noise is given, so
        callers decide how it is drawn.
        """
        n = z.shape[0]
        if i == self.layers - 1:
            return -D.gaussian_logpdf(z, torch.zeros_like(z), torch.ones_like(z)).reshape(n, -1).sum(1)
        mu_q, std_q = self.infer(i + 1, z)
        z_up = mu_q + std_q * eps[0]
        mu_p, std_p = self.prior(i, z_up)
        log_p = D.gaussian_logpdf(z, mu_p, std_p).reshape(n, -1).sum(1)
        log_q = D.gaussian_logpdf(z_up, mu_q, std_q).reshape(n, -1).sum(1)
        return -log_p + log_q + self.upper_neg_elbo(i + 1, z_up, eps[1:])

    def neg_elbo(self, x_uint8, generator=None, noise_std: float = 0.0) -> torch.Tensor:
        """Per-image -ELBO in nats: one sample of every layer, the entropy of q(z1|x) analytic."""
        mu, std = self.encode(x_uint8, noise_std, generator)
        z = mu + std * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        rec = self.log_px(x_uint8, self.decode(z))
        total = -rec - D.gaussian_entropy(std).reshape(len(z), -1).sum(1)
        eps = [torch.randn((len(z),) + s, generator=generator, device=z.device, dtype=z.dtype)
               for s in self.latent_shapes_above(0, tuple(z.shape[1:]))]
        return total + self.upper_neg_elbo(0, z, eps)

    @torch.no_grad()
    def sample_latents(self, k: int, image_shape=None, generator=None, device="cpu") -> torch.Tensor:
        """z1 drawn ancestrally from the top prior down."""
        shapes = self.latent_shapes(image_shape or self.image_shape)
        z = torch.randn((k,) + shapes[-1], generator=generator, device=device)
        for i in range(self.layers - 2, -1, -1):
            mu, std = self.prior(i, z)
            z = mu + std * torch.randn(mu.shape, generator=generator, device=device)
        return z

    def sample_prior(self, n: int, image_shape=None, generator=None, device="cpu") -> torch.Tensor:
        return self.sample_latents(n, image_shape, generator, device)

    def fill_groups(self, params: dict, draw) -> torch.Tensor:
        """uint8 pixels made group by group: `draw(group_params, g)` gives group g's sub-image (any
        shape of as many pixels), knowing the groups before it. What sampling and the decoding end
        of the codec share."""
        raw = params["raw"]
        x = torch.zeros((raw.shape[0], self.image_shape[0]) + raw.shape[2:], dtype=torch.uint8, device=raw.device)
        for g, part in enumerate(split_groups(x)):
            part.copy_(draw(self.group_params(params, x, g), g).reshape(part.shape))
        return x

    @torch.no_grad()
    def sample_x(self, params: dict, generator=None) -> torch.Tensor:
        if self.pixel_groups > 1:
            return self.fill_groups(params, lambda p, g: self._sample_flat(p, generator))
        return self._sample_flat(params, generator)

    def _sample_flat(self, params: dict, generator=None) -> torch.Tensor:
        return self.px.sample(params, generator)

    def architecture(self) -> dict:
        return {"type": "hierarchical", "likelihood": self.likelihood, "image_shape": list(self.image_shape),
                "width": self.width, "latent_channels": self.latent_channels, "layers": self.layers,
                "blocks": self.blocks, "mixtures": self.mixtures, "latent_scales": list(self.latent_scales),
                **({"pixel_groups": self.pixel_groups} if self.pixel_groups > 1 else {})}
