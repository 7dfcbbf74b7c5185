"""How each hierarchical model's latents are coded: which channels to leave uncoded, and how
many buckets a latent gets. Both decide how many bits a batch must borrow before it can push its
images (bbans.coding.engine), so how large the batches can be, and how large each latent's table is.

Collapsed channels: a channel whose posterior is its prior for every image nets about nothing,
yet the coder pops it (prior_prec bits a latent) before it can push the image. Left uncoded, it
holds the bucket at 0 in every image, on both ends. On the first --choose test images: per
channel, the bits its pop draws and the bits it nets (its prior push less its posterior pop),
each bucket drawn from the compressor's posterior as `estimate_bits` draws them. The candidates
are the channels whose pop draws within --max-gap bits a latent of prior_prec (a posterior as
wide as the prior: it tells nothing of the image) and that net under --max-net bits an image
either way.

Latent precision: with the candidates uncoded, the coded estimate at each of --precs bits a
latent; the choice is the fewest bits whose estimate is at most --max-rise above coding every
channel at 8 bits (EngineConfig's default).

Both are judged on the next --report test images (no part in choosing the channels). --write
records them in models/NAME.json ("collapsed_latents", "latent_prec").

    python benchmarks/latent_coding.py --data-dir ../shared/data
    python benchmarks/latent_coding.py --models binary-mnist-hier --write
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.coding.engine import EngineConfig, Session, deterministic, estimate_bits  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.models import checkpoints, registry  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def _bucket_log2_mass(edges, idx, mu, std) -> torch.Tensor:
    lo = torch.special.ndtr((edges[idx] - mu) / std)
    hi = torch.special.ndtr((edges[idx + 1] - mu) / std)
    return torch.log2(torch.clamp(hi - lo, min=2.0 ** -20))


@torch.no_grad()
def channel_bits(model, x: np.ndarray, config: EngineConfig, seed: int = 0) -> list[dict]:
    """Per layer, per channel, the mean bits an image's pop draws and nets, up the chain."""
    g = torch.Generator().manual_seed(seed)
    out = []
    with deterministic(config):
        s = Session(model, config)
        below = torch.as_tensor(x)
        prev = None
        for layer in range(s.layers):
            mu, std = s.posterior(layer, below, 0, config.K)
            mu, std = mu.double(), std.double()
            edges = s.edges[layer]
            t = torch.searchsorted(edges, (mu + std * torch.randn(mu.shape, generator=g, dtype=torch.float64)).contiguous(),
                                   right=True) - 1
            idx = t.clamp(0, edges.numel() - 2)
            pop = -_bucket_log2_mass(edges, idx, mu, std)
            z = s.latents(layer, idx.numpy(), mu.shape)
            if prev is not None:
                pm, ps = s.conditional_prior(layer - 1, z)
                p_edges, p_idx, p_pop = prev
                push = -_bucket_log2_mass(p_edges, p_idx, pm.double(), ps.double())
                out[-1]["net"] = (push - p_pop).mean(0).flatten(1).sum(1).tolist()
            out.append({"pop": pop.mean(0).flatten(1).sum(1).tolist(), "dims": int(np.prod(mu.shape[2:]))})
            prev = (edges, idx, pop)
            below = z
        top = out[-1]
        top["net"] = [top["dims"] * config.prior_prec - p for p in top["pop"]]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hier = [m.name for m in registry.MODELS if m.family == "hierarchical"]
    ap.add_argument("--models", nargs="+", default=hier)
    ap.add_argument("--choose", type=int, default=300, help="test images the channels are chosen on")
    ap.add_argument("--report", type=int, default=700, help="the test images after those, reported on")
    ap.add_argument("--max-net", type=float, default=0.5, help="bits an image a candidate channel may net")
    ap.add_argument("--max-gap", type=float, default=0.4, help="bits a latent a candidate's pop may fall short of prior_prec")
    ap.add_argument("--precs", type=int, nargs="+", default=[5, 6, 7, 8], help="bits a latent to try")
    ap.add_argument("--max-rise", type=float, default=0.001,
                    help="share the coded estimate may rise by, against every channel coded at 8 bits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--write", action="store_true", help="record the choice in models/NAME.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    result = {}
    for name in a.models:
        t0 = time.time()
        model, meta = checkpoints.load_model(name, "auto")
        x = load_dataset(registry.spec(name).dataset, "test", a.data_dir)
        choose, report = x[: a.choose], x[a.choose : a.choose + a.report]
        base = EngineConfig(threads=2, arithmetic="float", dtype="float32")
        per = channel_bits(model, choose, base)
        candidates = [(layer, c) for layer, d in enumerate(per) for c, (pop, net) in enumerate(zip(d["pop"], d["net"]))
                      if abs(net) < a.max_net and pop / d["dims"] >= base.prior_prec - a.max_gap]
        dims = model.dims(x.shape[1:])

        def estimate(**kw) -> float:
            return float(estimate_bits(model, report, EngineConfig(**{**base.to_dict(), **kw})).mean())

        full = estimate()
        cut = estimate(collapsed=candidates)
        pop_all = sum(sum(d["pop"]) for d in per)
        pop_cut = pop_all - sum(per[layer]["pop"][c] for layer, c in candidates)
        precs = {}
        for prec in sorted(a.precs):
            cfg = EngineConfig(**{**base.to_dict(), "prior_prec": prec, "collapsed": candidates})
            pops = channel_bits(model, choose, cfg)
            precs[prec] = {"bits": estimate(prior_prec=prec, collapsed=candidates),
                           "pop_bits": sum(p for layer, d in enumerate(pops) for c, p in enumerate(d["pop"])
                                           if (layer, c) not in candidates)}
        fit = [p for p in sorted(precs) if precs[p]["bits"] <= (1 + a.max_rise) * full]
        prec = fit[0] if fit else base.prior_prec
        rec = {"channels": per, "candidates": candidates, "bits_all_coded": full, "bits_candidates_uncoded": cut,
               "bpd_all_coded": full / dims, "bpd_candidates_uncoded": cut / dims, "rise": cut / full - 1,
               "pop_bits_all_coded": pop_all, "pop_bits_candidates_uncoded": pop_cut, "precisions": precs,
               "latent_prec": prec, "choose": a.choose, "report": len(report), "encoder": meta["encoder"],
               "seconds": time.time() - t0}
        result[name] = rec
        span = f"test images {a.choose}-{a.choose + len(report) - 1}"
        print(f"{name} ({meta['encoder']} encoder)")
        for layer, d in enumerate(per):
            row = "  ".join(f"{c}:{p:6.0f}/{n:+7.2f}" for c, (p, n) in enumerate(zip(d["pop"], d["net"])))
            print(f"  layer {layer} channels (pop/net bits an image): {row}")
        print(f"  candidates (|net| < {a.max_net} bits an image, pops within {a.max_gap} bits a latent of "
              f"{base.prior_prec}): {candidates}")
        print(f"  {span}: coded estimate {full / dims:.5f} -> {cut / dims:.5f} bits/dim "
              f"({100 * (cut / full - 1):+.3f}%); pops draw {pop_all:.0f} -> {pop_cut:.0f} bits an image")
        for p, r in precs.items():
            print(f"  {p} bits a latent: {r['bits'] / dims:.5f} bits/dim ({100 * (r['bits'] / full - 1):+.3f}% "
                  f"on every channel at 8 bits); pops draw {r['pop_bits']:.0f} bits an image")
        print(f"  chosen: {prec} bits a latent")
        if a.write:
            path = MODELS_DIR / f"{name}.json"
            doc = json.loads(path.read_text())
            for key in ("collapsed_latents", "collapsed_latents_note", "latent_prec", "latent_coding_note"):
                doc.pop(key, None)
            if candidates:
                doc["collapsed_latents"] = [list(p) for p in candidates]
            if prec != base.prior_prec:
                doc["latent_prec"] = prec
            chosen = precs.get(prec, {"bits": cut, "pop_bits": pop_cut})
            doc["latent_coding_note"] = (
                f"chosen by benchmarks/latent_coding.py: uncoded, the channels netting under {a.max_net} bits an "
                f"image whose pops draw within {a.max_gap} bits a latent of 8 on test images 0-{a.choose - 1}; "
                f"{prec} bits a latent, the fewest within {100 * a.max_rise:.1f}% of coding every channel at 8. "
                f"On {span}: {full / dims:.5f} -> {chosen['bits'] / dims:.5f} bits/dim, pops {pop_all:.0f} -> "
                f"{chosen['pop_bits']:.0f} bits an image")
            path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            print(f"  recorded in {path}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
