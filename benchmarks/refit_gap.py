"""The amortization gap on over-fitted VAEs, and what refitting the encoder does about it (issue 21).

The experiment of the seed paper (Zhang, Hayes, Barber 2022), scaled to a CPU: a VAE trained on a
small part of the training set for long enough to over-fit, then, at several points of its
training, the test cost with

- the amortized encoder trained with the decoder ("amortized"),
- that encoder refitted with the decoder frozen on half real images, half model samples
  (reverse half-asleep, alpha 0.5: `bbans refit --alpha 0.5`, "refit"),
- the same number of encoder steps on real images only (alpha 0, "control"),
- K steps of optimal inference from the amortized encoder (the engine's K-step posterior, as
  `bbans compress --K` runs it), K = 1..50.

Every test figure is the codec's own estimate (bbans.coding.engine.estimate_bits: the -ELBO with
each latent on its buckets, as coding would pay it, without the message's fixed costs), in
bits/dim on the first --test-images test images; "train" and "test (continuous)" are the usual
single-sample -ELBO (fixed noise) on the training subset and the same test images. Binarized
training subsets are binarized once (a fixed draw), not afresh each epoch, so that a small set
can be memorised as a user's files would be.

    python benchmarks/refit_gap.py --dataset binary-mnist --sizes 1000 5000 60000 --out runs/refit-gap
    python benchmarks/refit_gap.py --dataset binary-mnist --family hierarchical --sizes 1000 --milestones 100 300 --out runs/refit-gap
    python benchmarks/refit_gap.py --report runs/refit-gap     # table and plots from what is done

Each step's result is kept in <out>/<dataset>-<family>/results.json and each run folder is kept,
so a stopped experiment continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.coding.engine import EngineConfig, default_lr, estimate_bits  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402
from bbans.models import checkpoints as ckpt  # noqa: E402
from bbans.training.train import TrainConfig, evaluate, run  # noqa: E402

KS = (1, 2, 5, 10, 20, 50)
# Milestones (epochs) per training-set size when none are given: about the same number of steps
# for every size, with the small sets far past the point where they start to over-fit.
DEFAULT_MILESTONES = {1000: (30, 100, 300, 1000), 5000: (10, 30, 100, 300), 60000: (3, 10, 30, 60)}


def subset(dataset: str, n: int, data_dir) -> np.ndarray:
    """The first n of a fixed permutation of the training set; binarized once for binary-mnist
    (as 0/255, which the trainer's Bernoulli(x/255) then leaves as it is)."""
    train = load_dataset(dataset, "train", data_dir)
    idx = np.sort(np.random.RandomState(21).permutation(len(train))[:n])
    x = np.ascontiguousarray(train[idx])
    if dataset == "binary-mnist":
        x = (np.random.RandomState(2021).random_sample(x.shape) < x / 255.0).astype(np.uint8) * 255
    return x


def bits(model, x, K: int, lr: float) -> float:
    cfg = EngineConfig(K=K, lr=lr, threads=1, arithmetic="float", dtype="float32")
    return float(estimate_bits(model, x, cfg).mean()) / model.dims(x.shape[1:])


def train_bits(model, x_train, binary: bool) -> float:
    return evaluate(model, x_train, binary_dynamic=binary)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="binary-mnist", choices=("binary-mnist", "mnist"))
    ap.add_argument("--family", default="paper", choices=("paper", "hierarchical"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 60000])
    ap.add_argument("--milestones", type=int, nargs="+", default=None, help="epochs (default: per size)")
    ap.add_argument("--refit-steps", type=int, default=3000, help="encoder steps of refit and of control")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS), help="K-step counts to measure")
    ap.add_argument("--kstep-lr", type=float, default=None, help="default: the engine's for the model")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/refit-gap")
    ap.add_argument("--report", default=None, help="only print tables and draw plots from this folder")
    a = ap.parse_args()
    if a.report:
        return report(Path(a.report))
    torch.set_num_threads(1)
    root = Path(a.out) / f"{a.dataset}-{a.family}"
    root.mkdir(parents=True, exist_ok=True)
    res_path = root / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}

    def save():
        res_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")

    binary = a.dataset == "binary-mnist"
    test = np.ascontiguousarray(load_dataset(a.dataset, "test", a.data_dir)[: a.test_images])
    for n in a.sizes:
        x_train = subset(a.dataset, n, a.data_dir)
        data = (x_train, None, None, test)
        steps_per_epoch = n // 100
        base_dir = root / f"n{n}" / "base"
        for ep in a.milestones or DEFAULT_MILESTONES[n]:
            key = f"n{n}/e{ep}"
            rec = results.get(key, {})
            snap = root / f"n{n}" / f"e{ep}"
            if not (snap / "model.json").exists():
                cfg = TrainConfig(dataset=a.dataset, epochs=ep, family=a.family, eval_every=10**9)
                run(cfg, base_dir, data=data, resume=True, progress=False)
                snap.mkdir(parents=True, exist_ok=True)
                for f in base_dir.glob("model.*"):
                    shutil.copy(f, snap / f.name)
            model, _ = ckpt.load_files(snap / "model")
            lr = a.kstep_lr or default_lr(model)
            if "train" not in rec:
                rec["train"] = train_bits(model, x_train, binary)
                rec["test_continuous"] = evaluate(model, test)
                rec["amortized"] = bits(model, test, 0, lr)
                rec["epochs"], rec["n"], rec["steps"] = ep, n, ep * steps_per_epoch
                results[key] = rec
                save()
            if "kstep" not in rec:
                rec["kstep_lr"] = lr
                rec["kstep"] = {str(k): bits(model, test, k, lr) for k in a.ks}
                save()
            for name, alpha in (("refit", a.alpha), ("control", 0.0)):
                if name in rec:
                    continue
                rdir = root / f"n{n}" / f"e{ep}-{name}"
                epochs = max(1, round(a.refit_steps / steps_per_epoch))
                cfg = TrainConfig(dataset=a.dataset, epochs=epochs, mode="refit", base=str(snap / "model"),
                                  alpha=alpha, eval_every=10**9)
                run(cfg, rdir, data=data, resume=True, progress=False)
                m, _ = ckpt.load_files(rdir / "model")
                rec[name] = bits(m, test, 0, lr)
                rec[name + "_steps"] = epochs * steps_per_epoch
                if name == "refit":
                    rec["refit_kstep"] = {str(max(a.ks)): bits(m, test, max(a.ks), lr)}
                save()
            print(json.dumps({key: rec}), flush=True)
    report(Path(a.out))


