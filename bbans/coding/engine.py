"""The BB-ANS engine: a sequence of images coded with a VAE on one rANS message.

Each batch of images is one codec, `Session.batch_codec`: bits-back through the model's latent
layers in Bit-Swap's order (bbans.coding.bitsback), built from the model's posteriors (amortized
or K-step, bbans.coding.inference), conditional priors and observation codec. The compressor
pushes the batches in order; the decompressor pops them in reverse. All batches share one
message, so each batch's bits-back is paid for by the data already pushed.

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
the image nets (a large z1) then ramps up slowly instead of borrowing fresh bits at every batch.
The sizes chosen go into the stored settings (`EngineConfig.batches`, run-length coded), so
the decompressor replays the same partition.
Archives written before that field existed used the doubling ramp 1, 2, 4, ... of
`batch_partition`.

Collapsed channels (`EngineConfig.collapsed`, from the model's record): latent channels whose
posterior is the prior for every image are neither popped nor pushed; both ends give them the
bucket just above 0. They cost nothing in rate (their pops and pushes cancelled) but their pops
set how deep a batch draws, so leaving them out lets batches grow several times faster
(benchmarks/latent_coding.py). K-step inference still refines them with the rest; the codec
ignores what it finds for them.

K-step inference: with K > 0 each batch is pushed twice from the same message, at K steps and
at none, and the message that grew less is kept; the choices go into `EngineConfig.batch_ks`
(run-length coded, absent when every batch took K), so the decompressor pops each batch with
the steps it was pushed with and never runs steps that did not pay.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from bbans.coding import arithmetic, codecs
from bbans.coding.ans import Message
from bbans.coding.bitsback import bit_swap
from bbans.coding.compose import Codec, masked
from bbans.coding.distributions import (gaussian_entropy, gaussian_kl_std_normal, gaussian_logpdf,
                                        std_normal_bucket_centres, std_normal_bucket_edges)
from bbans.coding.inference import posterior
from bbans.errors import BBANSError, MismatchError

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
    dtype: str = "float64"
    # Float kernels may split reductions by thread, so the thread count is part of the float
    # arithmetic (not of the exact one).
    threads: int = 2
    # The batch sizes the compressor chose, as ((size, repeat), ...); empty: `batch_partition`.
    batches: tuple = ()
    # The steps each batch ran, as ((K, repeat), ...) in batch order; empty: K for every batch.
    # `compress` runs a batch's K steps only where they code it in fewer bits than none.
    batch_ks: tuple = ()
    # Latent channels not coded, as ((layer, channel), ...): each holds bucket 2**(prior_prec-1),
    # the one just above 0, in every image. For channels whose posterior is their prior whatever
    # the image (`collapsed_latents`): they net nothing but make the message hold prior_prec bits
    # a latent before it can push the image. Empty: every channel coded.
    collapsed: tuple = ()
    # bbans.coding.arithmetic: "exact-1" decodes on any machine; "float" (every archive before
    # the setting existed) only where the same kernels run.
    arithmetic: str = arithmetic.DEFAULT

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batches"] = [list(p) for p in self.batches]
        if self.batch_ks:
            d["batch_ks"] = [list(p) for p in self.batch_ks]
        else:
            del d["batch_ks"]  # archives that run K everywhere stay readable by older versions
        if self.collapsed:
            d["collapsed"] = [list(p) for p in self.collapsed]
        else:
            del d["collapsed"]  # and so do archives that code every channel
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EngineConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MismatchError(f"engine settings not understood by this bbans: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("arithmetic", "float")
        if d["arithmetic"] not in arithmetic.ARITHMETICS:
            raise MismatchError(f"archive computed in arithmetic {d['arithmetic']!r}, unknown to this bbans")
        if d["arithmetic"] != "float" and d.get("dtype", "float64") != "float64":
            raise MismatchError(f"arithmetic {d['arithmetic']} computes in float64, not {d['dtype']}")
        if "batches" in d:
            try:
                d["batches"] = tuple((int(a), int(b)) for a, b in d["batches"])
            except (TypeError, ValueError):
                raise MismatchError("engine settings: batches must be (size, repeat) pairs") from None
            if any(a < 1 or b < 1 for a, b in d["batches"]):
                raise MismatchError("engine settings: batch sizes and repeats must be positive")
        if "batch_ks" in d:
            try:
                d["batch_ks"] = tuple((int(a), int(b)) for a, b in d["batch_ks"])
            except (TypeError, ValueError):
                raise MismatchError("engine settings: batch_ks must be (K, repeat) pairs") from None
            if any(not 0 <= a <= d.get("K", 0) or b < 1 for a, b in d["batch_ks"]):
                raise MismatchError("engine settings: a batch's K must lie in 0..K and repeats be positive")
        if "collapsed" in d:
            try:
                d["collapsed"] = tuple(sorted({(int(a), int(b)) for a, b in d["collapsed"]}))
            except (TypeError, ValueError):
                raise MismatchError("engine settings: collapsed must be (layer, channel) pairs") from None
            if any(a < 0 or b < 0 for a, b in d["collapsed"]):
                raise MismatchError("engine settings: collapsed layers and channels must be non-negative")
        return cls(**d)

    def partition(self, n: int) -> list[int]:
        """The batch sizes of n images: the recorded ones, or the doubling ramp of old archives."""
        if not self.batches:
            return batch_partition(n, self.batch_size)
        sizes = [a for a, b in self.batches for _ in range(b)]
        if sum(sizes) != n:
            raise MismatchError(f"engine settings: batches cover {sum(sizes)} images, the archive holds {n}")
        return sizes

    def steps(self, batches: int) -> list[int]:
        """The K each of `batches` batches ran."""
        if not self.batch_ks:
            return [self.K] * batches
        ks = [a for a, b in self.batch_ks for _ in range(b)]
        if len(ks) != batches:
            raise MismatchError(f"engine settings: batch_ks cover {len(ks)} batches, the archive has {batches}")
        return ks


def default_lr(model) -> float:
    """K-step learning rate: the model's own (`kstep_lr`, set from its bundle's record, where
    benchmarks/kstep_rate.py chose the rate at which the coded size falls with every step),
    else 1e-3 for colour models and 5e-3 for grey and binary ones.

    These are the paper's rates for its CIFAR-10 ResNet and MNIST MLPs. The hierarchies follow the
    same split: on 200 CIFAR-10 validation images cifar10-hier at K = 2 coded 4.2582 bits/dim
    with 5e-3 (worse than K = 0, 4.1721) and 4.1645 with 1e-3, while mnist-hier did best with 5e-3.
    """
    own = getattr(model, "kstep_lr", None)
    if own:
        return float(own)
    return 1e-3 if model.image_shape[0] == 3 else 5e-3


def collapsed_latents(model) -> tuple:
    """The model's collapsed latent channels as ((layer, channel), ...): those its bundle's record
    names (`collapsed_latents`, chosen by benchmarks/latent_coding.py), else none."""
    return tuple(sorted((int(a), int(b)) for a, b in getattr(model, "collapsed_latents", ()) or ()))


def latent_precision(model) -> int:
    """Bits of a latent's bucket index: the model's own (`latent_prec`, chosen by
    benchmarks/latent_coding.py), else EngineConfig's. Fewer buckets make each latent's table
    smaller and its pop shallower, at a measured cost in rate."""
    own = getattr(model, "latent_prec", None)
    return int(own) if own else EngineConfig.prior_prec


def model_settings(model) -> dict:
    """The EngineConfig fields a model's bundle chooses: K-step rate, latent buckets, collapsed channels."""
    return {"lr": default_lr(model), "prior_prec": latent_precision(model), "collapsed": collapsed_latents(model)}


