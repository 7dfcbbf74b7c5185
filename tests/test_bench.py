"""`bbans bench`: end to end on fixture images with tiny untrained models, JSON keys, errors.

Untrained models code badly but exactly, which is all these tests need: the figures come from
the real engine and the real generic codecs, never from ../shared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bbans import bench
from bbans.errors import EXIT_ERROR, EXIT_MISMATCH
from bbans.models.paper import MLPVAE
from conftest import FIX, fixture_images, one_error_line

ENGINE = {"batch_size": 4, "lanes": 8, "device": "cpu"}


def _mlp(likelihood: str, seed: int) -> MLPVAE:
    torch.manual_seed(seed)
    return MLPVAE(likelihood=likelihood, hidden=16, latent=4, layers=1).eval()


@pytest.fixture(scope="module")
def binary_images():
    return fixture_images("binary-mnist")[:8]


def test_parse_k_list():
    assert bench.parse_k_list("5, 0,1,1") == (0, 1, 5)
    for bad in ("", "a", "-1"):
        with pytest.raises(bench.BBANSError):
            bench.parse_k_list(bad)


def test_method_specs_always_has_the_baseline():
    names = [s.name for s in bench.method_specs((2,))]
    assert names == ["baseline", "refit", "baseline+K2", "refit+K2"]


@pytest.mark.parametrize("n", [1, 5, 12])
def test_tile_round_trip(n):
    x = np.random.default_rng(n).integers(0, 256, (n, 3, 4, 5), dtype=np.uint8)
    canvas = bench.tile(x)
    rows, cols = bench.grid_shape(n)
    assert canvas.shape == (3, rows * 4, cols * 5) and rows * cols >= n
    assert np.array_equal(bench.untile(canvas, n, 4, 5), x)


@pytest.mark.parametrize("name", ["mnist", "binary-mnist", "cifar10"])
def test_generic_codecs_exact(name):
    x = fixture_images(name)[:5]
    rows = bench.run_generic(x, binary=name == "binary-mnist")
    assert [tuple(sorted(r)) for r in rows] == [tuple(sorted(bench.GENERIC_KEYS))] * len(rows)
    ran = [r for r in rows if not r["skipped"]]
    assert {r["codec"] for r in ran} >= {"PNG", "xz", "bzip2"}
    assert all(r["exact"] for r in ran)
    # Every size is a real encoded length, charged over all N*C*H*W pixels.
    for r in ran:
        assert r["bytes"] > 0 and r["bits_per_dim"] == pytest.approx(8 * r["bytes"] / x.size)
    for r in rows:
        assert r["skipped"] or r["bits_per_dim"] is not None


def test_run_bench_end_to_end(tmp_path, binary_images):
    models = {"baseline": _mlp("bernoulli", 0), "refit": _mlp("bernoulli", 1)}
    report = bench.run_bench(binary_images, models, dataset="binary-mnist", ks=(0, 1), engine_kwargs=ENGINE,
                             model_meta={"baseline": {"name": "tiny", "hash": "x"}})
    assert tuple(report) == bench.REPORT_KEYS
    assert [r["method"] for r in report["methods"]] == ["baseline", "refit", "baseline+K1", "refit+K1"]
    for r in report["methods"]:
        assert tuple(r) == bench.METHOD_KEYS
        assert r["exact"] is True
        assert r["bits_per_dim"] == pytest.approx(8 * r["payload_bytes"] / binary_images.size)
        assert r["compress_s_per_image"] > 0 and r["images_per_s"] > 0
        assert r["overhead_pct"] == pytest.approx(
            100 * (r["bits_per_dim"] - r["neg_elbo_bits_per_dim"]) / r["neg_elbo_bits_per_dim"])
    assert report["methods"][0]["time_rel_baseline"] == pytest.approx(1.0)
    assert tuple(report["summary"]) == bench.SUMMARY_KEYS
    assert report["all_exact"] is True
    assert report["n_images"] == 8 and report["dims"] == binary_images.size
    assert report["models"]["baseline"]["hash"] == "x"
    bench.check_exact(report)

    out = tmp_path / "r.json"
    bench.write_json(report, out)
    back = json.loads(out.read_text())
    assert tuple(back) == bench.REPORT_KEYS
    md = bench.to_markdown(report)
    assert md.count("\n| refit+K1 | 1 |") == 1 and "| JPEG-XL | canvas |" in md
    png = tmp_path / "r.png"
    bench.plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_encoder_is_skipped_with_reason(bbans_main, tmp_path, fake_models, monkeypatch):
    # The decision is the command's (a refit encoder that does not load); the report carries it.
    from bbans.errors import BBANSError
    from bbans.models import checkpoints

    real = checkpoints.load_model

    def load_model(name, encoder="refit", device="cpu"):
        if encoder == "refit":
            raise BBANSError(f"bundled model {name!r} is incomplete (decoder or refit encoder missing)")
        return real(name, encoder, device)

    monkeypatch.setattr(checkpoints, "load_model", load_model)
    js = tmp_path / "b.json"
    code, _, err = bbans_main("bench", "--dataset", "cifar10", "--data-dir", FIX, "--K", "0,1", "--limit", 2,
                              "--batch-size", 2, "--lanes", 4, "--device", "cpu", "--no-generic", "--json", js, "-q")
    assert code == 0, err
    report = json.loads(js.read_text())
    assert [r["method"] for r in report["methods"]] == ["baseline", "baseline+K1"]
    why = "bundled model 'cifar10' is incomplete (decoder or refit encoder missing)"
    assert report["skipped_methods"] == [{"method": "refit", "reason": why}, {"method": "refit+K1", "reason": why}]
    assert report["generic"] == []


def test_inexact_round_trip_is_reported(monkeypatch, binary_images):
    from bbans.coding import engine

    real = engine.decompress

    def broken(*a, **k):
        out = real(*a, **k)
        out[0, 0, 0, 0] ^= 1
        return out

    monkeypatch.setattr(engine, "decompress", broken)
    monkeypatch.setattr(bench, "_warm_up", lambda *a, **k: None)
    report = bench.run_bench(binary_images[:3], {"baseline": _mlp("bernoulli", 0)}, dataset="binary-mnist",
                             ks=(0,), engine_kwargs=ENGINE, generic=False)
    assert report["methods"][0]["exact"] is False and report["all_exact"] is False
    with pytest.raises(bench.RoundTripError) as err:
        bench.check_exact(report)
    assert err.value.exit_code == EXIT_MISMATCH


def test_cli_bench_json_and_plot(bbans_main, tmp_path, fake_models):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    # The CIFAR-10 fixture goes through the real loader (MNIST fixtures are not the published files,
    # so their md5 check would refuse them).
    code, out, err = bbans_main("bench", "--dataset", "cifar10", "--data-dir", FIX, "--K", "0,1", "--limit", 3,
                                "--batch-size", 2, "--lanes", 4, "--device", "cpu", "--threads", 1,
                                "--json", js, "--plot", png, "-q")
    assert code == 0, err
    assert "refit+K1" in out and "JPEG-XL" in out
    report = json.loads(js.read_text())
    assert tuple(report) == bench.REPORT_KEYS
    assert report["dataset"] == "cifar10" and report["n_images"] == 3 and report["image_shape"] == [3, 32, 32]
    assert report["argv"][:3] == ["bbans", "bench", "--dataset"]
    assert report["settings"]["K"] == [0, 1] and report["settings"]["lanes"] == 4
    assert report["engine_config"]["lanes"] == 4 and report["device"] == "cpu"
    assert report["engine_config"]["threads"] == 1 and "--threads" in report["argv"]
    assert {"platform", "cpu_count", "torch"} <= set(report["machine"])
    assert report["models"]["refit"]["hash"] == "fake-cifar10-refit"
    assert all(m["exact"] for m in report["methods"])
    assert png.stat().st_size > 1000


def test_cli_bench_refuses_a_model_of_another_data_set(bbans_main, fake_models):
    code, _, err = bbans_main("bench", "--dataset", "cifar10", "--data-dir", FIX, "--model", "mnist-hier",
                              "--limit", 2, "-q")
    assert code == EXIT_ERROR
    assert one_error_line(err) == "model mnist-hier was trained on mnist, not cifar10"


def test_cli_missing_dataset_is_one_line(bbans_main, tmp_path, monkeypatch):
    monkeypatch.delenv("BBANS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = bbans_main("bench", "--dataset", "mnist", "--data-dir", tmp_path / "none")
    assert code == EXIT_ERROR
    assert one_error_line(err).startswith("MNIST test images not found")
