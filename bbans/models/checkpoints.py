"""Model checkpoints: safetensors weights (no pickle) plus a JSON metadata record.

A bundled model `<name>` is four files in the `bbans.bundled` package (bbans.models.catalog; the
repository's models/ folder): `<name>.decoder.safetensors`, `<name>.encoder-baseline.safetensors`,
`<name>.encoder-refit.safetensors` and `<name>.json`. The content hash of a loaded model is the
sha256 over the decoder file's bytes, the chosen encoder file's bytes and the architecture record
(which holds the latent bucket scales), so an archive cites exactly the weights and settings it
was coded with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load_bytes, save_file as st_save_file

from bbans.errors import BBANSError
from bbans.models import catalog
from bbans.models.catalog import ENCODERS
from bbans.models.architecture import build_model
from bbans.models.base import VAE



def split_state(model: VAE) -> tuple[dict, dict]:
    """(encoder tensors, decoder tensors), keyed as in model.state_dict()."""
    enc, dec = {}, {}
    for k, v in model.state_dict().items():
        (enc if k.startswith("encoder.") else dec)[k] = v.detach().to(torch.float32).contiguous().cpu()
    return enc, dec


def save_tensors(path: str | Path, tensors: dict, meta: dict | None = None) -> str:
    """Write a safetensors file; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    st_save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                 metadata={k: str(v) for k, v in (meta or {}).items()})
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_tensors(path: str | Path) -> dict:
    return st_load_bytes(Path(path).read_bytes())


def model_hash(decoder: bytes, encoder: bytes, architecture: dict) -> str:
    # The architecture is hashed too: a model whose bucket scales were re-chosen keeps its weight
    # files but codes differently, and an archive made with the old scales must be refused.
    h = hashlib.sha256()
    for b in (decoder, encoder, json.dumps(architecture, sort_keys=True, separators=(",", ":")).encode()):
        h.update(b)
    return h.hexdigest()


