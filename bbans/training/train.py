"""ELBO training and reverse half-asleep refitting of the encoder.

A run lives in a folder: `state.safetensors` (weights + Adam moments), `state.json` (epoch,
history, configuration) written at the end of every epoch, so `--resume` continues from the last
finished epoch; and `model.*` (see bbans.models.checkpoints.save_model) written when the run finishes.
Shuffling and noise are drawn from generators seeded by (seed, epoch), so a resumed run draws
the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bbans.errors import BBANSError
from bbans.io.datasets import binarize_test, dynamic_binarize, is_binary, load_dataset
from bbans.models import checkpoints as ckpt
from bbans.models.architecture import build_model, default_architecture
from bbans.models.base import VAE, bits_per_dim
from bbans.training.calibration import calibrate_latent_scales

EVAL_SEED = 1234  # one fixed reparameterisation noise for every evaluation, so encoders compare fairly
CALIBRATION_IMAGES = 1000  # training images the latent bucket scales are chosen on


# ---- batches ---------------------------------------------------------------------------------

def epoch_generators(seed: int, epoch: int, device="cpu") -> tuple[np.random.RandomState, torch.Generator]:
    rs = np.random.RandomState((seed * 1_000_003 + epoch) % (2**32))
    g = torch.Generator(device=device).manual_seed(seed * 1_000_033 + epoch)
    return rs, g


def prepare_batch(images, idx: np.ndarray, binary: bool, generator=None) -> torch.Tensor:
    """The images at `idx`, on the generator's device (`images`: numpy, or a tensor already there)."""
    device = generator.device if generator is not None else "cpu"
    x = images[torch.as_tensor(idx, device=images.device)] if torch.is_tensor(images) else torch.from_numpy(images[idx])
    x = x.to(device)
    return dynamic_binarize(x, generator) if binary else x


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def mixture_batch(alpha: float, real: torch.Tensor | None, sampler: Callable[[int], torch.Tensor] | None,
                  n_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images of one refit step and their loss weights.

    Real images carry total weight 1 - alpha and model samples total weight alpha, so the loss
    is (1 - alpha) E_data[-ELBO] + alpha E_model[-ELBO]. A part with zero weight is not drawn
    at all: alpha = 0 is ordinary encoder training, alpha = 1 reverse sleep.
    Returns (x, weights, from_model) with from_model a bool mask.
    """
    if not 0.0 <= alpha <= 1.0:
        raise BBANSError(f"alpha must lie in [0, 1], got {alpha}")
    xs, ws, src = [], [], []
    if alpha < 1.0:
        if real is None or len(real) == 0:
            raise BBANSError("alpha < 1 needs real images")
        xs.append(real)
        ws.append(torch.full((len(real),), (1.0 - alpha) / len(real)))
        src.append(torch.zeros(len(real), dtype=torch.bool))
    if alpha > 0.0:
        s = sampler(n_samples)
        xs.append(s)
        ws.append(torch.full((len(s),), alpha / len(s)))
        src.append(torch.ones(len(s), dtype=torch.bool))
    device = xs[0].device
    return torch.cat(xs), torch.cat(ws).to(device), torch.cat(src).to(device)


# ---- evaluation ------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: VAE, images: np.ndarray, batch_size: int = 500, binary_dynamic: bool = False,
             seed: int = EVAL_SEED) -> float:
    """Mean -ELBO in bits/dim over `images` (single-sample, fixed noise)."""
    model.eval()
    device = _device_of(model)
    g = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for lo in range(0, len(images), batch_size):
        x = torch.from_numpy(images[lo : lo + batch_size]).to(device)
        if binary_dynamic:
            x = dynamic_binarize(x, g)
        total += float(model.neg_elbo(x, generator=g).double().sum())
    model.train()
    return bits_per_dim(total / len(images), model.dims(images.shape[1:]))


# ---- optimizer state in safetensors ----------------------------------------------------------

def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    return tensors, sd["param_groups"]


def _load_opt(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict = {}
    for k, v in tensors.items():
        if not k.startswith("opt."):
            continue
        _, idx, name = k.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---- runs ------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    dataset: str
    epochs: int = 100
    lr: float = 3e-4
    batch_size: int = 100
    seed: int = 0
    width: int | None = None
    family: str = "paper"
    # 4: p(x | z1) over the 2x2 sub-images in turn (hierarchical family; see bbans.models.hierarchy)
    pixel_groups: int = 1
    eval_every: int = 10
    architecture: dict = field(default_factory=dict)
    # refit only
    mode: str = "train"  # "train" | "refit"
    base: str | None = None
    alpha: float = 0.0
    denoise_sigma: float = 0.0
    aggregate: bool = False
    # See StepGuard (0: off). A deep hierarchy trained on a GPU blew up without it: one batch's
    # latents ran far out, its loss reached 1e10 bits/dim, and the weights never recovered.
    grad_clip: float = 0.0
    note: str = ""


class StepGuard:
    """Which training steps to take, and where to clip their gradients (`--grad-clip`).

    A step whose loss is not finite is always dropped. With a clip factor > 0, once 50 steps
    have been seen, a step whose loss is over twice the median of the last 200 is dropped (one
    bad sample in a deep chain must not wreck the weights) and gradient norms are clipped at
    the factor times the median of the last 200 norms.
    """

    WINDOW, WARMUP = 200, 50

    def __init__(self, clip: float):
        self.clip = clip
        self.losses: list[float] = []
        self.norms: list[float] = []

    def admit_loss(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return False
        if self.clip > 0 and len(self.losses) >= self.WARMUP and loss > 2.0 * float(np.median(self.losses)):
            return False
        self.losses = self.losses[-(self.WINDOW - 1):] + [loss]
        return True

    def norm_limit(self) -> float:
        if self.clip <= 0 or len(self.norms) < self.WARMUP:
            return math.inf
        return self.clip * float(np.median(self.norms))

    def admit_norm(self, norm: float) -> bool:
        if not math.isfinite(norm):
            return False
        self.norms = self.norms[-(self.WINDOW - 1):] + [norm]
        return True


class Reporter:
    """Rich progress bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, total_epochs: int, steps: int, start_epoch: int, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.steps = steps
        self.progress = None
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                     TimeRemainingColumn(), transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total_epochs * steps, info="",
                                               completed=start_epoch * steps)

    def step(self, epoch: int, loss_bpd: float) -> None:
        if self.progress:
            self.progress.update(self.task, advance=1, description=f"epoch {epoch + 1}", info=f"{loss_bpd:.4f} b/d")

    def epoch(self, line: str) -> None:
        if self.progress:
            self.progress.console.print(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()


def _save_state(out: Path, model: VAE, opt, cfg: TrainConfig, epoch: int, history: list, extra: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt_t, groups = _opt_tensors(opt)
    tensors.update(opt_t)
    ckpt.save_tensors(out / "state.safetensors", tensors)
    rec = {"epoch": epoch, "history": history, "config": asdict(cfg), "param_groups": groups, **extra}
    tmp = out / "state.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(out / "state.json")


def _load_state(out: Path, model: VAE, opt) -> dict:
    rec = json.loads((out / "state.json").read_text())
    tensors = ckpt.load_tensors(out / "state.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_opt(opt, tensors, rec["param_groups"])
    return rec


def _splits(cfg: TrainConfig, data_dir):
    """(train images, selection images, selection split name, test images)."""
    if cfg.dataset == "cifar10":
        return (load_dataset("cifar10", "train-only", data_dir), load_dataset("cifar10", "valid", data_dir),
                "valid", load_dataset("cifar10", "test", data_dir))
    return load_dataset(cfg.dataset, "train", data_dir), None, None, load_dataset(cfg.dataset, "test", data_dir)


def run(cfg: TrainConfig, out: str | Path, data_dir=None, resume: bool = False, progress: bool | None = None,
        max_epochs_this_call: int | None = None, log: Callable[[str], None] | None = None,
        data: tuple | None = None, deadline: float | None = None, device: str = "cpu") -> dict:
    """Train (cfg.mode == "train") or refit the encoder (cfg.mode == "refit") into folder `out`.

    `data` = (train, selection or None, selection name or None, test) uint8 arrays replaces the
    data set on disk (tests, experiments). Returns the run's final metadata when it finished, or
    its state record when it stopped early (max_epochs_this_call), to be continued with resume=True.
    `deadline` (unix time): finish the run early, as if cfg.epochs had been the epochs done, when
    another epoch would end past it; the planned count is kept in the metadata.
    `device` "cuda" trains on a GPU (not bit-reproducible there; compression is, on any device).
    """
    out = Path(out)
    if (out / "state.json").exists() and not resume:
        raise BBANSError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and (out / "state.json").exists():
        # Before anything is built: a model of another shape would not even load the saved weights.
        saved = json.loads((out / "state.json").read_text())["config"]
        default = TrainConfig(dataset=cfg.dataset)  # what a run saved before a field existed had
        for key in ("dataset", "mode", "alpha", "denoise_sigma", "aggregate", "batch_size", "seed", "pixel_groups"):
            if saved.get(key, getattr(default, key)) != getattr(cfg, key):
                raise BBANSError(f"--resume with a different {key} ({getattr(cfg, key)!r} vs saved {saved.get(key)!r})")
    torch.manual_seed(cfg.seed)
    binary = is_binary(cfg.dataset)
    train_x, sel_x, sel_name, test_x = data if data is not None else _splits(cfg, data_dir)

    if cfg.mode == "refit":
        if not cfg.base:
            raise BBANSError("refit needs --base, the folder (or model prefix) of a trained run")
        base_prefix = Path(cfg.base)
        if base_prefix.is_dir():
            base_prefix = base_prefix / "model"
        model, base_meta = ckpt.load_files(base_prefix, "encoder")
        if base_meta.get("dataset") != cfg.dataset:
            raise BBANSError(f"base model was trained on {base_meta.get('dataset')}, not {cfg.dataset}")
        model.train()
        for p in model.decoder.parameters():
            p.requires_grad_(False)
        params = list(model.encoder.parameters())
        cfg.architecture = model.architecture()
        cfg.family = (base_meta.get("recipe") or {}).get("family", cfg.family)
    else:
        base_meta = None
        cfg.architecture = cfg.architecture or default_architecture(cfg.dataset, cfg.width, cfg.family, cfg.pixel_groups)
        model = build_model(cfg.architecture)
        params = list(model.parameters())
    out.mkdir(parents=True, exist_ok=True)  # only once data and model are there: no empty run folders
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BBANSError("--device cuda: no CUDA device is visible")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model.to(dev)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    # The training set lives on the device once, rather than crossing the bus every step.
    train_src = torch.from_numpy(train_x).to(dev) if dev.type == "cuda" else train_x

    start, history, best = 0, [], {"sel_bpd": math.inf, "epoch": None}
    guard = StepGuard(cfg.grad_clip)
    if resume and (out / "state.json").exists():
        rec = _load_state(out, model, opt)
        start, history, best = rec["epoch"], rec["history"], rec.get("best", best)
        # The --lr given now wins over the saved one (a step decay by hand); each epoch's entry
        # in the history says which rate it ran at.
        for group in opt.param_groups:
            group["lr"] = cfg.lr
    dims = model.dims()
    n = len(train_x)
    steps = n // cfg.batch_size
    say = log or (lambda s: None)
    rep = Reporter(cfg.epochs, steps, start, progress)
    t_start = time.time()
    stop_at = cfg.epochs if max_epochs_this_call is None else min(cfg.epochs, start + max_epochs_this_call)
    try:
        for epoch in range(start, stop_at):
            rs, g = epoch_generators(cfg.seed, epoch, dev)
            perm = rs.permutation(n)
            t0 = time.time()
            run_loss, skipped, clipped = 0.0, 0, 0
            for s in range(steps):
                idx = np.sort(perm[s * cfg.batch_size : (s + 1) * cfg.batch_size])
                x = prepare_batch(train_src, idx, binary, g)
                if cfg.mode == "train":
                    loss_vec = model.neg_elbo(x, generator=g)
                    loss = loss_vec.mean()
                else:
                    loss = _refit_loss(model, cfg, x, train_src, rs, g, binary)
                opt.zero_grad(set_to_none=True)
                lb = float(loss.detach()) / (dims * math.log(2))
                if not guard.admit_loss(lb):
                    skipped += 1
                    continue
                loss.backward()
                if cfg.grad_clip > 0:
                    limit = guard.norm_limit()
                    norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
                    if not guard.admit_norm(norm):
                        skipped += 1
                        continue
                    clipped += norm > limit
                opt.step()
                run_loss += lb
                rep.step(epoch, lb)
            ep = epoch + 1
            entry = {"epoch": ep, "loss_bpd": run_loss / max(1, steps - skipped), "seconds": round(time.time() - t0, 2),
                     "lr": cfg.lr}
            if skipped:
                entry["skipped_steps"] = skipped
            if clipped:
                entry["clipped_steps"] = clipped
            do_eval = ep % cfg.eval_every == 0 or ep == cfg.epochs
            if sel_x is not None and (do_eval or cfg.dataset == "cifar10"):
                entry[f"{sel_name}_bpd"] = evaluate(model, sel_x)
                if entry[f"{sel_name}_bpd"] < best["sel_bpd"]:
                    best = {"sel_bpd": entry[f"{sel_name}_bpd"], "epoch": ep}
                    ckpt.save_model(model, out / "best", {"dataset": cfg.dataset, "epochs": ep,
                                                           f"{sel_name}_bits_per_dim": entry[f"{sel_name}_bpd"]})
            if do_eval:
                entry["test_bpd"] = evaluate(model, test_x)
            history.append(entry)
            msg = f"epoch {ep}/{cfg.epochs} loss {entry['loss_bpd']:.4f} b/d ({entry['seconds']:.1f} s)"
            for k in ("valid_bpd", "test_bpd"):
                if k in entry:
                    msg += f" {k[:-4]} {entry[k]:.4f}"
            rep.epoch(msg)
            say(msg)
            _save_state(out, model, opt, cfg, ep, history, {"best": best})
            if deadline is not None and ep < cfg.epochs and time.time() + entry["seconds"] > deadline:
                cfg.note = (cfg.note + " " if cfg.note else "") + f"stopped at the time limit after {ep} of {cfg.epochs} planned epochs"
                cfg.epochs = ep
                stop_at = ep
                if not do_eval:
                    entry["test_bpd"] = evaluate(model, test_x)
                _save_state(out, model, opt, cfg, ep, history, {"best": best})
                break
    finally:
        rep.close()
    if stop_at < cfg.epochs:
        return json.loads((out / "state.json").read_text())
    return finish(model, cfg, out, history, train_x, test_x, binary, base_meta, best, time.time() - t_start)


def _refit_loss(model: VAE, cfg: TrainConfig, real: torch.Tensor, train_x, rs, g, binary: bool):
    # The batch keeps its size: round(alpha * bs) of its slots go to the second part, so a refit
    # epoch (len(train) / bs steps) costs what an ordinary epoch costs and the alpha = 0 control
    # takes exactly as many steps of the same size.
    bs = len(real)
    n_second = int(round(cfg.alpha * bs))
    if cfg.alpha > 0:
        n_second = min(max(n_second, 1), bs)
    if cfg.alpha < 1:
        n_second = min(n_second, bs - 1)
    n_real = bs - n_second
    if cfg.denoise_sigma > 0:
        # Denoising-encoder regulariser: clean images with weight 1 - alpha, and images with
        # Gaussian noise on the encoder's input (target still the clean image) with weight alpha.
        clean = model.neg_elbo(real[:n_real], generator=g).mean() if n_real else 0.0
        noisy = model.neg_elbo(real[n_real:], generator=g, noise_std=cfg.denoise_sigma).mean() if n_second else 0.0
        return (1 - cfg.alpha) * clean + cfg.alpha * noisy

    def sampler(k: int) -> torch.Tensor:
        with torch.no_grad():
            if cfg.aggregate:
                # Latents from the aggregate posterior: q(z|x) of random training images.
                src = prepare_batch(train_x, np.sort(rs.randint(0, len(train_x), size=k)), binary, g)
                mu, std = model.encode(src)
                z = mu + std * torch.randn(mu.shape, generator=g, device=mu.device)
            else:
                z = model.sample_prior(k, generator=g, device=g.device)
            return model.sample_x(model.decode(z), generator=g)

    x, w, _ = mixture_batch(cfg.alpha, real[:n_real], sampler, n_second)
    return (w * model.neg_elbo(x, generator=g)).sum()


def finish(model: VAE, cfg: TrainConfig, out: Path, history: list, train_x, test_x, binary: bool,
           base_meta: dict | None, best: dict, seconds: float) -> dict:
    model.eval()
    meta = {
        "dataset": cfg.dataset,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("architecture", "eval_every")},
        "train_bits_per_dim": evaluate(model, train_x, binary_dynamic=binary),
        "test_bits_per_dim": evaluate(model, test_x),
        "test_images": int(len(test_x)),
        "eval": f"single-sample -ELBO, fixed noise seed {EVAL_SEED}",
        "history": history,
    }
    if cfg.dataset == "cifar10":
        meta["best_valid"] = best
        meta["test_note"] = f"first {len(test_x)} CIFAR-10 test images (partial test set)"
    if base_meta is not None:
        meta["base"] = {k: base_meta.get(k) for k in ("hash", "epochs", "test_bits_per_dim", "train_bits_per_dim", "recipe")}
    if cfg.mode == "train" and model.latent_layers > 1:
        # Last: it runs on the coder's device (the CPU), and the -ELBOs above do not depend on it.
        calibrate_latent_scales(model, calibration_images(train_x, binary))
    model.cpu()
    return ckpt.save_model(model, out / "model", meta)


def calibration_images(train_x, binary: bool) -> np.ndarray:
    """The images latent bucket scales are chosen on: the first training images, binarized (as
    the test set is) for a binary data set."""
    x = np.ascontiguousarray(train_x[:CALIBRATION_IMAGES])
    return binarize_test(x) if binary else x
