"""The `bbans` command line: a click group whose subcommands live in their own modules."""

from __future__ import annotations

import os
import sys

import click

from bbans import __version__
from bbans.cli import signals
from bbans.cli.help import epilog
from bbans.errors import EXIT_CORRUPT, EXIT_INTERRUPTED, EXIT_TERMINATED, BBANSError, Terminated


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=epilog("""\b
Examples:
  bbans compress digits/                  write digits.bb
  bbans compress scans/ -o scans.bb --K 7 optimal inference: smaller, slower
  bbans decompress digits.bb              restore into digits/
  bbans decompress scan.bb -c > scan.png  a one-file archive to stdout
  bbans info digits.bb                    models, sizes, bits/dim per entry
  bbans models                            the bundled models
  bbans bench --dataset mnist             rates and speed beside PNG, JPEG-XL, xz
  bbans train --dataset mnist --out runs/m  train a model (refit: its encoder)

\b
Every command's --help has its own examples. Shell completion:
  eval "$(_BBANS_COMPLETE=bash_source bbans)"   # bash; zsh_source, fish_source"""))
@click.version_option(__version__, prog_name="bbans")
def cli() -> None:
    """Lossless image compression with variational autoencoders and bits-back ANS.

    Images are coded by a bundled VAE when the file comes back byte for byte; everything else
    is stored with LZMA2. - stands for standard input or output."""


def _register() -> None:
    # Each module owns its commands; this is the one place that lists them.
    from bbans.cli import bench, codec, train

    for module, names in ((codec, ("compress", "decompress", "info", "models")), (train, ("train", "refit")),
                          (bench, ("bench",))):
        for name in names:
            cli.add_command(getattr(module, f"{name}_cmd"), name)


_register()


def main() -> None:
    """Console entry point: every error becomes one line on stderr and a documented exit code."""
    signals.install()
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort
        click.echo("bbans: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        click.echo("bbans: terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BBANSError as exc:
        click.echo(f"bbans: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Whatever an archive or a file provoked that no check named: still one line, never a
        # traceback (BBANS_TRACEBACK=1 shows it, for bug reports).
        if os.environ.get("BBANS_TRACEBACK"):
            raise
        text = str(exc).splitlines()[0][:300] if str(exc) else ""
        click.echo(f"bbans: error: unexpected {type(exc).__name__}{': ' + text if text else ''}", err=True)
        sys.exit(EXIT_CORRUPT)
