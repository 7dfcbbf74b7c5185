"""SIGTERM and SIGINT stop the command line with 143 and 130 and leave nothing half-written:
no staging folder, no temporary archive, no output."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from bbans.archive import writer
from bbans.archive.format import STAGING_PREFIX
from bbans.errors import Terminated
from conftest import bbans_command, process_env

SIGNALS = [(signal.SIGTERM, 143, "bbans: terminated"), (signal.SIGINT, 130, "bbans: interrupted")]
IDS = ["SIGTERM", "SIGINT"]


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


def _signal_when(cmd, cwd, ready, sig) -> tuple[int, str]:
    """Start `bbans cmd` in cwd and send `sig` as soon as `ready(names in cwd)` holds; fail if
    the command ends first (then the signal would not have been tested)."""
    # SIGINT as at a terminal, even where pytest itself runs with it ignored (started with `&`
    # from a script, as some CI runners do): Python only turns SIGINT into KeyboardInterrupt
    # when it starts with the default disposition.
    proc = subprocess.Popen(bbans_command(*cmd), cwd=cwd, env=process_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sent = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(os.listdir(cwd)):
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.005)
    if not sent:
        proc.kill()
    _, err = proc.communicate(timeout=120)
    assert sent, f"bbans {cmd[0]} ended (exit {proc.returncode}) before the moment to signal it came: {err}"
    return proc.returncode, err


@pytest.mark.parametrize("sig,code,last_line", SIGNALS, ids=IDS)
def test_a_signal_while_decompressing_removes_the_staging_folder(tmp_path, slow_archive, sig, code, last_line):
    def staging(names):
        return any(STAGING_PREFIX in n for n in names)

    rc, err = _signal_when(["decompress", slow_archive, "-o", tmp_path / "out"], tmp_path, staging, sig)
    assert rc == code, err
    assert err.strip().splitlines()[-1] == last_line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig,code,last_line", SIGNALS, ids=IDS)
def test_a_signal_while_verifying_removes_the_temporary_archive(tmp_path, slow_inputs, slow_archive, sig, code,
                                                               last_line):
    # The temporary archive is written whole before it is verified: signal once it has the
    # archive's full size (the same inputs and model give the same bytes), so the signal lands in
    # the verify, not in the write.
    size = slow_archive.stat().st_size

    def verifying(names):
        for n in names:
            if n.endswith(".tmp"):
                try:
                    return os.path.getsize(tmp_path / n) == size
                except FileNotFoundError:
                    return False
        return False

    rc, err = _signal_when(["compress", slow_inputs, "-o", tmp_path / "a.bb", "--verify", "--model", "cifar10-hier"],
                           tmp_path, verifying, sig)
    assert rc == code, err
    assert err.strip().splitlines()[-1] == last_line
    assert os.listdir(tmp_path) == []


def test_a_signal_whose_exception_was_swallowed_still_stops_the_next_step():
    """A handler's exception raised inside code that swallows it (importlib's weakref callback,
    while torch is imported) is lost; the signal is raised again at the next progress update."""
    from bbans.cli import signals

    signals._pending = None
    try:
        signals._handler(signal.SIGTERM, None)
    except BaseException:
        pass  # what the swallowing code did
    with pytest.raises(Terminated):
        signals.check()
    signals._pending = signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        signals.check()
    signals._pending = None
    signals.check()  # nothing received: nothing raised
