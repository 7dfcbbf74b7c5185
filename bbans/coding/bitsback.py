"""Bits-back coding as a codec built from three codecs (BB-ANS), and its chained form (Bit-Swap).

    push x:  pop z ~ q(z | x),  push x ~ p(x | z),  push z ~ p(z)

The pop of z takes bits off the message that the push of x and z pays back with interest: the
net cost of x is -log p(x | z) - log p(z) + log q(z | x), the negative ELBO. Decoding is that
push run backwards with every step inverted, which `compose.sequence` derives: pop z ~ p(z),
pop x ~ p(x | z), push z ~ q(z | x).

A chain of latent layers z1 ... zL whose posterior is a chain too (q(z1 | x), q(z2 | z1), ...)
is bits-back with a prior that is itself bits-back coded:

    bits_back(q(z1|x), p(x|z1), bits_back(q(z2|z1), p(z1|z2), ... p(zL)))

which pushes in Bit-Swap's order: pop z1, push x, pop z2, push z1, ..., push zL. Each pop is
funded by the push just before it, so a batch borrows about one layer's bits, not all layers'.
"""

from __future__ import annotations

from typing import Callable, Sequence

from bbans.coding.compose import Codec, pops, pushes, sequence


def bits_back(posterior: Callable[[object], Codec], likelihood: Callable[[object], Codec], prior: Codec) -> Codec:
    """posterior(x): codec of z given x; likelihood(z): codec of x given z; prior: codec of z."""
    return sequence([
        pops("z", ("x",), posterior),
        pushes("x", ("z",), likelihood),
        pushes("z", (), lambda: prior),
    ], data="x")


def bit_swap(layers: Sequence[tuple[Callable, Callable]], top_prior: Codec) -> Codec:
    """layers[i] = (posterior of z_{i+1} given z_i, likelihood of z_i given z_{i+1}), z_0 = x;
    top_prior codes z_L."""
    codec = top_prior
    for posterior, likelihood in reversed(list(layers)):
        codec = bits_back(posterior, likelihood, codec)
    return codec
