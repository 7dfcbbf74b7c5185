"""Make a CIFAR-10 run's model its best-on-validation epoch (calibrated and re-evaluated).

    python benchmarks/best_checkpoint.py RUN_DIR [--data-dir ../shared/data] [--device cpu]

`bbans train` keeps RUN_DIR/best.* (the epoch with the lowest -ELBO on the 5,000 validation
images) beside RUN_DIR/model.* (the last epoch); this replaces the latter by the former.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_gpu import best_checkpoint  # noqa: E402
from bbans.data import load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(2)
    train = np.ascontiguousarray(load_dataset("cifar10", "train-only", a.data_dir))
    test = np.ascontiguousarray(load_dataset("cifar10", "test", a.data_dir))
    meta = best_checkpoint(Path(a.run), train, test, a.device)
    print({k: meta.get(k) for k in ("epochs", "chosen_epoch", "test_bits_per_dim", "train_bits_per_dim")})


if __name__ == "__main__":
    main()