def resolve_threads(threads: int) -> int:
    """CPU threads for the arithmetic: `threads`, or (0) every core this process may use."""
    if threads > 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 64))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; refuses 'cuda' without one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BBANSError("--device cuda asked for, but torch sees no CUDA device here")
    if device not in ("cpu", "cuda"):
        raise BBANSError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    return device


def fingerprint(config: EngineConfig) -> dict:
    """Where the archive was coded; for the float arithmetic, what else it depends on, recorded
    so a mismatch can be named."""
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


def portable(config: EngineConfig) -> bool:
    """Whether the archive's arithmetic gives the same bits on every machine and device."""
    return config.arithmetic != "float"


@contextlib.contextmanager
def deterministic(config: EngineConfig):
    """The archive's arithmetic, and every knob that changes float results pinned: algorithms,
    threads, TF32, and for the exact arithmetic on a GPU no cuDNN (whose FFT and Winograd
    convolutions are not sums of products)."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prev_bench = torch.backends.cudnn.benchmark
    prev_cudnn = torch.backends.cudnn.enabled
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(config.threads)
    if config.device == "cuda":
        # CPU kernels used here are deterministic already, and switching this on imports torch's
        # compiler stack (seconds of start-up); on CUDA it is what makes cuBLAS/cuDNN repeatable.
        torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    if portable(config):
        torch.backends.cudnn.enabled = False
    try:
        with arithmetic.using(arithmetic.named(config.arithmetic)):
            yield
    finally:
        torch.backends.cudnn.enabled = prev_cudnn
        torch.set_num_threads(prev_threads)
        if config.device == "cuda":
            torch.use_deterministic_algorithms(prev_det)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
        torch.backends.cudnn.benchmark = prev_bench


class _Trace:
    """What a batch's codecs computed on the way up, for the statistics and the batch sizing."""

    def __init__(self, level: float):
        self.start = self.lowest = level
        self.layers: dict[int, dict] = {}
        self.params = None

    def layer(self, i: int) -> dict:
        return self.layers.setdefault(i, {})

    def coded(self) -> list:
        """Per layer (idx, q_mu, q_std, p_mu, p_std), p_* None for the top."""
        return [tuple(self.layers[i].get(k) for k in ("idx", "mu", "std", "pm", "ps")) for i in sorted(self.layers)]


