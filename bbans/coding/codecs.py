"""The codecs of distributions over a `bbans.coding.ans.Message`; how codecs combine (masking,
sequences, bits-back) is bbans.coding.compose and bbans.coding.bitsback.

Every codec here codes a whole array of symbols as one stream (see `Message.push_stream`), so
the number of lanes is the message's business, not the data's. Symbols are flat int64 NumPy
arrays in C order of the parameter tensors; pushing accepts any array (NumPy or torch) of the
right size.

Probabilities are computed with torch on the parameters' device, in the current arithmetic
(bbans.coding.arithmetic), quantised by `quantize_cdf`, and only the integer starts/freqs cross
to NumPy. The CDFs are evaluated in float64: the encoder and decoder must build bit-identical
integer tables. In the exact arithmetic they are, by construction, on any machine. In the float
one (archives before it) torch may evaluate the same element through a vectorised or a scalar
kernel depending on its position, the thread count and the instruction set; in float64 those
paths differ by an ulp at most, which moves a floor() rarely but not never.

Tables of K+1 entries per symbol are built in blocks of rows (about `_BLOCK_ENTRIES` entries), so
a batch of a million 8-bit pixels never materialises a million-row table, and push and pop build
exactly the same blocks. Encoding gathers each symbol's start and frequency on the tables' device
(two numbers per symbol cross to the CPU); decoding copies a block to the CPU and finds the
symbols of a chunk of lanes with a branch-free binary search, about log2(K) vector steps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bbans.coding import distributions as D
from bbans.coding.arithmetic import current
from bbans.coding.ans import Message, check_precision
from bbans.coding.compose import Codec, flat_ints
from bbans.errors import ANSError

_BLOCK_ENTRIES = 1 << 21
PREFIX_STEP = 32  # columns: the granularity of the prefixes a push builds


# ----------------------------------------------------------------- helpers


def quantize_cdf(cdf: torch.Tensor, precision: int, symbols: int | None = None) -> torch.Tensor:
    """Float CDFs (..., K+1) -> int64 CDFs with every frequency >= 1 and last entry 2**precision.

    ``floor(cdf * (2**precision - K)) + arange(K + 1)``: every symbol keeps one count whatever
    its probability, the rest is shared in proportion. The arithmetic is float64 and elementwise
    (plus a running max that only matters for non-monotone input), so the result is a
    deterministic function of the floats on any device. NaN counts as 0; the ends are forced to 0
    and 1.

    `symbols` K, given with fewer than K + 1 columns: the rows' first columns only, exactly as
    the whole rows would have them (every step is elementwise or a running max from the left).
    """
    prec = check_precision(precision)
    if not torch.is_tensor(cdf):
        cdf = torch.as_tensor(cdf)
    if cdf.ndim < 1 or cdf.shape[-1] < 2:
        raise ANSError(f"a CDF needs at least 2 entries on its last axis, got shape {tuple(cdf.shape)}")
    k = cdf.shape[-1] - 1 if symbols is None else symbols
    if cdf.shape[-1] > k + 1:
        raise ANSError(f"{cdf.shape[-1]} CDF columns for {k} symbols")
    spare = (1 << prec) - k
    if spare < 0:
        raise ANSError(f"{k} symbols do not fit in precision {prec} (needs 2**precision >= {k})")
    # In-place passes over one float64 buffer: this runs over every entry of every table.
    q = torch.mul(cdf.to(torch.float64), float(spare))
    torch.nan_to_num_(q, nan=0.0)
    q.clamp_(0.0, float(spare)).floor_()
    q[..., 0] = 0.0
    if q.shape[-1] == k + 1:
        q[..., -1] = float(spare)
    if (q[..., 1:] < q[..., :-1]).any():  # cheaper to test for than to run a cummax always
        q = torch.cummax(q, dim=-1).values
    q = q.to(torch.int64)
    return q.add_(torch.arange(q.shape[-1], dtype=torch.int64, device=q.device))


def _symbols(x, n: int, k: int) -> np.ndarray:
    """Flat int64 symbols, checked to be n of them in 0..k-1."""
    x = flat_ints(x)
    if x.size != n:
        raise ANSError(f"expected {n} symbols, got {x.size}")
    if x.size and (x.min() < 0 or x.max() >= k):
        bad = int(np.flatnonzero((x < 0) | (x >= k))[0])
        raise ANSError(f"symbol {int(x[bad])} out of range 0..{k - 1}")
    return x


class _TableStream:
    """A stream of n symbols, each with its own quantised CDF row of K+1 entries.

    `build(a, b)` returns rows a..b-1 as an int64 torch tensor (b - a, K + 1), on any device; it
    is called for the same blocks, in the same order, when pushing and popping. Pushing gathers
    each symbol's start and frequency where the table lives, so only two numbers per symbol
    cross to the CPU; popping moves the block to the CPU and binary-searches it per chunk.
    """

    def __init__(self, n: int, k: int, prec: int, build: Callable[[int, int], torch.Tensor], validate: bool,
                 prefix: Callable[[torch.Tensor, int], torch.Tensor] | None = None):
        self.n, self.k, self.prec, self.build, self.validate = n, k, prec, build, validate
        # prefix(rows, c): the first c columns of those rows, equal to build's. Pushing a symbol x
        # needs only columns x and x + 1, and most pixels of most images are dark: their rows'
        # prefixes are short. (Popping must search whole rows; built by blocks they are cheaper
        # than prefixes built chunk by chunk.)
        self.prefix = prefix

    def _block_rows(self, lanes: int) -> int:
        # Whole chunks of lanes per block, so a chunk never straddles two blocks.
        return max(1, _BLOCK_ENTRIES // ((self.k + 1) * lanes)) * lanes

    def _rows(self, a: int, b: int) -> torch.Tensor:
        q = self.build(a, b)
        if q.shape != (b - a, self.k + 1) or q.dtype != torch.int64:
            raise ANSError(f"CDF table block is {q.dtype} {tuple(q.shape)}, expected int64 {(b - a, self.k + 1)}")
        if self.validate and q.numel():
            m = 1 << self.prec
            if (q[:, 0] != 0).any() or (q[:, -1] != m).any() or (q[:, 1:] <= q[:, :-1]).any():
                raise ANSError(
                    f"integer CDF rows must start at 0, end at 2**{self.prec} and increase strictly "
                    "(every frequency >= 1)"
                )
        return q

    def push(self, msg: Message, x: np.ndarray) -> None:
        starts = np.empty(self.n, dtype=np.int64)
        freqs = np.empty(self.n, dtype=np.int64)
        for rows, q in self._push_tables(x, msg.lanes):
            # Each symbol's start and frequency, gathered where the table lives.
            xs = torch.tensor(x[rows], device=q.device).unsqueeze(1)
            lo = q.gather(1, xs)
            starts[rows] = lo.squeeze(1).cpu().numpy()
            freqs[rows] = (q.gather(1, xs + 1) - lo).squeeze(1).cpu().numpy()
        msg.push_stream(starts, freqs, self.prec)

    def _push_tables(self, x: np.ndarray, lanes: int):
        """(rows, their CDF table) covering every symbol: whole rows by blocks, or with `prefix`
        each row only up to its symbol's columns (x + 2, rounded up to PREFIX_STEP), in groups of
        rows that need as many columns."""
        if self.prefix is None:
            step = self._block_rows(lanes)
            for a in range(0, self.n, step):
                b = min(a + step, self.n)
                yield slice(a, b), self._rows(a, b)
            return
        cols = np.minimum((x + 2 + PREFIX_STEP - 1) // PREFIX_STEP * PREFIX_STEP, self.k + 1)
        for c in np.unique(cols):
            sel = np.flatnonzero(cols == c)
            step = max(1, _BLOCK_ENTRIES // int(c))
            for a in range(0, len(sel), step):
                rows = sel[a:a + step]
                q = self.prefix(torch.from_numpy(rows), int(c))
                if q.shape != (len(rows), c) or q.dtype != torch.int64:
                    raise ANSError(f"CDF prefix is {q.dtype} {tuple(q.shape)}, expected int64 {(len(rows), int(c))}")
                yield rows, q

    def pop(self, msg: Message) -> np.ndarray:
        n, k, prec, lanes = self.n, self.k, self.prec, msg.lanes
        k1 = k + 1
        step = self._block_rows(lanes)
        # Largest k with cdf[k] <= cf, branch-free over all lanes: a first probe at K - P brings
        # the range down to P = 2**floor(log2 K) entries, then P/2, P/4, ..., 1.
        top = 1 << (k.bit_length() - 1)
        first = np.int64(k - top)
        halvings = [np.int64(top >> i) for i in range(1, top.bit_length())]
        rowbase = np.arange(0, lanes * k1, k1, dtype=np.int64)
        # Per-lane arrays rather than scalars: NumPy ufuncs are slower with scalar operands.
        firstv = np.full(lanes, first, dtype=np.int64)
        halfv = [np.full(lanes, h, dtype=np.int64) for h in halvings]
        onev = np.ones(lanes, dtype=np.int64)
        probe_buf = np.empty(lanes, dtype=np.int64)
        v_buf = np.empty(lanes, dtype=np.int64)
        c_buf = np.empty(lanes, dtype=bool)
        add, sub, le, copyto = np.add, np.subtract, np.less_equal, np.copyto
        block = [0, 0, None]  # first row, end row, flat table

        def lookup(lo: int, hi: int, cf: np.ndarray):
            if lo >= block[1]:
                a, b = lo, min(lo + step, n)
                block[:] = a, b, np.ascontiguousarray(self._rows(a, b).cpu().numpy()).reshape(-1)
            a, _, table = block
            w = hi - lo
            # Flat index of each lane's row start within the block, then of its current guess.
            base = rowbase[:w] + (lo - a) * k1 if lo > a else rowbase[:w]
            pos = base.copy()
            probe, v, c = probe_buf[:w], v_buf[:w], c_buf[:w]
            for hv in ([firstv] if first else []) + halfv:
                add(pos, hv[:w], out=probe)
                table.take(probe, out=v)
                le(v, cf, out=c)
                copyto(pos, probe, where=c)
            start = table.take(pos)
            add(pos, onev[:w], out=pos)
            freq = table.take(pos)
            sub(freq, start, out=freq)
            sub(pos, base, out=pos)
            sub(pos, onev[:w], out=pos)
            return pos, start, freq

        return msg.pop_stream(n, prec, lookup)


def _table_codec(stream: _TableStream) -> Codec:
    def push(msg: Message, symbols) -> None:
        stream.push(msg, _symbols(symbols, stream.n, stream.k))

    return Codec(push, stream.pop)


# ------------------------------------------------------------------- codecs


def categorical(cdf_int: np.ndarray, precision: int) -> Codec:
    """Symbols 0..K-1, symbol i coded with integer CDF row cdf_int[i] (shape (n, K+1)).

    Rows must start at 0, end at 2**precision and increase strictly; this is checked (ANSError).
    """
    prec = check_precision(precision)
    if torch.is_tensor(cdf_int):
        cdf_int = cdf_int.detach().cpu().numpy()
    table = np.asarray(cdf_int)
    if table.ndim != 2 or table.shape[1] < 2 or table.dtype.kind not in "iu":
        raise ANSError(f"cdf_int must be an integer array (n, K+1) with K >= 1, got {table.dtype} {table.shape}")
    n, k = table.shape[0], table.shape[1] - 1

    def build(a: int, b: int) -> torch.Tensor:
        rows = np.ascontiguousarray(table[a:b], dtype=np.int64)
        return torch.from_numpy(rows if rows.flags.writeable else rows.copy())

    return _table_codec(_TableStream(n, k, prec, build, validate=True))


def uniform(n: int, precision: int) -> Codec:
    """n symbols, each uniform on 0..2**precision-1."""
    prec = check_precision(precision)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ANSError(f"n must be a non-negative int, got {n!r}")
    n = int(n)

    def push(msg: Message, symbols) -> None:
        x = _symbols(symbols, n, 1 << prec)
        msg.push_stream(x, np.ones(n, dtype=np.int64), prec)

    def pop(msg: Message) -> np.ndarray:
        ones = np.ones(msg.lanes, dtype=np.int64)

        def lookup(lo, hi, cf):
            return cf, cf, ones[: hi - lo]

        return msg.pop_stream(n, prec, lookup)

    return Codec(push, pop)


def bernoulli(p: torch.Tensor, precision: int) -> Codec:
    """Symbols in {0, 1} with P(1) = p, elementwise; no tables (two symbols need one number).

    For extreme probabilities pass p in float64 (e.g. ``torch.sigmoid(logits.double())``).
    """
    prec = check_precision(precision)
    pc = torch.as_tensor(p).reshape(-1).to(torch.float64)
    n = pc.numel()
    # quantize_cdf's middle column of the table [0, 1 - p, 1], without building the table:
    # one pass per step instead of three columns of them, on millions of pixels.
    spare = float((1 << prec) - 2)
    q = torch.nan_to_num_(torch.mul(1.0 - pc, spare), nan=0.0).clamp_(0.0, spare).floor_()
    q0 = (q.to(torch.int64) + 1).cpu().numpy()  # frequency of symbol 0
    d = (1 << prec) - 2 * q0  # freq(1) - freq(0)

    def push(msg: Message, symbols) -> None:
        x = _symbols(symbols, n, 2)
        msg.push_stream(x * q0, q0 + x * d, prec)

    def pop(msg: Message) -> np.ndarray:
        def lookup(lo, hi, cf):
            q, dd = q0[lo:hi], d[lo:hi]
            x = (cf >= q).astype(np.int64)
            return x, x * q, q + x * dd

        return msg.pop_stream(n, prec, lookup)

    return Codec(push, pop)


def _logistic_stream(mean: torch.Tensor, log_scale: torch.Tensor, prec: int) -> _TableStream:
    def build(a: int, b: int) -> torch.Tensor:
        return quantize_cdf(D.discretized_logistic_cdf(mean[a:b], log_scale[a:b]), prec)

    def prefix(rows: torch.Tensor, c: int) -> torch.Tensor:
        rows = rows.to(mean.device)
        return quantize_cdf(D.discretized_logistic_cdf(mean[rows], log_scale[rows], c), prec, D.LEVELS)

    return _TableStream(mean.numel(), D.LEVELS, prec, build, validate=False, prefix=prefix)


def _check_pixel_precision(precision) -> int:
    prec = check_precision(precision)
    if prec < 8:
        raise ANSError(f"8-bit pixels need precision >= 8, got {prec}")
    return prec


def logistic(mean: torch.Tensor, log_scale: torch.Tensor, precision: int) -> Codec:
    """8-bit symbols 0..255, each under its own discretised logistic (bbans.coding.distributions)."""
    prec = _check_pixel_precision(precision)
    mean, log_scale = torch.as_tensor(mean), torch.as_tensor(log_scale)
    if mean.shape != log_scale.shape:
        raise ANSError(f"mean {tuple(mean.shape)} and log_scale {tuple(log_scale.shape)} differ in shape")
    return _table_codec(_logistic_stream(mean.reshape(-1).to(torch.float64), log_scale.reshape(-1).to(torch.float64), prec))


def logistic_mix(logit_w: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, precision: int) -> Codec:
    """8-bit symbols under a mixture of discretised logistics each: parameters (n, M), mixture last."""
    prec = _check_pixel_precision(precision)
    w, mu, ls = (torch.as_tensor(t).to(torch.float64) for t in (logit_w, mean, log_scale))
    if mu.ndim != 2 or w.shape != mu.shape or ls.shape != mu.shape:
        raise ANSError(
            "logistic_mix needs logit_w, mean, log_scale of one shape (n, M), got "
            f"{tuple(w.shape)}, {tuple(mu.shape)}, {tuple(ls.shape)}"
        )

    def build(a: int, b: int) -> torch.Tensor:
        return quantize_cdf(D.discretized_logistic_mix_cdf(w[a:b], mu[a:b], ls[a:b]), prec)

    def prefix(rows: torch.Tensor, c: int) -> torch.Tensor:
        rows = rows.to(w.device)
        return quantize_cdf(D.discretized_logistic_mix_cdf(w[rows], mu[rows], ls[rows], c), prec, D.LEVELS)

    return _table_codec(_TableStream(w.shape[0], D.LEVELS, prec, build, validate=False, prefix=prefix))


def logistic_rgb(mean: torch.Tensor, log_scale: torch.Tensor, coeffs: torch.Tensor, precision: int) -> Codec:
    """8-bit RGB pixels, parameters (n, 3) per pixel and symbols (n, 3), with G's mean shifted by
    R and B's by R and G (`distributions.rgb_dependent_means`). Pops every R, then G, then B."""
    prec = _check_pixel_precision(precision)
    mean64, ls64, co64 = (torch.as_tensor(t).to(torch.float64) for t in (mean, log_scale, coeffs))
    if mean64.ndim != 2 or mean64.shape[1] != 3 or ls64.shape != mean64.shape or co64.shape != mean64.shape:
        raise ANSError(
            "logistic_rgb needs mean, log_scale, coeffs of one shape (n, 3), got "
            f"{tuple(mean64.shape)}, {tuple(ls64.shape)}, {tuple(co64.shape)}"
        )
    npix = mean64.shape[0]
    device = mean64.device

    def channel_stream(means: torch.Tensor, c: int) -> _TableStream:
        return _logistic_stream(means[:, c], ls64[:, c], prec)

    def push(msg: Message, symbols) -> None:
        x = _symbols(symbols, 3 * npix, D.LEVELS).reshape(npix, 3)
        means = D.rgb_dependent_means(mean64, co64, torch.as_tensor(x, device=device).to(torch.uint8))
        for c in (2, 1, 0):
            channel_stream(means, c).push(msg, np.ascontiguousarray(x[:, c]))

    def pop(msg: Message) -> np.ndarray:
        x = np.zeros((npix, 3), dtype=np.int64)
        means = mean64
        for c in range(3):
            if c:
                means = D.rgb_dependent_means(mean64, co64, torch.as_tensor(x, device=device).to(torch.uint8))
            x[:, c] = channel_stream(means, c).pop(msg)
        return x.reshape(-1)

    return Codec(push, pop)


