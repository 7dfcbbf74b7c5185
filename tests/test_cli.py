"""The compress/decompress/info/models commands, driven through the real entry point
(`bbans.cli.main`, in this process, by the `bbans_main` fixture; one test starts a real process)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bbans.archive import format as container
from bbans.archive import reader, writer
from bbans.errors import BBANSError, MismatchError
from bbans.io import rebuild
from bbans.models import catalog, checkpoints, registry
from conftest import REPO, TREE, edit_header, one_error_line, process_env, run_bbans_process


# ---- the input tree --------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path) -> Path:
    """The fixture tree plus what git cannot hold: empty folders, symlinks, a fifo."""
    src = tmp_path / "in"
    shutil.copytree(TREE, src, symlinks=True)
    (src / "empty").mkdir()
    (src / "deep" / "hollow").mkdir()
    (src / "links").mkdir()
    os.symlink("../digits/d0.png", src / "links" / "inside.png")
    os.symlink("../..", src / "links" / "escapes")
    os.symlink("/etc/hostname", src / "links" / "absolute")
    os.mkfifo(src / "pipe")
    os.chmod(src / "notes.txt", 0o600)
    return src


SKIPPED_LINKS = {"links/escapes", "links/absolute"}


def _image_state(path: Path):
    with Image.open(path) as img:
        img.load()
        text = {k: (str(v), getattr(v, "lang", None), getattr(v, "tkey", None))
                for k, v in getattr(img, "text", {}).items()}
        return img.format, img.mode, img.size, np.asarray(img).tobytes(), img.info, text


def assert_restored(src: Path, dst: Path, stored_exact: set[str] | None = None, skip=frozenset({"pipe"})):
    """Every entry of src is in dst: folders, links, files byte-identical or, for model-coded
    images, identical in format, mode, size, pixels and metadata. Nothing else is in dst."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            s = Path(dirpath) / name
            rel = s.relative_to(src).as_posix()
            if rel in skip or rel in SKIPPED_LINKS:
                assert not os.path.lexists(dst / rel), rel
                continue
            d = dst / rel
            seen.add(rel)
            if s.is_symlink():
                assert d.is_symlink() and os.readlink(d) == os.readlink(s), rel
            elif s.is_dir():
                assert d.is_dir() and not d.is_symlink(), rel
                assert (os.stat(d).st_mode & 0o777) == (os.stat(s).st_mode & 0o777), rel
            else:
                assert d.is_file() and not d.is_symlink(), rel
                assert os.stat(d).st_mtime_ns == os.stat(s).st_mtime_ns, rel
                assert (os.stat(d).st_mode & 0o777) == (os.stat(s).st_mode & 0o777), rel
                if s.read_bytes() == d.read_bytes():
                    continue
                assert stored_exact is None or rel not in stored_exact, f"{rel} should be byte-identical"
                assert _image_state(s) == _image_state(d), rel
    extra = {Path(dp, n).relative_to(dst).as_posix() for dp, dns, fns in os.walk(dst) for n in dns + fns} - seen
    assert not extra, extra


def _kinds(bb: Path) -> dict[str, str]:
    with container.Reader(bb) as r:
        return {e["path"]: (r.groups[e["group"]]["model"] if e["kind"] == "model" else e["kind"]) for e in r.entries}


# ---- round trips -----------------------------------------------------------------------------


def test_generic_round_trip_without_models(bbans_main, tree, tmp_path, no_models):
    bb = tmp_path / "t.bb"
    code, out, err = bbans_main("compress", tree, "-o", bb)
    assert code == 0, err
    assert "pipe: named pipe (fifo) skipped" in err
    assert "model mnist-hier is not bundled" in err
    kinds = _kinds(bb)
    # Without models, images are kept by JPEG-XL (where their files can be rebuilt) or stored.
    assert set(v for v in kinds.values()) == {"stored", "image", "dir", "symlink"}
    code, out, err = bbans_main("decompress", bb)
    assert code == 0, err
    assert "points outside the output folder" in err and "resolves outside" not in err
    assert_restored(tree, tmp_path / "t", stored_exact=set(kinds))


