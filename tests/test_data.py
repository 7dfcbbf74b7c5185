"""The data sets (bbans.io.datasets): the fixture files, the lookup, and the errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bbans.errors import BBANSError, DataNotFoundError
from bbans.io import datasets as data
from conftest import FIX, SHARED, needs_shared


def test_mnist_fixture_shapes():
    x = data.load_dataset("mnist", "train", FIX, verify=False)
    assert x.shape == (40, 1, 28, 28) and x.dtype == np.uint8
    t = data.load_dataset("mnist", "test", FIX, verify=False)
    assert t.shape == (12, 1, 28, 28)


def test_binary_mnist_reference_binarization():
    grey = data.load_dataset("mnist", "test", FIX, verify=False)
    b = data.load_dataset("binary-mnist", "test", FIX, verify=False)
    assert set(np.unique(b)) <= {0, 1}
    rs = np.random.RandomState(0)
    expect = (rs.random_sample(grey.shape) < grey / 255.0).astype(np.uint8)
    np.testing.assert_array_equal(b, expect)
    # training images stay grey: the trainer binarizes them afresh each epoch
    assert data.load_dataset("binary-mnist", "train", FIX, verify=False).max() > 1


def test_dynamic_binarize():
    x = torch.tensor([[0, 255, 128]], dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    b = data.dynamic_binarize(x.expand(1000, 3), g)
    assert b.dtype == torch.uint8 and b[:, 0].sum() == 0 and b[:, 1].sum() == 1000
    assert 400 < int(b[:, 2].sum()) < 600


def test_md5_rejects_foreign_file():
    with pytest.raises(data.DataCorruptError, match="md5"):
        data.load_dataset("mnist", "test", FIX, verify=True)


def test_cifar_fixture_splits():
    tr = data.load_dataset("cifar10", "train", FIX)
    assert tr.shape == (20, 3, 32, 32)
    to, va = data.load_dataset("cifar10", "train-only", FIX), data.load_dataset("cifar10", "valid", FIX)
    np.testing.assert_array_equal(np.concatenate([to, va]), tr)
    assert data.load_dataset("cifar10", "test", FIX).shape == (6, 3, 32, 32)


def test_missing_data_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BBANS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataNotFoundError) as e:
        data.load_dataset("mnist", "test", tmp_path / "given")
    msg = str(e.value)
    assert str(tmp_path / "given") in msg and str(tmp_path / "env") in msg and "mnist/" in msg


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing in ~/.cache/bbans to find instead
    monkeypatch.setenv("BBANS_DATA", str(FIX))
    assert data.load_dataset("cifar10", "test").shape[0] == 6  # found through $BBANS_DATA
    assert data.candidate_roots("x")[0] == Path("x")


def test_truncated_idx(tmp_path):
    p = tmp_path / "bad.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(data.DataCorruptError):
        data.read_idx_images(p)


def test_unknown_names():
    # Refused for the name, before any file is looked for (FIX holds MNIST, so a lookup would succeed).
    with pytest.raises(BBANSError, match="unknown data set 'svhn'"):
        data.load_dataset("svhn", "test", FIX)
    with pytest.raises(BBANSError, match="unknown split 'valid'"):
        data.load_dataset("mnist", "valid", FIX)


@needs_shared("mnist", "cifar-10-batches-py")
def test_real_mnist_md5_and_shapes():
    t = data.load_dataset("mnist", "test", SHARED)
    assert t.shape == (10000, 1, 28, 28)
    assert data.load_dataset("cifar10", "test", SHARED).shape[1:] == (3, 32, 32)