def gaussian_posterior(mu: torch.Tensor, std: torch.Tensor, prior_prec: int, q_prec: int, scale: float = 1.0) -> Codec:
    """Bucket indices 0..2**prior_prec-1 of the equal-mass buckets of N(0, scale**2), each latent
    under N(mu, std**2) restricted to the buckets, masses quantised at q_prec bits.

    Codes posteriors, and in a hierarchy the conditional priors p(z_i | z_{i+1}) too; the prior
    of a top layer with scale 1 is `uniform(n, prior_prec)`.
    """
    pp = check_precision(prior_prec)
    qp = check_precision(q_prec)
    if qp < pp:
        raise ANSError(f"q_prec ({qp}) must be >= prior_prec ({pp})")
    if not scale > 0:
        raise ANSError(f"bucket scale must be > 0, got {scale}")
    mu, std = torch.as_tensor(mu), torch.as_tensor(std)
    if mu.shape != std.shape:
        raise ANSError(f"mu {tuple(mu.shape)} and std {tuple(std.shape)} differ in shape")
    n = mu.numel()
    mu64 = mu.reshape(-1).to(torch.float64)
    std64 = std.reshape(-1).to(torch.float64)
    if n and not (torch.isfinite(std64).all() and (std64 > 0).all() and torch.isfinite(mu64).all()):
        raise ANSError("Gaussian over buckets needs finite mu and finite std > 0")
    edges = D.std_normal_bucket_edges(pp, dtype=torch.float64, device=mu64.device)
    if scale != 1.0:
        edges = edges * float(scale)

    ndtr = current().ndtr  # the arithmetic when the codec is made, also when its tables are built

    def build(a: int, b: int) -> np.ndarray:
        z = (edges - mu64[a:b, None]) / std64[a:b, None]
        return quantize_cdf(ndtr(z), qp)

    return _table_codec(_TableStream(n, 1 << pp, qp, build, validate=False))