def test_model_round_trip(bbans_main, tree, tmp_path, fake_models):
    bb = tmp_path / "t.bb"
    code, out, err = bbans_main("compress", tree, "-o", bb, "--batch-size", 3, "--lanes", 64, "--verify")
    assert code == 0, err
    assert "verified" in out
    kinds = _kinds(bb)
    for name in ("binary/b0.png", "binary/b1.pbm", "binary/b2.bmp", "binary/b3.tif"):
        assert kinds[name] == "binary-mnist-hier"
    for name in ("digits/d0.png", "digits/d1.pgm", "digits/d2.bmp", "digits/wide 41x30.png"):
        assert kinds[name] == "mnist-hier"
    for name in ("colour/c0.png", "colour/c1.ppm", "colour/c2.tif", "deep/er/still/ünï ✓.png"):
        assert kinds[name] == "cifar10-hier"
    assert all(kinds[k] == "stored" for k in kinds if k.startswith("stored/"))
    out_dir = tmp_path / "restored"
    code, out, err = bbans_main("decompress", bb, "-o", out_dir)
    assert code == 0, err
    stored = {k for k, v in kinds.items() if v == "stored"}
    assert_restored(tree, out_dir, stored_exact=stored)


def test_model_round_trip_with_optimal_inference(bbans_main, tree, tmp_path, fake_models):
    src = tmp_path / "src"
    shutil.copytree(tree / "binary", src / "binary")
    shutil.copytree(tree / "digits", src / "digits")
    shutil.copy(tree / "colour" / "c2.tif", src)
    bb = tmp_path / "k2.bb"
    code, out, err = bbans_main("compress", src, "-o", bb, "--K", 2, "--batch-size", 2, "--lanes", 32)
    assert code == 0, err
    assert set(_kinds(bb).values()) == {"binary-mnist-hier", "mnist-hier", "cifar10-hier", "dir"}
    assert bbans_main("decompress", bb)[0] == 0
    assert_restored(src, tmp_path / "k2")


def test_forced_model_and_none(bbans_main, tree, tmp_path, fake_models):
    bb = tmp_path / "m.bb"
    assert bbans_main("compress", tree / "binary", "-o", bb, "--model", "mnist")[0] == 0
    assert set(_kinds(bb).values()) == {"mnist"}
    assert bbans_main("decompress", bb, "-o", tmp_path / "m")[0] == 0
    assert_restored(tree / "binary", tmp_path / "m")
    bb = tmp_path / "b.bb"
    code, out, _ = bbans_main("compress", tree / "digits", tree / "binary", "-o", bb, "--model", "binary-mnist", "--json")
    assert code == 0
    why = {e["path"]: e.get("why") for e in json.loads(out)["entries"]}
    assert why["d0.png"] == "not served by --model binary-mnist" and why["b0.png"] is None
    bb = tmp_path / "n.bb"
    assert bbans_main("compress", tree / "binary", "-o", bb, "--model", "none")[0] == 0
    assert set(_kinds(bb).values()) == {"stored"}


def test_real_bundled_models_round_trip(bbans_main, tmp_path):
    # The models ship in models/: one that is missing or fails to load is a failure, not a skip
    # (a file it cannot code would only be stored, and the round trip would still pass).
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(TREE / "digits" / "d0.png", src)
    shutil.copy(TREE / "binary" / "b0.png", src)
    for model, coded in (("mnist-hier", {"d0.png", "b0.png"}), ("binary-mnist-hier", {"b0.png"})):
        for K in (0, 2):
            bb = tmp_path / f"{model}-k{K}.bb"
            code, out, err = bbans_main("compress", src, "-o", bb, "--model", model, "--K", K, "--batch-size", 2,
                                        "--device", "cpu", "--verify")
            assert code == 0, err
            assert "could not be loaded" not in err, err
            assert {p for p, how in _kinds(bb).items() if how == model} == coded
            assert bbans_main("decompress", bb, "-o", tmp_path / bb.stem)[0] == 0
            assert_restored(src, tmp_path / bb.stem)


