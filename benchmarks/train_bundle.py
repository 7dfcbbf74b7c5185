"""Bundle trained runs into models/ and record quick-check figures.

Usage: python benchmarks/train_bundle.py NAME BASE_RUN REFIT_RUN [CONTROL_RUN] [--notes TEXT]
Writes models/NAME.{decoder,encoder-baseline,encoder-refit}.safetensors and models/NAME.json.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from bbans import checkpoints as ckpt
from bbans.data import load_dataset
from bbans.train import evaluate

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
