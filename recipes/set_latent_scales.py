"""Calibrate a bundled hierarchical model's latent bucket scales and re-record its hashes.

    python recipes/set_latent_scales.py NAME --calibrate [--data-dir ../shared/data] [--models DIR]
    python recipes/set_latent_scales.py NAME            # only re-record the hashes

--models: the folder holding NAME's bundle files (train_bundle.py --out); the repository's
models/ by default.

The scales are part of the model's hash (bbans.models.checkpoints.model_hash), so archives made
with the old ones are refused rather than decoded wrongly. --calibrate runs
bbans.training.calibration.calibrate_latent_scales on the first training images, as `bbans train`
does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.models import checkpoints as ckpt  # noqa: E402
from bbans.training.calibration import calibrate_latent_scales  # noqa: E402
from bbans.io.datasets import is_binary, load_dataset  # noqa: E402
from bbans.training.train import calibration_images  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", type=Path, default=MODELS, help="bundle folder [the repository's models/]")
    a = ap.parse_args()
    models = a.models
    path = models / f"{a.name}.json"
    rec = json.loads(path.read_text())
    arch = rec["architecture"]
    if a.calibrate:
        model, _ = ckpt.load_files(models / a.name, "encoder-refit")
        split = "train-only" if rec["dataset"] == "cifar10" else "train"
        train = load_dataset(rec["dataset"], split, a.data_dir)
        arch["latent_scales"] = calibrate_latent_scales(model, calibration_images(train, is_binary(rec["dataset"])))
        rec.pop("latent_scales_note", None)  # a hand-set scale's reason no longer applies
    blobs = {k: (models / f).read_bytes() for k, f in rec["files"].items()}
    for enc in ("baseline", "refit"):
        rec["encoders"][enc]["hash"] = ckpt.model_hash(blobs["decoder"], blobs[enc], arch)
    rec["hash"] = rec["encoders"]["refit"]["hash"]
    path.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    print(f"{a.name}: latent_scales {arch.get('latent_scales')}, hash {rec['hash'][:12]}")


if __name__ == "__main__":
    main()