def test_auto_codes_an_image_with_a_model_only_where_that_is_cheaper_than_storing_it(bbans_main, tmp_path):
    # One digit alone: the model's cost with its fixed costs (initial bits, the group's record, the
    # file's frame) is more than JPEG-XL's, by the estimate or by the trial; the reason names it.
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(TREE / "digits" / "d0.png", one)
    assert bbans_main("compress", one, "-o", tmp_path / "one.bb", "-q")[0] == 0
    rep = json.loads(bbans_main("info", tmp_path / "one.bb", "--json")[1])
    (entry,) = [e for e in rep["entries"] if e["kind"] != "dir"]
    assert entry["kind"] in ("stored", "image") and entry["why"].startswith("model mnist-hier")
    assert entry["coded_bytes"] <= entry["size"]
    # Forty real digits: the model wins, and every image it codes is cheaper than its stored bytes.
    many = tmp_path / "many"
    many.mkdir()
    for i in range(5):
        for digit in (REPO / "examples" / "digits").iterdir():
            shutil.copy(digit, many / f"{i}-{digit.name}")
    assert bbans_main("compress", many, "-o", tmp_path / "many.bb", "-q")[0] == 0
    rep = json.loads(bbans_main("info", tmp_path / "many.bb", "--json")[1])
    coded = [e for e in rep["entries"] if e["kind"] == "model"]
    assert len(coded) >= 30 and all(e["coded_bytes"] < e["size"] for e in coded)
    assert rep["archive_bytes"] < sum(e["size"] for e in rep["entries"] if "size" in e)


def test_a_model_that_fails_to_load_falls_back(bbans_main, tree, tmp_path, fake_models, monkeypatch):
    real = checkpoints.load_model

    def load_model(name, encoder="refit", device="cpu"):
        if name == "binary-mnist-hier":
            raise BBANSError("bundled model 'binary-mnist-hier' is incomplete")
        return real(name, encoder, device)

    monkeypatch.setattr(checkpoints, "load_model", load_model)
    bb = tmp_path / "b.bb"
    code, _, err = bbans_main("compress", tree / "binary", "-o", bb, "--lanes", 32)
    assert code == 0
    assert "model binary-mnist-hier could not be loaded" in err and "4 image(s) coded with binary-mnist instead" in err
    assert set(_kinds(bb).values()) == {"binary-mnist"}
    code, _, err = bbans_main("compress", tree / "binary", "-o", bb, "-f", "--model", "binary-mnist-hier")
    assert code == 1 and "incomplete" in one_error_line(err)


def test_file_roots_symlink_roots_and_name_clashes(bbans_main, tmp_path, no_models):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.txt").write_text("a")
    (b / "x.txt").write_text("b")
    (tmp_path / "lone.txt").write_text("lone")
    os.symlink(tmp_path / "lone.txt", tmp_path / "via-link.txt")
    code, _, err = bbans_main("compress", a, b, "-o", tmp_path / "clash.bb")
    assert code == 1 and "both be stored as 'x.txt'" in one_error_line(err)
    assert not (tmp_path / "clash.bb").exists()
    bb = tmp_path / "ok.bb"
    assert bbans_main("compress", a, tmp_path / "lone.txt", tmp_path / "via-link.txt", "-o", bb)[0] == 0
    assert _kinds(bb) == {"x.txt": "stored", "lone.txt": "stored", "via-link.txt": "stored"}
    code, _, err = bbans_main("compress", tmp_path / "missing", "-o", tmp_path / "m.bb")
    assert code == 1 and "no such file" in one_error_line(err)


def test_names_differing_in_case_both_restore(bbans_main, tmp_path, no_models):
    src = tmp_path / "src"
    src.mkdir()
    (src / "A.txt").write_text("upper")
    (src / "a.txt").write_text("lower")
    if (src / "A.txt").read_text() != "upper":
        pytest.skip(f"the file system under {tmp_path} does not tell A.txt from a.txt")
    assert bbans_main("compress", src, "-o", tmp_path / "c.bb")[0] == 0
    assert bbans_main("decompress", tmp_path / "c.bb")[0] == 0
    assert (tmp_path / "c" / "A.txt").read_text() == "upper" and (tmp_path / "c" / "a.txt").read_text() == "lower"


# ---- info, models, help ----------------------------------------------------------------------


