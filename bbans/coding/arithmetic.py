"""The arithmetic a coding distribution is computed in: `FLOAT` (torch's kernels) or `EXACT`.

Both give the same functions (exp, log, sigmoid, softplus, the normal CDF, noise, ...) under
the same names, so a model, a likelihood or a codec is written once and computed in either.

`FLOAT` is what training uses and what archives before format 3's `arithmetic` setting were
coded with: torch's own kernels, whose last bits depend on the instruction set (SLEEF's vector
exp against libm's scalar one, FMA contraction), the thread count and the device.

`EXACT` ("exact-1") is specified down to the bit, so compressor and decompressor agree on any
machine. It is built only from operations IEEE 754 rounds correctly, each its own tensor
operation so that no compiler can fuse two of them (+, -, *, /, sqrt, floor, round,
comparisons, min/max, bit operations on int64), plus sums of integers held in float64 below
2**53 (exact in any order: see bbans.models.layers). On top of those:

- exp by Cody-Waite range reduction (x = k ln2 + r) and a degree-11 Taylor polynomial in r, the
  power of two made from k's bits; log from the exponent bits and the atanh series;
- the normal CDF and the logistic (sigmoid) as cubic Hermite splines on fixed knots, whose
  coefficients are computed at start-up from the exact functions, the same on every machine;
- noise from a counter-based generator (splitmix64 in NumPy's uint64) and Box-Muller with
  polynomial sine and cosine.

Changing any of this changes the coding distributions: it is then a new arithmetic with a new
name, and archives record the name they were made with.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

F64 = torch.float64

# Cody-Waite split of ln 2: k * LN2_HI is exact for |k| < 2**21.
LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
SQRT2 = float.fromhex("0x1.6a09e667f3bcdp+0")
HALF_LOG_2PI = float.fromhex("0x1.d67f1c864beb5p-1")  # log(2 pi) / 2
INV_SQRT_2PI = float.fromhex("0x1.9884533d43651p-2")
PI = float.fromhex("0x1.921fb54442d18p+1")
_EXP_COEFFS = [1.0 / math.factorial(i) for i in range(12)]  # integer divisions: correctly rounded
_MANTISSA = (1 << 52) - 1
_EXP_BIAS = 1023


def pow2(k: torch.Tensor) -> torch.Tensor:
    """2**k for int64 k in [-1022, 1023], built from its bits (no pow from a math library)."""
    return torch.bitwise_left_shift(k + _EXP_BIAS, 52).view(F64)


def _horner(coeffs, x: torch.Tensor) -> torch.Tensor:
    """sum coeffs[i] x**i, highest first, one multiply and one add per step."""
    p = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * x
        p = p + c
    return p


def exact_exp(x: torch.Tensor) -> torch.Tensor:
    if x.requires_grad and torch.is_grad_enabled():
        x = x.to(F64).clamp(-708.0, 709.0)
        k = torch.floor(x * INV_LN2 + 0.5)
        r = x - k * LN2_HI
        r = r - k * LN2_LO  # |r| <= ln2 / 2: the Taylor tail past r**11 is below 1e-15
        return _horner(_EXP_COEFFS, r) * pow2(k.to(torch.int64))
    # The same operations in the same order, in place on buffers of our own: every activation
    # of every exact network passes through here.
    r = x.to(F64).clamp(-708.0, 709.0)
    k = torch.mul(r, INV_LN2).add_(0.5).floor_()
    r.sub_(k * LN2_HI).sub_(k * LN2_LO)
    p = torch.full_like(r, _EXP_COEFFS[-1])
    for c in reversed(_EXP_COEFFS[:-1]):
        p.mul_(r).add_(c)
    return p.mul_(pow2(k.to(torch.int64)))


def exact_log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of positive float64 (values below 2**-1022 are taken as 2**-1022)."""
    x = x.to(F64).clamp_min(2.0 ** -1022)
    bits = x.view(torch.int64)
    e = torch.bitwise_right_shift(bits, 52) - _EXP_BIAS
    m = torch.bitwise_or(torch.bitwise_and(bits, _MANTISSA), _EXP_BIAS << 52).view(F64)  # [1, 2)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)  # [sqrt(1/2), sqrt(2)]
    e = (e + big.to(torch.int64)).to(F64)
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.1716
    s2 = s * s
    # log m = 2 atanh s = 2 (s + s^3/3 + s^5/5 + ...), through s^21.
    series = _horner([1.0 / (2 * i + 1) for i in range(11)], s2)
    log_m = (s + s) * series
    return e * LN2_HI + (log_m + e * LN2_LO)


