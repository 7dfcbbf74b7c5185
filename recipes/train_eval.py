"""Test -ELBO (bits/dim) of trained runs or bundled models on a data set's test split.

Usage:
  python recipes/train_eval.py runs/binary-mnist-base runs/binary-mnist-refit-a0.5 ... [--samples S]
  python recipes/train_eval.py --bundled binary-mnist [--samples S]
Each figure is the mean over the test images of the single-sample -ELBO, averaged over S
independent noise seeds (seed 1234 + s), so encoders compare on identical noise.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

# The checkout's bbans, whichever copy is installed (the recipes run `python -m bbans` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.models import checkpoints as ckpt  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.training.train import EVAL_SEED, evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--bundled", default=None)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    models = []
    if a.bundled:
        for enc in ("baseline", "refit"):
            m, meta = ckpt.load_model(a.bundled, enc)
            models.append((f"{a.bundled}:{enc}", m, meta["dataset"]))
    for r in a.runs:
        m, meta = ckpt.load_files(Path(r) / "model")
        models.append((r, m, meta["dataset"]))
    out = {}
    cache = {}
    for label, m, ds in models:
        if ds not in cache:
            cache[ds] = load_dataset(ds, "test", a.data_dir)[: a.limit]
        x = np.ascontiguousarray(cache[ds])
        vals = [evaluate(m, x, seed=EVAL_SEED + s) for s in range(a.samples)]
        out[label] = {"test_bits_per_dim": float(np.mean(vals)), "per_seed": vals, "images": len(x)}
        print(f"{label:45s} {np.mean(vals):.5f} bits/dim  ({len(x)} images, {a.samples} noise seeds)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
