"""Make a CIFAR-10 run's model its best-on-validation epoch (calibrated and re-evaluated).

    python recipes/best_checkpoint.py RUN_DIR [--data-dir ../shared/data] [--device cpu]

`bbans train` keeps RUN_DIR/best.* (the epoch with the lowest -ELBO on the 5,000 validation
images) beside RUN_DIR/model.* (the last epoch); this replaces the latter by the former.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.training.calibration import calibrate_latent_scales  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.models.checkpoints import load_files, save_model  # noqa: E402
from bbans.training.train import calibration_images, evaluate  # noqa: E402


@torch.no_grad()
def best_checkpoint(run_dir: Path, train_x: np.ndarray, test_x: np.ndarray, device: str) -> dict:
    """Replace the run's final model by its best-on-validation one, calibrated and evaluated."""
    meta = json.loads((run_dir / "model.json").read_text())
    best = meta.get("best_valid") or {}
    if not best.get("epoch") or best["epoch"] == meta["epochs"]:
        return meta
    model, best_meta = load_files(run_dir / "best", "encoder", device=device)
    model.eval()
    meta.update(chosen_epoch=best["epoch"], test_bits_per_dim=evaluate(model, test_x),
                train_bits_per_dim=evaluate(model, train_x[:5000]),
                note=f"weights of epoch {best['epoch']} (best validation -ELBO) of {meta['epochs']} trained")
    calibrate_latent_scales(model, calibration_images(train_x, binary=False))  # on the CPU, so after the -ELBOs
    model.cpu()
    print(f"chose epoch {best['epoch']}: valid {best['sel_bpd']:.4f}, test {meta['test_bits_per_dim']:.4f}", flush=True)
    return save_model(model, run_dir / "model", meta)


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
