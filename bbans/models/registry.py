"""Every model bbans knows, one spec each: the single place a model is registered.

A spec says what the model is trained on, which tile it codes, which pixel alphabet it takes,
what it serves (for `bbans models`) and, by its position in MODELS, how much it is preferred:
an image goes to the first registered model that takes its alphabet and is bundled. The
hierarchical models come first because they code at lower rates (benchmarks/RESULTS.md).

Pure data: reading it imports no torch, so the command line can list and check model names
without loading the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bbans.errors import BBANSError

ALPHABETS = ("binary", "grey", "rgb")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # what it was trained on (bbans.io.datasets)
    family: str  # "paper" or "hierarchical" (bbans.models.architecture)
    tile: tuple[int, int, int]  # (C, H, W) of the tiles it codes
    alphabet: str  # "binary" takes 0/1, "grey" and "rgb" 8-bit values
    serves: str  # one line for `bbans models`
    # Alphabets of images it may code besides its own (a grey model codes black-and-white too).
    also: tuple[str, ...] = ()


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("binary-mnist-hier", "binary-mnist", "hierarchical", (1, 28, 28), "binary",
              "black-and-white images, 28x28 tiles; learnt on binarized MNIST digits (hierarchical; the default)"),
    ModelSpec("binary-mnist", "binary-mnist", "paper", (1, 28, 28), "binary",
              "black-and-white images (mode 1, or grey of only 0 and 255), 28x28 tiles; learnt on binarized MNIST digits"),
    ModelSpec("mnist-hier", "mnist", "hierarchical", (1, 28, 28), "grey",
              "8-bit grey images, 28x28 tiles; learnt on MNIST digits (hierarchical; the default)", also=("binary",)),
    ModelSpec("mnist", "mnist", "paper", (1, 28, 28), "grey",
              "8-bit grey images (mode L), 28x28 tiles, also black-and-white ones; learnt on MNIST digits", also=("binary",)),
    ModelSpec("cifar10-hier", "cifar10", "hierarchical", (3, 32, 32), "rgb",
              "8-bit RGB images, 32x32 tiles; learnt on CIFAR-10 photos (hierarchical; the default)"),
    ModelSpec("cifar10", "cifar10", "paper", (3, 32, 32), "rgb", "8-bit RGB images, 32x32 tiles; learnt on CIFAR-10 photos"),
)
NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)
_BY_NAME = {m.name: m for m in MODELS}


def spec(name: str) -> ModelSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BBANSError(f"unknown model {name!r}; choose from {', '.join(NAMES)}") from None


def alphabet_of(mode: str, binary: bool) -> str | None:
    """The pixel alphabet of an image of this Pillow mode (binary: a grey image of only 0 and 255)."""
    if mode == "1" or (mode == "L" and binary):
        return "binary"
    return {"L": "grey", "RGB": "rgb"}.get(mode)


def routes_for(mode: str, binary: bool) -> tuple[str, ...]:
    """Models able to code an image of this mode, best first."""
    alphabet = alphabet_of(mode, binary)
    return tuple(m.name for m in MODELS if alphabet in (m.alphabet, *m.also))
