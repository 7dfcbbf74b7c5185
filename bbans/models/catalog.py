"""Which models ship with bbans, and their records: read without torch.

A bundled model `<name>` is four files in the `bbans.bundled` package (the repository's models/
folder): `<name>.json` (its record: architecture, training, test figures, coding settings) and
three safetensors files, which bbans.models.checkpoints loads. Deciding what is bundled, which
encoder a model codes with and what `bbans models` lists needs only the records, so commands
that do no coding never import torch.
"""

from __future__ import annotations

import json
from importlib import resources

from bbans.models import registry

BUNDLED_PACKAGE = "bbans.bundled"
ENCODERS = ("refit", "baseline")


def folder():
    """Where the bundled files are: the installed package."""
    return resources.files(BUNDLED_PACKAGE)


def read(fname: str) -> bytes | None:
    """A bundled file's bytes, or None where it is not there."""
    try:
        f = folder().joinpath(fname)
        return f.read_bytes() if f.is_file() else None
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def records() -> list[dict]:
    """Metadata records of the bundled models that are present, in registry order.

    Per-encoder figures and hashes are under "encoders"; the top-level "hash" and
    "test_bits_per_dim" are those of the default (refit) encoder."""
    out = []
    for name in registry.NAMES:
        raw = read(f"{name}.json")
        if raw is None:
            continue
        meta = json.loads(raw)
        meta.setdefault("name", name)
        out.append(meta)
    return out


def by_name() -> dict[str, dict]:
    """Metadata of the bundled models present, by name."""
    return {m["name"]: m for m in records()}


def better_encoder(meta: dict) -> str:
    """The bundled encoder with the lower test -ELBO in the model's record (its held-out
    figure); refit where the record has no figures or they tie."""
    figures = {k: (meta.get("encoders", {}).get(k) or {}).get("test_bits_per_dim") for k in ENCODERS}
    if any(not isinstance(v, (int, float)) for v in figures.values()):
        return "refit"
    return min(ENCODERS, key=lambda k: (figures[k], k != "refit"))
