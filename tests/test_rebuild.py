"""Every byte comes back: model-coded files are rebuilt byte for byte from their pixels, and a
file no recipe reproduces is stored, never changed."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bbans.errors import MismatchError
from bbans.archive import format as container
from bbans.archive import reader
from bbans.archive import writer
from bbans.io import images
from bbans.io import rebuild
from conftest import (TREE, archive_round_trip, flushed_deflate, grey_image, png_chunks, redeflated, rgb_image, save,
                      with_chunks)

DIGIT = (TREE / "digits" / "d0.png").read_bytes()


def _rebuilds(data: bytes) -> bool:
    p = images.probe(data)
    return bool(p.routes) and p.recipe is not None


# ---- what used to be lost --------------------------------------------------------------------


def test_png_chunks_nobody_reads_and_data_after_iend_come_back_byte_identical(tmp_path):
    odd = with_chunks(DIGIT, before_idat=[(b"prVt", b"private"), (b"sBIT", b"\x08"), (b"tIME", bytes(7))],
                      after_idat=[(b"tEXt", b"k\x00v"), (b"zzZz", b"")], trailer=b"PK\x03\x04 a zip after IEND" * 20)
    back, entries = archive_round_trip(tmp_path, {"odd.png": odd})
    assert back["odd.png"] == odd
    assert entries["odd.png"]["kind"] == "model"


def test_a_png_with_xmp_and_a_unitless_phys_is_model_coded_not_stored(tmp_path):
    xmp = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta>hello</x:xmpmeta>"
    odd = with_chunks(DIGIT, before_idat=[(b"pHYs", b"\x00\x00\x0b\x13\x00\x00\x0b\x13\x00")],
                      after_idat=[(b"iTXt", xmp)])
    back, entries = archive_round_trip(tmp_path, {"xmp.png": odd})
    assert back["xmp.png"] == odd
    assert entries["xmp.png"]["kind"] == "model"


def test_pgm_comments_and_trailing_bytes_come_back_byte_identical(tmp_path):
    px = np.asarray(grey_image())
    pgm = b"P5\n# made by hand\n28   28\n# a second comment\n255\n" + px.tobytes() + b"\ntrailing text\n"
    back, entries = archive_round_trip(tmp_path, {"c.pgm": pgm})
    assert back["c.pgm"] == pgm and entries["c.pgm"]["kind"] == "model"


def test_bmp_trailing_bytes_come_back_byte_identical(tmp_path):
    bmp = save(grey_image(), "BMP") + b"\x00\x01 trailer"
    back, entries = archive_round_trip(tmp_path, {"t.bmp": bmp})
    assert back["t.bmp"] == bmp and entries["t.bmp"]["kind"] == "model"


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_every_format_and_mode_a_model_codes_is_rebuilt_byte_for_byte(fmt, mode):
    img = rgb_image(13, 30).convert(mode)
    data = save(img, fmt)
    p = images.probe(data)
    assert p.recipe is not None, p.reason
    assert rebuild.rebuild(p.pixels, p.recipe, p.frame) == data


# ---- which writers' PNGs are reproduced ------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"compress_level": 0}, {"compress_level": 1}, {"compress_level": 3},
                                {"compress_level": 9}, {"optimize": True}])
def test_pillow_pngs_at_every_setting_are_model_coded_and_rebuilt(kw):
    for img in (grey_image(), rgb_image(), grey_image().convert("1")):
        assert _rebuilds(save(img, "PNG", **kw)), kw


def _recipe(data: bytes) -> dict:
    img = Image.open(io.BytesIO(data))
    return rebuild.plan(data, Image.open(io.BytesIO(data)), images.canonical(img))[0]


def test_the_filters_of_pillow_and_libpng_pngs_are_predicted_row_for_row():
    """Each writer's own minimum-sum rule predicts its row filters, so a recipe's filters cost one
    run however the rows were filtered."""
    imagecodecs = pytest.importorskip("imagecodecs")
    rng = np.random.default_rng(3)
    for trial in range(20):
        arr = (rng.random((28, 28)) < 0.3 + 0.02 * trial).astype(np.uint8) * 255
        for mode in ("1", "L"):
            recipe = _recipe(save(Image.fromarray(arr).convert(mode), "PNG"))
            assert len(recipe["filters"]) == 1 and recipe["filters"][0][0] == 0, (trial, mode, recipe)
        recipe = _recipe(imagecodecs.png_encode(arr, level=6))
        assert recipe["filters"] == [[0, 28]] and recipe.get("rule", "libpng") == "libpng"


@pytest.mark.parametrize("level", [1, 6, 9])
def test_libpng_pngs_are_model_coded_and_rebuilt(level):
    imagecodecs = pytest.importorskip("imagecodecs")
    for arr in (np.asarray(grey_image()), np.asarray(rgb_image())):
        assert _rebuilds(imagecodecs.png_encode(arr, level=level)), level


@pytest.mark.parametrize("strategy", [zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE,
                                      zlib.Z_FIXED])
@pytest.mark.parametrize("mem", [1, 8, 9])
def test_any_zlib_strategy_and_memory_level_is_found(strategy, mem):
    def deflate(raw):
        c = zlib.compressobj(7, zlib.DEFLATED, 12, mem, strategy)
        return c.compress(raw) + c.flush()

    assert _rebuilds(redeflated(save(rgb_image(), "PNG"), deflate, idat_size=100))


def test_a_png_from_a_deflater_no_zlib_setting_reproduces_is_stored_as_it_is(tmp_path):
    odd = redeflated(save(grey_image(), "PNG"), flushed_deflate)
    p = images.probe(odd)
    assert p.routes == () and "no zlib setting reproduces" in p.reason
    back, entries = archive_round_trip(tmp_path, {"f.png": odd})
    assert back["f.png"] == odd and entries["f.png"]["kind"] == "stored"


def test_a_bmp_with_nonzero_row_padding_is_stored_as_it_is():
    bmp = bytearray(save(grey_image(5, 5), "BMP"))  # 5-byte rows padded to 8
    off = int.from_bytes(bmp[10:14], "little")
    bmp[off + 6] = 0xAA
    p = images.probe(bytes(bmp))
    assert p.routes == () and "rebuilt file differs" in p.reason


def test_a_png_with_a_wrong_idat_crc_is_stored_as_it_is(tmp_path):
    chunks = png_chunks(DIGIT)
    data = bytearray(DIGIT)
    at = DIGIT.index(b"IDAT") + 4 + len(next(b for t, b in chunks if t == b"IDAT"))
    data[at] ^= 0xFF
    data = bytes(data)
    p = images.probe(data)
    assert p.recipe is None and p.routes == () and "the rebuilt file differs" in p.reason
    back, entries = archive_round_trip(tmp_path, {"crc.png": data})
    assert back["crc.png"] == data and entries["crc.png"]["kind"] == "stored"


def test_keep_pixels_still_model_codes_what_cannot_be_rebuilt(tmp_path):
    odd = redeflated(save(grey_image(), "PNG"), flushed_deflate)
    src = tmp_path / "f.png"
    src.write_bytes(odd)
    data, _ = writer.create([str(src)], writer.Options(model="mnist", keep="pixels"))
    (e,) = container.unpack(data)[1]["entries"]
    assert e["kind"] == "model" and "rebuild" not in e
    with container.Reader(data) as r:
        (d,) = list(reader.decode_entries(r))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(d.data))), np.asarray(Image.open(io.BytesIO(odd))))


# ---- the filters -----------------------------------------------------------------------------


def _unfilter(filtered: bytes, h: int, n: int, bpp: int) -> np.ndarray:
    """The PNG specification's reconstruction, one byte at a time (the reference)."""
    rows = np.zeros((h, n), np.int64)
    for y in range(h):
        t, line = filtered[y * (n + 1)], filtered[y * (n + 1) + 1:(y + 1) * (n + 1)]
        for x in range(n):
            a = rows[y, x - bpp] if x >= bpp else 0
            b = rows[y - 1, x] if y else 0
            c = rows[y - 1, x - bpp] if y and x >= bpp else 0
            if t == 0:
                pred = 0
            elif t == 1:
                pred = a
            elif t == 2:
                pred = b
            elif t == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            rows[y, x] = (line[x] + pred) % 256
    return rows.astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.sampled_from([1, 3]), st.integers(0, 2**32 - 1))
