"""Float-valued distributions shared by training (log-likelihoods) and coding (CDF tables).

Keeping one definition of each density here means the rate the trainer optimises is the rate
the coder pays, up to the integer quantisation done in `bbans.coding.codecs`.

Each function computes in the current arithmetic (bbans.coding.arithmetic): torch's float
kernels for training, the exact one when an archive asks for it.

Pixel values are 8-bit integers 0..255. The logistic works on the scaled value
x / 127.5 - 1 in [-1, 1], with bins of width 2/255 (PixelCNN++ convention); the lowest and
highest bins extend to -inf and +inf so every value keeps mass.
"""

from __future__ import annotations

import math

import torch

from bbans.coding.arithmetic import bucket_points, current, is_exact

LEVELS = 256
HALF_BIN = 1.0 / 255.0


def scale_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or integer-valued float) pixels -> floats in [-1, 1]."""
    return x.to(torch.float32) / 127.5 - 1.0


def rgb_dependent_means(mean: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shift the G mean by a*R and the B mean by b*R + c*G (channels on dim 1).

    mean, coeffs: (N, 3, H, W); x: pixels (N, 3, H, W), uint8 or already scaled floats.
    Only lower channels are used, so a decoder can pop R, then G, then B.
    """
    xs = scale_pixels(x) if not torch.is_floating_point(x) else x
    r, g = xs[:, 0], xs[:, 1]
    A = current()
    a, b, c = A.tanh(coeffs[:, 0]), A.tanh(coeffs[:, 1]), A.tanh(coeffs[:, 2])
    return torch.stack([mean[:, 0], mean[:, 1] + a * r, mean[:, 2] + b * r + c * g], dim=1)


def discretized_logistic_logp(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log P(x) in nats for 8-bit x under a discretised logistic (mean, log_scale)."""
    A = current()
    xs = scale_pixels(x)
    inv_s = A.exp(-log_scale)
    centred = xs - mean
    plus = inv_s * (centred + HALF_BIN)
    minus = inv_s * (centred - HALF_BIN)
    cdf_plus = A.sigmoid(plus)
    cdf_minus = A.sigmoid(minus)
    log_cdf_plus = plus - A.softplus(plus)  # log sigmoid(plus), for x == 0
    log_one_minus_cdf_minus = -A.softplus(minus)  # log(1 - sigmoid(minus)), for x == 255
    delta = cdf_plus - cdf_minus
    mid = inv_s * centred
    # Far in a tail the difference of sigmoids underflows; use the density times the bin width.
    log_pdf_mid = mid - log_scale - 2.0 * A.softplus(mid)
    log_delta = torch.where(
        delta > 1e-5,
        A.log(torch.clamp(delta, min=1e-12)),
        log_pdf_mid + A.log(torch.tensor(2 * HALF_BIN, dtype=mid.dtype, device=mid.device)),
    )
    xi = x.to(torch.int64) if not torch.is_floating_point(x) else x.round().to(torch.int64)
    return torch.where(xi == 0, log_cdf_plus, torch.where(xi == LEVELS - 1, log_one_minus_cdf_minus, log_delta))


def discretized_logistic_cdf(mean: torch.Tensor, log_scale: torch.Tensor, columns: int = LEVELS + 1) -> torch.Tensor:
    """CDF at the 257 bin edges, shape (..., 257); first column 0 and last 1 exactly. `columns`:
    the first edges only (the same values: every step is elementwise)."""
    A = current()
    return A.sigmoid((_cdf_edges(mean)[:columns] - mean.unsqueeze(-1)) * A.exp(-log_scale).unsqueeze(-1))


def _cdf_edges(like: torch.Tensor) -> torch.Tensor:
    # -inf and +inf at the ends: sigmoid gives exactly 0 and 1 there, with no concatenation.
    edges = torch.empty(LEVELS + 1, device=like.device, dtype=like.dtype)
    edges[1:-1] = torch.arange(1, LEVELS, device=like.device, dtype=like.dtype) / 127.5 - 1.0 - HALF_BIN
    edges[0], edges[-1] = -math.inf, math.inf
    return edges


def bernoulli_logp(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Elementwise log P(x) in nats for binary x in {0, 1} (or {0, 255})."""
    target = (x > 0).to(logits.dtype)
    return -current().bce_with_logits(logits, target)


def std_normal_bucket_edges(prior_prec: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Edges of 2**prior_prec equal-mass buckets of N(0, 1): (2**prior_prec + 1,), ends at +-inf."""
    if is_exact():
        return bucket_points(prior_prec, "edges", device).to(dtype)
    n = 1 << prior_prec
    q = torch.arange(0, n + 1, dtype=dtype, device=device) / n
    return torch.special.ndtri(q)  # ndtri(0) = -inf, ndtri(1) = +inf


def std_normal_bucket_centres(prior_prec: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Median of each equal-mass bucket: the latent value the decoder sees for bucket k."""
    if is_exact():
        return bucket_points(prior_prec, "centres", device).to(dtype)
    n = 1 << prior_prec
    q = (torch.arange(0, n, dtype=dtype, device=device) + 0.5) / n
    return torch.special.ndtri(q)


def gaussian_kl_std_normal(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, std^2) || N(0, 1)) elementwise, in nats."""
    return 0.5 * (mu * mu + std * std - 1.0) - current().log(std)


def discretized_logistic_mix_logp(x: torch.Tensor, logit_w: torch.Tensor, mean: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log P(x) in nats under a mixture of discretised logistics.

    x: (N, C, H, W) pixels; logit_w, mean, log_scale: (N, M, C, H, W), mixture on dim 1.
    """
    comp = discretized_logistic_logp(x.unsqueeze(1).expand_as(mean), mean, log_scale)
    return current().mixture_logp(logit_w, comp, dim=1)


def discretized_logistic_mix_cdf(logit_w: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                 columns: int = LEVELS + 1) -> torch.Tensor:
    """Mixture CDF at the 257 bin edges. Inputs (..., M), mixture on the last axis; output (..., 257).
    `columns`: the first edges only (the same values: every step is elementwise or per row)."""
    A = current()
    w = A.softmax(logit_w, dim=-1)
    edges = _cdf_edges(mean)[:columns]
    mixed = None
    for m in range(mean.shape[-1]):
        cdf = A.sigmoid((edges - mean[..., m, None]) * A.exp(-log_scale[..., m, None]))
        mixed = cdf.mul_(w[..., m, None]) if mixed is None else A.add_product_(mixed, cdf, w[..., m, None])
    # The ends are exact: the weights' sum may miss 1 by an ulp.
    mixed[..., 0] = 0.0
    if columns == LEVELS + 1:
        mixed[..., -1] = 1.0
    return mixed


def gaussian_logpdf(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, std^2) elementwise, in nats."""
    A = current()
    e = (z - mu) / std
    return -0.5 * e * e - A.log(std) - A.half_log_2pi


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Differential entropy of N(., std^2) elementwise, in nats."""
    return current().log(std) + 0.5 * math.log(2 * math.pi * math.e)