def test_info_on_a_real_archive(bbans_main, tree, tmp_path, fake_models):
    bb = tmp_path / "t.bb"
    assert bbans_main("compress", tree / "digits", tree / "colour", "-o", bb, "--K", 1, "--batch-size", 4, "--lanes", 32)[0] == 0
    code, out, _ = bbans_main("info", bb)
    assert code == 0
    assert "format 5" in out and "coded on cpu" in out and "exact-1 arithmetic" in out
    assert "model mnist-hier" in out and "K=1" in out and "bits/dim" in out and "overhead" in out
    assert "d0.png" in out and "c1.ppm" in out
    code, out, _ = bbans_main("info", bb, "--json")
    rep = json.loads(out)
    assert rep["archive_bytes"] == bb.stat().st_size
    assert {g["model"] for g in rep["groups"]} == {"mnist-hier", "cifar10-hier"}
    assert all(g["K"] == 1 and g["device"] == "cpu" for g in rep["groups"])
    files = [e for e in rep["entries"] if e["kind"] == "model"]
    assert len(files) == 7 and all(e["bits_per_dim"] > 0 for e in files)
    assert sum(e["coded_bytes"] for e in files) == pytest.approx(sum(g["payload_bytes"] for g in rep["groups"]))


def test_models_command(bbans_main, fake_models, monkeypatch):
    code, out, _ = bbans_main("models")
    assert code == 0 and "binary-mnist" in out and "28x28" in out
    assert "refit 0.1250*, baseline 0.2500" in out  # * the encoder compress uses: the lower figure
    # Every registered model is listed; "bundled" says which ones list_models found.
    every = catalog.records
    monkeypatch.setattr(catalog, "records", lambda: [m for m in every() if m["name"] != "cifar10"])
    rows = json.loads(bbans_main("models", "--json")[1])
    assert [r["name"] for r in rows] == list(registry.NAMES)
    assert {r["name"]: r["bundled"] for r in rows} == {n: n != "cifar10" for n in registry.NAMES}
    assert {r.get("default_encoder") for r in rows if r["bundled"]} == {"refit"}


def test_the_default_encoder_is_the_bundled_one_with_the_lower_test_figure():
    model, meta = checkpoints.load_model("binary-mnist", "auto")
    figures = {k: v["test_bits_per_dim"] for k, v in meta["encoders"].items()}
    assert meta["encoder"] == min(figures, key=figures.get)
    assert catalog.better_encoder({"encoders": {"refit": {"test_bits_per_dim": 0.2},
                                                    "baseline": {"test_bits_per_dim": 0.1}}}) == "baseline"
    # Without both figures there is nothing to choose by: the refit, as before.
    assert catalog.better_encoder({"encoders": {"refit": {"test_bits_per_dim": 1.0}}}) == "refit"


@pytest.mark.parametrize("cmd", ["compress", "decompress", "info", "models"])
def test_help_has_examples_and_exit_codes(bbans_main, cmd):
    code, out, _ = bbans_main(cmd, "--help")
    assert code == 0
    assert "Examples:" in out and "Exit codes:" in out and "3  archive corrupt" in out


# ---- refusals --------------------------------------------------------------------------------


