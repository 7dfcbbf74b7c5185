"""Vectorized rANS: a message of L independent lanes sharing one stack of 32-bit words.

State
-----
A `Message` holds L lane heads (uint64, kept in ``[RANS_L, 2**63)`` with ``RANS_L = 2**31``)
and one tail: a stack of uint32 renormalisation words shared by all lanes. A fresh message has
every head in ``[RANS_L, 2**32)``, its low 31 bits drawn from the seed (see `_initial_heads`),
and an empty tail. Messages are mutable: push and pop change them in
place; take a `copy()` to keep a state.

Coding one symbol in one lane with interval ``[start, start + freq)`` out of ``2**precision``:

* push: if ``head >= freq * 2**(63 - precision)`` the low 32 bits of the head go onto the tail
  and ``head >>= 32`` (at most once, which the head bounds guarantee); then
  ``head = (head // freq) * 2**precision + head % freq + start``.
* pop: ``cf = head % 2**precision`` names the symbol; once its interval is known,
  ``head = freq * (head >> precision) + cf - start`` and if the head fell below ``RANS_L`` one
  word comes back from the tail: ``head = (head << 32) | word``.

When several lanes renormalise in the same step their words are written in lane order and read
back the same way, so each lane gets its own word back.

Streams
-------
The lane count is a property of the message, not of the data. `push_stream` takes any number N
of symbols, cuts them into chunks of L (the last one partial, using lanes ``[:r]``) and pushes
the chunks last-to-first, so that `pop_stream` returns stream positions 0..N-1 in forward order.
Every lane costs about 64 bits once the message is flattened, so codecs should push long
streams through a few lanes rather than use one lane per symbol.

Initial bits (popping an exhausted message)
-------------------------------------------
Bits-back coding starts by *popping* a posterior sample from a message that holds nothing. Here
the tail is the top of an endless stack: below its bottom lie "phantom" words, a deterministic
pseudo-random sequence derived from the message's ``seed`` (a SplitMix64 counter hash). Popping
past the bottom reads the next phantom words and counts them in ``phantom_words``; because the
words look uniformly random, the first posterior samples are proper samples. Pushing a word onto
an empty tail that equals the most recently read phantom word gives it back (``phantom_words``
goes down), so a pop followed by the inverse push restores the message exactly, and a decoder
that undoes everything ends on a fresh message. The phantom words themselves are never stored:
the decoder regenerates them from the same seed.

Checks
------
Precision (1..31) and array shapes are always validated. With ``check=True`` every interval is
validated too (``freq >= 1``, ``start + freq <= 2**precision``, and on pop ``start <= cf <
start + freq``), raising `ANSError` instead of silently corrupting the message. Heads are kept
valid by construction and checked when a message is read back with `from_bytes`, so decoding
wrong data yields wrong symbols (for the caller's checks to catch), never a crash.

Serialisation: `to_bytes` writes a 13-byte header (format byte, lanes, tail length, phantom
word count), the heads (8 bytes each) and the tail words, all little-endian. `bare` drops the
header but for the phantom word count (a varint), for containers that record the lanes.
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from bbans.errors import ANSError

RANS_L = 1 << 31
MAX_PRECISION = 31  # heads stay in [2**31, 2**63) with one 32-bit word per renormalisation

_FORMAT = 0xB1
_HEADER = struct.Struct("<BIII")  # format, lanes, tail words, phantom words
_HEAD_MAX = 1 << 63
_M64 = (1 << 64) - 1

Lookup = Callable[[int, int, np.ndarray], "tuple[np.ndarray, np.ndarray, np.ndarray]"]


def _splitmix_key(seed: int) -> np.uint64:
    z = (seed + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return np.uint64(z ^ (z >> 31))


def _phantom(key: np.uint64, first: int, count: int) -> np.ndarray:
    """Phantom words first..first+count-1: random access, so they can be given back."""
    z = np.arange(first + 1, first + 1 + count, dtype=np.uint64)
    z *= np.uint64(0x9E3779B97F4A7C15)
    z += key
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(32)).astype(np.uint32)


def _initial_heads(seed: int, lanes: int) -> np.ndarray:
    """Fresh heads: RANS_L plus 31 seeded pseudo-random bits.

    A head of exactly RANS_L would make each lane's first pop read cf = 0 and always pick the
    lowest-cumulative symbol: a deterministic, extreme first posterior sample (one bad latent
    per lane, thousands of bits on the first image). Random low bits make it a proper sample;
    being a function of the seed, they cost nothing to transmit.
    """
    words = _phantom(_splitmix_key(seed ^ 0x5EEDF00D5EEDF00D), 0, lanes).astype(np.uint64)
    return np.uint64(RANS_L) | (words & np.uint64(RANS_L - 1))


_U64 = np.dtype(np.uint64)
_I64 = np.dtype(np.int64)


# Gathering/scattering the renormalising lanes: boolean indexing has the lowest call overhead for
# few lanes, ndarray.compress / np.place the best throughput for many.
_MANY_LANES = 256


def _as_u64(a) -> np.ndarray:
    """Integer array -> uint64 without a copy where possible (int64 is reinterpreted)."""
    a = np.asarray(a)
    if a.dtype == np.uint64:
        return a
    if a.dtype == np.int64:
        return a.view(np.uint64)
    if a.dtype.kind not in "iub":
        raise ANSError(f"starts/freqs must be integer arrays, got dtype {a.dtype}")
    return a.astype(np.uint64)


def check_precision(precision) -> int:
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)):
        raise ANSError(f"precision must be an int, got {precision!r}")
    if not 1 <= precision <= MAX_PRECISION:
        raise ANSError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    return int(precision)


def _check_intervals(s: np.ndarray, f: np.ndarray, prec: int) -> None:
    # Negative int64 inputs arrive reinterpreted as huge uint64, so "> M" also catches them.
    m = 1 << prec
    bad = np.flatnonzero((f == 0) | (f > m))
    if bad.size:
        i = int(bad[0])
        raise ANSError(f"frequency {f.view(np.int64)[i]} at position {i} is not in 1..2**{prec}")
    bad = np.flatnonzero((s > m) | (s + f > m))
    if bad.size:
        i = int(bad[0])
        raise ANSError(
            f"interval start {s.view(np.int64)[i]} + freq {int(f[i])} at position {i} exceeds 2**{prec}"
        )


def _check_contains(cf: np.ndarray, s: np.ndarray, f: np.ndarray, prec: int) -> None:
    _check_intervals(s, f, prec)
    bad = np.flatnonzero((cf < s) | (cf >= s + f))
    if bad.size:
        i = int(bad[0])
        raise ANSError(
            f"decode lookup gave interval [{int(s[i])}, {int(s[i] + f[i])}) at lane {i}, "
            f"which does not contain cf={int(cf[i])}"
        )


class Message:
    """L rANS lanes over one shared tail of 32-bit words (see the module docstring)."""

    __slots__ = ("lanes", "seed", "check", "phantom_words", "phantom_peak", "phantom_limit", "_head", "_tail", "_top",
                 "_key")

    def __init__(self, lanes: int, seed: int = 0, check: bool = False):
        if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or not 1 <= lanes < 1 << 32:
            raise ANSError(f"lanes must be an int in 1..2**32-1, got {lanes!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= _M64:
            raise ANSError(f"seed must be an int in 0..2**64-1, got {seed!r}")
        self.lanes = int(lanes)
        self.seed = int(seed)
        self.check = bool(check)
        self.phantom_words = 0
        # The most phantom words ever held: a faithful decoder of this message never holds more
        # (it passes through the encoder's states in reverse), so a decoder given this number as
        # its `phantom_limit` stops at the first word it would read beyond what was written.
        self.phantom_peak = 0
        self.phantom_limit: int | None = None
        self._key = _splitmix_key(self.seed)
        self._head = _initial_heads(self.seed, self.lanes)
        self._tail = np.empty(1024, dtype=np.uint32)
        self._top = 0

    # ------------------------------------------------------------------ state

    @property
    def heads(self) -> np.ndarray:
        """A read-only view of the lane heads."""
        v = self._head.view()
        v.flags.writeable = False
        return v

    @property
    def tail(self) -> np.ndarray:
        """A read-only view of the tail words, bottom first."""
        v = self._tail[: self._top]
        v.flags.writeable = False
        return v

    def copy(self) -> "Message":
        new = Message.__new__(Message)
        new.lanes, new.seed, new.check = self.lanes, self.seed, self.check
        new.phantom_peak, new.phantom_limit = self.phantom_peak, self.phantom_limit
        new.phantom_words, new._key, new._top = self.phantom_words, self._key, self._top
        new._head = self._head.copy()
        new._tail = self._tail[: max(self._top, 1024)].copy()
        return new

    def __eq__(self, other) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.lanes == other.lanes
            and self.seed == other.seed
            and self.phantom_words == other.phantom_words
            and self._top == other._top
            and np.array_equal(self._head, other._head)
            and np.array_equal(self._tail[: self._top], other._tail[: other._top])
        )

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"Message(lanes={self.lanes}, tail_words={self._top}, "
            f"phantom_words={self.phantom_words}, bits={self.bits()})"
        )

    def bits(self) -> int:
        """Size of `to_bytes()` in bits."""
        return 8 * (_HEADER.size + 8 * self.lanes + 4 * self._top)

    def to_bytes(self) -> bytes:
        if self.phantom_words >= 1 << 32:
            raise ANSError("more than 2**32 phantom words popped; cannot serialise")
        header = _HEADER.pack(_FORMAT, self.lanes, self._top, self.phantom_words)
        return (
            header
            + self._head.astype("<u8", copy=False).tobytes()
            + self._tail[: self._top].astype("<u4", copy=False).tobytes()
        )

    @staticmethod
    def bare(data: bytes) -> bytes:
        """`to_bytes` output without its 13-byte header, for a container that records the lane
        count itself: the phantom word count as a varint, then the heads and the tail words
        (whose count follows from the length). `framed` is the inverse."""
        if len(data) < _HEADER.size or data[0] != _FORMAT:
            raise ANSError("not an rANS message")
        phantom = _HEADER.unpack_from(data)[3]
        out = bytearray()
        while phantom >= 0x80:
            out.append(phantom & 0x7F | 0x80)
            phantom >>= 7
        out.append(phantom)
        return bytes(out) + bytes(data[_HEADER.size:])

    @staticmethod
    def framed(data: bytes, lanes: int) -> bytes:
        """The `to_bytes` form of a `bare` message of `lanes` lanes (ANSError if it is not one)."""
        phantom = shift = pos = 0
        while True:
            if pos >= len(data) or shift > 28:
                raise ANSError("rANS message truncated or corrupt: bad phantom word count")
            b = data[pos]
            pos += 1
            phantom |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        body = len(data) - pos - 8 * lanes
        if lanes < 1 or body < 0 or body % 4 or phantom >= 1 << 32:
            raise ANSError(f"rANS message of {len(data)} bytes does not hold {lanes} lane heads and whole words")
        return _HEADER.pack(_FORMAT, lanes, body // 4, phantom) + bytes(data[pos:])

    @classmethod
    def from_bytes(cls, data: bytes, seed: int = 0, check: bool = False, phantom_limit: int | None = None) -> "Message":
        """The message `to_bytes` wrote.

        phantom_limit: the encoder's `phantom_peak`. A pop that would hold more phantom words
        raises ANSError at once, instead of decoding garbage from seeded words until the final
        state check.
        """
        try:
            data = memoryview(data).cast("B")
        except TypeError as e:
            raise ANSError(f"expected bytes, got {type(data).__name__}") from e
        if len(data) < _HEADER.size:
            raise ANSError(f"rANS message truncated: {len(data)} bytes, header needs {_HEADER.size}")
        fmt, lanes, top, phantom = _HEADER.unpack_from(data)
        if fmt != _FORMAT:
            raise ANSError(f"not an rANS message (format byte {fmt:#x}, expected {_FORMAT:#x})")
        if lanes < 1:
            raise ANSError("rANS message has 0 lanes")
        want = _HEADER.size + 8 * lanes + 4 * top
        if len(data) != want:
            raise ANSError(
                f"rANS message length {len(data)} bytes does not match its header "
                f"({lanes} lanes, {top} tail words: {want} bytes); truncated or corrupt"
            )
        msg = cls(lanes, seed=seed, check=check)
        off = _HEADER.size
        head = np.frombuffer(data, dtype="<u8", count=lanes, offset=off).astype(np.uint64)
        if head.min() < RANS_L or head.max() >= _HEAD_MAX:
            raise ANSError("rANS message corrupt: a lane head is outside [2**31, 2**63)")
        msg._head = head
        msg._tail = np.frombuffer(data, dtype="<u4", count=top, offset=off + 8 * lanes).astype(np.uint32)
        if msg._tail.size == 0:
            msg._tail = np.empty(1024, dtype=np.uint32)
        msg._top = top
        msg.phantom_words = phantom
        if phantom_limit is not None:
            if phantom_limit < phantom:
                raise ANSError(f"rANS message holds {phantom} phantom words, more than its peak {phantom_limit}")
            msg.phantom_limit = phantom_limit
        msg.phantom_peak = phantom
        return msg

    # ------------------------------------------------------------ tail words

    def _reserve(self, k: int) -> None:
        need = self._top + k
        if need > self._tail.size:
            grown = np.empty(max(need, 2 * self._tail.size), dtype=np.uint32)
            grown[: self._top] = self._tail[: self._top]
            self._tail = grown

    def _write_bottom(self, words: np.ndarray) -> None:
        """Write words onto an empty tail, first giving back the phantom words they equal."""
        k = min(words.size, self.phantom_words)
        expect = _phantom(self._key, self.phantom_words - k, k)[::-1]
        same = (words[:k] & np.uint64(0xFFFFFFFF)) == expect
        j = k if same.all() else int(np.argmin(same))
        self.phantom_words -= j
        rest = words[j:]
        self._tail[: rest.size] = rest
        self._top = rest.size

    def _read_underflow(self, k: int) -> np.ndarray:
        """Read k words when the tail holds fewer: the missing ones are phantom words."""
        m = k - self._top
        if self.phantom_limit is not None and self.phantom_words + m > self.phantom_limit:
            raise ANSError("the message ran out before decoding finished: read past its first word")
        words = np.empty(k, dtype=np.uint32)
        words[:m] = _phantom(self._key, self.phantom_words, m)[::-1]
        words[m:] = self._tail[: self._top]
        self.phantom_words += m
        if self.phantom_words > self.phantom_peak:
            self.phantom_peak = self.phantom_words
        self._top = 0
        return words

    # ------------------------------------------------------------ lane level

    def push(self, starts, freqs, precision: int) -> None:
        """Push one symbol into each of lanes[:n], n = len(starts) <= lanes."""
        s = _as_u64(starts).reshape(-1)
        if s.size > self.lanes:
            raise ANSError(f"push of {s.size} symbols into {self.lanes} lanes; use push_stream")
        self.push_stream(s, freqs, precision)

    def pop(self, precision: int, n: int | None = None) -> tuple[np.ndarray, Callable]:
        """Start popping one symbol from each of lanes[:n].

        Returns ``(cf, finish)``: cf (int64, values in [0, 2**precision)) identifies the symbols;
        ``finish(starts, freqs)`` must then be called once with their intervals.
        """
        prec = check_precision(precision)
        n = self.lanes if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= self.lanes:
            raise ANSError(f"n must be in 0..{self.lanes}, got {n!r}")
        h = self._head[:n]
        cf = h & np.uint64((1 << prec) - 1)
        done = []

        def finish(starts, freqs) -> None:
            if done:
                raise ANSError("finish() called twice for one pop")
            s, f = _as_u64(starts).reshape(-1), _as_u64(freqs).reshape(-1)
            if s.shape != (n,) or f.shape != (n,):
                raise ANSError(f"finish expects {n} starts and freqs, got {s.size} and {f.size}")
            if self.check:
                _check_contains(cf, s, f, prec)
            done.append(True)
            self._finish(h, np.empty(n, dtype=bool), cf, s, f, prec)

        return cf.view(np.int64), finish

    def _finish(self, h, m, cf, s, f, prec) -> None:
        h >>= np.uint64(prec)
        h *= f
        h += cf
        h -= s
        np.less(h, RANS_L, out=m)
        sel = h[m]
        k = sel.size
        if k:
            if self._top >= k:
                self._top -= k
                words = self._tail[self._top : self._top + k]
            else:
                words = self._read_underflow(k)
            sel <<= np.uint64(32)
            sel |= words
            h[m] = sel

    # ----------------------------------------------------------- stream level

    def push_stream(self, starts, freqs, precision: int) -> None:
        """Push N symbols (any N) so that `pop_stream` returns them in order 0..N-1."""
        prec = check_precision(precision)
        s = np.ascontiguousarray(_as_u64(starts)).reshape(-1)
        f = np.ascontiguousarray(_as_u64(freqs)).reshape(-1)
        if s.shape != f.shape:
            raise ANSError(f"{s.size} starts but {f.size} freqs")
        n = s.size
        if n == 0:
            return
        if self.check:
            _check_intervals(s, f, prec)
        # Whole-stream vector ops, so the chunk loop only slices: the renormalisation threshold
        # freq * 2**(63-prec), and 2**prec - freq for head + (head // freq) * (2**prec - freq).
        xmax = f << np.uint64(63 - prec)
        cmf = np.uint64(1 << prec) - f
        self._reserve(n)
        L = self.lanes
        head = self._head
        tail = self._tail
        mbuf = np.empty(L, dtype=bool)
        qbuf = np.empty(L, dtype=np.uint64)
        ge, fdiv = np.greater_equal, np.floor_divide
        many = L >= _MANY_LANES
        # NumPy ufuncs take noticeably longer with a scalar operand than with an array, so the
        # constants are arrays of one value per lane.
        c32 = np.full(L, 32, dtype=np.uint64)
        top = self._top
        # The last chunk may be partial; it is pushed first so that it pops last.
        for lo in range((n - 1) // L * L, -1, -L):
            hi = min(lo + L, n)
            if hi - lo == L:
                h, m, q = head, mbuf, qbuf
            else:
                h, m, q = head[: hi - lo], mbuf[: hi - lo], qbuf[: hi - lo]
            ge(h, xmax[lo:hi], out=m)
            w = h.compress(m) if many else h[m]
            if w.size:
                if top == 0 and self.phantom_words:
                    self._write_bottom(w)
                    top = self._top
                else:
                    tail[top : top + w.size] = w
                    top += w.size
                np.right_shift(w, c32[: w.size], out=w)
                if many:
                    np.place(h, m, w)
                else:
                    h[m] = w
            fdiv(h, f[lo:hi], out=q)
            q *= cmf[lo:hi]
            h += q
            h += s[lo:hi]
        self._top = top

    def pop_stream(self, n: int, precision: int, lookup: Lookup) -> np.ndarray:
        """Pop N symbols pushed by `push_stream`, positions 0..N-1 in order.

        ``lookup(lo, hi, cf)`` receives cf (int64, one per position lo..hi-1) and returns
        ``(symbols, starts, freqs)`` for those positions. Returns the symbols concatenated.
        """
        prec = check_precision(precision)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ANSError(f"n must be a non-negative int, got {n!r}")
        n = int(n)
        L = self.lanes
        # Constants as per-lane arrays: NumPy ufuncs take longer with scalar operands.
        maskv = np.full(L, (1 << prec) - 1, dtype=np.uint64)
        precv = np.full(L, prec, dtype=np.uint64)
        lowv = np.full(L, RANS_L, dtype=np.uint64)
        c32 = np.full(L, 32, dtype=np.uint64)
        head = self._head
        mbuf = np.empty(L, dtype=bool)
        out = None
        check = self.check
        band, less, rshift, lshift, mul, add, sub, bor = (
            np.bitwise_and, np.less, np.right_shift, np.left_shift,
            np.multiply, np.add, np.subtract, np.bitwise_or,
        )
        many = L >= _MANY_LANES
        for lo in range(0, n, L):
            hi = min(lo + L, n)
            if hi - lo == L:
                h, m, mk, pr, lw = head, mbuf, maskv, precv, lowv
            else:
                w = hi - lo
                h, m, mk, pr, lw = head[:w], mbuf[:w], maskv[:w], precv[:w], lowv[:w]
            cf = band(h, mk)
            sym, s, f = lookup(lo, hi, cf.view(_I64))
            s = s.view(_U64) if type(s) is np.ndarray and s.dtype is _I64 else _as_u64(s)
            f = f.view(_U64) if type(f) is np.ndarray and f.dtype is _I64 else _as_u64(f)
            if check:
                if s.shape != cf.shape or f.shape != cf.shape:
                    raise ANSError(f"lookup returned {s.shape}/{f.shape} intervals for {cf.size} positions")
                _check_contains(cf, s, f, prec)
            if out is None:
                out = np.empty(n, dtype=np.asarray(sym).dtype)
            out[lo:hi] = sym
            # The finish step, inlined: it runs once per chunk.
            rshift(h, pr, out=h)
            mul(h, f, out=h)
            add(h, cf, out=h)
            sub(h, s, out=h)
            less(h, lw, out=m)
            sel = h.compress(m) if many else h[m]
            k = sel.size
            if k:
                top = self._top
                if top >= k:
                    words = self._tail[top - k : top]
                    self._top = top - k
                else:
                    words = self._read_underflow(k)
                lshift(sel, c32[:k], out=sel)
                bor(sel, words, out=sel)
                if many:
                    np.place(h, m, sel)
                else:
                    h[m] = sel
        if out is None:
            out = np.empty(0, dtype=np.int64)
        return out
