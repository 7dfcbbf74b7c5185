"""The BB-ANS engine: a sequence of images coded with a VAE on one rANS message.

For each batch the compressor pops z from the discretised posterior, pushes x with p(x|z) and
pushes z with the prior; the decompressor runs the mirror image in reverse batch order. All
batches share one message, so each batch's bits-back is paid for by the data already pushed.

A model with a chain of latent layers (bbans.models.hierarchy) is coded with Bit-Swap's interleaving,
of which the single-latent codec is the case L = 1:
    pop z1 ~ q(z1|x), push x ~ p(x|z1), pop z2 ~ q(z2|z1), push z1 ~ p(z1|z2), ...,
    push zL ~ p(zL).
Each pop is funded by the push just before it, so the bits a batch must borrow up front are
about one layer's worth rather than all layers' (more where a push is small beside the next pop,
as x is beside z2 for binary images).

Latents of layer i live on the 2**prior_prec equal-mass buckets of N(0, s_i^2) (s_i is the
model's `latent_scales`, 1 for the top layer): the top prior over buckets is uniform, the
conditional priors and posteriors are Gaussians restricted to the buckets, and the networks see
each bucket's median.

Initial bits: the first batch pops from an empty message, so its posterior samples come from
the message's seeded phantom words and cost their full -log Q(z) (no bits back). So the first
batch is a single image, and every later batch is only as large as the message can fund: the
compressor sizes batch b so that its deepest draw (the most the message falls below its level
at the batch's start, after any of the batch's pops, per image as measured on the batch before)
takes at most 90% of the words the message holds. A model whose pops cost more per image than
the image nets (a large z1) then ramps up slowly instead of borrowing fresh bits at every batch. The sizes chosen go into the stored settings
(`EngineConfig.batches`, run-length coded), so the decompressor replays the same partition.
Archives written before that field existed used the doubling ramp 1, 2, 4, ... of
`batch_partition`.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from bbans.coding import codecs
from bbans.coding.ans import Message
from bbans.coding.distributions import (gaussian_entropy, gaussian_kl_std_normal, gaussian_logpdf, std_normal_bucket_centres,
                                 std_normal_bucket_edges)
from bbans.errors import BBANSError, MismatchError
from bbans.models.hierarchy import split_groups
from bbans.coding.inference import posterior

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EngineConfig:
    K: int = 0
    lr: float = 5e-3
    seed: int = 0
    prior_prec: int = 8
    q_prec: int = 20
    obs_prec: int = 20
    lanes: int = 128
    batch_size: int = 256
    device: str = "cpu"
    dtype: str = "float32"
    # CPU kernels may split reductions by thread, so the thread count is part of the arithmetic.
    threads: int = 2
    # The batch sizes the compressor chose, as ((size, repeat), ...); empty: `batch_partition`.
    batches: tuple = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batches"] = [list(p) for p in self.batches]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EngineConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MismatchError(f"engine settings not understood by this bbans: {sorted(unknown)}")
        d = dict(d)
        if "batches" in d:
            try:
                d["batches"] = tuple((int(a), int(b)) for a, b in d["batches"])
            except (TypeError, ValueError):
                raise MismatchError("engine settings: batches must be (size, repeat) pairs") from None
            if any(a < 1 or b < 1 for a, b in d["batches"]):
                raise MismatchError("engine settings: batch sizes and repeats must be positive")
        return cls(**d)

    def partition(self, n: int) -> list[int]:
        """The batch sizes of n images: the recorded ones, or the doubling ramp of old archives."""
        if not self.batches:
            return batch_partition(n, self.batch_size)
        sizes = [a for a, b in self.batches for _ in range(b)]
        if sum(sizes) != n:
            raise MismatchError(f"engine settings: batches cover {sum(sizes)} images, the archive holds {n}")
        return sizes


def default_lr(model) -> float:
    """K-step learning rate: 1e-3 for colour models, 5e-3 for grey and binary ones.

    These are the paper's rates for its CIFAR-10 ResNet and MNIST MLPs. The hierarchies follow the
    same split: on 200 CIFAR-10 validation images cifar10-hier at K = 2 coded 4.2582 bits/dim
    with 5e-3 (worse than K = 0, 4.1721) and 4.1645 with 1e-3, while mnist-hier did best with 5e-3.
    """
    return 1e-3 if model.image_shape[0] == 3 else 5e-3


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; refuses 'cuda' without one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MismatchError("--device cuda asked for, but torch sees no CUDA device here")
    if device not in ("cpu", "cuda"):
        raise BBANSError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    return device


def fingerprint(config: EngineConfig) -> dict:
    """What else the float arithmetic depends on; recorded so a mismatch can be named."""
    fp = {"torch": torch.__version__, "numpy": np.__version__, "machine": platform.machine()}
    if config.device == "cpu":
        fp["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    else:
        fp["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        fp["cuda"] = torch.version.cuda
    return fp


def run_lengths(sizes: list[int]) -> tuple:
    out: list[list[int]] = []
    for v in sizes:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return tuple((a, b) for a, b in out)


FUNDING = 0.9  # share of the message's words one batch's deepest draw may take


def funded_batch_size(tail_words: int, draw_bits_per_image: float | None, left: int, batch_size: int) -> int:
    """The next batch's size: 1 at first, then as many images as the message can fund."""
    if draw_bits_per_image is None:
        return 1
    fund = int(FUNDING * 32 * tail_words / max(draw_bits_per_image, 1.0))
    return max(1, min(batch_size, left, fund))


