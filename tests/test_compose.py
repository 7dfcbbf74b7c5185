"""Codecs built from codecs: masking, sequences whose pop is derived from their push, and
bits-back (single layer and Bit-Swap's chain) as sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bbans.coding import codecs as C, compose
from bbans.coding.ans import Message
from bbans.coding.bitsback import bit_swap, bits_back
from bbans.coding.compose import Codec, pops, pushes, sequence


def _table(rng, n: int, k: int, prec: int = 12) -> np.ndarray:
    """n random integer CDF rows over k symbols."""
    p = rng.random((n, k)) + 0.05
    cdf = np.concatenate([np.zeros((n, 1)), np.cumsum(p / p.sum(1, keepdims=True), axis=1)], axis=1)
    return C.quantize_cdf(torch.as_tensor(cdf), prec).numpy()


def _conditional(seed: int, n: int, k: int):
    """symbols given symbols: a categorical codec whose table depends on every conditioning value."""
    rng = np.random.default_rng(seed)
    tables = _table(rng, k * n, k).reshape(k, n, k + 1)

    def codec(given) -> Codec:
        g = compose.flat_ints(given)
        return C.categorical(tables[g, np.arange(n)], 12)

    return codec


def test_masked_codes_only_the_masked_positions_and_pops_zero_elsewhere():
    mask = np.array([True, False, True, True, False, False])
    x = np.array([3, 9, 1, 0, 9, 9])
    msg, direct = Message(2), Message(2)
    compose.masked(C.uniform(3, 2), mask).push(msg, x)
    C.uniform(3, 2).push(direct, x[mask])
    assert msg == direct
    out = compose.masked(C.uniform(3, 2), mask).pop(msg)
    np.testing.assert_array_equal(out, np.where(mask, x, 0))
    assert msg == Message(2)


def test_a_sequence_pops_what_it_pushed_and_leaves_the_message_as_it_was():
    n, k = 40, 5
    rng = np.random.default_rng(1)
    x = rng.integers(0, k, n)
    codec = sequence([
        pops("z", ("x",), _conditional(2, n, k)),
        pushes("x", ("z",), _conditional(3, n, k)),
        pushes("z", (), lambda: C.uniform(n, 3)),
    ], data="x")
    msg = Message(4, seed=5)
    codec.push(msg, x)
    decoded = Message.from_bytes(msg.to_bytes(), seed=5)
    np.testing.assert_array_equal(codec.pop(decoded), x)
    assert decoded == Message(4, seed=5)


@pytest.mark.parametrize("steps,why", [
    # x's codec would be built from x itself, which decoding is only about to pop
    ([pops("z", ("x",), None), pushes("x", ("x",), None), pushes("z", (), None)], "decoding does not know"),
    ([pushes("x", ("z",), None), pops("z", ("x",), None)], "before they are known"),
    ([pops("z", (), None), pushes("z", (), None)], "never recovers"),
])
def test_a_sequence_whose_pop_cannot_be_derived_is_refused_when_made(steps, why):
    with pytest.raises(ValueError, match=why):
        sequence(steps, data="x")


class _Log:
    """Codecs that record what they code, in the order the coder calls them."""

    def __init__(self):
        self.calls: list[str] = []

    def codec(self, name: str, n: int = 3) -> Codec:
        inner = C.uniform(n, 4)

        def push(msg, x):
            self.calls.append(f"push {name}")
            inner.push(msg, x)

        def pop(msg):
            self.calls.append(f"pop {name}")
            return inner.pop(msg)

        return Codec(push, pop)


def test_bit_swap_pushes_in_bit_swaps_order_and_pops_in_the_exact_reverse():
    log = _Log()
    layers = [(lambda x, i=i: log.codec(f"z{i + 1}"), lambda z, i=i: log.codec("x" if i == 0 else f"z{i}"))
              for i in range(3)]
    codec = bit_swap(layers, log.codec("z3"))
    msg = Message(1)
    x = np.array([1, 2, 3])
    codec.push(msg, x)
    assert log.calls == ["pop z1", "push x", "pop z2", "push z1", "pop z3", "push z2", "push z3"]
    pushed = list(log.calls)
    log.calls.clear()
    np.testing.assert_array_equal(codec.pop(msg), x)
    flip = {"push": "pop", "pop": "push"}
    assert log.calls == [f"{flip[c.split()[0]]} {c.split()[1]}" for c in reversed(pushed)]
    assert msg == Message(1)


def test_bits_back_nets_the_negative_elbo_over_many_symbols():
    # A discrete model: p(z) uniform over 8, p(x | z) and q(z | x) categorical. After the first
    # batch has paid its initial bits, a batch costs about -log p(x|z) - log p(z) + log q(z|x).
    n, kx, kz = 2000, 6, 8
    rng = np.random.default_rng(4)
    lik = _table(rng, kz, kx, 16)  # row z: p(x | z)
    post = _table(rng, kx, kz, 16)  # row x: q(z | x)
    codec = bits_back(lambda x: C.categorical(post[compose.flat_ints(x)], 16),
                      lambda z: C.categorical(lik[compose.flat_ints(z)], 16),
                      C.uniform(n, 3))
    x = rng.integers(0, kx, n)
    msg = Message(8)
    codec.push(msg, rng.integers(0, kx, n))  # the first batch funds the next one's pops
    before = msg.bits()
    codec.push(msg, x)
    net = msg.bits() - before
    px = np.diff(lik, axis=1) / 2.0 ** 16  # p(x | z)
    qz = np.diff(post, axis=1) / 2.0 ** 16  # q(z | x)
    elbo_bits = sum(float(-(qz[v] * (np.log2(px[:, v]) + np.log2(1 / kz) - np.log2(qz[v]))).sum()) for v in x)
    assert abs(net - elbo_bits) < 0.02 * elbo_bits + 64 * 8
