"""The layers bbans models are made of, computed in the current arithmetic (bbans.coding.arithmetic).

Under FLOAT they are torch's own layers. Under EXACT every sum of products (convolution,
transposed convolution, linear) is exact, so any summation order, blocking, vector width, FMA
or thread count gives the same bits, on a CPU or a GPU:

- the weights are put on a power-of-two grid with `weight_bits(fan)` significant bits below
  their largest magnitude (a pure function of the stored float32 weights: nothing new ships);
- each image's input to the layer is put on a power-of-two grid with ACT_BITS significant bits
  below that image's largest magnitude (block floating point; the maximum is exact, and the
  exponent is read from its bits), so an image's numbers never depend on its batch-mates;
- then every product is a multiple of one power of two and every partial sum is an integer
  multiple of it below 2**53 (ACT_BITS + weight bits + log2(terms per sum) <= 53): float64
  holds them exactly. The bias is added after, one correctly rounded addition.

K-step inference differentiates through these layers: the gradient arriving at a layer's output
is put on the same kind of grid (GRAD_BITS) before it flows back through the weights, so the
backward sums are exact too; the rounding of the input is passed over (straight-through).

ELU computes in the arithmetic's exp. With 22 significant bits per activation and at least 20
per weight, the exact network differs from the float one by about float32's own rounding: the
coded sizes agree to well under 0.1% (benchmarks/RESULTS.md), so no retraining is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bbans.coding.arithmetic import current, is_exact, pow2

ACT_BITS = 22
GRAD_BITS = 22
EXACT_SUM_BITS = 52  # partial sums stay below 2**52 grid steps: a bit of margin under 2**53
_F64 = torch.float64
_EXP_BIAS = 1023  # of float64


def weight_bits(fan: int) -> int:
    """Significant bits of a layer's weights when each output sums `fan` products."""
    return EXACT_SUM_BITS - ACT_BITS - max(1, math.ceil(math.log2(max(fan, 2))))


def _exponent(a: torch.Tensor) -> torch.Tensor:
    """int64 e with a < 2**e <= 2a for float64 a > 0 (normal numbers); 0 for a == 0."""
    biased = torch.bitwise_right_shift(a.view(torch.int64), 52)
    return torch.where(a > 0, biased - (_EXP_BIAS - 1), torch.zeros_like(biased))


def to_grid(x: torch.Tensor, bits: int, per_image: bool = True) -> torch.Tensor:
    """x rounded to the power-of-two grid that gives its largest magnitude `bits` significant bits:
    per image (first axis) or over the whole tensor. Every value becomes an integer in
    [-2**bits, 2**bits] times the grid step."""
    x = x.to(_F64)
    if per_image and x.ndim > 1:
        a = x.abs().amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    else:
        a = x.abs().amax()
    e = _exponent(a).clamp(-1000 + bits, 1000)
    return torch.round(x * pow2(bits - e)) * pow2(e - bits)


class _InputOnGrid(torch.autograd.Function):
    """Forward: the layer input on its grid. Backward: the gradient unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, x):
        return to_grid(x, ACT_BITS)

    @staticmethod
    def backward(ctx, g):
        return g


class _GradOnGrid(torch.autograd.Function):
    """Forward: unchanged. Backward: the gradient on its grid, before it meets the weights."""

    @staticmethod
    def forward(ctx, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        return to_grid(g, GRAD_BITS)


def _weight_on_grid(layer: nn.Module, fan: int) -> torch.Tensor:
    """The layer's weight on its grid; kept while the weight is frozen and unchanged (a coder
    runs the same layers thousands of times), recomputed whenever it may have moved."""
    weight = layer.weight
    if weight.requires_grad:
        return to_grid(weight.detach(), weight_bits(fan), per_image=False)
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
    cached = layer.__dict__.get("_weight_grid")
    if cached is None or cached[0] != key:
        cached = (key, to_grid(weight.detach(), weight_bits(fan), per_image=False))
        layer.__dict__["_weight_grid"] = cached
    return cached[1]


def exact_sums(x: torch.Tensor, layer: nn.Module, fan: int, op) -> torch.Tensor:
    """op(x on its grid, the layer's weight on its grid) + its bias, every sum exact; op has no
    bias of its own."""
    w, bias = _weight_on_grid(layer, fan), layer.bias
    y = op(_InputOnGrid.apply(x), w)
    if torch.is_grad_enabled() and y.requires_grad:
        y = _GradOnGrid.apply(y)
    if bias is None:
        return y
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return y + bias.detach().to(_F64).reshape(shape)


class Conv2d(nn.Conv2d):
    def forward(self, x):
        if not is_exact():
            return super().forward(x)
        cout, cin, kh, kw = self.weight.shape
        fan = max(cin * kh * kw, cout * kh * kw)  # forward sums, and backward ones through the weights
        return exact_sums(x, self, fan,
                          lambda xq, w: F.conv2d(xq, w, None, self.stride, self.padding, self.dilation, self.groups))


class ConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x, output_size=None):
        if not is_exact():
            return super().forward(x, output_size)
        if output_size is not None:
            raise NotImplementedError("exact ConvTranspose2d takes no output_size")
        cin, cout, kh, kw = self.weight.shape
        fan = max(cin * kh * kw, cout * kh * kw)
        return exact_sums(x, self, fan,
                          lambda xq, w: F.conv_transpose2d(xq, w, None, self.stride, self.padding,
                                                           self.output_padding, self.groups, self.dilation))


class Linear(nn.Linear):
    def forward(self, x):
        if not is_exact():
            return super().forward(x)
        fan = max(self.in_features, self.out_features)
        return exact_sums(x, self, fan, lambda xq, w: xq.matmul(w.t()))


class ELU(nn.Module):
    def forward(self, x):
        return current().elu(x)


def elu(x: torch.Tensor) -> torch.Tensor:
    return current().elu(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    return current().softplus(x)