def test_overwrite_refusal(bbans_main, tmp_path, no_models):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("new")
    bb = tmp_path / "a.bb"
    bb.write_bytes(b"precious")
    code, _, err = bbans_main("compress", src, "-o", bb)
    assert code == 1 and "use -f" in one_error_line(err) and bb.read_bytes() == b"precious"
    assert bbans_main("compress", src, "-o", bb, "-f")[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.txt").write_text("old")
    (out / "keep.txt").write_text("keep")
    code, _, err = bbans_main("decompress", bb, "-o", out)
    assert code == 1 and "refusing to overwrite" in one_error_line(err)
    assert (out / "f.txt").read_text() == "old" and sorted(p.name for p in out.iterdir()) == ["f.txt", "keep.txt"]
    assert bbans_main("decompress", bb, "-o", out, "-f")[0] == 0
    assert (out / "f.txt").read_text() == "new" and (out / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == ["f.txt", "keep.txt"]


def test_never_writes_through_a_link_in_the_output_folder(bbans_main, tmp_path, no_models):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("x")
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb")[0] == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "sub")
    code, _, err = bbans_main("decompress", tmp_path / "a.bb", "-o", out, "-f")
    assert code == 1 and "sub exists and is not a folder" in one_error_line(err)
    assert list(outside.iterdir()) == []


def _renamed(data: bytes, old: str, new: str) -> bytes:
    def edit(header):
        for e in header["entries"]:
            if e["path"] == old:
                e["path"] = new
    return edit_header(data, edit)


def _oversized(data: bytes) -> bytes:
    def edit(header):
        for e in header["entries"]:
            if e["kind"] == "stored" and e["data"]["codec"] == "lzma2":
                e["size"] = 1 << 50
    return edit_header(data, edit)


BAD = {
    "corrupt byte": lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:],
    "truncated": lambda d: d[: len(d) - 40],
    "foreign": lambda d: b"PK\x03\x04" + d[4:],
    "future version": lambda d: d[:6] + struct.pack("<H", 6) + d[8:],
    "path traversal": lambda d: _renamed(d, "f.txt", "../f.txt"),
    "absolute path": lambda d: _renamed(d, "f.txt", "/tmp/bbans-evil.txt"),
    "colliding names": lambda d: _renamed(d, "g.txt", "f.txt"),
    "oversized length": _oversized,
    "empty file": lambda d: b"",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_archives_fail_cleanly(bbans_main, tmp_path, no_models, case):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("f" * 500)
    (src / "g.txt").write_text("g" * 500)
    good = tmp_path / "good.bb"
    assert bbans_main("compress", src, "-o", good)[0] == 0
    bad = tmp_path / "bad.bb"
    bad.write_bytes(BAD[case](good.read_bytes()))
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (("decompress", bad), ("decompress", bad, "-o", tmp_path / "x" / "y"), ("info", bad)):
        code, out, err = bbans_main(*args)
        assert code == 3, (args, err)
        message = one_error_line(err)
        assert not message.startswith("unexpected"), (args, err)  # refused by a check, not by main's catch-all
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not os.path.exists("/tmp/bbans-evil.txt")
    if case == "future version":
        assert "made by a newer bbans (format 6)" in message


def test_other_model_weights_are_a_mismatch(bbans_main, tmp_path, fake_models):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(TREE / "digits" / "d0.png", src)
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb")[0] == 0
    fake_models["salt"] = "-retrained"
    code, _, err = bbans_main("decompress", tmp_path / "a.bb")
    assert code == 4 and "weights" in one_error_line(err)
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bb", "src"]


def test_a_failure_while_decoding_leaves_nothing(bbans_main, tree, tmp_path, fake_models, monkeypatch):
    bb = tmp_path / "t.bb"
    assert bbans_main("compress", tree / "binary", tree / "digits", tree / "stored", "-o", bb, "--lanes", 64)[0] == 0
    real = rebuild.rebuild
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise MismatchError("simulated failure")
        return real(*a, **k)

    monkeypatch.setattr(rebuild, "rebuild", flaky)
    code, _, err = bbans_main("decompress", bb, "-o", tmp_path / "new" / "deeper")
    assert code == 4 and one_error_line(err).endswith("simulated failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "t.bb"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("mine")
    calls.clear()
    code, _, err = bbans_main("decompress", bb, "-o", existing)
    assert code == 4 and one_error_line(err).endswith("simulated failure")
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]


def test_failed_verify_keeps_no_archive(bbans_main, tmp_path, no_models, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("f")

    def bad_verify(*a, **k):
        raise MismatchError("verify failed: simulated")

    monkeypatch.setattr(reader, "verify", bad_verify)
    code, _, err = bbans_main("compress", src, "-o", tmp_path / "a.bb", "--verify")
    assert code == 4 and one_error_line(err) == "verify failed: simulated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ---- main(): every failure is one line and a documented exit code ----------------------------


def test_a_usage_error_exits_2_with_click_usage_text(bbans_main):
    code, out, err = bbans_main("compress")
    assert code == 2, err
    assert "Usage:" in err and "Missing argument" in err and "Traceback" not in err


def test_an_unexpected_exception_is_one_line_exit_3_unless_tracebacks_are_asked_for(bbans_main, tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")

    def crash(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(writer, "create", crash)
    code, _, err = bbans_main("compress", tmp_path / "f.txt", "-o", tmp_path / "a.bb")
    assert code == 3 and one_error_line(err) == "unexpected RuntimeError: boom"
    monkeypatch.setenv("BBANS_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="boom"):
        bbans_main("compress", tmp_path / "f.txt", "-o", tmp_path / "a.bb")


# ---- the real process ------------------------------------------------------------------------


def test_process_exit_codes_and_no_traceback(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("hello")
    bb = tmp_path / "a.bb"
    p = run_bbans_process("compress", src, "-o", bb, "--model", "none", "-q")
    assert p.returncode == 0, p.stderr
    data = bytearray(bb.read_bytes())
    data[30] ^= 0xFF
    bb.write_bytes(bytes(data))
    p = run_bbans_process("decompress", bb)
    assert p.returncode == 3
    assert "checksum mismatch" in one_error_line(p.stderr)
    assert not (tmp_path / "a").exists()
    p = run_bbans_process("compress", src, "-o", bb, "--model", "none")
    assert p.returncode == 1 and "use -f" in one_error_line(p.stderr)


# ---- every byte: inputs are never overwritten, links never lead out ---------------------------


def test_compressing_a_file_onto_itself_is_refused_even_with_force(bbans_main, tmp_path):
    src = tmp_path / "a.png"
    shutil.copy(TREE / "digits" / "d0.png", src)
    before = src.read_bytes()
    code, _, err = bbans_main("compress", src, "-o", src, "-f")
    assert code == 1 and "is one of the inputs" in one_error_line(err)
    assert src.read_bytes() == before


def test_an_output_inside_an_input_folder_that_exists_is_refused_even_with_force(bbans_main, tmp_path):
    src = tmp_path / "d"
    shutil.copytree(TREE / "digits", src)
    before = (src / "d0.png").read_bytes()
    code, _, err = bbans_main("compress", src, "-o", src / "d0.png", "-f")
    assert code == 1 and "is one of the inputs" in one_error_line(err)
    assert (src / "d0.png").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in (TREE / "digits").iterdir())


def test_a_new_archive_inside_an_input_folder_is_written_and_not_read(bbans_main, tmp_path, no_models):
    src = tmp_path / "d"
    shutil.copytree(TREE / "digits", src)
    assert bbans_main("compress", src, "-o", src / "new.bb", "-q")[0] == 0
    with container.Reader(str(src / "new.bb")) as r:
        assert "new.bb" not in {e["path"] for e in r.entries}


def test_a_link_that_resolves_outside_through_a_link_already_there_is_not_restored(bbans_main, tmp_path, no_models):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    os.symlink("up/secret", src / "via")  # lexically inside: up/secret
    (tmp_path / "a.bb").write_bytes(writer.create([str(src)], writer.Options(model="none"))[0])
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "up")  # the user's own link, leading out of the folder
    code, _, err = bbans_main("decompress", tmp_path / "a.bb", "-o", out)
    assert code == 0
    assert "resolves outside the output folder" in err
    assert not os.path.lexists(out / "via")
    assert (out / "f.txt").read_text() == "x"


def test_commands_that_code_no_image_never_import_torch(tmp_path):
    """Listing models, archiving text and reading it back need no network: torch's import (about
    1.5 s) is paid only where a model codes or decodes."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("every byte back " * 40)
    script = (
        "import sys\n"
        "from bbans.cli import main\n"
        f"for argv in (['models'], ['compress', {str(src)!r}, '-o', {str(tmp_path / 'a.bb')!r}, '-q'],\n"
        f"             ['info', {str(tmp_path / 'a.bb')!r}], ['decompress', {str(tmp_path / 'a.bb')!r}, '-o',\n"
        f"             {str(tmp_path / 'out')!r}, '-q']):\n"
        "    sys.argv = ['bbans', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (argv, e.code)\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=process_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "no torch"
    assert (tmp_path / "out" / "notes.txt").read_text() == "every byte back " * 40


def test_a_group_codes_its_latents_as_the_models_record_says_and_info_names_it(bbans_main, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for digit in sorted((REPO / "examples" / "binary").iterdir())[:2]:
        shutil.copy(digit, src / digit.name)
    assert bbans_main("compress", src, "-o", tmp_path / "a.bb", "-q", "--model", "binary-mnist-hier")[0] == 0
    (g,) = json.loads(bbans_main("info", tmp_path / "a.bb", "--json")[1])["groups"]
    record = catalog.by_name()["binary-mnist-hier"]
    assert (g["latent_bits"], g["uncoded_channels"]) == (record["latent_prec"], len(record["collapsed_latents"]))
    assert "latent channel(s) uncoded" in bbans_main("info", tmp_path / "a.bb")[1]
    assert bbans_main("decompress", tmp_path / "a.bb", "-o", tmp_path / "out", "-q")[0] == 0
    assert all((tmp_path / "out" / p.name).read_bytes() == p.read_bytes() for p in src.iterdir())
