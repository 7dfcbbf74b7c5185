"""Train (and refit) a model on a lent GPU from data packed by cifar_pack.py, within a time budget.

    PYTHONPATH=. python benchmarks/train_gpu.py --data .cifar --out $OUT --train-minutes 6.5 \
        --refit-minutes 1.5 --width 128 --blocks 2

Writes into --out the base model (base.*), the refit encoder (refit.*), both runs' metadata and a
short GPU codec check: exact round trips on the GPU and its speed. The runs use bbans.train.run,
the code behind `bbans train` / `bbans refit`, with device "cuda".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cifar_pack  # noqa: E402
from bbans import bitsback  # noqa: E402
from bbans.checkpoints import load_files, save_model  # noqa: E402
from bbans.bitsback import calibrate_latent_scales  # noqa: E402
from bbans.models import default_architecture  # noqa: E402
from bbans.train import TrainConfig, calibration_images, evaluate, run  # noqa: E402


def gpu_check(prefix: Path, test: np.ndarray, n: int, device: str) -> list[dict]:
    rows = []
    for tag in ("encoder",):
        model, _ = load_files(prefix, tag)
        for K in (0, 2):
            cfg = bitsback.EngineConfig(K=K, lr=1e-3, device=device, threads=1)
            x = test[:n]
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            payload, st = bitsback.compress(model, x, config=cfg)
            if device == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            y = bitsback.decompress(model, payload, len(x), x.shape[1:], config=st["config"])
            t2 = time.perf_counter()
            rows.append({"K": K, "images": n, "bits_per_dim": 8 * len(payload) / x.size, "exact": bool(np.array_equal(x, y)),
                         "compress_s_per_image": (t1 - t0) / n, "decompress_s_per_image": (t2 - t1) / n})
            print("gpu check", rows[-1], flush=True)
    return rows


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".cifar")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/bbans-gpu")
    ap.add_argument("--train-minutes", type=float, default=6.5)
    ap.add_argument("--refit-minutes", type=float, default=1.5)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--refit-lr", type=float, default=1e-4)
    ap.add_argument("--grad-clip", type=float, default=3.0)
    ap.add_argument("--check-images", type=int, default=100)
    ap.add_argument("--limit", type=int, default=None, help="train on the first N images only (dry runs)")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the whole pipeline here")
    ap.add_argument("--resume", action="store_true", help="continue the base run in --work")
    ap.add_argument("--state-from", default=None,
                    help="folder holding a previous call's state.json/state.safetensors (the machine went cold)")
    a = ap.parse_args()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    train_x, test_x = cifar_pack.unpack(a.data)
    train_x = train_x[: a.limit]
    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    print(f"{len(train_x)} training, {len(test_x)} test images; {gpu}", flush=True)
    # The last 1,000 training images choose the checkpoint, as the CIFAR-10 recipe's validation set.
    data = (train_x[:-1000], train_x[-1000:], "valid", test_x)
    arch = default_architecture("cifar10", a.width, "hierarchical")
    arch["blocks"] = a.blocks
    note = f"trained on {gpu} within {a.train_minutes} min per call on the first {len(train_x)} training images"
    cfg = TrainConfig(dataset="cifar10", epochs=1000, lr=a.lr, batch_size=a.batch_size, family="hierarchical",
                      eval_every=10, architecture=arch, grad_clip=a.grad_clip, note=note)
    if a.state_from and not (work / "base" / "state.json").exists():
        (work / "base").mkdir(parents=True, exist_ok=True)
        for f in ("state.json", "state.safetensors"):
            shutil.copy(Path(a.state_from) / f, work / "base" / f)
    base = run(cfg, work / "base", data=data, deadline=time.time() + 60 * a.train_minutes, device=a.device,
               resume=a.resume)
    base = best_checkpoint(work / "base", train_x, test_x, a.device)
    for f in ("model.json", "model.decoder.safetensors", "model.encoder.safetensors"):
        shutil.copy(work / "base" / f, out / f"base.{f.split('.', 1)[1]}")
    for f in ("state.json", "state.safetensors"):  # to resume from, should the machine go cold
        shutil.copy(work / "base" / f, out / f)
    if a.refit_minutes <= 0:
        print(json.dumps({"base_test_bpd": base["test_bits_per_dim"]}), flush=True)
        return 0
    rcfg = TrainConfig(dataset="cifar10", epochs=1000, lr=a.refit_lr, batch_size=a.batch_size, eval_every=5, mode="refit",
                       base=str(work / "base"), alpha=0.5, aggregate=True,
                       note=f"refit on a GPU for {a.refit_minutes} min on the first {len(train_x)} training images")
    refit = run(rcfg, work / "refit", data=data, deadline=time.time() + 60 * a.refit_minutes, device=a.device)
    for f in ("model.json", "model.encoder.safetensors"):
        shutil.copy(work / "refit" / f, out / f"refit.{f.split('.', 1)[1]}")
    summary = {"base_test_bpd": base["test_bits_per_dim"], "refit_test_bpd": refit["test_bits_per_dim"],
               "gpu_check": gpu_check(work / "base" / "model", test_x, a.check_images, a.device)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
