"""p(x | z) per family: one object owns the decoder's parameter layout, log p(x | z), sampling
and the codec, so a new likelihood is one class here and one name in LIKELIHOODS.

The decoder emits `n_params` numbers per pixel and channel, shaped (N, n_params, C, H, W);
`params` names them. Pixels are uint8 (N, C, H, W); a mask (N, H, W) marks the pixels coded
(the rest of a padded tile), applied through `compose.masked` so every likelihood masks alike.
"""

from __future__ import annotations

import numpy as np
import torch

from bbans.coding import codecs, distributions as D
from bbans.coding.arithmetic import current
from bbans.coding.compose import Codec, flat_ints, mapped, masked
from bbans.errors import BBANSError

LOG_SCALE_MIN = -7.0  # narrower logistics than this add nothing at 8-bit resolution


def _element_mask(shape: tuple, mask) -> np.ndarray | None:
    """A pixel mask (N, H, W) spread over the channels of (N, C, H, W), flat; None: all coded."""
    if mask is None:
        return None
    if torch.is_tensor(mask):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (shape[0],) + tuple(shape[2:]):
        raise BBANSError(f"mask of shape {mask.shape} does not fit images of shape {tuple(shape)}")
    return np.broadcast_to(mask[:, None], shape).reshape(-1)


def _coded(t: torch.Tensor, mask: np.ndarray | None) -> torch.Tensor:
    """Rows of t (first axis) where the flat mask holds."""
    return t if mask is None else t[torch.as_tensor(np.flatnonzero(mask), device=t.device)]


def _draw_logistic(mean, log_scale, generator):
    u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-6, 1 - 1e-6)
    v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.round((v + 1.0) * 127.5).clamp(0, 255)


class Likelihood:
    name: str
    binary: bool = False  # pixels are 0/1 (the encoder sees them as such)

    def n_params(self, image_channels: int) -> int:
        raise NotImplementedError

    def params(self, out: torch.Tensor) -> dict:
        """Decoder output (N, n_params, C, H, W) -> named parameters."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Elementwise log p(x | z) in nats, (N, C, H, W)."""
        raise NotImplementedError

    def log_px(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Per image log p(x | z) in nats."""
        return self.log_prob(x, params).reshape(x.shape[0], -1).sum(1)

    def sample(self, params: dict, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def codec(self, params: dict, precision: int, mask=None) -> Codec:
        """Codec of the uint8 pixels (N, C, H, W), flat in C order; mask (N, H, W) or None."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    name, binary = "bernoulli", True

    def n_params(self, image_channels: int) -> int:
        return 1

    def params(self, out):
        return {"logits": out[:, 0]}

    def log_prob(self, x, params):
        return D.bernoulli_logp(x, params["logits"])

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params["logits"]), generator=generator).to(torch.uint8)

    def codec(self, params, precision, mask=None):
        p = current().sigmoid(params["logits"].double())
        m = _element_mask(tuple(p.shape), mask)
        return masked(codecs.bernoulli(_coded(p.reshape(-1), m), precision), m)


class Logistic(Likelihood):
    name = "logistic"

    def n_params(self, image_channels: int) -> int:
        return 2

    def params(self, out):
        return {"mean": out[:, 0], "log_scale": out[:, 1].clamp(min=LOG_SCALE_MIN)}

    def log_prob(self, x, params):
        return D.discretized_logistic_logp(x, params["mean"], params["log_scale"])

    def sample(self, params, generator=None):
        return _draw_logistic(params["mean"], params["log_scale"], generator).to(torch.uint8)

    def codec(self, params, precision, mask=None):
        mean, ls = params["mean"], params["log_scale"]
        m = _element_mask(tuple(mean.shape), mask)
        return masked(codecs.logistic(_coded(mean.reshape(-1), m), _coded(ls.reshape(-1), m), precision), m)


