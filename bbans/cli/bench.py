"""`bbans bench`: load a test set and the bundled models, hand them to bbans.bench."""

from __future__ import annotations

import sys

import click

# bbans.bench imports torch only when it codes, so --help stays quick.
from bbans import bench as _bench
from bbans.cli import signals
from bbans.cli.help import epilog
from bbans.errors import BBANSError

STDOUT = "-"


class _Progress:
    """Rich bars on stderr, one per stage with the time it has left, under one for the whole run;
    a no-op when disabled (quiet, or stderr is not a terminal)."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.tasks: dict[str, int] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, label: str, done, total) -> None:
        signals.check()
        if self.bar is None:
            return
        if label not in self.tasks:
            # The whole run's bar counts stages, so its time left is rough; each stage's is not.
            text = f"[bold]{label}[/]" if label == _bench.OVERALL else label
            self.tasks[label] = self.bar.add_task(text, total=total)
        self.bar.update(self.tasks[label], completed=done, total=total)


def _load_models(name: str, dataset: str, device: str, same_dataset: bool):
    """{encoder: VAE}, {encoder: meta}, {encoder: why it did not load} of one bundled model."""
    from bbans.models import checkpoints

    models, meta, skipped = {}, {}, {}
    for enc in ("baseline", "refit"):
        try:
            model, m = checkpoints.load_model(name, encoder=enc, device=device)
            if same_dataset and m.get("dataset", dataset) != dataset:
                raise BBANSError(f"model {name} was trained on {m.get('dataset')}, not {dataset}")
            models[enc], meta[enc] = model, m
        except BBANSError as exc:
            if not models and enc == "refit":
                raise
            skipped[enc] = str(exc)
    if not models:
        raise BBANSError(f"no bundled {name} model could be loaded: {skipped.get('baseline')}")
    return models, meta, skipped


def _argv(settings: dict, dataset, json_path, plot_path, quiet) -> list[str]:
    """The command line as typed; rebuilt from the options when run inside another program (tests)."""
    from pathlib import Path

    prog = Path(sys.argv[0])
    if prog.name == "bbans" or (prog.name == "__main__.py" and prog.parent.name == "bbans"):
        return ["bbans"] + sys.argv[1:]
    out = ["bbans", "bench", "--dataset", dataset, "--K", ",".join(map(str, settings["K"]))]
    if not settings["default_models"]:
        out += ["--model", ",".join(settings["models"])]
    out += ["--limit", str(settings["limit"] or 0)]
    for opt, key in (("--device", "device"), ("--batch-size", "batch_size"),
                     ("--lanes", "lanes"), ("--threads", "threads"), ("--data-dir", "data_dir")):
        if settings.get(key) is not None:
            out += [opt, str(settings[key])]
    out += [] if settings["generic"] else ["--no-generic"]
    out += (["--json"] if json_path == STDOUT else ["--json", json_path]) if json_path else []
    out += ["--plot", plot_path] if plot_path else []
    return out + (["-q"] if quiet else [])


def _models_option(ctx, param, values):
    try:
        return _bench.parse_model_list(values)
    except BBANSError as exc:
        raise click.BadParameter(str(exc)) from None


def _k_option(ctx, param, value):
    try:
        return _bench.parse_k_list(value)
    except BBANSError as exc:
        raise click.BadParameter(str(exc)) from None


_LIMITS = ", ".join(f"{d} {n}" for d, n in _bench.DEFAULT_LIMIT.items())


@click.command("bench", epilog=epilog(f"""\b
Examples:
  bbans bench --dataset mnist             the default run: a few minutes
  bbans bench --dataset cifar10 --all --json cifar10.json --plot cifar10.png
  bbans bench --dataset binary-mnist --json | jq .summary
  bbans bench --dataset mnist --model mnist-hier --K 0,2,10 --no-generic
  bbans bench --dataset cifar10 --limit 50 --threads 1 -q

\b
By default: the first test images ({_LIMITS}),
coded with the model `bbans compress` picks for them (--model auto),
marked (default), and beside it the data set's single-latent (paper)
model, each with its baseline and refit encoders at K = {",".join(map(str, _bench.DEFAULT_K))}. The row
`bbans compress` gives with no options is the default model's refit at
K = 0. Every figure is compressed for real and decoded back.