def test_vectorised_filters_invert_under_the_reference_reconstruction(h, w, bpp, seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (h, w * bpp), dtype=np.uint8)
    types = rng.integers(0, 5, h).astype(np.uint8)
    filtered = rebuild.filter_rows(rows, types, bpp)
    assert np.array_equal(_unfilter(filtered, h, w * bpp, bpp), rows)


# ---- decoding checks the bytes ---------------------------------------------------------------


def test_a_rebuild_that_differs_on_decoding_is_an_error_naming_its_group_before_the_file_is_handed_out(
        tmp_path, monkeypatch):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(DIGIT)
    data, _ = writer.create([str(tmp_path / "a.png"), str(tmp_path / "b.png")], writer.Options(model="mnist"))
    real = rebuild.rebuild
    monkeypatch.setattr(rebuild, "rebuild", lambda *a: real(*a)[:-1] + b"X")
    handed_out = []
    with container.Reader(data) as r, pytest.raises(MismatchError, match="rebuilt from the mnist group do not match"):
        for d in reader.decode_entries(r):
            handed_out.append(d.entry["path"])
    # The group's checksum covers both files: the last is never handed out unchecked.
    assert handed_out == ["a.png"]


def test_verify_compares_whole_files_with_their_inputs(tmp_path, monkeypatch):
    src = tmp_path / "d.png"
    src.write_bytes(DIGIT)
    data, rep = writer.create([str(src)], writer.Options(model="mnist"))
    assert reader.verify(data, expect=rep["sha256"]) == 1
    wrong = {"d.png": "0" * 64}
    with pytest.raises(MismatchError, match="does not give back the input file's bytes"):
        reader.verify(data, expect=wrong)


