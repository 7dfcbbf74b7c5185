"""Hostile archives are refused in one line, quickly, and leave nothing written.

The cases live in tests/hostile.py (shared with benchmarks/fuzz_archive.py, the long run):
each is a real archive taken apart, one field or payload changed, and re-signed so that the
trailing checksum holds and only the reader's own checks stand in the way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile
from bbans.archive import format as container
from bbans.archive import reader, writer
from bbans.errors import MismatchError
from conftest import FIXTURES, TREE, one_error_line

SECONDS = 10.0


@pytest.fixture(scope="module")
def base() -> bytes:
    """Two black-and-white images coded by the paper's small MLP (a PNG and a PBM) and a stored
    text file: every kind of entry and recipe, decoded in well under a second."""
    data, _ = writer.create([str(TREE / "binary" / "b0.png"), str(TREE / "binary" / "b1.pbm"),
                              str(TREE / "notes.txt")], writer.Options(model="binary-mnist"))
    kinds = sorted((e["kind"], e.get("rebuild", {}).get("kind")) for e in container.unpack(data)[1]["entries"])
    assert kinds == [("model", "png"), ("model", "raster"), ("stored", None)]
    return data


def _refused(bbans_main, tmp_path, data: bytes, command: str) -> tuple[int, str, float]:
    bad = tmp_path / "bad.bb"
    bad.write_bytes(data)
    args = ("decompress", bad, "-o", tmp_path / "out") if command == "decompress" else ("info", bad)
    t = time.perf_counter()
    code, _, err = bbans_main(*args)
    elapsed = time.perf_counter() - t
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bb"], "something was left written"
    return code, err, elapsed


def test_the_base_archive_itself_decodes(bbans_main, tmp_path, base):
    (tmp_path / "a.bb").write_bytes(base)
    assert bbans_main("decompress", tmp_path / "a.bb", "-o", tmp_path / "out")[0] == 0
    for name in ("b0.png", "b1.pbm", "notes.txt"):
        src = (TREE / "binary" / name) if name != "notes.txt" else TREE / name
        assert (tmp_path / "out" / name).read_bytes() == src.read_bytes()


@pytest.mark.parametrize("name,mutate", hostile.CASES, ids=[c[0] for c in hostile.CASES])
def test_hostile_archive_is_refused_in_one_line_quickly(bbans_main, tmp_path, base, name, mutate):
    code, err, elapsed = _refused(bbans_main, tmp_path, hostile.crafted(base, mutate), "decompress")
    assert code in (3, 4), err
    assert not one_error_line(err).startswith("unexpected"), err  # refused by a check that names the problem
    assert elapsed < SECONDS, f"{elapsed:.1f} s"


@pytest.mark.parametrize("name,mutate", hostile.CASES, ids=[c[0] for c in hostile.CASES])
def test_info_on_a_hostile_archive_is_listed_or_refused_in_one_line(bbans_main, tmp_path, base, name, mutate):
    code, err, _ = _refused(bbans_main, tmp_path, hostile.crafted(base, mutate), "info")
    # Payload-level lies only show when decoding; main() turns any crash into one line too, so
    # what is checked is that a check (not its catch-all "unexpected ...") refused the archive.
    assert code in (0, 3), err
    if code:
        assert not one_error_line(err).startswith("unexpected"), err


def test_a_header_expanding_to_65_mib_is_refused_before_it_is_decompressed(bbans_main, tmp_path):
    code, err, elapsed = _refused(bbans_main, tmp_path, hostile.lzma_bomb_header(), "decompress")
    assert code == 3 and "header declares" in one_error_line(err)
    assert elapsed < 2.0


def test_a_payload_without_its_words_stops_at_the_first_phantom_word(base):
    data = hostile.crafted(base, hostile._cut_payload)
    with container.Reader(data) as r, pytest.raises(MismatchError, match="ran out before decoding finished"):
        list(reader.decode_entries(r))


@pytest.mark.parametrize("i", range(40))
def test_mutated_field_is_refused_or_decodes_to_the_same_files(bbans_main, tmp_path, base, i):
    name, data = list(hostile.mutations(base, 40, seed=7))[i]
    bad = tmp_path / "bad.bb"
    bad.write_bytes(data)
    t = time.perf_counter()
    code, _, err = bbans_main("decompress", bad, "-o", tmp_path / "out")
    assert time.perf_counter() - t < SECONDS, name
    assert "Traceback" not in err and "unexpected" not in err, (name, err)
    if code == 0:  # an informative field: the files must still be exactly the originals
        for src in (TREE / "binary" / "b0.png", TREE / "binary" / "b1.pbm", TREE / "notes.txt"):
            assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes(), name
    else:
        assert code in (3, 4), (name, err)
        one_error_line(err)
        assert not (tmp_path / "out").exists()


FORMAT1 = FIXTURES / "format1" / "made-by-e3c4bb4.bb"
FORMAT1_SOURCES = {"b0.png": TREE / "binary" / "b0.png", "d0.png": TREE / "digits" / "d0.png",
                   "d1.pgm": TREE / "digits" / "d1.pgm", "c0.png": TREE / "colour" / "c0.png",
                   "notes.txt": TREE / "notes.txt"}


def _float_archive_decodes_here(bbans_main, archive, out) -> bool:
    """Archives before the exact arithmetic decode where their float arithmetic is reproduced:
    always on a machine with the fingerprint they recorded (torch, NumPy, instruction set), and
    elsewhere either exactly or not at all, refused with one line naming what differs (exit 4)
    and nothing written."""
    from bbans.coding import engine

    _, header, _ = container.unpack(archive.read_bytes())
    same = all(g.get("fingerprint") == engine.fingerprint(engine.EngineConfig.from_dict(g["engine"]))
               for g in header["groups"])
    code, _, err = bbans_main("decompress", archive, "-o", out)
    if code == 0:
        return True
    assert not same, err
    assert code == 4 and "differences: " in one_error_line(err)
    assert not out.exists()
    return False


def test_an_archive_of_format_1_still_decodes_to_the_same_pixels_where_its_arithmetic_runs(bbans_main, tmp_path):
    """Made by the last format-1 bbans (commit e3c4bb4) from fixture files, with the bundled
    models, in float arithmetic on an AVX-512 machine."""
    if not _float_archive_decodes_here(bbans_main, FORMAT1, tmp_path / "out"):
        return
    for name, src in FORMAT1_SOURCES.items():
        got = tmp_path / "out" / name
        if name.endswith(".txt"):
            assert got.read_bytes() == src.read_bytes()
            continue
        a, b = Image.open(src), Image.open(got)
        assert (a.format, a.mode, a.size) == (b.format, b.mode, b.size)
        assert np.array_equal(np.asarray(a), np.asarray(b))


FORMAT2 = FIXTURES / "format2" / "made-by-7601879.bb"


def test_an_archive_of_format_2_still_decodes_byte_for_byte_where_its_arithmetic_runs(bbans_main, tmp_path):
    """Made by the last format-2 bbans (commit 7601879, --model mnist-hier) from fixture files:
    per-file checksums and tile ranges, which format 3 leaves out; float arithmetic, AVX-512."""
    code, out, err = bbans_main("info", FORMAT2, "--json")
    assert code == 0 and json.loads(out)["format"] == 2
    if not _float_archive_decodes_here(bbans_main, FORMAT2, tmp_path / "out"):
        return
    for name, src in FORMAT1_SOURCES.items():
        assert (tmp_path / "out" / name).read_bytes() == src.read_bytes()


FORMAT4 = FIXTURES / "format4" / "made-by-df86611.bb"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_an_archive_of_format_4_still_decodes_byte_for_byte(bbans_main, tmp_path):
    """Made by the last format-4 bbans (commit df86611, --K 2) from fixture files and the
    examples' binarized digits: a model group in the exact arithmetic, JPEG-XL entries, stored
    files, a header by column under primed deflate."""
    code, out, _ = bbans_main("info", FORMAT4, "--json")
    assert code == 0 and json.loads(out)["format"] == 4
    code, _, err = bbans_main("decompress", FORMAT4, "-o", tmp_path / "out")
    assert code == 0, err
    sources = {**FORMAT1_SOURCES, **{f"binary/{p.name}": p for p in (EXAMPLES / "binary").glob("*.png")}}
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == sorted(sources)
    for name, src in sources.items():
        assert (tmp_path / "out" / name).read_bytes() == src.read_bytes(), name


EXACT_ARCHIVES = sorted((FIXTURES / "exact-1").glob("made-by-*.bb"))


@pytest.mark.parametrize("archive", EXACT_ARCHIVES, ids=[p.name for p in EXACT_ARCHIVES])
def test_an_archive_in_the_exact_arithmetic_decodes_byte_for_byte_on_any_machine(bbans_main, tmp_path, archive):
    """Made by bbans (the commit in its name) on another machine, --model mnist-hier --K 2, from
    fixture files: it must open everywhere, whatever this machine's instruction set."""
    code, out, _ = bbans_main("info", archive, "--json")
    assert code == 0 and {g["arithmetic"] for g in json.loads(out)["groups"]} == {"exact-1"}
    code, _, err = bbans_main("decompress", archive, "-o", tmp_path / "out")
    assert code == 0, err
    for name, src in FORMAT1_SOURCES.items():
        assert (tmp_path / "out" / name).read_bytes() == src.read_bytes()


def test_there_is_an_exact_archive_fixture():
    assert EXACT_ARCHIVES


def test_a_negative_estimate_written_by_earlier_versions_still_decodes(bbans_main, tmp_path, base):
    """est_bits is informative; format-1 writers could record a tiny image's estimate below zero."""
    data = hostile.crafted(base, hostile._set_entry("est_bits", -5))
    (tmp_path / "a.bb").write_bytes(data)
    assert bbans_main("decompress", tmp_path / "a.bb", "-o", tmp_path / "out")[0] == 0
