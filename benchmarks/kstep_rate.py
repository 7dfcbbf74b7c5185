"""K-step inference's step rate per bundled model: the coded cost against K for several rates.

For each model and rate, the codec's estimate of the coded bits (bbans.coding.engine.estimate_bits:
the -ELBO with every latent on its buckets, the message's fixed costs left out) on held-out test
images, at K = 0, 1, 2, 4, 7, 10 with the compressor's encoder. The rate is chosen on the first
--choose images (the lowest cost at K = 7 among the rates whose cost falls with every added step)
and reported on the next --report images, which played no part in the choice.

    python benchmarks/kstep_rate.py --data-dir ../shared/data
    python benchmarks/kstep_rate.py --models cifar10-hier --rates 3e-4 1e-3 3e-3 --report 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.coding.engine import EngineConfig, default_lr, estimate_bits, model_settings  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.models import checkpoints, registry  # noqa: E402

KS = (0, 1, 2, 4, 7, 10)


def costs(model, x, lr: float, ks) -> dict:
    out = {}
    for k in ks:
        # The model's own latent coding (buckets, uncoded channels), as compress uses it.
        latents = {key: v for key, v in model_settings(model).items() if key != "lr"}
        cfg = EngineConfig(K=k, lr=lr, threads=1, arithmetic="float", dtype="float32", **latents)
        out[k] = float(estimate_bits(model, x, cfg).mean()) / model.dims(x.shape[1:])
    return out


def falls(c: dict) -> bool:
    ks = sorted(c)
    return all(c[b] <= c[a] for a, b in zip(ks, ks[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(registry.NAMES))
    ap.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3, 5e-3, 1e-2, 2e-2])
    ap.add_argument("--choose", type=int, default=100, help="test images the rate is chosen on")
    ap.add_argument("--report", type=int, default=400, help="the test images after those, reported on")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    result = {}
    for name in a.models:
        model, meta = checkpoints.load_model(name, "auto")
        x = load_dataset(registry.spec(name).dataset, "test", a.data_dir)
        choose, report = x[: a.choose], x[a.choose : a.choose + a.report]
        t0 = time.process_time()
        chosen = {lr: costs(model, choose, lr, KS) for lr in a.rates}
        ok = [lr for lr in a.rates if falls(chosen[lr])] or a.rates
        best = min(ok, key=lambda lr: chosen[lr][7])
        shipped = default_lr(model)
        rows = {"chosen_rate": best, "current_rate": shipped, "encoder": meta["encoder"],
                "on_choice_images": {str(lr): chosen[lr] for lr in a.rates},
                "report": {str(lr): costs(model, report, lr, KS) for lr in sorted({best, shipped})},
                "cpu_s": None}
        rows["cpu_s"] = round(time.process_time() - t0, 1)
        result[name] = rows
        print(f"\n{name} ({meta['encoder']} encoder): rate chosen on test images 0..{a.choose - 1}: {best:g} "
              f"(current {shipped:g}); {rows['cpu_s']} CPU s", flush=True)
        print("| rate | images | " + " | ".join(f"K={k}" for k in KS) + " | falls with K |")
        print("| ---: | --- | " + " | ".join("---:" for _ in KS) + " | --- |")
        for lr in a.rates:
            c = chosen[lr]
            print(f"| {lr:g} | choice | " + " | ".join(f"{c[k]:.4f}" for k in KS) + f" | {'yes' if falls(c) else 'no'} |")
        for lr, c in rows["report"].items():
            print(f"| {float(lr):g} | held out ({a.report}) | " + " | ".join(f"{c[k]:.4f}" for k in KS)
                  + f" | {'yes' if falls(c) else 'no'} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
