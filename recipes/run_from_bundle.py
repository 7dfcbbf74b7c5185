"""Rebuild a training run folder from a bundled model, so `bbans train --resume` continues it.

Run folders are not kept in the repository; a bundled model is. This writes `state.json` and
`state.safetensors` for the bundle's decoder and baseline encoder at the bundle's epoch, with
its recipe (dataset, batch size, seed, family), fresh Adam moments and an empty history (the
original run's history did not survive). `--pixel-groups 4` adds the pixel-group heads of
bbans.models.hierarchy, zero-initialised, so training starts from the bundle's own likelihood (resume
with the same `--pixel-groups`). Continue with, e.g.:

    python recipes/run_from_bundle.py binary-mnist-hier runs/hbinary-mnist-long
    bbans train --dataset binary-mnist --family hierarchical --epochs 100 --lr 5e-4 \
        --eval-every 5 --out runs/hbinary-mnist-long --resume

MODEL may also be a finished run folder (one holding model.json, as `bbans train` leaves it):
its model and epoch are taken the same way, which is how recipes/binary-mnist-hier.sh starts
each stage from the previous one with fresh Adam moments, as the shipped model was made.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

# The checkout's bbans, whichever copy is installed (the recipes run `python -m bbans` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.models import checkpoints as ckpt  # noqa: E402
from bbans.models.architecture import build_model, default_architecture  # noqa: E402
from bbans.training.train import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="bundled model name, or a finished run folder (holding model.json)")
    ap.add_argument("out", type=Path, help="run folder to create (must not hold a run)")
    ap.add_argument("--lr", type=float, default=1e-3, help="rate recorded in the state (the resume's --lr wins)")
    ap.add_argument("--pixel-groups", type=int, default=1, choices=(1, 4))
    a = ap.parse_args()
    if (a.out / "state.json").exists():
        raise SystemExit(f"{a.out} already holds a run")
    if (Path(a.model) / "model.json").is_file():
        model, meta = ckpt.load_files(Path(a.model) / "model", "encoder")
        recipe, epochs, what = meta["recipe"], int(meta["epochs"]), f"run {a.model}"
    else:
        model, meta = ckpt.load_model(a.model, encoder="baseline")
        recipe, epochs, what = meta["decoder"]["recipe"], int(meta["decoder"]["epochs"]), f"bundled {a.model}"
    groups = recipe.get("pixel_groups", 1)
    arch = default_architecture(recipe["dataset"], recipe.get("width"), recipe["family"], groups)
    bundled = model.architecture()
    if {k: v for k, v in arch.items() if k != "latent_scales"} != {k: v for k, v in bundled.items() if k != "latent_scales"}:
        raise SystemExit(f"{a.model}'s architecture is not the default for its recipe; --resume could not rebuild it")
    if a.pixel_groups != groups:
        if groups != 1:
            raise SystemExit(f"{a.model} already has {groups} pixel groups")
        arch = default_architecture(recipe["dataset"], recipe.get("width"), recipe["family"], a.pixel_groups)
        grouped = build_model({**arch, "latent_scales": bundled["latent_scales"]})
        missing, unexpected = grouped.load_state_dict(model.state_dict(), strict=False)
        heads = tuple(f"decoder.{grouped.layers + g}." for g in range(a.pixel_groups - 1))
        if unexpected or not all(k.startswith(heads) for k in missing):
            raise SystemExit(f"could not carry {a.model}'s weights over: missing {missing}, unexpected {unexpected}")
        model = grouped
    cfg = TrainConfig(dataset=recipe["dataset"], epochs=epochs, lr=a.lr, batch_size=recipe["batch_size"],
                      seed=recipe["seed"], width=recipe.get("width"), family=recipe["family"], architecture=arch,
                      pixel_groups=a.pixel_groups,
                      note=f"rebuilt from {what} (epoch {epochs}, hash {meta['hash'][:12]}); fresh Adam moments")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors(a.out / "state.safetensors", {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()})
    rec = {"epoch": epochs, "history": [], "config": asdict(cfg), "param_groups": opt.state_dict()["param_groups"],
           "best": {"sel_bpd": float("inf"), "epoch": None}}
    (a.out / "state.json").write_text(json.dumps(rec, indent=1))
    print(f"{a.out}: {a.model} at epoch {epochs}; continue with bbans train --resume")


if __name__ == "__main__":
    main()