def test_filtering_rows_again_gives_what_filtering_them_afresh_gives():
    """Planning and checking a PNG filter each image's rows once for both the scanlines and the
    filter rule's sums: other rows in between, or rows equal in bytes but not in shape, must each
    get their own."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (6, 12), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 12), dtype=np.uint8)
    types = rng.integers(0, 5, 6).astype(np.uint8)
    for rows, bpp in ((a, 1), (b, 1), (a, 1), (a, 3), (a.reshape(12, 6), 1)):
        fresh = rebuild._filter_all(rows, bpp)
        assert np.array_equal(rebuild.filter_sums(rows, bpp), np.abs(fresh.view(np.int8).astype(np.int64)).sum(2).T)
        t = types if rows.shape[0] == 6 else np.resize(types, rows.shape[0])
        assert rebuild.filter_rows(rows, t, bpp) == np.concatenate(
            [t[:, None], fresh[t.astype(np.intp), np.arange(rows.shape[0])]], 1).astype(np.uint8).tobytes()


# ---- frames the image implies (format 5) ------------------------------------------------------


@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_a_plain_png_frame_is_left_out_and_rebuilt_from_the_image(mode):
    img = rgb_image() if mode == "RGB" else grey_image().convert(mode)
    data = save(img, "PNG")
    p = images.probe(data)
    assert p.recipe["bare"] is True and p.frame == b""
    assert rebuild.rebuild(p.pixels, p.recipe, p.frame) == data


def test_a_png_with_chunks_of_its_own_keeps_only_those_in_its_frame():
    odd = with_chunks(DIGIT, before_idat=[(b"prVt", b"private")], after_idat=[(b"tEXt", b"k\x00v")])
    p = images.probe(odd)
    assert p.recipe["bare"] is True
    assert b"IHDR" not in p.frame and b"IEND" not in p.frame and b"prVt" in p.frame and b"tEXt" in p.frame
    assert rebuild.rebuild(p.pixels, p.recipe, p.frame) == odd


def test_a_png_with_bytes_after_iend_keeps_its_whole_frame():
    odd = DIGIT + b"trailing"
    p = images.probe(odd)
    assert "bare" not in p.recipe and p.frame.startswith(rebuild.PNG_SIGNATURE)
    assert rebuild.rebuild(p.pixels, p.recipe, p.frame) == odd
