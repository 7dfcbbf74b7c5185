"""The installed `bbans` console script as a user types it: standard input and output, the
default names, and every error path's documented exit code, in real processes."""

from __future__ import annotations

import filecmp
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TREE, edit_header, process_env

SCRIPT = Path(sys.executable).parent / "bbans"
DIGIT = TREE / "digits" / "d0.png"


def bbans(*args, stdin: bytes | None = None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the console script; bytes in, bytes out."""
    if not SCRIPT.exists():
        pytest.fail(f"the console script {SCRIPT} is not installed (pip install -e .)")
    return subprocess.run([str(SCRIPT), *map(str, args)], input=stdin if stdin is not None else b"",
                          capture_output=True, env=process_env(), cwd=cwd, timeout=timeout)


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbans: error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("in") / "digits"
    (src / "sub").mkdir(parents=True)
    shutil.copy(DIGIT, src / "d0.png")
    shutil.copy(TREE / "digits" / "d1.pgm", src / "sub" / "d1.pgm")
    (src / "notes.txt").write_bytes(b"not an image\n")
    return src


@pytest.fixture(scope="module")
def archive(folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bb") / "digits.bb"
    # A model named, so the archive has a model group however small the folder is.
    r = bbans("compress", folder, "-o", path, "-q", "--model", "mnist-hier")
    assert r.returncode == 0, r.stderr
    return path


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    return not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files) and all(
        same_tree(a / d, b / d) for d in cmp.common_dirs)


# ---- streams ---------------------------------------------------------------------------------


def test_help_lists_the_commands_with_examples_and_exit_codes_without_importing_torch():
    r = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True,
                       env={**process_env(), "PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0
    for word in ("compress", "decompress", "info", "models", "bench", "train", "Examples:", "Exit codes:",
                 "_BBANS_COMPLETE"):
        assert word in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "bbans.cli" in imported and not {m for m in imported if m.split(".")[0] == "torch"}


def test_a_folder_goes_through_a_pipe_and_comes_back_identical(folder, tmp_path):
    packed = bbans("compress", folder, "-c", "-q")
    assert packed.returncode == 0 and packed.stdout[:6] == b"BBANS\x00", packed.stderr
    r = bbans("decompress", "-", "-o", tmp_path / "out", "-q", stdin=packed.stdout)
    assert r.returncode == 0, r.stderr
    assert same_tree(folder, tmp_path / "out")


def test_a_file_from_standard_input_comes_back_on_standard_output_byte_for_byte():
    data = DIGIT.read_bytes()
    packed = bbans("compress", "-", "--name", "d0.png", "-o", "-", "-q", "--model", "mnist-hier", stdin=data)
    assert packed.returncode == 0, packed.stderr
    info = bbans("info", "-", "--json", stdin=packed.stdout)
    assert info.returncode == 0 and b'"d0.png"' in info.stdout and b'"model"' in info.stdout
    back = bbans("decompress", "-", "-c", "-q", stdin=packed.stdout)
    assert back.returncode == 0 and back.stdout == data, back.stderr


def test_compress_without_an_output_names_the_archive_after_its_input(folder, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(folder, work / "digits")
    r = bbans("compress", "digits/", "-q", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "digits.bb").read_bytes()[:6] == b"BBANS\x00"
    r = bbans("decompress", "digits.bb", "-o", "back", "-q", cwd=work)
    assert r.returncode == 0 and same_tree(work / "digits", work / "back")


def test_decompress_to_standard_output_of_a_many_file_archive_exits_1_and_writes_nothing(folder, archive):
    r = bbans("decompress", archive, "-c")
    assert r.returncode == 1 and r.stdout == b""
    assert "holds 3 files" in error_line(r)


def test_an_archive_is_not_written_to_a_terminal(folder, tmp_path):
    leader, follower = pty.openpty()
    try:
        r = subprocess.run([str(SCRIPT), "compress", str(folder), "-c", "-q"], stdout=follower,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=process_env(), timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 1 and b"refusing to write an archive to a terminal" in r.stderr


# ---- exit codes ------------------------------------------------------------------------------


def _corrupt(data: bytes) -> bytes:
    return data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]


def _other_model(data: bytes) -> bytes:
    def edit(h):
        h["groups"][0]["model_hash"] = "0" * 64

    return edit_header(data, edit)


# (name, arguments, standard input made from the archive's bytes or None, exit code, message)
CASES = [
    ("missing input", ["compress", "{tmp}/none.png", "-o", "{tmp}/a.bb"], None, 1, "no such file"),
    ("existing output", ["compress", "{folder}", "-o", "{archive}"], None, 1, "exists; use -f"),
    ("output is an input", ["compress", "{archive}", "-o", "{archive}", "-f"], None, 1, "one of the inputs"),
    ("unknown option", ["compress", "{folder}", "--fast"], None, 2, None),
    ("-c with -o FILE", ["compress", "{folder}", "-c", "-o", "{tmp}/a.bb"], None, 2, None),
    ("stdin archive without -o", ["decompress", "-"], "archive", 2, None),
    ("two stdin inputs", ["compress", "-", "-", "-c"], "archive", 2, None),
    ("not an archive", ["decompress", "{tmp}/junk.bb", "-o", "{tmp}/out"], None, 3, "not a bbans archive"),
    ("corrupt from stdin", ["decompress", "-", "-o", "{tmp}/out"], "corrupt", 3, "checksum"),
    ("truncated", ["info", "-"], "truncated", 3, "truncated"),
    ("other model weights", ["decompress", "{tmp}/other.bb", "-o", "{tmp}/out"], None, 4, "weights"),
    ("the wrong device class", ["decompress", "{archive}", "--device", "cpu", "-o", "{tmp}/out"], "cuda-archive", 4,
     "coded on device class cuda"),
]


@pytest.mark.parametrize("name,args,stdin,code,message", CASES, ids=[c[0] for c in CASES])
def test_every_error_path_exits_with_its_documented_code_and_writes_nothing(name, args, stdin, code, message,
                                                                          folder, archive, tmp_path):
    data = archive.read_bytes()
    (tmp_path / "junk.bb").write_bytes(b"hello, not an archive")
    (tmp_path / "other.bb").write_bytes(_other_model(data))

    def cuda(h):  # a float archive from a GPU (an exact one opens anywhere)
        for g in h["groups"]:
            g["engine"].update(device="cuda", arithmetic="float", dtype="float32")
        h["device"] = "cuda"

    inputs = {"archive": data, "corrupt": _corrupt(data), "truncated": data[:-100],
              "cuda-archive": None}
    if stdin == "cuda-archive":
        cuda_path = tmp_path / "cuda.bb"
        cuda_path.write_bytes(edit_header(data, cuda))
        args = [a.replace("{archive}", str(cuda_path)) for a in args]
    before = sorted(os.listdir(tmp_path))
    argv = [a.format(tmp=tmp_path, folder=folder, archive=archive) for a in args]
    r = bbans(*argv, stdin=inputs.get(stdin))
    assert r.returncode == code, (r.returncode, r.stderr)
    if code == 2:
        assert b"Usage:" in r.stderr
    else:
        assert message in error_line(r)
    assert sorted(os.listdir(tmp_path)) == before and r.stdout == b""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so --device cuda is no error")
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_device_cuda_without_a_gpu_exits_1_not_4(command, folder, archive, tmp_path):
    args = (["compress", folder, "-o", tmp_path / "a.bb"] if command == "compress"
            else ["decompress", archive, "-o", tmp_path / "out"])
    r = bbans(*args, "--device", "cuda")
    assert r.returncode == 1 and "no CUDA device" in error_line(r)
    assert os.listdir(tmp_path) == []