\b
For bench, exit code 1 is also a missing data set (--data-dir,
$BBANS_DATA, ~/.cache/bbans) or a --model trained on another data set;
4 is a round trip (ours or a generic codec's) that did not give back
the images, reported after the tables."""))
@click.option("--dataset", required=True, type=click.Choice(["binary-mnist", "mnist", "cifar10"]),
              help="Test set to code.")
@click.option("--model", "model_names", multiple=True, metavar="NAME[,NAME]", callback=_models_option,
              help="Bundled model(s) to code it with (`bbans models`); repeat or comma-separate. "
                   "[default: the one `bbans compress --model auto` picks for the images, then the data set's "
                   "single-latent (paper) model]")
@click.option("--K", "ks", default=",".join(map(str, _bench.DEFAULT_K)), show_default=True, metavar="LIST",
              callback=_k_option,
              help="Comma-separated optimal-inference step counts; 0 gives the amortized encoders.")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help=f"Only the first N test images; 0: all of them. [default: {_LIMITS}]")
@click.option("--all", "all_images", is_flag=True, help="Every test image (--limit 0).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per engine batch.")
@click.option("--lanes", type=click.IntRange(min=1), default=128, show_default=True,
              help="Interleaved rANS lanes of the message.")
@click.option("-T", "--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of the engine's arithmetic (default: the engine's). One thread gives "
                   "steadier timings on a shared machine.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), is_flag=False,
              flag_value=STDOUT, default=None, metavar="[FILE]",
              help="Every figure, the machine and the settings as JSON: alone, on standard output (and "
                   "nothing else there); with FILE (- for standard output), written to FILE.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a two-panel PNG: bits/dim against K, and against time per image.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding mnist/ or cifar-10-batches-py/ (else $BBANS_DATA, ~/.cache/bbans).")
@click.option("--generic/--no-generic", default=True, show_default=True,
              help="Also measure PNG, WebP, JPEG-XL, JPEG-LS, JPEG 2000, zstd, xz and bzip2.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def bench_cmd(dataset, model_names, ks, limit, all_images, device, batch_size, lanes, threads, json_path, plot_path,
              data_dir, generic, quiet):
    """Coded bits/dim and speed of the BB-ANS methods beside generic lossless codecs.

    For each model: the baseline and refit encoders (K = 0) and K-step optimal inference from
    each, every one compressed for real and decompressed back to check the round trip.
    """
    from rich.console import Console

    from bbans.coding.engine import resolve_device
    from bbans.io.datasets import is_binary, load_dataset
    from bbans.models import catalog

    if all_images and limit:
        raise click.UsageError("--all and --limit N contradict each other (--limit 0 is --all)")
    if limit is None and not all_images:
        limit = _bench.DEFAULT_LIMIT[dataset]
    limit = None if all_images or limit == 0 else limit
    dev = resolve_device(device)
    images = load_dataset(dataset, "test", data_dir)
    available = len(images)
    if limit is not None:
        images = images[:limit]

    bundled = catalog.by_name()
    chosen = list(model_names) or _bench.default_models(dataset, bundled)
    try:
        default_model = _bench.auto_model(dataset, bundled)
    except BBANSError:
        default_model = None  # nothing bundled codes these images: the named models say why
    models, meta, skipped = {}, {}, {}
    for name in chosen:
        # A model named by the user must have learnt on this data set; the defaults are those
        # `bbans compress` would use on these images.
        models[name], meta[name], skipped[name] = _load_models(name, dataset, dev, same_dataset=bool(model_names))

    engine_kwargs = {"batch_size": batch_size, "lanes": lanes, "device": dev}
    if threads is not None:
        engine_kwargs["threads"] = threads
    # "model" (the names, comma-separated) is schema 1's key, kept for scripts that read it.
    settings = {"models": chosen, "model": ",".join(chosen), "default_models": not model_names, "K": list(ks),
                "limit": limit, "device": device, "resolved_device": dev, "batch_size": batch_size, "lanes": lanes,
                "threads": threads, "generic": generic, "data_dir": data_dir}
    with _Progress(not quiet and sys.stderr.isatty()) as progress:
        report = _bench.run_bench(images, models, dataset=dataset, ks=ks, binary=is_binary(dataset), generic=generic,
                                  engine_kwargs=engine_kwargs, progress=progress, model_meta=meta,
                                  skipped_encoders=skipped, settings=settings, default_model=default_model,
                                  n_available=available, argv=_argv(settings, dataset, json_path, plot_path, quiet))
    to_stdout = json_path == STDOUT
    # With the JSON on standard output, everything else goes to standard error.
    out = Console(stderr=to_stdout) if (sys.stderr if to_stdout else sys.stdout).isatty() else \
        Console(width=200, stderr=to_stdout)
    if to_stdout:
        click.echo(_bench.to_json(report), nl=False)
    else:
        _bench.render(report, out)
    if json_path and not to_stdout:
        _bench.write_json(report, json_path)
        out.print(f"wrote {json_path}")
    if plot_path:
        _bench.plot(report, plot_path)
        out.print(f"wrote {plot_path}")
    _bench.check_exact(report)
