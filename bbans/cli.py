"""The `bbans` command line: a click group whose subcommands live in their own modules."""

from __future__ import annotations

import sys

import click

from bbans import __version__
from bbans.errors import BBANSError, EXIT_ERROR


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bbans")
def cli() -> None:
    """Lossless image compression with variational autoencoders and bits-back ANS."""


def _register() -> None:
    # Each module owns its commands; importing them here keeps one place that lists them.
    import importlib

    for module, names in (
        ("bbans.cli_codec", ("compress", "decompress", "info", "models")),
        ("bbans.cli_train", ("train", "refit")),
        ("bbans.cli_bench", ("bench",)),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != module:
                raise
            continue
        for name in names:
            cmd = getattr(mod, name.replace("-", "_") + "_cmd", None)
            if cmd is not None:
                cli.add_command(cmd, name)


_register()


def main() -> None:
    """Console entry point: known errors become one line on stderr and a non-zero exit."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("bbans: aborted", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BBANSError as exc:
        click.echo(f"bbans: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("bbans: interrupted", err=True)
        sys.exit(130)