def save_model(model: VAE, prefix: str | Path, meta: dict, encoder_tag: str = "encoder") -> dict:
    """Write <prefix>.decoder.safetensors, <prefix>.<encoder_tag>.safetensors and <prefix>.json."""
    prefix = Path(prefix)
    enc, dec = split_state(model)
    save_tensors(f"{prefix}.decoder.safetensors", dec)
    save_tensors(f"{prefix}.{encoder_tag}.safetensors", enc)
    meta = dict(meta)
    meta["architecture"] = model.architecture()
    meta["hash"] = model_hash(Path(f"{prefix}.decoder.safetensors").read_bytes(),
                              Path(f"{prefix}.{encoder_tag}.safetensors").read_bytes(), meta["architecture"])
    Path(f"{prefix}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def model_from_blobs(arch: dict, decoder_bytes: bytes, encoder_bytes: bytes, device="cpu") -> VAE:
    model = build_model(arch)
    state = {}
    state.update(st_load_bytes(decoder_bytes))
    state.update(st_load_bytes(encoder_bytes))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BBANSError(f"checkpoint does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


def load_files(prefix: str | Path, encoder_tag: str = "encoder", device="cpu") -> tuple[VAE, dict]:
    """Load a model saved by `save_model` (or a bundled prefix with encoder_tag 'encoder-refit')."""
    prefix = Path(prefix)
    try:
        meta = json.loads(Path(f"{prefix}.json").read_text())
        dec = Path(f"{prefix}.decoder.safetensors").read_bytes()
        enc = Path(f"{prefix}.{encoder_tag}.safetensors").read_bytes()
    except FileNotFoundError as exc:
        raise BBANSError(f"checkpoint file missing: {exc.filename}") from None
    model = model_from_blobs(meta["architecture"], dec, enc, device)
    meta = dict(meta)
    meta["hash"] = model_hash(dec, enc, meta["architecture"])
    return model, meta


def load_model(name: str, encoder: str = "refit", device: str = "cpu") -> tuple[VAE, dict]:
    """A bundled model and its metadata; meta["hash"] covers decoder + chosen encoder + architecture.

    encoder "auto": `better_encoder`; meta["encoder"] names the one loaded.
    meta["test_bits_per_dim"] is the test -ELBO of this encoder with the bundled decoder.
    """
    if encoder not in ENCODERS + ("auto",):
        raise BBANSError(f"unknown encoder {encoder!r}; choose auto, refit or baseline")
    raw = catalog.read(f"{name}.json")
    if raw is None:
        have = [m["name"] for m in catalog.records()]
        raise BBANSError(f"unknown model {name!r}; bundled models: {', '.join(have) or 'none'}")
    meta = json.loads(raw)
    if encoder == "auto":
        encoder = catalog.better_encoder(meta)
    dec = catalog.read(f"{name}.decoder.safetensors")
    enc = catalog.read(f"{name}.encoder-{encoder}.safetensors")
    if dec is None or enc is None:
        raise BBANSError(f"bundled model {name!r} is incomplete (decoder or {encoder} encoder missing)")
    model = model_from_blobs(meta["architecture"], dec, enc, device)
    if isinstance(meta.get("kstep_lr"), (int, float)) and 0 < meta["kstep_lr"] <= 1:
        model.kstep_lr = float(meta["kstep_lr"])  # not part of the architecture: the hash stays
    if isinstance(meta.get("latent_prec"), int) and 1 <= meta["latent_prec"] <= 12:
        model.latent_prec = meta["latent_prec"]
    if isinstance(meta.get("collapsed_latents"), list):
        # Coding settings, not weights: an archive records the channels it left uncoded.
        model.collapsed_latents = tuple((int(a), int(b)) for a, b in meta["collapsed_latents"])
    meta = dict(meta)
    meta["name"] = name
    meta["encoder"] = encoder
    meta["hash"] = model_hash(dec, enc, meta["architecture"])
    per = meta.get("encoders", {}).get(encoder, {})
    for key in ("test_bits_per_dim", "train_bits_per_dim"):
        if key in per:
            meta[key] = per[key]
    return model, meta


def bundle(name: str, base_run: str | Path, refit_run: str | Path, out_dir: str | Path,
           control_run: str | Path | None = None, notes: str = "", checks: dict | None = None) -> dict:
    """Assemble a bundled model from run folders (bbans.training.train): decoder + baseline encoder from
    the base run, the refit encoder from the refit run; the control's figures go in the record."""
    base_run, refit_run, out_dir = Path(base_run), Path(refit_run), Path(out_dir)
    base_meta = json.loads((base_run / "model.json").read_text())
    refit_meta = json.loads((refit_run / "model.json").read_text())
    dec = load_tensors(base_run / "model.decoder.safetensors")
    for k, v in load_tensors(refit_run / "model.decoder.safetensors").items():
        if not torch.equal(dec[k], v):
            raise BBANSError(f"{refit_run} was not refitted on the decoder of {base_run} ({k} differs)")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "decoder": (base_run / "model.decoder.safetensors", f"{name}.decoder.safetensors"),
        "baseline": (base_run / "model.encoder.safetensors", f"{name}.encoder-baseline.safetensors"),
        "refit": (refit_run / "model.encoder.safetensors", f"{name}.encoder-refit.safetensors"),
    }
    blobs = {}
    for key, (src, dst) in files.items():
        blobs[key] = src.read_bytes()
        (out_dir / dst).write_bytes(blobs[key])

    def summary(m: dict) -> dict:
        keep = ("epochs", "seed", "recipe", "train_bits_per_dim", "test_bits_per_dim", "test_images", "best_valid",
                "test_note", "chosen_epoch", "note")
        return {k: m[k] for k in keep if k in m}

    arch = base_meta["architecture"]
    rec = {
        "name": name,
        "dataset": base_meta["dataset"],
        "architecture": arch,
        "eval": base_meta.get("eval"),
        "decoder": summary(base_meta),
        "encoders": {
            "baseline": {**summary(base_meta), "hash": model_hash(blobs["decoder"], blobs["baseline"], arch)},
            "refit": {**summary(refit_meta), "hash": model_hash(blobs["decoder"], blobs["refit"], arch)},
        },
        "files": {k: v[1] for k, v in files.items()},
        "sha256": {k: hashlib.sha256(b).hexdigest() for k, b in blobs.items()},
        "notes": notes,
        # Figures a test can recompute quickly: {subset name: {"baseline": bpd, "refit": bpd, ...}}.
        "checks": checks or {},
    }
    if control_run is not None:
        rec["control"] = summary(json.loads((Path(control_run) / "model.json").read_text()))
    # Top-level figures are those of the default (refit) encoder.
    rec["hash"] = rec["encoders"]["refit"]["hash"]
    rec["test_bits_per_dim"] = rec["encoders"]["refit"]["test_bits_per_dim"]
    rec["train_bits_per_dim"] = rec["encoders"]["refit"]["train_bits_per_dim"]
    rec["epochs"] = base_meta["epochs"]
    rec["seed"] = base_meta["seed"]
    rec["recipe"] = base_meta["recipe"]
    (out_dir / f"{name}.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


class Loaded:
    """Each (model, encoder, device) loaded once, for a run that codes several groups."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def get(self, name: str, encoder: str, device: str) -> tuple[VAE, dict]:
        key = (name, encoder, device)
        if key not in self.cache:
            self.cache[key] = load_model(name, encoder=encoder, device=device)
        return self.cache[key]
