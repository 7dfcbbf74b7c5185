"""Calibrate a bundled hierarchical model's latent bucket scales and re-record its hashes.

    python benchmarks/set_latent_scales.py NAME --calibrate [--data-dir ../shared/data]
    python benchmarks/set_latent_scales.py NAME            # only re-record the hashes

The scales are part of the model's hash (bbans.checkpoints.model_hash), so archives made with
the old ones are refused rather than decoded wrongly. --calibrate runs
bbans.bitsback.calibrate_latent_scales on the first training images, as `bbans train` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans import checkpoints as ckpt  # noqa: E402
from bbans.bitsback import calibrate_latent_scales  # noqa: E402
from bbans.data import is_binary, load_dataset  # noqa: E402
from bbans.train import calibration_images  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    path = MODELS / f"{a.name}.json"
    rec = json.loads(path.read_text())
    arch = rec["architecture"]
    if a.calibrate:
        model, _ = ckpt.load_model(a.name, "refit")
        split = "train-only" if rec["dataset"] == "cifar10" else "train"
        train = load_dataset(rec["dataset"], split, a.data_dir)
        arch["latent_scales"] = calibrate_latent_scales(model, calibration_images(train, is_binary(rec["dataset"])))
        rec.pop("latent_scales_note", None)  # a hand-set scale's reason no longer applies
    blobs = {k: (MODELS / f).read_bytes() for k, f in rec["files"].items()}
    for enc in ("baseline", "refit"):
        rec["encoders"][enc]["hash"] = ckpt.model_hash(blobs["decoder"], blobs[enc], arch)
    rec["hash"] = rec["encoders"]["refit"]["hash"]
    path.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    print(f"{a.name}: latent_scales {arch.get('latent_scales')}, hash {rec['hash'][:12]}")


if __name__ == "__main__":
    main()
