"""SIGTERM and SIGINT stop the command line with 143 and 130 and leave nothing half-written:
no staging folder, no temporary archive, no output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bbans.archive import writer
@pytest.fixture(scope="module")
def slow_inputs(tmp_path_factory):
    """Random colour images: each costs the hierarchical colour model real work both ways."""
    src = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    return src


@pytest.fixture(scope="module")
def slow_archive(slow_inputs, tmp_path_factory):
    data, _ = writer.create([str(slow_inputs)], writer.Options(model="cifar10-hier"))
    path = tmp_path_factory.mktemp("bb") / "slow.bb"
    path.write_bytes(data)
    return path


def _signal_when(cmd, cwd, appears, sig) -> tuple[int, str]:
    """Start `bbans cmd` and send `sig` once a file whose name contains `appears` shows in cwd."""
    proc = subprocess.Popen([sys.executable, "-m", "bbans", *map(str, cmd)], cwd=cwd, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(appears in name for name in os.listdir(cwd)):
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_decompressing_removes_the_staging_folder(tmp_path, slow_archive, sig, code):
    rc, err = _signal_when(["decompress", slow_archive, "-o", tmp_path / "out"], tmp_path, ".bbans-partial-", sig)
    assert rc == code, err
    assert err.strip().splitlines()[-1] in ("bbans: terminated", "bbans: interrupted")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_verifying_removes_the_temporary_archive(tmp_path, slow_inputs, sig, code):
    rc, err = _signal_when(["compress", slow_inputs, "-o", tmp_path / "a.bb", "--verify", "--model", "cifar10-hier"],
                           tmp_path, ".tmp", sig)
    assert rc == code, err
    assert os.listdir(tmp_path) == []
