"""Latent bucket scales: each layer of a hierarchy is coded on the equal-mass buckets of
N(0, s_i^2), and s_i is chosen after training by what the buckets cost on training images.

The cost is measured as the coder would pay it (bbans.coding.engine's discretised -ELBO), with
each bucket drawn from the posterior by seeded noise instead of popped from a message.
"""

from __future__ import annotations

import numpy as np
import torch

from bbans.coding import engine


@torch.no_grad()
def bucketed_neg_elbo_bits(model, images: np.ndarray, config: engine.EngineConfig = engine.EngineConfig(), seed: int = 0,
                           batch_size: int = 250) -> float:
    """What the codec's latent discretisation costs on these images, in total: the sum of
    `engine.estimate_bits`. The same seed draws the same noise, so two settings are compared on
    equal terms."""
    per_image = engine.estimate_bits(model, images, config, seed, batch_size)
    # Summed batch by batch, as the search has always compared them.
    return sum(float(per_image[lo:lo + batch_size].sum()) for lo in range(0, len(per_image), batch_size))


# A layer's bucket scale is searched on a grid of multiples of its RMS, SCALE_STEP apart, going
# up (or else down) from the RMS while the cost falls. A heavy-tailed layer needs that: with s at
# the RMS, the tails of CIFAR-10's z1 all fell in the outermost buckets, whose medians the
# decoder then saw, and the model coded at 8.7 bits/dim instead of 4.4.
SCALE_STEP = 2.0 ** 0.5
SCALE_SEARCH_LIMIT = 12  # steps each way at most (64x)


@torch.no_grad()
def calibrate_latent_scales(model, images: np.ndarray, config: engine.EngineConfig = engine.EngineConfig(), seed: int = 0) -> list[float]:
    """Set each intermediate layer's bucket scale to the one that codes `images` cheapest.

    Layers are taken from the bottom up. Each starts at the RMS of its aggregate-posterior
    samples and moves by SCALE_STEP while `bucketed_neg_elbo_bits` (same noise for every
    candidate) falls. The top layer keeps scale 1: its prior is N(0, I), which is then uniform
    over the buckets. Returns the scales (also set on the model).
    """
    images, _ = engine.prepare(images, None)
    layers = int(model.latent_layers)
    g = torch.Generator().manual_seed(seed)
    sq, count = [0.0] * layers, [0] * layers
    device = next(model.parameters()).device
    for lo in range(0, len(images), 500):
        below = torch.as_tensor(images[lo : lo + 500]).to(device)
        for i in range(layers):
            mu, std = model.infer(i, below)
            below = mu + std * torch.randn(mu.shape, generator=g).to(device)
            sq[i] += float((below.double() ** 2).sum())
            count[i] += below.numel()
    rms = [(a / max(b, 1)) ** 0.5 for a, b in zip(sq, count)]
    scales = [round(r, 4) for r in rms[:-1]] + [1.0]

    best = None
    for layer in range(layers - 1):
        def cost(k: int) -> float:
            model.latent_scales = [round(rms[layer] * SCALE_STEP ** k, 4) if i == layer else s for i, s in enumerate(scales)]
            return bucketed_neg_elbo_bits(model, images, config, seed)

        # The scales as they stand are the layer below's winner: its cost is known already.
        best_k, best = 0, cost(0) if best is None else best
        for direction in (1, -1):
            k = direction
            while abs(k) <= SCALE_SEARCH_LIMIT and (c := cost(k)) < best:
                best_k, best = k, c
                k += direction
            if best_k:
                break
        scales[layer] = round(rms[layer] * SCALE_STEP ** best_k, 4)
    model.latent_scales = scales
    return scales
