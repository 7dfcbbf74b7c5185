"""`bbans bench`: load a test set and the bundled models, hand them to bbans.bench."""

from __future__ import annotations

import sys

import click

from bbans.errors import BBANSError


def _progress_sink(enabled: bool):
    """A rich progress display on stderr, one bar per stage; a no-op when disabled."""
    if not enabled:
        return None, (lambda label, done, total: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)
    tasks: dict[str, int] = {}

    def sink(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = prog.add_task(label, total=total)
        prog.update(tasks[label], completed=done, total=total)

    return prog, sink


def _load_models(name: str, dataset: str, device: str):
    from bbans.models import checkpoints

    models, meta, skipped = {}, {}, {}
    for enc in ("baseline", "refit"):
        try:
            model, m = checkpoints.load_model(name, encoder=enc, device=device)
            if m.get("dataset", dataset) != dataset:
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
    for opt, key in (("--model", "model"), ("--limit", "limit"), ("--device", "device"), ("--batch-size", "batch_size"),
                     ("--lanes", "lanes"), ("--threads", "threads"), ("--data-dir", "data_dir")):
        if settings.get(key) is not None:
            out += [opt, str(settings[key])]
    out += [] if settings["generic"] else ["--no-generic"]
    out += ["--json", json_path] if json_path else []
    out += ["--plot", plot_path] if plot_path else []
    return out + (["-q"] if quiet else [])


@click.command("bench")
@click.option("--dataset", required=True, type=click.Choice(["binary-mnist", "mnist", "cifar10"]),
              help="Test set to code.")
@click.option("--model", "model_name", default=None, metavar="NAME",
              help="Bundled model to code it with (`bbans models`); default: the paper's model of the same name.")
@click.option("--K", "k_list", default="0,1,2,5,10", show_default=True, metavar="LIST",
              help="Comma-separated optimal-inference step counts; 0 gives the amortized encoders.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N test images.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per engine batch.")
@click.option("--lanes", type=click.IntRange(min=1), default=128, show_default=True,
              help="Interleaved rANS lanes of the message.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of the engine's arithmetic (default: the engine's). One thread gives "
                   "steadier timings on a shared machine.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every figure, the machine and the settings to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a two-panel PNG: bits/dim against K, and against time per image.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding mnist/ or cifar-10-batches-py/ (else $BBANS_DATA, ~/.cache/bbans).")
@click.option("--generic/--no-generic", default=True, show_default=True,
              help="Also measure PNG, WebP, JPEG-XL, JPEG-LS, JPEG 2000, zstd, xz and bzip2.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def bench_cmd(dataset, model_name, k_list, limit, device, batch_size, lanes, threads, json_path, plot_path, data_dir, generic, quiet):
    """Coded bits/dim and speed of the BB-ANS methods beside generic lossless codecs.

    Methods: the baseline and refit encoders (K = 0) and K-step optimal inference from each,
    every one compressed for real and decompressed back to check the round trip. Exits
    non-zero if any round trip is not exact.
    """
    from rich.console import Console

    from bbans import bench
    from bbans.coding.engine import resolve_device
    from bbans.io.datasets import is_binary, load_dataset

    ks = bench.parse_k_list(k_list)
    dev = resolve_device(device)
    images = load_dataset(dataset, "test", data_dir)
    if limit is not None:
        images = images[:limit]
    models, meta, skipped = _load_models(model_name or dataset, dataset, dev)

    engine_kwargs = {"batch_size": batch_size, "lanes": lanes, "device": dev}
    if threads is not None:
        engine_kwargs["threads"] = threads
    settings = {"model": model_name or dataset, "K": list(ks), "limit": limit, "device": device, "resolved_device": dev, "batch_size": batch_size,
                "lanes": lanes, "threads": threads, "generic": generic, "data_dir": data_dir}
    show = not quiet and sys.stderr.isatty()
    prog, sink = _progress_sink(show)
    if prog is not None:
        prog.start()
    try:
        report = bench.run_bench(images, models, dataset=dataset, ks=ks, binary=is_binary(dataset), generic=generic,
                                 engine_kwargs=engine_kwargs, progress=sink, model_meta=meta,
                                 skipped_encoders=skipped, settings=settings, argv=_argv(settings, dataset, json_path, plot_path, quiet))
    finally:
        if prog is not None:
            prog.stop()
    out = Console() if sys.stdout.isatty() else Console(width=200)
    bench.render(report, out)
    if json_path:
        bench.write_json(report, json_path)
        out.print(f"wrote {json_path}")
    if plot_path:
        bench.plot(report, plot_path)
        out.print(f"wrote {plot_path}")
    bench.check_exact(report)
