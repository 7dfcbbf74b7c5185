"""Throughput of the vectorized rANS message and of the table codec, and its rate overhead.

    python benchmarks/bench_ans.py                 # L in {1, 64, 1024, 65536}
    python benchmarks/bench_ans.py --symbols 4000000 --lanes 256 1024

Symbols are 8-bit-like: 256 values under a fixed skewed distribution quantised at 16 bits
(about 6.5 bits/symbol). Rows:

* push, pop: `Message.push_stream` / `pop_stream` with precomputed starts/freqs (pop's lookup
  returns slices of them), i.e. the cost of the coder itself;
* pop+lookup: `pop_stream` with a real decode lookup (one searchsorted per chunk over the table);
* codec push/pop: `codecs.categorical` with one 257-entry integer table per symbol (at most
  100k symbols), as the pixel codecs use: includes validating the tables and the decode's binary
  search, excludes the float work of building them;
* overhead: (coded bits - information content) / symbols, information = sum of -log2(freq/2**16).

Timings are the best of --repeats runs on one thread, in symbols per wall-clock second and, for
push and pop, per CPU second of this process (a fairer figure on a machine shared with other
jobs). Rates are in millions of symbols per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from bbans.coding import codecs
from bbans.coding.ans import Message

PREC = 16
K = 256


def skewed_cdf(rng) -> np.ndarray:
    p = rng.dirichlet(np.full(K, 0.3))
    freqs = np.floor(p * ((1 << PREC) - K)).astype(np.int64) + 1
    freqs[np.argmax(freqs)] += (1 << PREC) - freqs.sum()
    return np.concatenate([[0], np.cumsum(freqs)])


def best_of(repeats, fn, cpu=None):
    """Best wall time of `repeats` runs; with a list `cpu`, also appends the best CPU time."""
    best = best_cpu = float("inf")
    out = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    if cpu is not None:
        cpu.append(best_cpu)
    return best, out


def bench_lanes(lanes: int, n: int, repeats: int, rng) -> dict:
    cdf = skewed_cdf(rng)
    x = rng.choice(K, size=n, p=np.diff(cdf) / (1 << PREC))
    starts, freqs = cdf[x], cdf[x + 1] - cdf[x]
    info = float(np.sum(PREC - np.log2(freqs)))

    def push():
        msg = Message(lanes)
        msg.push_stream(starts, freqs, PREC)
        return msg

    cpu = []
    t_push, msg = best_of(repeats, push, cpu)
    data = msg.to_bytes()

    def oracle(lo, hi, cf):
        return x[lo:hi], starts[lo:hi], freqs[lo:hi]

    def search(lo, hi, cf):
        sym = np.searchsorted(cdf, cf, side="right") - 1
        return sym, cdf[sym], cdf[sym + 1] - cdf[sym]

    def pop(lookup):
        def run():
            return Message.from_bytes(data).pop_stream(n, PREC, lookup)

        return run

    t_pop, y = best_of(repeats, pop(oracle), cpu)
    assert np.array_equal(y, x)
    t_pop_lookup, y = best_of(repeats, pop(search))
    assert np.array_equal(y, x)

    # One table row per symbol, as the pixel codecs build them; fewer symbols (257 entries each).
    nc = min(n, 100_000)
    table = np.ascontiguousarray(np.broadcast_to(cdf, (nc, K + 1)))
    codec = codecs.categorical(table, PREC)

    def codec_push():
        m = Message(lanes)
        codec.push(m, x[:nc])
        return m

    t_cpush, cmsg = best_of(repeats, codec_push)
    cdata = cmsg.to_bytes()
    t_cpop, y = best_of(repeats, lambda: codec.pop(Message.from_bytes(cdata)))
    assert np.array_equal(y, x[:nc])
    return {
        "lanes": lanes,
        "symbols": n,
        "push": n / t_push,
        "pop": n / t_pop,
        "push_cpu": n / cpu[0],
        "pop_cpu": n / cpu[1],
        "pop_lookup": n / t_pop_lookup,
        "codec_push": nc / t_cpush,
        "codec_pop": nc / t_cpop,
        "bits_per_symbol": msg.bits() / n,
        "ideal": info / n,
        "overhead": (msg.bits() - info) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=2_000_000, help="symbols per run (L=1 uses 1/40)")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 64, 1024, 65536])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# rANS benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(load average {load:.1f}), numpy {np.__version__}, precision {PREC}, K={K}")
    head = (f"{'L':>6} {'symbols':>9} {'push M/s':>9} {'pop M/s':>8} {'push/cpu-s':>10} {'pop/cpu-s':>9} {'pop+lookup':>10} "
            f"{'codec push':>10} {'codec pop':>9} {'bits/sym':>8} {'ideal':>7} {'overhead':>9}")
    print(head)
    rng = np.random.default_rng(args.seed)
    for lanes in args.lanes:
        n = args.symbols // 40 if lanes == 1 else max(args.symbols, 8 * lanes)
        r = bench_lanes(lanes, n, args.repeats, rng)
        print(
            f"{r['lanes']:>6} {r['symbols']:>9} {r['push'] / 1e6:>9.2f} {r['pop'] / 1e6:>8.2f} "
            f"{r['push_cpu'] / 1e6:>10.2f} {r['pop_cpu'] / 1e6:>9.2f} "
            f"{r['pop_lookup'] / 1e6:>10.2f} {r['codec_push'] / 1e6:>10.2f} {r['codec_pop'] / 1e6:>9.2f} "
            f"{r['bits_per_symbol']:>8.4f} {r['ideal']:>7.4f} {r['overhead']:>9.5f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