class _Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = exact_exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class _Log(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return exact_log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x.to(F64).clamp_min(2.0 ** -1022)


def _erf_series(x: torch.Tensor) -> torch.Tensor:
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum 2^n x^(2n+1) / (2n+1)!!, all terms positive; |x| <= 7.

    Slow (180 terms) and accurate to about 1e-15 absolute: it makes the spline's knots once.
    """
    x = x.to(F64).clamp(-7.0, 7.0)
    x2 = x * x
    term = x.clone()
    total = x.clone()
    for n in range(1, 180):
        term = term * x2
        term = term * (2.0 / (2 * n + 1))
        total = total + term
    return total * exact_exp(-x2) * (2.0 * INV_SQRT_2PI * SQRT2)  # 2/sqrt(pi)


def _normal_cdf_accurate(z: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * _erf_series(z / SQRT2)


class HermiteSpline:
    """A function on [lo, lo + n h] as cubic Hermite pieces between knots, constant outside.

    Evaluated with a table look-up and three multiply-adds, each its own operation; the table is
    computed from exact functions, so it is the same everywhere.
    """

    def __init__(self, f, df, lo: float, per_unit: int, n: int):
        self.lo, self.per_unit, self.n = float(lo), int(per_unit), int(n)
        knots = torch.arange(n + 1, dtype=F64) / float(per_unit) + float(lo)
        y, d = f(knots), df(knots)
        h = 1.0 / per_unit
        y0, y1, d0, d1 = y[:-1], y[1:], d[:-1] * h, d[1:] * h
        c2 = 3.0 * (y1 - y0) - 2.0 * d0 - d1
        c3 = 2.0 * (y0 - y1) + d0 + d1
        self.table = torch.stack([y0, d0, c2, c3]).contiguous()  # (4, n): one row per power of f
        self._on: dict = {}

    def _coeffs(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._on:
            self._on[key] = self.table.to(device)
        return self._on[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # The same operations in the same order with or without autograd; without it they run in
        # place, which is most of this function's speed on large tables.
        grad = x.requires_grad
        x = x.to(F64)
        u = x * float(self.per_unit)
        u = u - self.lo * self.per_unit if grad else u.sub_(self.lo * self.per_unit)
        u = torch.nan_to_num(u, nan=0.0) if grad else u.nan_to_num_(nan=0.0)
        u = u.clamp(0.0, float(self.n)) if grad else u.clamp_(0.0, float(self.n))
        i = torch.floor(u.detach()).clamp_(max=float(self.n - 1))
        f = u - i if grad else u.sub_(i)
        idx = i.to(torch.int64)
        c = self._coeffs(x.device)
        p = c[3].take(idx)
        for row in (2, 1, 0):
            p = p * f if grad else p.mul_(f)
            p = p + c[row].take(idx) if grad else p.add_(c[row].take(idx))
        return p


def _normal_pdf(z):
    return exact_exp(-0.5 * (z * z)) * INV_SQRT_2PI


def _sigmoid_exact(x):
    return 1.0 / (1.0 + exact_exp(-x))


def _dsigmoid(x):
    s = _sigmoid_exact(x)
    return s * (1.0 - s)


_splines: dict = {}


def _spline(name: str) -> HermiteSpline:
    # Built on first use (a few ms): importing the package stays cheap.
    if name not in _splines:
        if name == "ndtr":  # |error| < 2e-11 for h = 1/128; beyond +-9 the CDF is 0 or 1 to 1e-19
            _splines[name] = HermiteSpline(_normal_cdf_accurate, _normal_pdf, -9.0, 128, 18 * 128)
        else:  # sigmoid: |error| < 1e-10 for h = 1/32; beyond +-40 it is 0 or 1 to 5e-18
            _splines[name] = HermiteSpline(_sigmoid_exact, _dsigmoid, -40.0, 32, 80 * 32)
    return _splines[name]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform_open(key: int, n: int, offset: int) -> np.ndarray:
    """n uniforms in (0, 1) with 53 random bits each, item i a function of (key, offset + i) only."""
    with np.errstate(over="ignore"):
        idx = np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(key % (1 << 64))
    bits = _splitmix64(_splitmix64(idx)) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * 2.0 ** -53


_SIN = [0.0 if i % 2 == 0 else (-1.0) ** (i // 2) / math.factorial(i) for i in range(20)]
_COS = [0.0 if i % 2 else (-1.0) ** (i // 2) / math.factorial(i) for i in range(20)]


def _cos_2pi(u: torch.Tensor) -> torch.Tensor:
    """cos(2 pi u) for u in [0, 1): quadrant from 4u, then a polynomial on [0, pi/2]."""
    v = u * 4.0
    q = torch.floor(v)
    a = (v - q) * (PI * 0.5)
    s, c = _horner(_SIN, a), _horner(_COS, a)
    qi = q.to(torch.int64)
    return torch.where(qi == 0, c, torch.where(qi == 1, -s, torch.where(qi == 2, -c, s)))


def _key(*parts: int) -> int:
    k = np.zeros(1, dtype=np.uint64)
    for p in parts:
        with np.errstate(over="ignore"):
            k = _splitmix64(k ^ np.uint64(int(p) % (1 << 64)))
    return int(k[0])


class FloatArithmetic:
    """torch's kernels: fast, what training optimises, machine-dependent in the last bits."""

    name = "float"
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sigmoid = staticmethod(torch.sigmoid)
    softplus = staticmethod(F.softplus)
    tanh = staticmethod(torch.tanh)
    elu = staticmethod(F.elu)
    ndtr = staticmethod(torch.special.ndtr)
    ndtri = staticmethod(torch.special.ndtri)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    @staticmethod
    def log1p(x):
        return torch.log1p(x)

    @staticmethod
    def inverse_softplus(y):
        return y + torch.log(-torch.expm1(-y))

    @staticmethod
    def softmax(x, dim):
        return torch.softmax(x, dim=dim)

    @staticmethod
    def log_softmax(x, dim):
        return torch.log_softmax(x, dim=dim)

    @staticmethod
    def logsumexp(x, dim):
        return torch.logsumexp(x, dim=dim)

    @staticmethod
    def bce_with_logits(logits, target):
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    @staticmethod
    def mixture_logp(logit_w, comp, dim):
        """log sum_m softmax(logit_w)_m exp(comp_m) along dim."""
        return torch.logsumexp(torch.log_softmax(logit_w, dim=dim) + comp, dim=dim)

    @staticmethod
    def add_product_(acc, a, b):
        return acc.addcmul_(a, b)

    @staticmethod
    def sum_images(t):
        """Per image (first axis) sum of everything else."""
        return t.reshape(t.shape[0], -1).sum(1)

    @staticmethod
    def powi(b: float, k: int) -> float:
        return b ** k

    @staticmethod
    def normal(shape, seed: int, batch_index: int, step: int, stream: int, device, dtype):
        gen = torch.Generator(device="cpu")
        # Distinct, reproducible streams per (seed, batch, step, stream) without any shared state.
        gen.manual_seed(((seed * 1_000_003 + batch_index) * 1_009 + step + (stream << 40)) % (1 << 63))
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


class ExactArithmetic:
    """Bit-exact on every machine (see the module's docstring); everything in float64."""

    name = "exact-1"
    half_log_2pi = HALF_LOG_2PI

    @staticmethod
    def exp(x):
        return _Exp.apply(x.to(F64))

    @staticmethod
    def log(x):
        return _Log.apply(x.to(F64))

    @classmethod
    def log1p(cls, x):
        # log(u) * x / (u - 1) with u = 1 + x recovers the bits of x that 1 + x rounded away.
        x = x.to(F64)
        u = 1.0 + x
        d = u - 1.0
        safe = torch.where(d == 0, torch.ones_like(d), d)
        return torch.where(d == 0, x, cls.log(u) * (x / safe))

    @staticmethod
    def sigmoid(x):
        return _spline("sigmoid")(x)

    @classmethod
    def softplus(cls, x):
        x = x.to(F64)
        return torch.clamp_min(x, 0.0) + cls.log1p(cls.exp(-torch.abs(x)))

    @classmethod
    def inverse_softplus(cls, y):
        # log(exp(y) - 1) = y + log(1 - exp(-y))
        y = y.to(F64)
        return y + cls.log1p(-cls.exp(-y))

    @classmethod
    def tanh(cls, x):
        return 1.0 - 2.0 / (cls.exp(2.0 * x.to(F64)) + 1.0)

    @classmethod
    def elu(cls, x):
        x = x.to(F64)
        return torch.where(x > 0, x, cls.exp(torch.clamp_max(x, 0.0)) - 1.0)

    @staticmethod
    def ndtr(x):
        return _spline("ndtr")(x)

    @staticmethod
    def ndtri(q):
        """Inverse normal CDF by bisection on `ndtr`: for the bucket tables (257 values)."""
        q = q.to(F64)
        cdf = _spline("ndtr")
        lo = torch.full_like(q, -9.0)
        hi = torch.full_like(q, 9.0)
        for _ in range(64):
            mid = (lo + hi) * 0.5
            below = cdf(mid) < q
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        out = (lo + hi) * 0.5
        return torch.where(q <= 0, -math.inf, torch.where(q >= 1, math.inf, out))

    @classmethod
    def softmax(cls, x, dim):
        e = cls.exp(x - torch.amax(x, dim=dim, keepdim=True))
        return e / _ordered_sum(e, dim, keepdim=True)

    @classmethod
    def log_softmax(cls, x, dim):
        return x - cls.logsumexp(x, dim).unsqueeze(dim)

    @classmethod
    def logsumexp(cls, x, dim):
        m = torch.amax(x, dim=dim, keepdim=True).detach()
        return cls.log(_ordered_sum(cls.exp(x - m), dim)) + m.squeeze(dim)

    @classmethod
    def bce_with_logits(cls, logits, target):
        return cls.softplus(logits) - target.to(F64) * logits

    @classmethod
    def mixture_logp(cls, logit_w, comp, dim):
        # Two log-sum-exps rather than log_softmax: subtracting a broadcast normaliser would make
        # autograd sum the gradient over the mixture axis with torch's (vector-width dependent)
        # reduction; here every backward step is elementwise or an ordered sum.
        return cls.logsumexp(logit_w + comp, dim) - cls.logsumexp(logit_w, dim)

    @staticmethod
    def add_product_(acc, a, b):
        return acc.add_(a * b)

    @staticmethod
    def sum_images(t):
        """Per image sum in a fixed pairwise order: halves added elementwise until one is left."""
        flat = t.reshape(t.shape[0], -1)
        while flat.shape[1] > 1:
            if flat.shape[1] % 2:
                flat = torch.cat([flat, torch.zeros_like(flat[:, :1])], dim=1)
            half = flat.shape[1] // 2
            flat = flat[:, :half] + flat[:, half:]
        return flat[:, 0] if flat.shape[1] else flat.new_zeros(t.shape[0])

    @staticmethod
    def powi(b: float, k: int) -> float:
        out = 1.0
        for _ in range(k):
            out = out * b
        return out

    @staticmethod
    def normal(shape, seed: int, batch_index: int, step: int, stream: int, device, dtype):
        n = int(np.prod(shape)) if len(shape) else 1
        key = _key(seed, batch_index, step, stream)
        # Element i's two uniforms depend on i alone, not on n: an image's noise is the same
        # whatever the size of its batch.
        u1 = torch.from_numpy(_uniform_open(key, n, 0)).to(device)
        u2 = torch.from_numpy(_uniform_open(key, n, 1 << 48)).to(device)
        r = torch.sqrt(-2.0 * exact_log(u1))
        return (r * _cos_2pi(u2)).reshape(shape).to(dtype)


def _ordered_sum(t: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """Sum along a short axis (mixture components) left to right, one add per element."""
    parts = t.unbind(dim)
    acc = parts[0]
    for p in parts[1:]:
        acc = acc + p
    return acc.unsqueeze(dim) if keepdim else acc


FLOAT = FloatArithmetic()
EXACT = ExactArithmetic()
ARITHMETICS = {a.name: a for a in (FLOAT, EXACT)}
DEFAULT = EXACT.name  # what new archives are coded in

# Training and everything outside the coder run in FLOAT; the engine switches to an archive's
# arithmetic for the span of a compress or decompress (`using`), so models, likelihoods and
# codecs are written once and read the arithmetic from here.
_current: contextvars.ContextVar = contextvars.ContextVar("bbans_arithmetic", default=FLOAT)


def current():
    return _current.get()


def is_exact() -> bool:
    return _current.get() is EXACT


@contextlib.contextmanager
def using(arithmetic):
    token = _current.set(arithmetic)
    try:
        yield arithmetic
    finally:
        _current.reset(token)


def named(name: str):
    """The arithmetic an archive names; KeyError for one this bbans does not know."""
    return ARITHMETICS[name]


@functools.lru_cache(maxsize=None)
def _bucket_points(name: str, prior_prec: int, what: str) -> torch.Tensor:
    a = ARITHMETICS[name]
    n = 1 << prior_prec
    if what == "edges":
        q = torch.arange(0, n + 1, dtype=F64) / n
    else:
        q = (torch.arange(0, n, dtype=F64) + 0.5) / n
    return a.ndtri(q)


def bucket_points(prior_prec: int, what: str, device=None) -> torch.Tensor:
    """Edges ("edges", 2**p + 1 values, ends at +-inf) or medians ("centres") of the 2**p
    equal-mass buckets of N(0, 1) in the current arithmetic, float64; cached (the exact
    inverse CDF is a bisection)."""
    return _bucket_points(current().name, int(prior_prec), what).to(device)