class Session:
    """One model + config on one device: a batch's codec, and the pieces it is built from."""

    def __init__(self, model, config: EngineConfig):
        if config.device not in ("cpu", "cuda"):
            raise MismatchError(f"archive was made on device class {config.device!r}, unknown here")
        if config.device == "cuda" and not torch.cuda.is_available() and not portable(config):
            raise MismatchError(
                "this archive was compressed on a GPU (device class cuda) and its arithmetic can only "
                "be reproduced on one; no CUDA device is visible here"
            )
        self.config = config
        # An exact archive gives the same bits anywhere: a GPU archive decodes on a CPU.
        here = "cpu" if config.device == "cuda" and not torch.cuda.is_available() else config.device
        self.device = torch.device(here)
        self.dtype = getattr(torch, config.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers = int(model.latent_layers)
        self.scales = [float(v) for v in model.latent_scales]
        base_centres = std_normal_bucket_centres(config.prior_prec, device=self.device)
        base_edges = std_normal_bucket_edges(config.prior_prec, device=self.device)
        self.centres = [(base_centres * sc).to(self.dtype) for sc in self.scales]
        self.edges = [base_edges * sc for sc in self.scales]
        self.fill = 1 << (config.prior_prec - 1)  # the bucket just above 0, a collapsed channel's
        self.active = self._active_channels(config.collapsed)

    def _active_channels(self, collapsed: tuple) -> list:
        """Per layer, None (every channel coded) or a bool array over its channels."""
        if not collapsed:
            return [None] * self.layers
        shapes = self.model.latent_shapes()
        if any(len(sh) != 3 for sh in shapes):
            raise MismatchError("the archive leaves latent channels uncoded, which only a convolutional model has")
        active = [np.ones(sh[0], dtype=bool) for sh in shapes]
        for layer, ch in collapsed:
            if layer >= self.layers or ch >= len(active[layer]):
                raise MismatchError(f"the archive leaves latent channel {ch} of layer {layer} uncoded; "
                                    "this model has no such channel")
            active[layer][ch] = False
        return [None if a.all() else a for a in active]

    def _coded(self, layer: int, shape) -> np.ndarray | None:
        """Flat bool mask of the coded latents of a layer's (N, C, H, W) array, or None: all."""
        a = self.active[layer]
        if a is None:
            return None
        return np.broadcast_to(a[None, :, None, None], tuple(shape)).reshape(-1)

    def _only_coded(self, layer: int, t: torch.Tensor) -> torch.Tensor:
        """t (N, C, H, W) with the uncoded channels' terms zeroed."""
        a = self.active[layer]
        if a is None:
            return t
        return t * torch.as_tensor(a, device=t.device).to(t.dtype)[None, :, None, None]

    def collapse(self, layer: int, idx: np.ndarray, shape) -> np.ndarray:
        """Bucket indices of a layer with its uncoded channels at their constant."""
        rows = self._coded(layer, shape)
        if rows is None:
            return idx
        return np.where(rows, idx.reshape(-1), self.fill).reshape(idx.shape)

    # -- the pieces ---------------------------------------------------------------------------
    def posterior(self, layer: int, below: torch.Tensor, batch_index: int, K: int):
        c = self.config
        return posterior(self.model, below, K=K, lr=c.lr, seed=c.seed, batch_index=batch_index, layer=layer)

    def latent_codec(self, layer: int, mu, std) -> Codec:
        """A posterior, or a conditional prior p(z_layer | z_layer+1): Gaussians over the buckets,
        of the coded channels only."""
        c = self.config
        rows = self._coded(layer, mu.shape)
        mu, std = mu.reshape(-1), std.reshape(-1)
        if rows is None:
            return codecs.gaussian_posterior(mu, std, c.prior_prec, c.q_prec, self.scales[layer])
        keep = torch.as_tensor(np.flatnonzero(rows), device=mu.device)
        inner = codecs.gaussian_posterior(mu[keep], std[keep], c.prior_prec, c.q_prec, self.scales[layer])
        return masked(inner, rows, self.fill)

    def conditional_prior(self, layer: int, z_above: torch.Tensor):
        with torch.no_grad():
            return self.model.prior(layer, z_above)

    def latents(self, layer: int, idx: np.ndarray, shape) -> torch.Tensor:
        t = torch.as_tensor(idx.astype(np.int64), device=self.device)
        return self.centres[layer][t].reshape(shape)

    def decode(self, z1: torch.Tensor) -> dict:
        with torch.no_grad():
            return self.model.decode(z1)

    def _images(self, x, shape) -> torch.Tensor:
        """Pixel symbols (the images going up, flat int64 coming down) as a uint8 tensor."""
        if torch.is_tensor(x):
            return x
        return torch.as_tensor(np.asarray(x, dtype=np.uint8).reshape(shape), device=self.device)

    # -- a batch as one codec ----------------------------------------------------------------
    def batch_codec(self, size: int, image_shape, mask, batch_index: int, K: int, trace: _Trace) -> Codec:
        """The batch's images (N, C, H, W) as one codec: bits-back through every latent layer in
        Bit-Swap's order (bbans.coding.bitsback). `trace` is told what each step computed."""
        shapes = [(size,) + tuple(s) for s in self.model.latent_shapes(image_shape)]
        images_shape = (size,) + tuple(image_shape)

        def posterior(layer: int):
            def codec(below) -> Codec:
                below = self._images(below, images_shape) if layer == 0 else self.latents(layer - 1, below, shapes[layer - 1])
                mu, std = self.posterior(layer, below, batch_index, K)
                t = trace.layer(layer)
                t["mu"], t["std"] = mu, std
                inner = self.latent_codec(layer, mu, std)

                def pop(msg: Message):
                    t["idx"] = idx = inner.pop(msg)
                    trace.lowest = min(trace.lowest, _level(msg))
                    return idx

                return Codec(inner.push, pop)

            return codec

        def likelihood(layer: int):
            def codec(above) -> Codec:
                z = self.latents(layer, above, shapes[layer])
                if layer == 0:
                    trace.params = self.decode(z)
                    return self.model.observation_codec(trace.params, self.config.obs_prec, mask)
                pm, ps = self.conditional_prior(layer - 1, z)
                t = trace.layer(layer - 1)
                t["pm"], t["ps"] = pm, ps
                return self.latent_codec(layer - 1, pm, ps)

            return codec

        top_rows = self._coded(self.layers - 1, shapes[-1])
        top = masked(codecs.uniform(int(np.prod(shapes[-1]) if top_rows is None else top_rows.sum()),
                                    self.config.prior_prec), top_rows, self.fill)
        return bit_swap([(posterior(i), likelihood(i)) for i in range(self.layers)], top)

    def push_batch(self, msg: Message, x: torch.Tensor, mask, batch_index: int, K: int) -> dict:
        trace = _Trace(_level(msg))
        self.batch_codec(x.shape[0], tuple(x.shape[1:]), mask, batch_index, K, trace).push(msg, x)
        return {**self.batch_stats(x, trace.coded(), trace.params), "draw_bits": trace.start - trace.lowest}

    def pop_batch(self, msg: Message, size: int, image_shape, mask, batch_index: int, K: int) -> np.ndarray:
        x = self.batch_codec(size, image_shape, mask, batch_index, K, _Trace(0.0)).pop(msg)
        return np.asarray(x, dtype=np.uint8).reshape((size,) + tuple(image_shape))

    # -- statistics -----------------------------------------------------------------------
    def _log2_mass(self, layer: int, idx: np.ndarray, mu, std) -> torch.Tensor:
        """Per image, log2 of the quantised-free bucket masses of the coded latents."""
        idx = torch.as_tensor(idx.astype(np.int64), device=self.device).reshape(mu.shape)
        mu64, std64 = mu.double(), std.double()
        edges = self.edges[layer]
        lo = torch.special.ndtr((edges[idx] - mu64) / std64)
        hi = torch.special.ndtr((edges[idx + 1] - mu64) / std64)
        return self._only_coded(layer, torch.log2(torch.clamp(hi - lo, min=2.0 ** -self.config.q_prec))).flatten(1).sum(1)

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
                    coded = self._coded(layer, mu.shape)
                    disc += (mu[0].numel() if coded is None else int(coded.sum()) // mu.shape[0]) * self.config.prior_prec
                else:
                    # z_{i+1} was drawn given z_i, so the prior term is taken at the coded z_i, not
                    # averaged over q(z_i): log q analytic (minus the entropy), log p at the sample.
                    z = self.latents(layer, idx, mu.shape).double()
                    kl = -gaussian_entropy(std.double()) - gaussian_logpdf(z, pm.double(), ps.double())
                    disc -= self._log2_mass(layer, idx, pm, ps)
                cont += self._only_coded(layer, kl).flatten(1).sum(1) / LN2
                disc += self._log2_mass(layer, idx, mu, std)
        return {"neg_elbo_bits": cont.cpu().numpy(), "discrete_neg_elbo_bits": disc.cpu().numpy()}


def _extent(msg: Message) -> float:
    """The bits the message would take written out now (phantom words are never written)."""
    return 32.0 * msg.tail.size + float(np.log2(msg.heads.astype(np.float64)).sum())


def _level(msg: Message) -> float:
    """How many bits the message holds above the phantom words: its extent less what was borrowed."""
    return _extent(msg) - 32.0 * msg.phantom_words


class _StepTrial:
    """Whether the compressor still tries K steps: until STEP_TRIAL_IMAGES images after the first
    batch have been coded both ways, and after that while the steps save at least STEP_MIN_GAIN
    of the bits coding without them takes (the signed sum over the batches tried, so that chance
    wins of one way over the other cancel). A model whose amortized posteriors are as good as
    steps can make them then codes the rest at K = 0's speed, on both ends."""

    def __init__(self, K: int):
        self.trying = K > 0
        self.images, self.plain_bits, self.saved_bits = 0, 0.0, 0.0

    def add(self, images: int, plain_bits: float, steps_bits: float) -> None:
        self.images += images
        self.plain_bits += plain_bits
        self.saved_bits += plain_bits - steps_bits
        if self.images >= STEP_TRIAL_IMAGES and self.saved_bits < STEP_MIN_GAIN * self.plain_bits:
            self.trying = False


STEP_TRIAL_IMAGES = 256
STEP_MIN_GAIN = 1e-3


def prepare(images: np.ndarray, mask: np.ndarray | None):
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
    images, mask = prepare(images, mask)
    n = images.shape[0]
    msg = Message(config.lanes, seed=config.seed)
    stats = {"neg_elbo_bits": [], "discrete_neg_elbo_bits": [], "batch_bits": []}
    sizes: list[int] = []
    ks: list[int] = []
    trial = _StepTrial(config.K)
    with deterministic(config):
        s = Session(model, config)
        if progress is not None:
            progress(0, n)
        start, draw = 0, None
        while start < n:
            b = len(sizes)
            size = funded_batch_size(msg.tail.size, draw, n - start, config.batch_size)
            sizes.append(size)
            before = msg.bits()
            x = torch.as_tensor(images[start : start + size], device=s.device)
            m = None if mask is None else torch.as_tensor(mask[start : start + size], device=s.device)
            k = config.K if trial.trying else 0
            if k > 0:
                # Steps that make a batch dearer are not taken: the batch is coded both ways from
                # the same message and the cheaper one kept, so --K never costs more than K = 0.
                plain, level = msg.copy(), _extent(msg)
                plain_stats = s.push_batch(plain, x, m, b, 0)
                bs = s.push_batch(msg, x, m, b, k)
                without, with_steps = _extent(plain) - level, _extent(msg) - level
                if b > 0:  # the first batch pays the initial bits either way: not a fair sample
                    trial.add(size, without, with_steps)
                if without <= with_steps:
                    msg, bs, k = plain, plain_stats, 0
            else:
                bs = s.push_batch(msg, x, m, b, 0)
            ks.append(k)
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
        "config": replace(config, batches=run_lengths(sizes),
                          batch_ks=run_lengths(ks) if any(k != config.K for k in ks) else ()),
        "batch_ks": ks,
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
    ks = config.steps(len(sizes))
    ends = np.cumsum(sizes)
    done = 0
    with deterministic(config):
        s = Session(model, config)
        msg = Message.from_bytes(payload, seed=config.seed, phantom_limit=phantom_peak)
        for b in reversed(range(len(sizes))):
            size, end = sizes[b], int(ends[b])
            start = end - size
            m = None if mask is None else torch.as_tensor(mask[start:end], device=s.device)
            out[start:end] = s.pop_batch(msg, size, (c_, h, w), m, b, ks[b])
            done += size
            if progress is not None:
                progress(done, n)
    if msg != Message(msg.lanes, seed=config.seed):
        raise MismatchError(
            "decoded message did not return to its initial state: the archive was made with other "
            "settings, another model, or arithmetic this machine does not reproduce"
        )
    return out


@torch.no_grad()
def estimate_bits(model, images: np.ndarray, config: EngineConfig = EngineConfig(), seed: int = 0,
                  batch_size: int = 250) -> np.ndarray:
    """Per image, what coding it would cost, without running the coder: the -ELBO in bits with
    every layer's latents on its buckets, as `compress` reports it in "discrete_neg_elbo_bits",
    except that each bucket is drawn from the posterior (amortized, or after config.K steps)
    with seeded noise instead of being popped from a message (its mass is the same Gaussian's),
    and the fixed costs of a message (initial bits, final heads) are left out. Like `compress`,
    it leaves the model in eval mode, frozen, on config's device."""
    images, _ = prepare(images, None)
    g = torch.Generator().manual_seed(seed)
    out = []
    with deterministic(config):
        s = Session(model, config)
        for lo in range(0, len(images), batch_size):
            x = torch.as_tensor(images[lo : lo + batch_size], device=s.device)
            # The coder's order up the chain, each layer's bucket drawn instead of popped.
            layers, below, params = [], x, None
            for layer in range(s.layers):
                mu, std = s.posterior(layer, below, 0, config.K)
                noise = torch.randn(mu.shape, generator=g, dtype=torch.float64).to(s.device)
                edges = s.edges[layer]
                t = torch.searchsorted(edges, (mu.double() + std.double() * noise).contiguous(), right=True) - 1
                idx = s.collapse(layer, t.clamp(0, edges.numel() - 2).cpu().numpy(), mu.shape)
                z = s.latents(layer, idx, mu.shape)
                if layer == 0:
                    params = s.decode(z)
                else:
                    layers[-1] = layers[-1][:3] + tuple(s.conditional_prior(layer - 1, z))
                layers.append((idx, mu, std, None, None))
                below = z
            out.append(s.batch_stats(x, layers, params)["discrete_neg_elbo_bits"])
    return np.concatenate(out) if out else np.zeros(0)

