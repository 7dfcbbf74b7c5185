"""`bbans train` and `bbans refit`."""

from __future__ import annotations

import click

from bbans.io.datasets import DATASETS


def _deadline(minutes):
    import time

    return None if minutes is None else time.time() + 60.0 * minutes


def _threads(n: int) -> None:
    import torch

    # Training shares a small machine; one thread per process keeps runs from starving each other.
    torch.set_num_threads(n)


@click.command("train")
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=None, help="Adam learning rate [3e-4; cifar10 5e-4]")
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--width", type=int, default=None, help="hidden units (MLP, 500) or channels (ResNet, 64)")
@click.option("--family", type=click.Choice(["paper", "hierarchical"]), default="paper", show_default=True,
              help="the paper's single-latent model, or the three-layer convolutional hierarchy")
@click.option("--pixel-groups", type=click.Choice(["1", "4"]), default="1", show_default=True,
              help="hierarchical family: 4 codes the 2x2 sub-images in turn, each given the ones before")
@click.option("--eval-every", type=int, default=10, show_default=True, help="epochs between test evaluations")
@click.option("--grad-clip", type=float, default=0.0, show_default=True,
              help="clip gradient norms at this multiple of the recent median (0: off)")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="run folder")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--resume", is_flag=True, help="continue the run in --out from its last finished epoch")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="where to train (a GPU run is not bit-reproducible; the model it makes codes identically anywhere)")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--max-epochs-this-call", type=int, default=None, help="stop after this many epochs (resume later)")
@click.option("--time-limit", type=float, default=None,
              help="minutes: finish the run with the epochs done so far when another epoch would overrun")
def train_cmd(dataset, epochs, lr, batch_size, seed, width, family, pixel_groups, eval_every, grad_clip, out, data_dir, resume, device,
              threads, max_epochs_this_call, time_limit):
    """Train a VAE by maximising the ELBO with Adam."""
    from bbans.training.train import TrainConfig, run

    _threads(threads)
    if lr is None:
        lr = 5e-4 if dataset == "cifar10" else 3e-4
    cfg = TrainConfig(dataset=dataset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, width=width,
                      family=family, pixel_groups=int(pixel_groups), eval_every=eval_every, grad_clip=grad_clip)
    meta = run(cfg, out, data_dir=data_dir, resume=resume, max_epochs_this_call=max_epochs_this_call,
               deadline=_deadline(time_limit), device=device)
    if "test_bits_per_dim" in meta:
        click.echo(f"done: test {meta['test_bits_per_dim']:.4f} bits/dim, train {meta['train_bits_per_dim']:.4f}")
    else:
        click.echo(f"stopped after epoch {meta['epoch']}; continue with --resume")


@click.command("refit")
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option("--base", type=click.Path(), required=True, help="run folder of the trained VAE")
@click.option("--alpha", type=float, default=0.5, show_default=True,
              help="weight of model samples (0: ordinary encoder training, 1: reverse sleep)")
@click.option("--denoise-sigma", type=float, default=0.0, show_default=True,
              help="instead of model samples, mix in the real images with N(0, sigma^2) noise on the "
                   "encoder input ([0, 1] intensity scale), weight alpha")
@click.option("--aggregate", is_flag=True, help="latents of model samples from q(z|x) of training images, not the prior")
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=10, show_default=True)
@click.option("--out", "out", type=click.Path(file_okay=False), required=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--resume", is_flag=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="where to train (a GPU run is not bit-reproducible; the model it makes codes identically anywhere)")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--max-epochs-this-call", type=int, default=None)
@click.option("--time-limit", type=float, default=None, help="minutes (see bbans train)")
def refit_cmd(dataset, base, alpha, denoise_sigma, aggregate, epochs, lr, batch_size, seed, eval_every, out, data_dir,
              resume, device, threads, max_epochs_this_call, time_limit):
    """Refit the encoder with the decoder frozen (reverse half-asleep).

    It pays on a model that has over-fitted its training images: with a train/test -ELBO gap of
    0.03 bits/dim or more, a few thousand steps at alpha 0.5 saved 3-23% of the coded size on
    new images where the same steps at alpha 0 (the control) saved nothing; on a model without
    that gap both gain only what extra encoder training gives (benchmarks/RESULTS.md, "When
    refitting the encoder pays"). Compare with a control run (--alpha 0) before bundling.
    """
    from bbans.training.train import TrainConfig, run

    _threads(threads)
    cfg = TrainConfig(dataset=dataset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, eval_every=eval_every,
                      mode="refit", base=str(base), alpha=alpha, denoise_sigma=denoise_sigma, aggregate=aggregate)
    meta = run(cfg, out, data_dir=data_dir, resume=resume, max_epochs_this_call=max_epochs_this_call,
               deadline=_deadline(time_limit), device=device)
    if "test_bits_per_dim" in meta:
        click.echo(f"done: test {meta['test_bits_per_dim']:.4f} bits/dim (base {meta['base']['test_bits_per_dim']:.4f})")
    else:
        click.echo(f"stopped after epoch {meta['epoch']}; continue with --resume")
