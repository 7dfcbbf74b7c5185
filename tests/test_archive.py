"""The .bb container: what it accepts, what it refuses, and that it refuses before allocating."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbans.archive import format as container
from bbans.archive import extract
from bbans.archive import writer
from bbans.archive import reader
from bbans.archive.format import Reader
from bbans.archive.writer import Options
from bbans.archive.schema import check_name
from bbans.errors import ArchiveError, BBANSError, MismatchError
from conftest import archive_round_trip, edit_header

RANDOM = bytes((i * 7919 + (i * i) % 251) % 256 for i in range(200)) + bytes(range(0, 256, 3))[::-1]


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    (root / "a").mkdir()
    (root / "a" / "x.txt").write_text("hello " * 50)
    (root / "b.bin").write_bytes(RANDOM)
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def good(small_tree) -> bytes:
    data, _ = writer.create([str(small_tree)], Options(model="none"))
    return data


def test_round_trip_of_a_stored_tree(good, small_tree):
    with Reader(good) as r:
        kinds = {e["path"]: e["kind"] for e in r.entries}
        assert kinds == {"a": "dir", "a/x.txt": "stored", "b.bin": "stored", "empty": "dir"}
        got = {d.entry["path"]: b"".join(d.chunks) for d in reader.decode_entries(r) if d.chunks is not None}
    assert got["a/x.txt"] == (small_tree / "a" / "x.txt").read_bytes()
    assert got["b.bin"] == RANDOM
    assert reader.verify(good) == 4


def test_archives_are_deterministic(small_tree, good):
    again, _ = writer.create([str(small_tree)], Options(model="none"))
    assert again == good


@pytest.mark.parametrize("name", [
    "/etc/passwd", "../up", "a/../../up", "a/..", "a\\b", "C:evil", "c:/x", "a//b", "./a", "a/./b",
    "a/", "", "nul\x00byte", ".bbans-partial-x/y",
])
def test_bad_names_are_refused(name):
    with pytest.raises(ArchiveError):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "a/b/c.png", "ünï ✓.png", "..hidden", "a..b", "ab:c"])
def test_good_names_pass(name):
    check_name(name)


def _entry(h, path):
    return next(e for e in h["entries"] if e["path"] == path)


@pytest.mark.parametrize("label,fn,message", [
    ("traversal", lambda h: _entry(h, "b.bin").update(path="../b.bin"), "climbs out"),
    ("absolute", lambda h: _entry(h, "b.bin").update(path="/tmp/b.bin"), "absolute"),
    ("backslash", lambda h: _entry(h, "b.bin").update(path="..\\b.bin"), "backslash"),
    ("duplicate", lambda h: _entry(h, "b.bin").update(path="a/x.txt"), "duplicate"),
    ("file as folder", lambda h: _entry(h, "a").update(kind="symlink", target="x"), "not a folder"),
    ("oversized stored", lambda h: _entry(h, "a/x.txt").update(size=1 << 40), "declares"),
    ("size lie raw", lambda h: _entry(h, "b.bin").update(size=5), "raw size"),
    ("payload past end", lambda h: _entry(h, "b.bin")["data"].update(length=1 << 30), "past the end"),
    ("unknown kind", lambda h: _entry(h, "b.bin").update(kind="hardlink"), "unknown kind"),
    ("unknown codec", lambda h: _entry(h, "a/x.txt")["data"].update(codec="zip"), "unknown codec"),
    ("no entries", lambda h: h.pop("entries"), "entry columns do not make a table"),
    ("format field", lambda h: h.update(format=7), "format field"),
])
def test_crafted_headers_are_refused(good, label, fn, message):
    with pytest.raises(ArchiveError, match=message):
        Reader(edit_header(good, fn))


def test_a_group_claiming_huge_tile_counts_is_refused_before_decoding(good):
    def add_group(h):
        h["groups"] = [{"model": "mnist", "model_hash": "0" * 16, "encoder": "refit", "engine": {}, "tiles": 10 ** 9,
                        "masked": False, "payload": {"offset": 0, "length": 10}}]
    with pytest.raises(ArchiveError, match="far more than"):
        Reader(edit_header(good, add_group))


@pytest.mark.parametrize("engine,message", [({"lanes": 1 << 40}, "out of range"), ({"K": -1}, "out of range"),
                                            ({"lr": [1]}, "engine setting"),
                                            ({"batches": [[1, 2]]}, "batches"),  # covers 2 of 1 tiles
                                            ({"batches": [[0, 1]]}, "batches"), ({"batches": "1x1"}, "batches"),
                                            ({"batches": [[1, True]]}, "batches")])
def test_engine_settings_are_bounded(good, engine, message):
    def add_group(h):
        h["groups"] = [{"model": "mnist", "model_hash": "0" * 16, "encoder": "refit", "engine": engine, "tiles": 1,
                        "masked": False, "payload": {"offset": 0, "length": 10}}]
    with pytest.raises(ArchiveError, match=message):
        Reader(edit_header(good, add_group))


def test_a_fifo_is_not_opened_as_an_archive(tmp_path):
    os.mkfifo(tmp_path / "f.bb")
    with pytest.raises(BBANSError, match="not a regular file"):
        Reader(tmp_path / "f.bb")


def test_corrupt_byte_is_caught_by_the_checksum(good):
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x40
    with pytest.raises(ArchiveError, match="checksum"):
        Reader(bytes(bad))


@pytest.mark.parametrize("cut", [0, 5, 10, 23, 30, -33, -1])
def test_truncated_archives_are_refused(good, cut):
    with pytest.raises(ArchiveError):
        Reader(good[:cut])


def test_trailing_bytes_are_refused(good):
    with pytest.raises(ArchiveError, match="unexpected bytes"):
        Reader(good + b"x")


def test_foreign_and_future_files(good):
    with pytest.raises(ArchiveError, match="not a bbans archive"):
        Reader(b"\x89PNG\r\n\x1a\n" + bytes(100))
    future = good[:6] + struct.pack("<H", 9) + good[8:]
    with pytest.raises(ArchiveError, match=r"newer bbans \(format 9\).*reads formats 1, 2, 3"):
        Reader(future)


def test_declared_lengths_are_bounded_by_the_file_size(good):
    # A preamble declaring a 4 GiB header and an exabyte payload must fail on arithmetic alone.
    bomb = container.MAGIC + struct.pack("<HIIQ", 1, 0xFFFFFFFF, 0xFFFFFFFF, 1 << 60) + bytes(40)
    with pytest.raises(ArchiveError, match="truncated"):
        Reader(bomb)
    _, header, payload = container.unpack(good)
    raw = json.dumps(header).encode()
    head = lzma.compress(raw, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "dict_size": container.HEADER_DICT}])
    body = container.MAGIC + struct.pack("<HIIQ", 1, len(head), 1 << 31, len(payload)) + head + payload
    with pytest.raises(ArchiveError, match="header declares"):
        Reader(body + hashlib.sha256(body).digest())


def test_payload_that_decodes_wrong_names_the_entry(good):
    def lie(h):
        _entry(h, "a/x.txt")["sha256"] = "0" * container.CHECKSUM_HEX
    with Reader(edit_header(good, lie)) as r:
        with pytest.raises(MismatchError, match="a/x.txt"):
            for d in reader.decode_entries(r):
                if d.chunks is not None:
                    list(d.chunks)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000) | st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 20000), st.integers(0, 255)))
def test_store_round_trip(data):
    blob, spec = container.store(data)
    assert b"".join(container.unstore_chunks(blob, spec, len(data))) == data
    assert len(blob) <= len(data)


def test_unstore_never_exceeds_the_declared_size():
    blob, spec = container.store(bytes(100000))
    with pytest.raises(ArchiveError, match="more bytes than declared"):
        b"".join(container.unstore_chunks(blob, spec, 1000))
    with pytest.raises(ArchiveError):
        b"".join(container.unstore_chunks(b"garbage!" * 10, {"codec": "lzma2", "dict_size": 4096}, 80))


@pytest.mark.parametrize("link,target,ok", [
    ("a", "b", True), ("d/a", "../b", True), ("d/a", "../../b", False), ("a", "/etc/passwd", False),
    ("d/e/a", "../../x/../y", True), ("a", "..", False), ("a", ".", True), ("a", "x\\..\\..", False),
])
def test_symlink_targets(link, target, ok):
    assert extract._symlink_ok(link, target) is ok


def test_scan_refuses_two_inputs_with_one_name(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.txt").write_text(d)
    with pytest.raises(BBANSError, match="both be stored as 'same.txt'"):
        writer.scan([str(tmp_path / "one"), str(tmp_path / "two")])
    (tmp_path / "two" / "same.txt").unlink()
    (tmp_path / "two" / "other.txt").write_text("x")
    names = [i.path for i in writer.scan([str(tmp_path / "one"), str(tmp_path / "two")]).items]
    assert names == ["other.txt", "same.txt"]


def test_lanes_grow_with_the_predicted_payload_from_one_to_128():
    # Each lane ends as an 8-byte head: at most 1/25 of the payload the model's rate predicts.
    binary = 0.1676  # binary-mnist-hier's test bits/dim
    assert writer.auto_lanes(784, binary) == 1
    assert writer.auto_lanes(784 * 10, binary) == 1
    assert writer.auto_lanes(784 * 100, binary) == 8
    assert writer.auto_lanes(784 * 1000, binary) == 64
    assert writer.auto_lanes(784 * 10000, binary) == 128
    assert writer.auto_lanes(784 * 1000, 1.16) == 128  # 8-bit digits pay more a value
    for dims in (784, 784 * 100, 784 * 1000):
        lanes = writer.auto_lanes(dims, binary)
        assert lanes == 1 or 8 * lanes <= dims * binary / 8 / 25


# ---- format 4: the header by column, compressed by the cheaper codec -------------------------


def _stored_header(data: bytes) -> tuple[int, bytes]:
    """(header codec, the stored header's packed bytes) of a format-5 archive."""
    import io
    import zlib

    from bbans.archive import header_words

    f = io.BytesIO(data)
    assert f.read(8) == container.MAGIC + struct.pack("<H", 5)
    head_len, raw_len, _, start = container._read_lengths(f, 5)
    head = data[start:start + head_len]
    if head[0] == container.HEADER5_DEFLATE_DICT:
        return head[0], zlib.decompressobj(-15, zdict=header_words.DICT_2).decompress(head[1:])
    if head[0] == container.HEADER5_RAW:
        return head[0], head[1:]
    return head[0], lzma.decompress(head[1:], format=lzma.FORMAT_RAW,
                                    filters=[{"id": lzma.FILTER_LZMA2, "dict_size": container.HEADER_DICT}])


def test_the_header_is_stored_by_column_and_read_back_as_entries(good):
    from bbans.archive import packed

    _, raw = _stored_header(good)
    stored = packed.loads(raw)
    assert "entries" not in stored and stored["entry_count"] == 4
    with Reader(good) as r:
        paths = [e["path"] for e in r.entries]
    assert stored["entry_columns"]["path"] == ["a", [1, "/x.txt"], "b.bin", "empty"]  # against the name before
    with Reader(good) as r:
        times = [e["mtime_ns"] for e in r.entries]
        refs = [e["data"] for e in r.entries if "data" in e]
    # Times as differences from the entry before: the first one whole.
    assert stored["entry_columns"]["mtime_ns"][0] == times[0]
    assert [sum(stored["entry_columns"]["mtime_ns"][: i + 1]) for i in range(4)] == times
    # A key an entry lacks is a null in its column, and absent again when read.
    assert stored["entry_columns"]["data"][paths.index("a")] is None
    with Reader(good) as r:
        assert "data" not in r.entries[paths.index("a")]
    # Blobs follow each other in entry order: their offsets are not stored but read back.
    assert all("offset" not in d for d in stored["entry_columns"]["data"] if d)
    assert [d["offset"] for d in refs] == [0, refs[0]["length"]]


def test_a_column_of_one_value_is_stored_once_and_read_back_for_every_entry(tmp_path):
    from bbans.archive import packed

    for i in range(3):
        (tmp_path / f"{i}.txt").write_text("same" * (i + 1))
        os.utime(tmp_path / f"{i}.txt", ns=(1, 1_700_000_000_000_000_000))
    data, _ = writer.create([str(tmp_path)], Options(model="none"))
    columns = packed.loads(_stored_header(data)[1])["entry_columns"]
    assert columns["mtime_ns"] == 1_700_000_000_000_000_000 and columns["kind"] == "stored"
    assert isinstance(columns["path"], list)
    with Reader(data) as r:
        assert [e["mtime_ns"] for e in r.entries] == [1_700_000_000_000_000_000] * 3
        assert [e["kind"] for e in r.entries] == ["stored"] * 3


def test_names_are_stored_against_the_name_before_them_and_read_back_whole(tmp_path):
    from bbans.archive import packed

    names = ["scans/page-0001.png", "scans/page-0002.png", "scans/page-0010.png", "zz.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    data, _ = writer.create([str(tmp_path)], Options(model="none"))
    stored = packed.loads(_stored_header(data)[1])["entry_columns"]["path"]
    assert stored == ["scans", [5, "/page-0001.png"], [14, "2.png"], [13, "10.png"], "zz.txt"]
    with Reader(data) as r:
        assert [e["path"] for e in r.entries] == ["scans"] + names


@pytest.mark.parametrize("column,message", [
    (["a" * 4000] + [[4000, "b" * 4]] * 20000, "more than a header may hold"),
    (["ab", [3, "c"]], "bad name"),
    (["ab", [0, "c"]], "bad name"),
    (["ab", [1]], "bad name"),
    (["ab", 5], "bad name"),
])
def test_front_coded_names_that_overreach_or_are_malformed_are_refused(good, column, message):
    from hostile import pack_carelessly, resign, stored_form

    _, header, payload = container.unpack(good)
    stored = stored_form(header)
    stored["entry_count"] = len(column)
    stored["entry_columns"] = {"path": column, "kind": "dir"}
    with pytest.raises(ArchiveError, match=message):
        Reader(resign(pack_carelessly(stored), b""))


def test_a_small_header_takes_the_primed_deflate_and_a_large_one_lzma2(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "notes.txt").write_text("hello " * 20)
    many = tmp_path / "many"
    many.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1500):
        (many / f"file-{rng.integers(1 << 40):x}.txt").write_text(str(i))
    small, _ = writer.create([str(one)], Options(model="none"))
    large, _ = writer.create([str(many)], Options(model="none"))
    assert _stored_header(small)[0] == container.HEADER5_DEFLATE_DICT
    assert _stored_header(large)[0] == container.HEADER5_LZMA2
    # The dictionary holds the structure: a one-file header is its name, time, size and
    # checksum and a few bytes more.
    with Reader(small) as r:
        assert r.header_len < 64
    for data in (small, large):
        assert reader.verify(data) >= 1


@pytest.mark.parametrize("edit,message", [
    (lambda head: bytes([7]) + head[1:], "unknown header codec 7"),
    (lambda head: head[:1] + bytes(len(head) - 1), "does not decompress"),
    (lambda head: b"", "header"),
])
def test_a_header_in_an_unknown_codec_or_corrupt_is_refused(good, edit, message):
    import io

    head_len, raw_len, payload_len, start = container._read_lengths(io.BytesIO(good[8:]), 5)
    head = edit(good[8 + start - 8:8 + start - 8 + head_len])
    payload = good[start + head_len:-container.TRAILER_SIZE_5]
    body = container._preamble(5, len(head), raw_len, payload_len) + head + payload
    with pytest.raises(ArchiveError, match=message):
        Reader(body + hashlib.sha256(body).digest()[:container.TRAILER_SIZE_5])


def test_the_format_5_header_dictionary_is_frozen():
    """Format-5 archives that name the primed deflate codec are read with exactly these bytes."""
    from bbans.archive import header_words

    assert hashlib.sha256(header_words.DICT_2).hexdigest() == (
        "661d076f3a00623a4c76f88eb148e0f58362812c9460d35ed9ccc188f754a7fa")


def test_the_header_dictionary_is_frozen():
    """Format-4 archives that name the primed deflate codec are read with exactly these bytes."""

    from bbans.archive import header_words

    assert len(header_words.DICT_1) == 32768
    assert hashlib.sha256(header_words.DICT_1).hexdigest() == (
        "d45956beaaf751815c0aea565bcefff2071e5717172a9338dc6c59a004857786")


def _digit_pngs(n: int) -> dict[str, bytes]:
    from PIL import Image

    from conftest import fixture_images, save

    return {f"{i}.png": save(Image.fromarray(255 * x[0]).convert("1"), "PNG")
            for i, x in enumerate(fixture_images("binary-mnist")[:n])}


def test_a_few_images_go_to_the_bundled_model_that_codes_them_in_fewest_bytes(tmp_path, monkeypatch):
    """The hierarchy codes a folder of digits best, but its first image borrows ~1,800 bits: a
    small group is coded by every model that serves it and the smallest payload kept."""
    files = _digit_pngs(2)
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    # Storing and JPEG-XL made dear, so the models are compared with each other only.
    monkeypatch.setattr(writer._Build, "without_model", lambda self, path: (10 ** 9, "LZMA2"))
    alone = {m: container.unpack(writer.create([str(src)], Options(model=m))[0])[1]["groups"][0]["payload"]["length"]
             for m in ("binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist")}
    data, _ = writer.create([str(src)], Options(model="auto"))
    (g,) = container.unpack(data)[1]["groups"]
    assert alone["binary-mnist"] < alone["binary-mnist-hier"]  # these two digits: the MLP's
    assert (g["model"], g["payload"]["length"]) == min(alone.items(), key=lambda kv: kv[1])
    (tmp_path / "a.bb").write_bytes(data)
    extract.extract(str(tmp_path / "a.bb"), str(tmp_path / "out"))
    assert {n: (tmp_path / "out" / n).read_bytes() for n in files} == files


def test_a_group_names_its_model_and_content_by_short_hashes_and_full_ones_still_read(tmp_path):
    from bbans.models import checkpoints

    files = _digit_pngs(2)
    back, _ = archive_round_trip(tmp_path, files, model="binary-mnist")
    assert back == files
    data = (tmp_path / "a.bb").read_bytes()
    g = container.unpack(data)[1]["groups"][0]
    full_model = checkpoints.load_model("binary-mnist", "auto")[1]["hash"]
    full_content = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()
    assert (g["model_hash"], g["sha256"]) == (full_model[:16], full_content[:16])

    def full(h):  # as archives wrote them before: all 64 hex digits
        h["groups"][0].update(model_hash=full_model, sha256=full_content)

    def wrong(h):
        h["groups"][0].update(sha256=("0" if full_content[0] != "0" else "1") + full_content[1:16])

    for edit, ok in ((full, True), (wrong, False)):
        (tmp_path / "e.bb").write_bytes(edit_header(data, edit))
        if ok:
            extract.extract(str(tmp_path / "e.bb"), str(tmp_path / "e"))
            assert {n: (tmp_path / "e" / n).read_bytes() for n in files} == files
        else:
            with pytest.raises(MismatchError, match="do not match their checksum"):
                extract.extract(str(tmp_path / "e.bb"), str(tmp_path / "f"))


def test_an_odd_file_among_many_kept_on_a_samples_estimate_is_taken_out_by_its_coded_cost(tmp_path):
    """Of many images only a sample is estimated before coding; one the sample missed, which the
    model codes dearer than JPEG-XL or storing, is found by its coded -ELBO and goes without it."""
    from PIL import Image

    from conftest import save

    from conftest import REPO

    scans = sorted((REPO / "examples" / "binary").glob("*.png"))  # real binarized MNIST digits
    files = {f"d{r}-{p.name}": p.read_bytes() for r in range(9) for p in scans}
    # Sorted second of the names: the evenly spaced sample of 32 never looks at it.
    files["d0-binarized-test-00a.png"] = save(Image.new("1", (28, 28), 1), "PNG")
    assert len(files) > 2 * writer.SAMPLE_IMAGES and sorted(files).index("d0-binarized-test-00a.png") == 1
    back, entries = archive_round_trip(tmp_path, files, model="auto")
    assert back == files
    assert entries["d0-binarized-test-00a.png"]["kind"] != "model" and "coded it in" in entries["d0-binarized-test-00a.png"]["why"]
    assert sum(e["kind"] == "model" for e in entries.values()) == len(files) - 1


def test_a_one_digit_archive_spends_few_bytes_beyond_its_coded_pixels():
    """Format 5's fixed costs: the preamble and trailer, a packed header, no stored PNG frame
    (its signature, IHDR and IEND follow from the image), no rANS message header."""
    from conftest import TREE

    data, _ = writer.create([str(TREE / "binary" / "b0.png")], Options(model="binary-mnist"))
    with Reader(data) as r:
        assert r.groups and "frames" not in r.header
        assert r.overhead < 90, r.overhead
        assert r.payload_len == r.groups[0]["payload"]["length"]
    assert reader.verify(data) == 1


def test_files_stored_alike_share_a_column_value_yet_each_reads_its_own_blob(tmp_path):
    from bbans.archive import packed

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the same words " * 20)
    data, _ = writer.create([str(tmp_path)], Options(model="none"))
    assert isinstance(packed.loads(_stored_header(data)[1])["entry_columns"]["data"], dict)
    with Reader(data) as r:
        refs = [e["data"] for e in r.entries]
        assert refs[0]["offset"] == 0 and refs[1]["offset"] == refs[0]["length"]
    assert reader.verify(data) == 2
