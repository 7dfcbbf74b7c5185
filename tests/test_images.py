"""Routing, tiling and lossless rewriting of image files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from bbans.io import images
from bbans.models import registry
from conftest import TREE, flushed_deflate, grey_image, redeflated, rgb_image, save


ROUTED = {
    "binary/b0.png": ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist"),
    "binary/b1.pbm": ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist"),
    "binary/b2.bmp": ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist"),
    "binary/b3.tif": ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist"),
    "digits/d0.png": ("mnist-hier", "mnist"),
    "digits/d1.pgm": ("mnist-hier", "mnist"),
    "digits/d2.bmp": ("mnist-hier", "mnist"),
    "digits/wide 41x30.png": ("mnist-hier", "mnist"),
    "colour/c0.png": ("cifar10-hier", "cifar10"),
    "colour/c1.ppm": ("cifar10-hier", "cifar10"),
    "colour/c2.tif": ("cifar10-hier", "cifar10"),
}
STORED = {
    "stored/rgba.png": "mode RGBA",
    "stored/la.png": "mode LA",
    "stored/palette.gif": "mode P",
    "stored/photo.jpg": "JPEG",
    "stored/cmyk.tif": "mode CMYK",
    "stored/sixteen.png": "mode I;16",
    "stored/fourbit.png": "8-bit samples",
    "stored/anim.gif": "2-frame",
    "stored/truncated.png": "unreadable",
    "stored/random.bin": "not an image",
    "stored/empty.dat": "not an image",
    "notes.txt": "not an image",
}


@pytest.mark.parametrize("name,routes", sorted(ROUTED.items()))
def test_fixture_images_are_routed_to_their_models(name, routes):
    p = images.probe((TREE / name).read_bytes())
    assert p.routes == routes, p.reason
    assert p.pixels is not None


@pytest.mark.parametrize("name,why", sorted(STORED.items()))
def test_everything_else_is_stored_with_a_reason(name, why):
    p = images.probe((TREE / name).read_bytes())
    assert p.routes == ()
    assert why in p.reason


def test_binary_grey_goes_to_the_binary_model_but_grey_does_not():
    bw = Image.fromarray(np.where(np.asarray(grey_image()) > 127, 255, 0).astype(np.uint8))
    assert images.probe(save(bw, "PNG")).routes == ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist")
    assert images.probe(save(grey_image(), "PNG")).routes == ("mnist-hier", "mnist")


def test_keep_pixels_rewrite_keeps_the_metadata_pillow_reads():
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "x")
    info.add_itxt("Desc", "héllo ✓", lang="fr", tkey="Beschreibung")
    info.add(b"sRGB", b"\x00")
    data = save(rgb_image(), "PNG", pnginfo=info, icc_profile=b"not really icc" * 4, dpi=(300, 300),
                 transparency=(1, 2, 3))
    data = redeflated(data, flushed_deflate)  # no byte-exact recipe: the rewrite path decides
    p = images.probe(data, keep="pixels")
    assert p.routes == ("cifar10-hier", "cifar10"), p.reason
    again = Image.open(io.BytesIO(images.encode(p.pixels, p.mode, p.format, p.meta)))
    orig = Image.open(io.BytesIO(data))
    again.load(), orig.load()
    assert again.info == orig.info
    assert again.text["Desc"].lang == "fr" and again.text["Desc"].tkey == "Beschreibung"
    assert np.array_equal(np.asarray(again), np.asarray(orig))


def test_metadata_bbans_cannot_rewrite_means_stored_with_keep_pixels():
    img = grey_image()
    # LZW strips have no byte-exact recipe, so keep="pixels" falls back to a rewrite, which
    # would lose the Software tag.
    tiff = save(img, "TIFF", tiffinfo={305: "some software"}, compression="tiff_lzw")
    assert "would not keep it identical" in images.probe(tiff, keep="pixels").reason
    assert "cannot be rebuilt byte for byte" in images.probe(tiff).reason
    pgm15 = b"P5\n2 2\n15\n" + bytes([0, 5, 10, 15])  # maxval 15: Pillow rescales the samples
    assert images.probe(pgm15).routes == ()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_encode_reads_back_identically(fmt, mode):
    img = rgb_image(13, 30).convert(mode)
    p = images.probe(save(img, fmt), keep="pixels")
    assert p.routes, p.reason
    again = Image.open(io.BytesIO(images.encode(p.pixels, mode, fmt, p.meta)))
    assert again.format == fmt and again.mode == mode and again.size == img.size
    assert np.array_equal(images.canonical(again), images.canonical(img))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), c=st.sampled_from([1, 3]), th=st.sampled_from([28, 32]))
def test_tile_untile_round_trip(h, w, c, th):
    arr = np.random.default_rng(h * 97 + w).integers(0, 256, (c, h, w), dtype=np.uint8)
    tiles, mask = images.tile(arr, (th, th))
    assert tiles.shape == (images.tile_count(w, h, (th, th)), c, th, th)
    assert mask.sum() == h * w
    assert np.array_equal(images.tile_mask(w, h, (th, th)), mask)
    assert not (tiles * ~mask[:, None]).any()
    assert np.array_equal(images.untile(tiles, w, h), arr)


@pytest.mark.parametrize("mode,model", [("1", "binary-mnist"), ("L", "binary-mnist"), ("1", "mnist"),
                                        ("L", "mnist"), ("RGB", "cifar10")])
def test_model_alphabet_round_trip(mode, model):
    rng = np.random.default_rng(0)
    if mode == "1":
        pixels = rng.integers(0, 2, (5, 7), dtype=np.uint8)
    elif model == "binary-mnist":
        pixels = rng.integers(0, 2, (5, 7), dtype=np.uint8) * 255
    elif mode == "L":
        pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    else:
        pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = images.to_model(pixels, mode, model)
    assert x.shape[0] == registry.spec(model).tile[0]
    if model == "binary-mnist":
        assert set(np.unique(x)) <= {0, 1}
    assert np.array_equal(images.from_model(x, mode, model), pixels)
