"""Regenerate the sample images of examples/ (the README demo compresses this folder).

    python examples/make_examples.py [MNIST_DIR]

MNIST_DIR holds t10k-images-idx3-ubyte.gz (default: ../shared/data/mnist). The grey digits
are the first MNIST test images; the black-and-white ones binarize the test set the usual
way (a Bernoulli draw per pixel with probability value/255, numpy RandomState(0) over the
whole test array). The colour pictures are synthetic.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent


def mnist_test(folder: Path) -> np.ndarray:
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    n, h, w = np.frombuffer(raw[4:16], ">u4")
    return np.frombuffer(raw[16:], np.uint8).reshape(n, h, w)


def scene(rng, w: int, h: int) -> Image.Image:
    """A small sky-and-hills picture with a little texture."""
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([200, 220, 250])
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    sx, sy = rng.integers(w // 5, 4 * w // 5), rng.integers(h // 8, h // 3)
    d.ellipse([sx - h // 8, sy - h // 8, sx + h // 8, sy + h // 8], fill=(250, 210, 90))
    base = h * 0.6
    pts = [(x, int(base + h * 0.15 * np.sin(x / w * 6 + rng.random() * 3))) for x in range(0, w + 1, 2)]
    d.polygon(pts + [(w, h), (0, h)], fill=(60, 130, 60))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.6))).astype(int)
    return Image.fromarray(np.clip(arr + rng.integers(-6, 7, arr.shape), 0, 255).astype(np.uint8))


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "data" / "mnist"
    x = mnist_test(src)
    for sub in ("digits", "binary", "colour"):
        (HERE / sub).mkdir(exist_ok=True)
    for i in range(8):
        Image.fromarray(x[i]).save(HERE / "digits" / f"mnist-test-{i:02d}.png")
    bits = np.random.RandomState(0).binomial(1, x.reshape(len(x), -1) / 255.0).reshape(x.shape)
    for i in range(8):
        Image.fromarray(bits[i].astype(bool)).save(HERE / "binary" / f"binarized-test-{i:02d}.png")
    rng = np.random.default_rng(7)
    scene(rng, 32, 32).save(HERE / "colour" / "hills-32x32.png")
    scene(rng, 64, 48).save(HERE / "colour" / "hills-64x48.png")
    scene(rng, 40, 30).save(HERE / "colour" / "hills-40x30.bmp")
    # Kept byte for byte: alpha has no model.
    scene(rng, 24, 24).convert("RGBA").save(HERE / "colour" / "icon-rgba.png")


if __name__ == "__main__":
    main()
