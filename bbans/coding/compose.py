"""A codec is a pair push(msg, symbols) / pop(msg) -> symbols; this module is how codecs combine.

- `serial`: several codecs, one after another;
- `masked`: a codec of only some positions of an array; the others pop as a constant;
- `sequence`: a codec described only by its push, as steps that each pop or push one variable
  with a codec built from variables already known. Its pop is derived: the steps run backwards,
  each inverted (a pop becomes a push of the same variable with the same codec, a push a pop).
  Bits-back coding (bbans.coding.bitsback) and the pixel groups of a hierarchy are sequences,
  so neither has a hand-written mirror image that could drift from its push.

Derivation is sound when every step's codec is built from the same values in both directions:
`sequence` checks, when it is made, that each step reads only variables that are known at that
point going forwards and going backwards.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

from bbans.coding.ans import Message
from bbans.errors import ANSError


class Codec(NamedTuple):
    push: Callable[[Message, Any], None]
    pop: Callable[[Message], Any]


def serial(codecs: Sequence[Codec]) -> Codec:
    """Codes a list of symbols, one per codec; pops them in list order."""
    codecs = list(codecs)

    def push(msg: Message, symbols) -> None:
        symbols = list(symbols)
        if len(symbols) != len(codecs):
            raise ANSError(f"serial codec of {len(codecs)} parts got {len(symbols)} symbol arrays")
        for codec, x in zip(reversed(codecs), reversed(symbols)):
            codec.push(msg, x)

    def pop(msg: Message) -> list:
        return [codec.pop(msg) for codec in codecs]

    return Codec(push, pop)


def flat_ints(x, what: str = "symbols") -> np.ndarray:
    """Any integer array (NumPy or torch) as flat int64 NumPy, C order."""
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "iub":
        raise ANSError(f"{what} must be integers, got dtype {x.dtype}")
    return x.reshape(-1).astype(np.int64, copy=False)


def masked(inner: Codec, mask: np.ndarray | None, fill: int = 0) -> Codec:
    """`inner` codes the positions where the flat boolean `mask` is True, in C order; pushing
    takes the whole array, popping gives it back with `fill` elsewhere. None: every position."""
    if mask is None:
        return inner
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    rows = np.flatnonzero(mask)
    n = mask.size

    def push(msg: Message, symbols) -> None:
        x = flat_ints(symbols)
        if x.size != n:
            raise ANSError(f"expected {n} symbols, got {x.size}")
        inner.push(msg, x[rows])

    def pop(msg: Message) -> np.ndarray:
        out = np.full(n, fill, dtype=np.int64)
        out[rows] = inner.pop(msg)
        return out

    return Codec(push, pop)


class Step(NamedTuple):
    """One step of a sequence's push: pop or push `var` with `codec(*values of given)`."""

    op: str  # "pop" or "push"
    var: str
    given: tuple[str, ...]
    codec: Callable[..., Codec]


def pops(var: str, given: tuple[str, ...], codec: Callable[..., Codec]) -> Step:
    return Step("pop", var, tuple(given), codec)


def pushes(var: str, given: tuple[str, ...], codec: Callable[..., Codec]) -> Step:
    return Step("push", var, tuple(given), codec)


def _check_derivable(steps: list[Step], data: tuple[str, ...]) -> None:
    known = set(data)
    for s in steps:
        if s.op not in ("pop", "push"):
            raise ValueError(f"a step pops or pushes, not {s.op!r}")
        if not set(s.given) <= known:
            raise ValueError(f"step {s.op} {s.var} reads {sorted(set(s.given) - known)} before they are known")
        if s.op == "pop":
            known.add(s.var)
        elif s.var not in known:
            raise ValueError(f"step push {s.var} pushes a variable that is not known")
    # Backwards, a push step pops its variable and a pop step needs it already known.
    known = set()
    for s in reversed(steps):
        if not set(s.given) <= known:
            raise ValueError(f"step {s.op} {s.var} reads {sorted(set(s.given) - known)}, "
                             "which decoding does not know yet at that point")
        if s.op == "push":
            known.add(s.var)
        elif s.var not in known:
            raise ValueError(f"step pop {s.var}: decoding cannot push back a variable it has not decoded")
    if not set(data) <= known:
        raise ValueError(f"decoding these steps never recovers {sorted(set(data) - known)}")


def sequence(steps: Sequence[Step], data: str | tuple[str, ...]) -> Codec:
    """The codec whose push runs `steps` on the symbols named `data`, and whose pop runs them
    backwards with each step inverted, returning the symbols named `data`. With a tuple of
    names, the symbols are a sequence of as many arrays."""
    steps = list(steps)
    names = (data,) if isinstance(data, str) else tuple(data)
    _check_derivable(steps, names)

    def push(msg: Message, symbols) -> None:
        values = (symbols,) if isinstance(data, str) else tuple(symbols)
        if len(values) != len(names):
            raise ANSError(f"sequence of {names} got {len(values)} symbol arrays")
        env = dict(zip(names, values))
        for s in steps:
            codec = s.codec(*(env[g] for g in s.given))
            if s.op == "pop":
                env[s.var] = codec.pop(msg)
            else:
                codec.push(msg, env[s.var])

    def pop(msg: Message):
        env: dict = {}
        for s in reversed(steps):
            codec = s.codec(*(env[g] for g in s.given))
            if s.op == "push":
                env[s.var] = codec.pop(msg)
            else:
                codec.push(msg, env[s.var])
        return env[data] if isinstance(data, str) else [env[n] for n in names]

    return Codec(push, pop)


def mapped(inner: Codec, forward: Callable, backward: Callable) -> Codec:
    """`inner` seen through a bijection: pushes forward(symbols), pops backward(inner's symbols)."""

    def push(msg: Message, symbols) -> None:
        inner.push(msg, forward(symbols))

    def pop(msg: Message):
        return backward(inner.pop(msg))

    return Codec(push, pop)
