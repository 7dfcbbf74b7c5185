"""Bundle trained runs into models/ and record quick-check figures.

Usage: python recipes/train_bundle.py NAME BASE_RUN REFIT_RUN [CONTROL_RUN] [--notes TEXT] [--data-dir DIR] [--out DIR]
Writes OUT/NAME.{decoder,encoder-baseline,encoder-refit}.safetensors and OUT/NAME.json (OUT: the
repository's models/ unless --out says otherwise).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

# The checkout's bbans, whichever copy is installed (the recipes run `python -m bbans` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.models import checkpoints as ckpt  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.training.train import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"
CHECK_N = 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("base")
    ap.add_argument("refit")
    ap.add_argument("control", nargs="?")
    ap.add_argument("--notes", default="")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "models"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    base_model, meta = ckpt.load_files(Path(a.base) / "model")
    ds = meta["dataset"]
    subsets = {f"first_{CHECK_N}_test": load_dataset(ds, "test", a.data_dir)[:CHECK_N]}
    if ds != "cifar10":
        subsets["fixture_test"] = load_dataset(ds, "test", FIX, verify=False)
    else:
        subsets["fixture_test"] = load_dataset(ds, "test", FIX)
    checks = {k: {} for k in subsets}
    for enc, run in (("baseline", a.base), ("refit", a.refit)):
        model, _ = ckpt.load_files(Path(run) / "model")
        for k, x in subsets.items():
            checks[k][enc] = evaluate(model, np.ascontiguousarray(x))
    rec = ckpt.bundle(a.name, a.base, a.refit, a.out, a.control, notes=a.notes, checks=checks)
    print({e: v["test_bits_per_dim"] for e, v in rec["encoders"].items()}, rec.get("control", {}).get("test_bits_per_dim"))


if __name__ == "__main__":
    main()
