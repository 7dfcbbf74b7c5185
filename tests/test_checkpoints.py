"""Checkpoints: saving and loading, hashes, bundling, and the models that ship in models/.

A bundled model that is missing or does not load fails these tests: the models are part of
the repository, not something a machine may lack. Only ../shared/data may be absent.
"""

from pathlib import Path

import pytest
import torch

from bbans.errors import BBANSError
from bbans.models import checkpoints as C
from bbans.models import catalog, registry
from bbans.models.paper import MLPVAE, ResNetVAE
from bbans.training import train as T
from conftest import SHARED, fixture_images, needs_shared, training_data


@pytest.mark.parametrize("m", [MLPVAE("logistic", hidden=16, latent=3), ResNetVAE(width=8)])
def test_save_load_round_trip(tmp_path, m):
    meta = C.save_model(m, tmp_path / "m", {"dataset": "x", "test_bits_per_dim": 1.0})
    m2, meta2 = C.load_files(tmp_path / "m")
    assert meta2["hash"] == meta["hash"] and len(meta["hash"]) == 64
    saved, loaded = m.state_dict(), m2.state_dict()
    assert list(loaded) == list(saved)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    raw = (tmp_path / "m.decoder.safetensors").read_bytes()
    assert b"pickle" not in raw[:200]


def test_hash_changes_with_the_latent_bucket_scales(tmp_path):
    # Same weight files, other buckets: an archive made with one must not decode with the other.
    from bbans.models.hierarchy import HierarchicalVAE

    m = HierarchicalVAE("bernoulli", image_shape=(1, 8, 8), width=8, latent_channels=2, layers=2)
    first = C.save_model(m, tmp_path / "m", {"dataset": "x"})["hash"]
    m.latent_scales = [1.5, 1.0]
    second = C.save_model(m, tmp_path / "m", {"dataset": "x"})["hash"]
    assert first != second
    assert C.load_files(tmp_path / "m")[1]["hash"] == second


def test_bundle_and_registry(tmp_path, monkeypatch):
    data = training_data()
    arch = {"type": "mlp", "likelihood": "bernoulli", "image_shape": [1, 28, 28], "hidden": 16, "latent": 3, "layers": 2}
    T.run(T.TrainConfig("binary-mnist", epochs=1, batch_size=10, architecture=arch), tmp_path / "b", data=data, progress=False)
    T.run(T.TrainConfig("binary-mnist", epochs=1, batch_size=10, mode="refit", alpha=0.5, base=str(tmp_path / "b")),
          tmp_path / "r", data=data, progress=False)
    pkg = tmp_path / "pkg"
    rec = C.bundle("binary-mnist", tmp_path / "b", tmp_path / "r", pkg)
    # Point the registry at the temporary folder instead of the installed package.
    monkeypatch.setattr(catalog, "folder", lambda: pkg)
    assert [m["name"] for m in catalog.records()] == ["binary-mnist"]
    model, meta = C.load_model("binary-mnist", "refit")
    _, meta_b = C.load_model("binary-mnist", "baseline")
    assert meta["hash"] != meta_b["hash"] and meta["hash"] == rec["encoders"]["refit"]["hash"]
    assert meta["test_bits_per_dim"] == pytest.approx(T.evaluate(model, data[3]))
    with pytest.raises(BBANSError, match="unknown model"):
        C.load_model("svhn")
    with pytest.raises(BBANSError):
        C.load_model("binary-mnist", encoder="other")


def test_every_registered_model_is_bundled():
    assert [m["name"] for m in catalog.records()] == list(registry.NAMES)


@pytest.mark.parametrize("name", registry.NAMES)
def test_bundled_matches_recorded_figures(name):
    meta = C.load_model(name, "refit")[1]
    x = fixture_images(meta["dataset"])
    for enc in ("baseline", "refit"):
        model, m = C.load_model(name, enc)
        assert m["hash"] == meta["encoders"][enc]["hash"]
        got = T.evaluate(model, x)
        assert got == pytest.approx(meta["checks"]["fixture_test"][enc], abs=1e-4)


@needs_shared("mnist", "cifar-10-batches-py")
@pytest.mark.parametrize("name", registry.NAMES)
def test_bundled_real_subset(name):
    from bbans.io.datasets import load_dataset

    meta = C.load_model(name, "refit")[1]
    x = load_dataset(meta["dataset"], "test", SHARED)[:100]
    for enc in ("baseline", "refit"):
        model, _ = C.load_model(name, enc)
        assert T.evaluate(model, x) == pytest.approx(meta["checks"]["first_100_test"][enc], abs=1e-4)


def test_a_bundled_model_brings_its_own_k_step_rate_and_archives_record_it(tmp_path):
    from bbans.archive import reader, writer
    from bbans.archive.format import Reader
    from bbans.coding import engine

    model, meta = C.load_model("binary-mnist", "auto")
    assert engine.default_lr(model) == meta["kstep_lr"] == 0.03
    src = Path(__file__).parent / "fixtures" / "tree" / "binary" / "b0.png"
    data, _ = writer.create([str(src)], writer.Options(model="binary-mnist", K=1))
    assert reader.info(data)["groups"][0]["K"] == 1
    with Reader(data) as r:
        assert r.groups[0]["engine"]["lr"] == 0.03


def test_k_steps_a_model_measured_as_useless_are_not_run_and_the_user_is_told():
    from bbans.archive import writer
    from bbans.archive.format import Reader

    _, meta = C.load_model("binary-mnist-hier", "auto")
    assert meta["kstep_gain"] < 1e-3  # its held-out saving at K=7 (RESULTS.md)
    src = Path(__file__).parent / "fixtures" / "tree" / "binary" / "b0.png"
    data, rep = writer.create([str(src)], writer.Options(model="binary-mnist-hier", K=3))
    assert any("--K 3 not used with binary-mnist-hier" in n for n in rep["notes"])
    with Reader(data) as r:
        assert r.groups[0]["engine"]["K"] == 0
