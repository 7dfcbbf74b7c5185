"""Where the colour model stands on real photographs: bits per sub-pixel per photo, beside the
lossless image codecs, and what seeing the whole photo instead of 32x32 tiles is worth.

    python benchmarks/photo_rates.py --data-dir ../shared/data [--json out.json]

For every photo of data/photos (USC-SIPI misc; colour and grey): the file as found, PNG
(Pillow, optimize), WebP, JPEG-XL, JPEG-LS and JPEG 2000, all lossless, each decoded and compared
(`bbans.bench.image_codecs`). For the colour ones, cifar10-hier's coded cost, estimated by the
codec's own estimate (`engine.estimate_bits`: the -ELBO with every latent on its buckets, K=0,
the message's fixed costs left out; it agrees with the coded payloads to about 0.1%):
- "tiles": cut into 32x32 tiles, as `bbans compress --model cifar10-hier` codes a photo (the edge
  tiles padded, as the estimate pads them, and their padding not counted);
- "whole": the fully convolutional hierarchy run over the whole photo at once (its sides are
  multiples of 4), so its latents see across what were tile borders.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans import bench  # noqa: E402
from bbans.coding import engine  # noqa: E402
from bbans.io import images  # noqa: E402
from bbans.io.datasets import candidate_roots  # noqa: E402
from bbans.models import checkpoints  # noqa: E402


def model_bits(model, px: np.ndarray, cfg) -> dict:
    """cifar10-hier's estimated bits for one (H, W, 3) photo: in 32x32 tiles and whole."""
    x = np.ascontiguousarray(px.transpose(2, 0, 1))
    tiles, mask = images.tile(x, (32, 32))
    # Padding is never coded: the estimate of a padded tile counts its real pixels' share only.
    per_tile = engine.estimate_bits(model, tiles, cfg)
    share = mask.reshape(len(mask), -1).mean(1)
    out = {"tiles": float((per_tile * share).sum())}
    h, w = x.shape[1:]
    if h % 4 == 0 and w % 4 == 0:
        out["whole"] = float(engine.estimate_bits(model, x[None], cfg, batch_size=1).sum())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--limit", type=int, default=None, help="the first N photos only")
    a = ap.parse_args()
    root = next((r / "photos" for r in candidate_roots(a.data_dir) if (r / "photos").is_dir()), None)
    if root is None:
        sys.exit("no photos/ folder under the data directories (pass --data-dir)")
    torch.set_num_threads(2)
    model, meta = checkpoints.load_model("cifar10-hier", "auto")
    cfg = engine.EngineConfig(threads=2, arithmetic="float", dtype="float32", **engine.model_settings(model))
    rows = []
    for path in sorted(root.glob("*.png"))[: a.limit]:
        img = Image.open(path)
        if img.mode not in ("RGB", "L"):
            continue
        px = np.asarray(img)
        chw = px[None] if px.ndim == 2 else px.transpose(2, 0, 1)
        dims = px.size
        row = {"photo": path.name, "mode": img.mode, "size": f"{img.width}x{img.height}", "dims": dims,
               "file": path.stat().st_size * 8 / dims}
        t0 = time.time()
        for codec in bench.image_codecs(chw.shape[0], binary=False):
            if codec.skipped:
                continue
            enc = bytes(codec.encode(codec.prepare(chw)))
            back = np.asarray(codec.decode(enc))
            if codec.name == "WebP" and chw.shape[0] == 1:
                back = back[..., 0]
            if not np.array_equal(back.reshape(px.shape), px):
                raise SystemExit(f"{codec.name} did not give {path.name} back")
            row[codec.name] = len(enc) * 8 / dims
        if img.mode == "RGB":
            row.update({f"cifar10-hier {k}": v / dims for k, v in model_bits(model, px, cfg).items()})
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["file", "PNG", "WebP", "JPEG-XL", "JPEG-LS", "JPEG 2000", "cifar10-hier tiles", "cifar10-hier whole"]
    print("\n| photo | mode | size | " + " | ".join(cols) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in cols) + " |")
    for r in rows:
        print(f"| {r['photo']} | {r['mode']} | {r['size']} | " + " | ".join(
            f"{r[c]:.3f}" if c in r else "" for c in cols) + " |")
    for mode in ("RGB", "L"):
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        total = sum(r["dims"] for r in sel)
        print(f"| all {len(sel)} {mode} | | | " + " | ".join(
            f"{sum(r[c] * r['dims'] for r in sel) / total:.3f}" if all(c in r for r in sel) else ""
            for c in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": meta["name"], "encoder": meta["encoder"], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