class LogisticRGB(Logistic):
    """Per channel a logistic, G's mean shifted by R and B's by R and G (PixelCNN++'s coupling)."""

    name = "logistic_rgb"

    def n_params(self, image_channels: int) -> int:
        if image_channels != 3:
            raise BBANSError(f"logistic_rgb models RGB images, not {image_channels} channels")
        return 3

    def params(self, out):
        return {**super().params(out), "coeffs": out[:, 2]}

    def log_prob(self, x, params):
        mean = D.rgb_dependent_means(params["mean"], params["coeffs"], x)
        return D.discretized_logistic_logp(x, mean, params["log_scale"])

    def sample(self, params, generator=None):
        mean, ls, co = params["mean"], params["log_scale"], params["coeffs"]
        a, b, c = torch.tanh(co[:, 0]), torch.tanh(co[:, 1]), torch.tanh(co[:, 2])
        r = _draw_logistic(mean[:, 0], ls[:, 0], generator)
        rs = r / 127.5 - 1.0
        g = _draw_logistic(mean[:, 1] + a * rs, ls[:, 1], generator)
        gs = g / 127.5 - 1.0
        bl = _draw_logistic(mean[:, 2] + b * rs + c * gs, ls[:, 2], generator)
        return torch.stack([r, g, bl], dim=1).to(torch.uint8)

    def codec(self, params, precision, mask=None):
        # The channels of a pixel depend on each other, so the codec takes pixels as (R, G, B)
        # triples: pixel-major order, masked by pixel.
        n, c, h, w = params["mean"].shape

        def per_pixel(t):
            return t.to(torch.float64).movedim(1, -1).reshape(-1, c)

        pix = _element_mask((n, 1, h, w), mask)
        m = None if pix is None else np.repeat(pix, c)
        inner = codecs.logistic_rgb(*(_coded(per_pixel(params[k]), pix) for k in ("mean", "log_scale", "coeffs")),
                                    precision)

        def to_pixels(x):
            return flat_ints(x).reshape(n, c, h * w).transpose(0, 2, 1).reshape(-1)

        def from_pixels(x):
            return np.ascontiguousarray(x.reshape(n, h * w, c).transpose(0, 2, 1)).reshape(-1)

        return mapped(masked(inner, m), to_pixels, from_pixels)


class LogisticMix(Likelihood):
    """A mixture of `mixtures` discretised logistics per pixel and channel."""

    name = "logistic_mix"

    def __init__(self, mixtures: int = 3):
        self.mixtures = int(mixtures)

    def n_params(self, image_channels: int) -> int:
        return 3 * self.mixtures

    def params(self, out):
        out = out.reshape(out.shape[0], 3, self.mixtures, *out.shape[2:])
        return {"logit_w": out[:, 0], "mean": out[:, 1], "log_scale": out[:, 2].clamp(min=LOG_SCALE_MIN)}

    def log_prob(self, x, params):
        return D.discretized_logistic_mix_logp(x, params["logit_w"], params["mean"], params["log_scale"])

    def sample(self, params, generator=None):
        w = torch.softmax(params["logit_w"], dim=1)  # (N, M, C, H, W)
        flat = w.movedim(1, -1).reshape(-1, self.mixtures)
        pick = torch.multinomial(flat, 1, generator=generator).reshape(w.shape[:1] + w.shape[2:]).unsqueeze(1)
        mean = params["mean"].gather(1, pick).squeeze(1)
        ls = params["log_scale"].gather(1, pick).squeeze(1)
        return _draw_logistic(mean, ls, generator).to(torch.uint8)

    def codec(self, params, precision, mask=None):
        mean = params["mean"]
        shape = (mean.shape[0],) + tuple(mean.shape[2:])
        m = _element_mask(shape, mask)

        def per_pixel(t):
            return _coded(t.to(torch.float64).movedim(1, -1).reshape(-1, self.mixtures), m)

        return masked(codecs.logistic_mix(*(per_pixel(params[k]) for k in ("logit_w", "mean", "log_scale")),
                                          precision), m)


FAMILIES = {"bernoulli": Bernoulli, "logistic": Logistic, "logistic_rgb": LogisticRGB, "logistic_mix": LogisticMix}
LIKELIHOODS = tuple(FAMILIES)


def make(name: str, mixtures: int = 3) -> Likelihood:
    if name not in FAMILIES:
        raise BBANSError(f"unknown likelihood {name!r} (choose from {', '.join(LIKELIHOODS)})")
    return LogisticMix(mixtures) if name == "logistic_mix" else FAMILIES[name]()
