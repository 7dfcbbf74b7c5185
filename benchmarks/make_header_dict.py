"""Build the dictionary that primes format 5's deflated headers (header_words.DICT_2).

    python benchmarks/make_header_dict.py [--data-dir ../shared/data] [--out dict2.bin]

Archives of a few kinds of folder are written with this bbans; their headers, in the stored
form and packed (bbans.archive.packed), are joined, the most typical last (deflate codes near
matches in fewer bits). The names and times are made up here, so that the dictionary holds the
format's structure rather than any folder's names: a header's names and times stay its own.
The result is frozen into bbans/archive/header_words.py (its sha256 pinned there); rerunning
this script does not change archives, it only proposes a dictionary for a later codec number.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bbans.archive import format as container  # noqa: E402
from bbans.archive import packed, writer  # noqa: E402
from bbans.io import datasets  # noqa: E402

TIME = 1_790_000_000_000_000_000


def _save(folder: Path, name: str, pixels: np.ndarray, mode: str, k: int) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels.astype(np.uint8) if mode != "1" else (pixels > 0))
    img = img.convert(mode) if mode == "1" else img
    img.save(path)
    os.utime(path, ns=(TIME + k * 7_919_000_123, TIME + k * 7_919_000_123))


def folders(tmp: Path, data_dir: str | None):
    digits = datasets.load_dataset("mnist", "test", data_dir)[:40] if data_dir else None
    if digits is None:
        raise SystemExit("needs MNIST (--data-dir)")
    digits = digits.reshape(-1, 28, 28)
    rng = np.random.default_rng(0)
    binary = (rng.random(digits.shape) < digits / 255.0).astype(np.uint8) * 255
    colour = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)

    def make(name: str, files, text: str | None = None) -> Path:
        folder = tmp / name
        for k, (fname, px, mode) in enumerate(files):
            _save(folder, fname, px, mode, k)
        if text:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / text).write_text("A few words about the pictures in this folder.\n" * 3)
            os.utime(folder / text, ns=(TIME, TIME))
        for sub in folder.rglob("*"):
            if sub.is_dir():  # folders are entries too: their times made up as well
                os.utime(sub, ns=(TIME, TIME))
        return folder

    yield "mixed", make("mixed", [("scans/page.png", binary[0], "1"), ("photo.png", colour[0], "RGB")]
                        + [(f"grey/{i}.png", digits[20 + i], "L") for i in range(3)], "readme.txt"), {}
    yield "a text file", make("text", [], "readme.txt"), {}
    yield "colour", make("colour", [("image.png", colour[1], "RGB")]), {}
    yield "grey digits", make("grey", [(f"digit-{i}.png", digits[i], "L") for i in range(10)]), {"model": "mnist-hier"}
    yield "one grey digit", make("grey1", [("digit.png", digits[11], "L")]), {"model": "mnist-hier"}
    yield "binary digits", make("binary", [(f"{i}.png", binary[i], "1") for i in range(10)]), {}
    yield "one digit, hierarchy", make("one-h", [("digit.png", binary[12], "1")]), {"model": "binary-mnist-hier"}
    yield "one digit, JPEG-XL", make("one-j", [("digit.png", binary[13], "1")]), {"model": "none-but-jxl"}
    yield "one digit", make("one", [("digit.png", binary[14], "1")]), {"model": "binary-mnist"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("BBANS_DATA"))
    ap.add_argument("--out", default="dict2.bin")
    args = ap.parse_args()
    parts = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for label, folder, kw in folders(tmp, args.data_dir):
            model = kw.get("model", "auto")
            saved = writer.GROUP_RECORD_BYTES
            if model == "none-but-jxl":
                writer.GROUP_RECORD_BYTES = 10 ** 6  # no group can pay: JPEG-XL keeps the digit
            try:
                data, _ = writer.create([str(folder)], writer.Options(model="auto" if model == "none-but-jxl" else model))
            finally:
                writer.GROUP_RECORD_BYTES = saved
            version, header, _ = container.unpack(data)
            raw = packed.dumps(container._to_storage(header, version))
            print(f"{label}: {len(raw)} packed bytes, archive {len(data)} B", file=sys.stderr)
            parts.append(raw)
    finally:
        shutil.rmtree(tmp)
    blob = b"".join(parts)[-32768:]
    Path(args.out).write_bytes(blob)
    print(f"{args.out}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
