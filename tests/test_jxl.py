"""JPEG-XL beside the models: JPEGs recompressed and given back byte for byte, images no model
codes better kept as JPEG-XL pixels and rebuilt, and hostile streams refused before decoding."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import edit_header, one_error_line
from PIL import Image

from bbans.archive import format as container
from bbans.io import jxl

pytestmark = pytest.mark.skipif(jxl._imagecodecs() is None, reason="imagecodecs with JPEG-XL is not installed")


def _photo(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth colour with some texture: a model of digits or CIFAR tiles codes it poorly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=2)
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", quality=90, **kw)
    return out.getvalue()


def _png(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "PNG")
    return out.getvalue()


def _entries(bbans_main, bb) -> dict:
    code, out, err = bbans_main("info", bb, "--json")
    assert code == 0, err
    rep = json.loads(out)
    return rep, {e["path"]: e for e in rep["entries"]}


@pytest.mark.parametrize("shape", [(29, 37), (64, 64), (9, 1000), (256, 144), (40, 48)])
def test_declared_size_is_read_from_the_size_header_of_any_shape(shape):
    h, w = shape
    arr = _photo(w, h)
    enc = jxl.encode_pixels(arr, 3)
    assert jxl.declared_size(enc) == (w, h)
    assert jxl.declared_size(jxl.recompress(_jpeg(arr))) == (w, h)


def test_a_jpeg_is_recompressed_smaller_and_comes_back_byte_for_byte(bbans_main, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = _jpeg(_photo(160, 120))
    (src / "p.jpg").write_bytes(data)
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb", "-q")[0] == 0
    rep, entries = _entries(bbans_main, tmp_path / "a.bb")
    e = entries["p.jpg"]
    assert rep["format"] == 5 and e["kind"] == "stored" and e["how"] == "jpeg-jxl"
    assert e["coded_bytes"] < 0.95 * len(data)
    assert bbans_main("decompress", tmp_path / "a.bb", "-o", tmp_path / "out", "-q")[0] == 0
    assert (tmp_path / "out" / "p.jpg").read_bytes() == data


def test_an_image_no_model_codes_better_is_kept_as_jpeg_xl_pixels_and_rebuilt_byte_for_byte(bbans_main, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    colour, grey = _png(_photo()), _png(_photo(80, 56, 1)[..., 0])
    (src / "c.png").write_bytes(colour)
    (src / "g.png").write_bytes(grey)
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb", "-q")[0] == 0
    _, entries = _entries(bbans_main, tmp_path / "a.bb")
    for name, data in (("c.png", colour), ("g.png", grey)):
        assert entries[name]["kind"] == "image" and entries[name]["coded_bytes"] < len(data), entries[name]
    assert bbans_main("decompress", tmp_path / "a.bb", "-o", tmp_path / "out", "-q")[0] == 0
    assert (tmp_path / "out" / "c.png").read_bytes() == colour and (tmp_path / "out" / "g.png").read_bytes() == grey


def test_model_none_stores_every_file_with_lzma2_or_raw(bbans_main, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "c.png").write_bytes(_png(_photo()))
    (src / "p.jpg").write_bytes(_jpeg(_photo()))
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb", "--model", "none", "-q")[0] == 0
    rep, entries = _entries(bbans_main, tmp_path / "a.bb")
    assert {e["how"] for e in entries.values()} <= {"lzma2", "raw"}


@pytest.fixture
def jxl_archive(bbans_main, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "c.png").write_bytes(_png(_photo()))
    (src / "p.jpg").write_bytes(_jpeg(_photo(160, 120, 2)))
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb", "-q")[0] == 0
    _, entries = _entries(bbans_main, tmp_path / "a.bb")
    assert entries["c.png"]["kind"] == "image" and entries["p.jpg"]["how"] == "jpeg-jxl"
    return (tmp_path / "a.bb").read_bytes()


def _blob_swapped(data: bytes, path: str, new_blob: bytes) -> bytes:
    """The archive with one entry's blob replaced, offsets moved, re-signed."""
    version, header, payload = container.unpack(data)
    parts, at = [], 0
    # Payload order is header order: groups (none here), the frames, then the entries.
    if header.get("frames"):
        f = header["frames"]
        parts.append(payload[f["offset"]:f["offset"] + f["length"]])
        f["offset"], at = 0, f["length"]
    for e in header["entries"]:
        if "data" in e:
            blob = payload[e["data"]["offset"]:e["data"]["offset"] + e["data"]["length"]]
            if e["path"] == path:
                blob = new_blob
            e["data"]["offset"], e["data"]["length"] = at, len(blob)
            at += len(blob)
            parts.append(blob)
    return container.pack(header, parts, version)


@pytest.mark.parametrize("case,why", [
    ("pixels of another size", "JPEG-XL stream declares (90, 64), the entry 96x64"),
    ("pixels declaring a huge image", "JPEG-XL stream declares"),
    ("a huge JPEG", "declares a 10000000-byte JPEG"),
    ("garbage pixels", "not a valid JPEG-XL stream"),
    ("a recompressed JPEG in format 2", "codec jpeg-jxl in a format 2 archive"),
])
def test_hostile_jpeg_xl_entries_are_refused_in_one_line_before_decoding(case, why, bbans_main, jxl_archive, tmp_path):
    if case == "pixels of another size":
        bad = _blob_swapped(jxl_archive, "c.png", jxl.encode_pixels(_photo(90, 64), 3))
    elif case == "pixels declaring a huge image":
        head = bytearray(jxl.encode_pixels(_photo(), 3))
        head[2:6] = b"\xfe\xff\xff\x7f"  # not div8, 30-bit height selector, all ones
        bad = _blob_swapped(jxl_archive, "c.png", bytes(head))
    elif case == "a huge JPEG":
        bad = edit_header(jxl_archive, lambda h: [e.update(size=10 ** 7) for e in h["entries"] if e["path"] == "p.jpg"])
    elif case == "garbage pixels":
        enc = jxl.encode_pixels(_photo(), 3)
        bad = _blob_swapped(jxl_archive, "c.png", enc[:12] + bytes(len(enc) - 12))
    else:
        version, header, payload = container.unpack(jxl_archive)
        header["entries"] = [e for e in header["entries"] if e["kind"] != "image"]
        header["format"] = 2
        header.pop("zlib_version", None)  # format 5's place for it
        bad = _blob_swapped(container.pack(header, [payload], 2), "", b"")
    (tmp_path / "bad.bb").write_bytes(bad)
    code, _, err = bbans_main("decompress", tmp_path / "bad.bb", "-o", tmp_path / "out")
    assert code == 3, err
    assert why in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_large_image_the_model_clearly_loses_on_is_judged_from_a_sample_of_its_tiles(tmp_path, monkeypatch):
    from bbans.archive import writer
    from bbans.coding import engine

    noise = np.random.default_rng(5).integers(0, 256, (320, 320, 3), dtype=np.uint8)  # 100 tiles
    Image.fromarray(noise).save(tmp_path / "noise.png")
    seen = []
    real = engine.estimate_bits

    def counted(model, images, *a, **kw):
        seen.append(len(images))
        return real(model, images, *a, **kw)

    monkeypatch.setattr(engine, "estimate_bits", counted)
    _, rep = writer.create([str(tmp_path / "noise.png")], writer.Options(model="auto"))
    entry = rep["entries"][0]
    assert seen == [writer.SAMPLE_TILES]  # the other 68 tiles were never run
    assert f"from {writer.SAMPLE_TILES} of 100 tiles" in entry["why"] and entry["kind"] != "model"