def _rows(res: dict):
    return sorted(((v["n"], v["epochs"], v) for k, v in res.items() if not k.startswith("_") and "amortized" in v),
                  key=lambda t: (t[0], t[1]))


def report(out: Path) -> None:
    for res_path in sorted(out.glob("*/results.json")):
        res = json.loads(res_path.read_text())
        name = res_path.parent.name
        print(f"\n### {name}: test bits/dim (codec estimate) on the held-out test images\n")
        print("| training images | epochs | train -ELBO | test -ELBO | gap | amortized | refit | control "
              "| K=1 | K=5 | K=20 | K=50 | refit + K steps |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n, ep, v in _rows(res):
            k = v.get("kstep", {})
            cells = [f"{n:,}", str(ep), f"{v['train']:.4f}", f"{v['test_continuous']:.4f}",
                     f"{v['test_continuous'] - v['train']:.4f}", f"{v['amortized']:.4f}"]
            best = min(x for x in (v.get("refit"), v.get("control"), v["amortized"]) if x is not None)
            for c in ("refit", "control"):
                x = v.get(c)
                cells.append("" if x is None else (f"**{x:.4f}**" if x == best else f"{x:.4f}"))
            cells += [f"{k[s]:.4f}" if s in k else "" for s in ("1", "5", "20", "50")]
            cells.append("".join(f"{x:.4f} (K={s})" for s, x in v.get("refit_kstep", {}).items()))
            print("| " + " | ".join(cells) + " |")
        plot(res, out / f"{name}.png", name)


def plot(res: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    rows = _rows(res)
    sizes = sorted({n for n, _, _ in rows})
    if not sizes:
        return
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        r = [(ep, v) for m, ep, v in rows if m == n]
        eps = [ep for ep, _ in r]
        kmax = str(max((int(k) for _, v in r for k in v.get("kstep", {})), default=0))
        series = [("train -ELBO", lambda v: v["train"], "k:"),
                  ("test, amortized", lambda v: v["amortized"], "C0o-"),
                  ("test, refit a=0.5", lambda v: v.get("refit"), "C1s-"),
                  ("test, control a=0", lambda v: v.get("control"), "C2^-"),
                  (f"test, K={kmax} steps", lambda v: v.get("kstep", {}).get(kmax), "C3d--")]
        for label, f, style in series:
            pts = [(e, f(v)) for e, (_, v) in zip(eps, r) if f(v) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        ax.set_xscale("log")
        ax.set_xticks(eps, [str(e) for e in eps])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training epochs")
        ax.set_title(f"{title}: {n:,} training images", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("bits/dim")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