def batch_partition(n: int, batch_size: int) -> list[int]:
    """Batch sizes for n images: 1, 2, 4, ... up to batch_size, then batch_size; sums to n.

    The partition of archives written before batches were sized by funding."""
    if batch_size < 1:
        raise BBANSError("batch size must be at least 1")
    sizes, size, left = [], 1, n
    while left > 0:
        take = min(size, left)
        sizes.append(take)
        left -= take
        size = min(size * 2, batch_size)
    return sizes


@contextlib.contextmanager
def _deterministic(config: EngineConfig):
    """Pin every knob that changes float results: algorithms, threads, TF32."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prev_bench = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(config.threads)
    if config.device == "cuda":
        # CPU kernels used here are deterministic already, and switching this on imports torch's
        # compiler stack (seconds of start-up); on CUDA it is what makes cuBLAS/cuDNN repeatable.
        torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        if config.device == "cuda":
            torch.use_deterministic_algorithms(prev_det)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
        torch.backends.cudnn.benchmark = prev_bench


class _Session:
    """One model + config on one device: the three codecs of a batch, in both directions."""

    def __init__(self, model, config: EngineConfig):
        if config.device not in ("cpu", "cuda"):
            raise MismatchError(f"archive was made on device class {config.device!r}, unknown here")
        if config.device == "cuda" and not torch.cuda.is_available():
            raise MismatchError(
                "this archive was compressed on a GPU (device class cuda) and its arithmetic can only "
                "be reproduced on one; no CUDA device is visible here"
            )
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = getattr(torch, config.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers = int(getattr(model, "latent_layers", 1))
        self.scales = [float(v) for v in getattr(model, "latent_scales", (1.0,))]
        base_centres = std_normal_bucket_centres(config.prior_prec, device=self.device)
        base_edges = std_normal_bucket_edges(config.prior_prec, device=self.device)
        self.centres = [(base_centres * sc).to(self.dtype) for sc in self.scales]
        self.edges = [base_edges * sc for sc in self.scales]

    # -- the codecs -------------------------------------------------------------------------
    def posterior(self, layer: int, below: torch.Tensor, batch_index: int):
        c = self.config
        return posterior(self.model, below, K=c.K, lr=c.lr, seed=c.seed, batch_index=batch_index, layer=layer)

    def latent_codec(self, layer: int, mu, std) -> codecs.Codec:
        """A posterior, or a conditional prior p(z_layer | z_layer+1): Gaussians over the buckets."""
        c = self.config
        return codecs.gaussian_posterior(mu.reshape(-1), std.reshape(-1), c.prior_prec, c.q_prec, self.scales[layer])

    def conditional_prior(self, layer: int, z_above: torch.Tensor):
        with torch.no_grad():
            return self.model.prior(layer, z_above)

    def prior_codec(self, n_symbols: int) -> codecs.Codec:
        return codecs.uniform(n_symbols, self.config.prior_prec)

    def observation_codec(self, params: dict, mask: torch.Tensor | None) -> codecs.Codec:
        """p(x | z1) as a codec; with pixel groups, one group after another (see bbans.models.hierarchy)."""
        groups = int(getattr(self.model, "pixel_groups", 1))
        if groups == 1:
            return self._pixel_codec(params, mask)
        masks = [None] * groups if mask is None else split_groups(mask)

        def push(msg: Message, x) -> None:
            # Last group first: the decoder pops the first group, which needs no pixels, first.
            parts = split_groups(x)
            for g in range(groups - 1, -1, -1):
                with torch.no_grad():
                    group = self.model.group_params(params, x, g)
                self._pixel_codec(group, masks[g]).push(msg, parts[g])

        def pop(msg: Message) -> np.ndarray:
            def draw(group: dict, g: int) -> torch.Tensor:
                values = np.asarray(self._pixel_codec(group, masks[g]).pop(msg), dtype=np.uint8)
                return torch.as_tensor(values, device=self.device)

            with torch.no_grad():
                return self.model.fill_groups(params, draw).cpu().numpy()

        return codecs.Codec(push, pop)

    def _pixel_codec(self, params: dict, mask) -> codecs.Codec:
        c, lik = self.config, self.model.likelihood
        if lik == "bernoulli":
            return codecs.bernoulli(torch.sigmoid(params["logits"].double()), c.obs_prec, mask=mask)
        if lik == "logistic":
            return codecs.logistic(params["mean"], params["log_scale"], c.obs_prec, mask=mask)
        if lik == "logistic_mix":
            return codecs.logistic_mix(params["logit_w"], params["mean"], params["log_scale"], c.obs_prec, mask=mask)
        if lik == "logistic_rgb":
            return codecs.logistic_rgb(params["mean"], params["log_scale"], params["coeffs"], c.obs_prec, mask=mask)
        raise MismatchError(f"model likelihood {lik!r} has no codec")

    def latents(self, layer: int, idx: np.ndarray, shape) -> torch.Tensor:
        t = torch.as_tensor(idx.astype(np.int64), device=self.device)
        return self.centres[layer][t].reshape(shape)

    def decode(self, z1: torch.Tensor) -> dict:
        with torch.no_grad():
            return self.model.decode(z1)

    # -- statistics -----------------------------------------------------------------------
    def _log2_mass(self, layer: int, idx: np.ndarray, mu, std) -> torch.Tensor:
        """Per image, log2 of the quantised-free bucket masses of the coded indices."""
        idx = torch.as_tensor(idx.astype(np.int64), device=self.device).reshape(mu.shape)
        mu64, std64 = mu.double(), std.double()
        edges = self.edges[layer]
        lo = torch.special.ndtr((edges[idx] - mu64) / std64)
        hi = torch.special.ndtr((edges[idx + 1] - mu64) / std64)
        return torch.log2(torch.clamp(hi - lo, min=2.0 ** -self.config.q_prec)).flatten(1).sum(1)

    def batch_stats(self, x, layers: list, params) -> dict:
        """Per-image -ELBO and the same with the codec's latent discretisation, in bits.

        `layers`: per layer (z_idx, q_mu, q_std, p_mu, p_std), p_* None for the top layer. The
        continuous figure is the one-sample bound at the coded latents, with the entropies and
        the top layer's KL analytic.
        """
        with torch.no_grad():
            rec = -self.model.log_px(x, params).double() / LN2
            cont, disc = rec.clone(), rec.clone()
            for layer, (idx, mu, std, pm, ps) in enumerate(layers):
                if pm is None:
                    kl = gaussian_kl_std_normal(mu.double(), std.double())
                    disc += mu[0].numel() * self.config.prior_prec
                else:
                    # z_{i+1} was drawn given z_i, so the prior term is taken at the coded z_i, not
                    # averaged over q(z_i): log q analytic (minus the entropy), log p at the sample.
                    z = self.latents(layer, idx, mu.shape).double()
                    kl = -gaussian_entropy(std.double()) - gaussian_logpdf(z, pm.double(), ps.double())
                    disc -= self._log2_mass(layer, idx, pm, ps)
                cont += kl.flatten(1).sum(1) / LN2
                disc += self._log2_mass(layer, idx, mu, std)
        return {"neg_elbo_bits": cont.cpu().numpy(), "discrete_neg_elbo_bits": disc.cpu().numpy()}

    # -- one batch, both directions --------------------------------------------------------------
    def walk_up(self, x: torch.Tensor, batch_index: int, draw, coded_x=None, coded_below=None) -> tuple[list, dict]:
        """The compressor's order up the chain: z1 from q(z1|x), then z2 from q(z2|z1), ...

        `draw(layer, mu, std)` picks each layer's bucket indices; once z_{i+1} is known,
        `coded_below(i, p_mu, p_std, idx_i)` is told the prior of layer i, and once z1 is known
        `coded_x(params)` the likelihood's parameters. Returns, per layer, (idx, q_mu, q_std,
        p_mu, p_std) (p_* None for the top) and the likelihood's parameters.
        """
        coded, below, params = [], x, None
        for layer in range(self.layers):
            mu, std = self.posterior(layer, below, batch_index)
            idx = draw(layer, mu, std)
            z = self.latents(layer, idx, mu.shape)
            if layer == 0:
                params = self.decode(z)
                if coded_x is not None:
                    coded_x(params)
            else:
                pm, ps = self.conditional_prior(layer - 1, z)
                if coded_below is not None:
                    coded_below(layer - 1, pm, ps, coded[-1][0])
                coded[-1] = coded[-1][:3] + (pm, ps)
            coded.append((idx, mu, std, None, None))
            below = z
        return coded, params

    def push_batch(self, msg: Message, x: torch.Tensor, mask, batch_index: int) -> dict:
        """pop z1, push x, pop z2, push z1, ..., push zL."""
        start = _level(msg)
        lowest = start

        def pop(layer, mu, std):
            nonlocal lowest
            idx = self.latent_codec(layer, mu, std).pop(msg)
            lowest = min(lowest, _level(msg))
            return idx

        coded, params = self.walk_up(
            x, batch_index, pop,
            coded_x=lambda params: self.observation_codec(params, mask).push(msg, x),
            coded_below=lambda layer, pm, ps, idx: self.latent_codec(layer, pm, ps).push(msg, idx))
        top = coded[-1][0]
        self.prior_codec(top.size).push(msg, top)
        return {**self.batch_stats(x, coded, params), "draw_bits": start - lowest}

    def pop_batch(self, msg: Message, size: int, image_shape, mask, batch_index: int) -> torch.Tensor:
        """The mirror image of push_batch: pop zL, pop z_{L-1}, push zL, ..., pop x, push z1."""
        shapes = self.model.latent_shapes(image_shape)
        top = self.layers - 1
        idx = self.prior_codec(size * int(np.prod(shapes[top]))).pop(msg)
        z = self.latents(top, idx, (size,) + tuple(shapes[top]))
        for layer in range(top, 0, -1):
            pm, ps = self.conditional_prior(layer - 1, z)
            idx_down = self.latent_codec(layer - 1, pm, ps).pop(msg)
            z_down = self.latents(layer - 1, idx_down, pm.shape)
            mu, std = self.posterior(layer, z_down, batch_index)
            self.latent_codec(layer, mu, std).push(msg, idx)
            idx, z = idx_down, z_down
        params = self.decode(z)
        x = self.observation_codec(params, mask).pop(msg)
        x = torch.as_tensor(np.asarray(x, dtype=np.uint8).reshape((size,) + tuple(image_shape)), device=self.device)
        mu, std = self.posterior(0, x, batch_index)
        self.latent_codec(0, mu, std).push(msg, idx)
        return x


def _level(msg: Message) -> float:
    """How many bits the message holds above the phantom words: the tail less what was borrowed, plus the heads."""
    return 32.0 * (msg.tail.size - msg.phantom_words) + float(np.log2(msg.heads.astype(np.float64)).sum())


def _prepare(images: np.ndarray, mask: np.ndarray | None):
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4:
        raise BBANSError(f"images must be (N, C, H, W), got shape {images.shape}")
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != (images.shape[0],) + images.shape[2:]:
            raise BBANSError(f"mask shape {mask.shape} does not match images {images.shape}")
        # Padding is never coded; zero it so both ends feed the networks the same canvas.
        images = images * mask[:, None]
    return images, mask


def compress(model, images: np.ndarray, mask: np.ndarray | None = None, config: EngineConfig = EngineConfig(), progress=None):
    """Code uint8 images (N, C, H, W) on one message. Returns (payload, stats)."""
    images, mask = _prepare(images, mask)
    n = images.shape[0]
    msg = Message(config.lanes, seed=config.seed)
    stats = {"neg_elbo_bits": [], "discrete_neg_elbo_bits": [], "batch_bits": []}
    sizes: list[int] = []
    with _deterministic(config):
        s = _Session(model, config)
        start, draw = 0, None
        while start < n:
            b = len(sizes)
            size = funded_batch_size(msg.tail.size, draw, n - start, config.batch_size)
            sizes.append(size)
            before = msg.bits()
            x = torch.as_tensor(images[start : start + size], device=s.device)
            m = None if mask is None else torch.as_tensor(mask[start : start + size], device=s.device)
            bs = s.push_batch(msg, x, m, b)
            # The next batch's images are like these: size it by how deep this one drew.
            draw = 1.1 * bs["draw_bits"] / size
            stats["neg_elbo_bits"].append(bs["neg_elbo_bits"])
            stats["discrete_neg_elbo_bits"].append(bs["discrete_neg_elbo_bits"])
            stats["batch_bits"].append(msg.bits() - before)
            start += size
            if progress is not None:
                progress(start, n)
    payload = msg.to_bytes()
    ne = np.concatenate(stats["neg_elbo_bits"]) if n else np.zeros(0)
    dne = np.concatenate(stats["discrete_neg_elbo_bits"]) if n else np.zeros(0)
    return payload, {
        "bits": 8 * len(payload),
        "neg_elbo_bits": float(ne.sum()),
        "discrete_neg_elbo_bits": float(dne.sum()),
        "image_neg_elbo_bits": ne,
        "initial_bits": 32 * msg.phantom_words,
        # What decompress needs to stop at the first word that was never written.
        "phantom_peak": msg.phantom_peak,
        "batch_bits": stats["batch_bits"],
        "coded_pixels": int(images.shape[1] * (mask.sum() if mask is not None else n * images.shape[2] * images.shape[3])),
        # What decompress needs: the settings with the batch sizes chosen here.
        "config": replace(config, batches=run_lengths(sizes)),
    }


def decompress(model, payload: bytes, n: int, image_shape, mask: np.ndarray | None = None,
               config: EngineConfig = EngineConfig(), progress=None, phantom_peak: int | None = None) -> np.ndarray:
    """Inverse of `compress`: n images of shape image_shape (C, H, W) from the payload.

    phantom_peak: `compress`'s stats["phantom_peak"]; with it a payload that runs out of words
    is refused at the first word it lacks (None: only at the end, as for old archives)."""
    c_, h, w = image_shape
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != (n, h, w):
            raise BBANSError(f"mask shape {mask.shape} does not match {n} images of {h}x{w}")
    out = np.zeros((n, c_, h, w), dtype=np.uint8)
    sizes = config.partition(n)
    ends = np.cumsum(sizes)
    done = 0
    with _deterministic(config):
        s = _Session(model, config)
        msg = Message.from_bytes(payload, seed=config.seed, phantom_limit=phantom_peak)
        for b in reversed(range(len(sizes))):
            size, end = sizes[b], int(ends[b])
            start = end - size
            m = None if mask is None else torch.as_tensor(mask[start:end], device=s.device)
            x = s.pop_batch(msg, size, (c_, h, w), m, b)
            out[start:end] = x.cpu().numpy()
            done += size
            if progress is not None:
                progress(done, n)
    if msg != Message(msg.lanes, seed=config.seed):
        raise MismatchError(
            "decoded message did not return to its initial state: the archive was made with other "
            "settings, another model, or arithmetic this machine does not reproduce"
        )
    return out


# ---- latent bucket scales ---------------------------------------------------------------------

@torch.no_grad()
def bucketed_neg_elbo_bits(model, images: np.ndarray, config: EngineConfig = EngineConfig(), seed: int = 0,
                           batch_size: int = 250) -> float:
    """What the codec's latent discretisation costs on these images, without running the coder.

    Total -ELBO in bits with every layer's latents on its buckets, as `compress` reports it in
    "discrete_neg_elbo_bits", except that each bucket is drawn from the posterior (amortized, or
    after config.K steps) with seeded noise instead of being popped from a message (its mass is
    the same Gaussian's), and the fixed costs of a message (initial bits, final heads) are left
    out. The same seed draws the same noise, so two settings are compared on equal terms. Like
    `compress`, it leaves the model in eval mode, frozen, on config's device.
    """
    images, _ = _prepare(images, None)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with _deterministic(config):
        s = _Session(model, config)

        def draw(layer, mu, std):
            noise = torch.randn(mu.shape, generator=g, dtype=torch.float64).to(s.device)
            edges = s.edges[layer]
            t = torch.searchsorted(edges, (mu.double() + std.double() * noise).contiguous(), right=True) - 1
            return t.clamp(0, edges.numel() - 2).cpu().numpy()

        for lo in range(0, len(images), batch_size):
            x = torch.as_tensor(images[lo : lo + batch_size], device=s.device)
            coded, params = s.walk_up(x, 0, draw)
            total += float(s.batch_stats(x, coded, params)["discrete_neg_elbo_bits"].sum())
    return total


# A layer's bucket scale is searched on a grid of multiples of its RMS, SCALE_STEP apart, going
# up (or else down) from the RMS while the cost falls. A heavy-tailed layer needs that: with s at
# the RMS, the tails of CIFAR-10's z1 all fell in the outermost buckets, whose medians the
# decoder then saw, and the model coded at 8.7 bits/dim instead of 4.4.
SCALE_STEP = 2.0 ** 0.5
SCALE_SEARCH_LIMIT = 12  # steps each way at most (64x)


@torch.no_grad()
def calibrate_latent_scales(model, images: np.ndarray, config: EngineConfig = EngineConfig(), seed: int = 0) -> list[float]:
    """Set each intermediate layer's bucket scale to the one that codes `images` cheapest.

    Layers are taken from the bottom up. Each starts at the RMS of its aggregate-posterior
    samples and moves by SCALE_STEP while `bucketed_neg_elbo_bits` (same noise for every
    candidate) falls. The top layer keeps scale 1: its prior is N(0, I), which is then uniform
    over the buckets. Returns the scales (also set on the model).
    """
    images, _ = _prepare(images, None)
    layers = int(getattr(model, "latent_layers", 1))
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
