"""Architecture dicts and the modules they describe: what a checkpoint records and training starts from."""

from __future__ import annotations

from bbans.errors import BBANSError
from bbans.models.base import VAE
from bbans.models.hierarchy import HierarchicalVAE
from bbans.models.paper import MLPVAE, ResNetVAE


def build_model(arch: dict) -> VAE:
    """Inverse of `model.architecture()`."""
    arch = dict(arch)
    kind = arch.pop("type", None)
    if kind == "mlp":
        return MLPVAE(**arch)
    if kind == "resnet":
        return ResNetVAE(**arch)
    if kind == "hierarchical":
        return HierarchicalVAE(**arch)
    raise BBANSError(f"unknown model architecture type {kind!r}")


FAMILIES = ("paper", "hierarchical")


def default_architecture(dataset: str, width: int | None = None, family: str = "paper", pixel_groups: int = 1) -> dict:
    """The paper's model for a data set, or (family "hierarchical") the three-layer conv model."""
    if pixel_groups != 1 and family != "hierarchical":
        raise BBANSError("pixel groups are a feature of the hierarchical family")
    if family == "hierarchical":
        if dataset not in ("binary-mnist", "mnist", "cifar10"):
            raise BBANSError(f"unknown data set {dataset!r}")
        shape = [3, 32, 32] if dataset == "cifar10" else [1, 28, 28]
        return {"type": "hierarchical", "likelihood": "bernoulli" if dataset == "binary-mnist" else "logistic_mix",
                "image_shape": shape, "width": width or (64 if dataset == "cifar10" else 32),
                "latent_channels": 8 if dataset == "cifar10" else 4, "layers": 3, "blocks": 1, "mixtures": 3,
                "latent_scales": [1.0, 1.0, 1.0], **({"pixel_groups": pixel_groups} if pixel_groups != 1 else {})}
    if family != "paper":
        raise BBANSError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    if dataset == "binary-mnist":
        return {"type": "mlp", "likelihood": "bernoulli", "image_shape": [1, 28, 28], "hidden": width or 500,
                "latent": 10, "layers": 2}
    if dataset == "mnist":
        return {"type": "mlp", "likelihood": "logistic", "image_shape": [1, 28, 28], "hidden": width or 500,
                "latent": 10, "layers": 2}
    if dataset == "cifar10":
        return {"type": "resnet", "likelihood": "logistic_rgb", "image_shape": [3, 32, 32], "width": width or 64,
                "latent_channels": 2, "blocks": 2}
    raise BBANSError(f"unknown data set {dataset!r}")
