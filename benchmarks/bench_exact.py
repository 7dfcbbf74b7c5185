"""The exact arithmetic against the float one: coded size, -ELBO and CPU time per bundled model.

    BBANS_DATA=../shared/data python benchmarks/bench_exact.py            # every model, K=0 and K=7
    BBANS_DATA=../shared/data python benchmarks/bench_exact.py --models mnist-hier --K 0 --n 200
    BBANS_DATA=../shared/data python benchmarks/bench_exact.py --paired  # -ELBO at the same noise

Same held-out test images, same engine settings, one thread; the two arithmetics alternate per
case so machine load hits both alike. CPU seconds are process time of compress and decompress
(model loading and start-up excluded). Every round trip is checked to give the images back.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bbans.coding import engine
from bbans.io import datasets
from bbans.models import checkpoints, registry

# Images per model at K=0 and at K=7: a few minutes in all on a 2-core CPU.
DEFAULT_N = {"binary-mnist-hier": (200, 20), "mnist-hier": (200, 20), "cifar10-hier": (100, 10),
             "binary-mnist": (1000, 200), "mnist": (1000, 200), "cifar10": (200, 40)}


def run(name: str, n: int, K: int) -> dict:
    spec = registry.spec(name)
    x = datasets.load_dataset(spec.dataset, "test")[:n]
    model, _ = checkpoints.Loaded().get(name, "refit", "cpu")
    row = {"model": name, "images": n, "K": K}
    for arith in ("float", "exact-1"):
        cfg = engine.EngineConfig(K=K, lr=engine.default_lr(model), lanes=32, threads=1, arithmetic=arith,
                                  dtype="float32" if arith == "float" else "float64")
        engine.compress(model, x[:1], config=cfg)  # warm-up: tables, caches
        t = time.process_time()
        payload, st = engine.compress(model, x, config=cfg)
        tc = time.process_time() - t
        t = time.process_time()
        back = engine.decompress(model, payload, n, x.shape[1:], config=st["config"], phantom_peak=st["phantom_peak"])
        td = time.process_time() - t
        if not np.array_equal(back, x):
            raise SystemExit(f"{name} {arith} K={K}: round trip NOT exact")
        dims = x[0].size * n
        row[arith] = {"bytes": len(payload), "bpd": 8 * len(payload) / dims,
                      "neg_elbo_bpd": st["neg_elbo_bits"] / dims, "compress_s": tc, "decompress_s": td}
    return row


def paired(name: str, n: int) -> dict:
    """The same images' discretised -ELBO (engine.estimate_bits: amortized posterior, each bucket
    drawn with the same seeded noise) in both arithmetics: what the exact network and functions
    change in the model itself, free of the sampling noise of a coded message (one coded run's
    bytes move by about 1-2% with the seed on cifar10-hier)."""
    spec = registry.spec(name)
    x = datasets.load_dataset(spec.dataset, "test")[:n]
    model, _ = checkpoints.Loaded().get(name, "refit", "cpu")
    out = {"model": name, "images": n}
    for arith in ("float", "exact-1"):
        cfg = engine.EngineConfig(arithmetic=arith, dtype="float32" if arith == "float" else "float64", threads=1)
        out[arith] = float(engine.estimate_bits(model, x, cfg, seed=0).sum() / (x[0].size * n))
    return out


def markdown(rows: list[dict]) -> str:
    out = ["| model | images | K | float bytes | exact bytes | size change | float -ELBO | exact -ELBO | "
           "compress CPU-s float / exact (x) | decompress CPU-s float / exact (x) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        f, e = r["float"], r["exact-1"]
        out.append(f"| {r['model']} | {r['images']} | {r['K']} | {f['bytes']:,} | {e['bytes']:,} | "
                   f"{100 * (e['bytes'] / f['bytes'] - 1):+.2f}% | {f['neg_elbo_bpd']:.4f} | {e['neg_elbo_bpd']:.4f} | "
                   f"{f['compress_s']:.1f} / {e['compress_s']:.1f} ({e['compress_s'] / f['compress_s']:.2f}) | "
                   f"{f['decompress_s']:.1f} / {e['decompress_s']:.1f} ({e['decompress_s'] / f['decompress_s']:.2f}) |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_N))
    ap.add_argument("--K", nargs="*", type=int, default=[0, 7])
    ap.add_argument("--n", type=int, default=None, help="images per case [default: per model and K]")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--paired", action="store_true", help="only the paired -ELBO estimates (K=0, 1,000 images)")
    args = ap.parse_args()
    if args.paired:
        print("| model | images | float -ELBO (bits/dim) | exact -ELBO | change |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in args.models:
            r = paired(name, args.n or 1000)
            print(f"| {name} | {r['images']} | {r['float']:.5f} | {r['exact-1']:.5f} | "
                  f"{100 * (r['exact-1'] / r['float'] - 1):+.3f}% |", flush=True)
        return
    rows = []
    for name in args.models:
        for K in args.K:
            n = args.n or DEFAULT_N[name][0 if K == 0 else 1]
            rows.append(run(name, n, K))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
