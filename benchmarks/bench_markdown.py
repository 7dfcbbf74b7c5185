"""Print a `bbans bench --json` file as the Markdown tables of RESULTS.md.

    python benchmarks/bench_markdown.py benchmarks/bench-cifar10.json [--against benchmarks/bench-X.json]

--against adds each method's time relative to the same method in another bench (for example a
hierarchical model against the single-latent one on the same images).
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--against")
    a = ap.parse_args()
    d = json.load(open(a.json))
    other = {}
    if a.against:
        other = {m["method"]: m for m in json.load(open(a.against))["methods"]}
    s, mach = d["settings"], d["machine"]
    print(f"Command: `{' '.join(d['argv'])}`  ")
    print(f"Run {d['date']}, {d['n_images']} images, model `{s['model']}`, {mach['cpu_count']}-CPU {mach['processor']}, "
          f"torch {mach['torch']}, engine threads {s['threads']}, device {s['resolved_device']}.\n")
    head = "| method | coded bits/dim | -ELBO bits/dim | overhead | compress ms/img | decompress ms/img | img/s |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if other:
        head += " time vs single-latent |"
        rule += " ---: |"
    print(head + " exact |")
    print(rule + " --- |")
    for m in d["methods"]:
        row = (f"| {m['method']} | {m['bits_per_dim']:.4f} | {m['neg_elbo_bits_per_dim']:.4f} | {m['overhead_pct']:+.2f}% "
               f"| {1000 * m['compress_s_per_image']:.2f} | {1000 * m['decompress_s_per_image']:.2f} | {m['images_per_s']:.1f} |")
        if other:
            o = other.get(m["method"])
            row += f" {m['compress_s_per_image'] / o['compress_s_per_image']:.1f}x |" if o else " - |"
        print(row + f" {'yes' if m['exact'] else 'NO'} |")
    if d.get("generic"):
        print("\n| generic codec | layout | bits/dim |\n| --- | --- | ---: |")
        for g in d["generic"]:
            if g.get("bits_per_dim") is not None:
                print(f"| {g['codec']} | {g['layout']} | {g['bits_per_dim']:.4f} |")


if __name__ == "__main__":
    main()
