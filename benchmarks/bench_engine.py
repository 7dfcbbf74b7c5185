"""Engine benchmark (issue 4): exact round trips, rate against the -ELBO, speed, initial bits.

    python benchmarks/bench_engine.py --dataset binary-mnist --data-dir ../shared/data
    python benchmarks/bench_engine.py --dataset mnist --K 0,1,7 --data-dir ../shared/data
    python benchmarks/bench_engine.py --dataset binary-mnist --initial-bits --data-dir ../shared/data

Prints one row per (encoder, K): coded bits/dim from the real payload, the continuous -ELBO and
the -ELBO under the codec's latent discretisation (both bits/dim), the overhead against the
latter, seconds for compress and decompress, and whether the round trip was exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from bbans.coding import engine
from bbans.coding.engine import EngineConfig
from bbans.models.checkpoints import load_model
from bbans.io.datasets import load_dataset


def run(model, images, config):
    t0 = time.perf_counter()
    payload, stats = engine.compress(model, images, config=config)
    t1 = time.perf_counter()
    out = engine.decompress(model, payload, len(images), images.shape[1:], config=stats["config"])
    t2 = time.perf_counter()
    dims = images.size
    return {
        "bpd": 8 * len(payload) / dims,
        "elbo_bpd": stats["neg_elbo_bits"] / dims,
        "delbo_bpd": stats["discrete_neg_elbo_bits"] / dims,
        "initial_bits": stats["initial_bits"],
        "t_c": t1 - t0,
        "t_d": t2 - t1,
        "exact": bool(np.array_equal(out, images)),
        "bytes": len(payload),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="binary-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--K", default="0,1,7")
    ap.add_argument("--encoders", default="baseline,refit")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=EngineConfig.batch_size)
    ap.add_argument("--lanes", type=int, default=EngineConfig.lanes)
    ap.add_argument("--threads", type=int, default=EngineConfig.threads)
    ap.add_argument("--initial-bits", action="store_true", help="measure the initial-bits cost for 1, 100, 10000 images")
    args = ap.parse_args()

    images = load_dataset(args.dataset, "test", data_dir=args.data_dir)[: args.limit]
    print(f"# {args.dataset}: {len(images)} test images, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {args.threads}")
    base = dict(lr=args.lr, batch_size=args.batch_size, lanes=args.lanes, threads=args.threads)

    if args.initial_bits:
        model, _ = load_model(args.dataset, encoder="refit")
        print("| images | initial bits | initial bits per image | coded bits/dim | discrete -ELBO bits/dim |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for n in (1, 100, 10000):
            r = run(model, images[:n], EngineConfig(**base))
            print(f"| {n} | {r['initial_bits']} | {r['initial_bits'] / n:.2f} | {r['bpd']:.4f} | {r['delbo_bpd']:.4f} |")
        return 0

    print("| encoder | K | coded bits/dim | -ELBO bits/dim | discrete -ELBO bits/dim | overhead | compress s | decompress s | exact |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    ok = True
    for enc in args.encoders.split(","):
        model, _ = load_model(args.dataset, encoder=enc)
        for k in (int(s) for s in args.K.split(",")):
            r = run(model, images, EngineConfig(K=k, **base))
            ok &= r["exact"]
            over = 100 * (r["bpd"] / r["delbo_bpd"] - 1)
            print(f"| {enc} | {k} | {r['bpd']:.4f} | {r['elbo_bpd']:.4f} | {r['delbo_bpd']:.4f} | {over:+.2f}% "
                  f"| {r['t_c']:.2f} | {r['t_d']:.2f} | {r['exact']} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
