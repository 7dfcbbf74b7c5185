"""Generic lossless codecs alone on a test set (no model needed): the reference rows of `bbans bench`.

    python benchmarks/bench_generic.py --dataset mnist --data-dir /work/shared/data [--limit N] [--json F]
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from bbans import bench
from bbans.io.datasets import is_binary, load_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=["binary-mnist", "mnist", "cifar10"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    images = load_dataset(args.dataset, "test", args.data_dir)
    if args.limit:
        images = images[: args.limit]
    rows = bench.run_generic(images, is_binary(args.dataset))
    report = {"dataset": args.dataset, "split": "test", "n_images": len(images), "image_shape": list(images.shape[1:]),
              "device": "-", "methods": [], "skipped_methods": [], "generic": rows,
              "summary": bench.summarize([], rows), "machine": bench.machine_info(),
              "argv": ["python"] + sys.argv}
    bench.render(report, Console(width=200))
    if args.json:
        bench.write_json(report, args.json)
    return 0 if report["summary"]["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
