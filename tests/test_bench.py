"""`bbans bench`: end to end on fixture images with tiny untrained models, JSON keys, errors,
the default models, --json as a flag or with a file, the help.

Untrained models code badly but exactly, which is all these tests need: the figures come from
the real engine and the real generic codecs, never from ../shared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bbans import bench
from bbans.errors import EXIT_ERROR, EXIT_MISMATCH, EXIT_USAGE
from bbans.models import registry
from bbans.models.paper import MLPVAE
from conftest import FIX, fake_hash, fixture_images, one_error_line

ENGINE = {"batch_size": 4, "lanes": 8, "device": "cpu"}
# The command with tiny engine settings, no generic codecs, two images: what the CLI tests add.
QUICK = ("--data-dir", FIX, "--limit", 2, "--K", 0, "--batch-size", 2, "--lanes", 4, "--device", "cpu",
         "--no-generic", "-q")


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
    seen = []
    report = bench.run_bench(binary_images, models, dataset="binary-mnist", ks=(0, 1), engine_kwargs=ENGINE,
                             model_meta={"baseline": {"name": "tiny", "hash": "x"}},
                             progress=lambda label, done, total: seen.append((label, done, total)))
    assert tuple(report) == bench.REPORT_KEYS and report["schema"] == "bbans-bench/2"
    assert [r["method"] for r in report["methods"]] == ["baseline", "refit", "baseline+K1", "refit+K1"]
    for r in report["methods"]:
        assert tuple(r) == bench.METHOD_KEYS
        assert r["model"] == "tiny" and r["default"] is True
        assert r["exact"] is True
        assert r["bits_per_dim"] == pytest.approx(8 * r["payload_bytes"] / binary_images.size)
        assert r["compress_s_per_image"] > 0 and r["images_per_s"] > 0
        assert r["overhead_pct"] == pytest.approx(
            100 * (r["bits_per_dim"] - r["neg_elbo_bits_per_dim"]) / r["neg_elbo_bits_per_dim"])
    assert report["methods"][0]["time_rel_baseline"] == pytest.approx(1.0)
    assert tuple(report["summary"]) == bench.SUMMARY_KEYS
    refit = report["methods"][1]
    assert (report["summary"]["default_model"], report["summary"]["default_method"]) == ("tiny", "refit")
    assert report["summary"]["default_bits_per_dim"] == refit["bits_per_dim"]
    assert report["all_exact"] is True
    assert report["n_images"] == report["n_available"] == 8 and report["dims"] == binary_images.size
    assert report["default_model"] == "tiny"
    assert report["models"]["tiny"]["encoders"]["baseline"]["hash"] == "x"
    bench.check_exact(report)
    # One bar for the whole run, which ends full: 4 methods twice (compress, decompress) and the
    # generic codecs' stages.
    overall = [(d, t) for label, d, t in seen if label == bench.OVERALL]
    assert overall[-1][0] == pytest.approx(overall[-1][1]) and overall[-1][1] > 8

    out = tmp_path / "r.json"
    bench.write_json(report, out)
    back = json.loads(out.read_text())
    assert tuple(back) == bench.REPORT_KEYS
    md = bench.to_markdown(report)
    assert md.count("\n| tiny (default) | refit+K1 | 1 |") == 1 and "| JPEG-XL | canvas |" in md
    # The Markdown carries the figures as the terminal table prints them.
    assert f"| {refit['bits_per_dim']:.4f} |" in md and f"| {refit['images_per_s']:.1f} |" in md
    png = tmp_path / "r.png"
    bench.plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_models_in_one_report_mark_the_default(tmp_path, binary_images):
    models = {"big": {"refit": _mlp("bernoulli", 0)}, "small": {"baseline": _mlp("bernoulli", 1),
                                                                "refit": _mlp("bernoulli", 2)}}
    report = bench.run_bench(binary_images[:4], models, dataset="binary-mnist", ks=(0,), engine_kwargs=ENGINE,
                             generic=False, default_model="big", skipped_encoders={"big": {"baseline": "gone"}})
    assert [(r["model"], r["method"], r["default"]) for r in report["methods"]] == [
        ("big", "refit", True), ("small", "baseline", False), ("small", "refit", False)]
    assert report["skipped_methods"] == [{"model": "big", "method": "baseline", "reason": "gone"}]
    assert [m["default"] for m in report["models"].values()] == [True, False]
    assert report["summary"]["default_bits_per_dim"] == report["methods"][0]["bits_per_dim"]
    assert "big (default)" in bench.to_markdown(report)
    bench.plot(report, tmp_path / "m.png")


@pytest.mark.parametrize("dataset", ["binary-mnist", "mnist", "cifar10"])
def test_default_models_are_compress_auto_choice_then_the_paper_model(dataset):
    assert bench.auto_model(dataset, registry.NAMES) == f"{dataset}-hier"
    assert bench.default_models(dataset, registry.NAMES) == [f"{dataset}-hier", dataset]
    # Without the hierarchical model, auto (and the bench) falls back to the next in the registry.
    rest = [n for n in registry.NAMES if n != f"{dataset}-hier"]
    assert bench.default_models(dataset, rest)[0] == registry.routes_for(
        *{"binary-mnist": ("1", True), "mnist": ("L", False), "cifar10": ("RGB", False)}[dataset])[1]
    with pytest.raises(bench.BBANSError, match="no bundled model codes"):
        bench.auto_model(dataset, [])


def test_model_list_takes_repeats_and_commas():
    assert bench.parse_model_list(("mnist-hier,mnist", "mnist", " cifar10 ")) == ("mnist-hier", "mnist", "cifar10")
    with pytest.raises(bench.BBANSError, match="unknown model 'nope'"):
        bench.parse_model_list(("mnist,nope",))


@pytest.mark.parametrize("dataset", ["binary-mnist", "mnist", "cifar10"])
def test_cli_benches_the_default_model_beside_the_paper_one(bbans_main, fake_models, monkeypatch, dataset):
    # The MNIST fixtures are not the published files, so the loader's md5 check is skipped here.
    from bbans.io import datasets

    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, data_dir=None: real(name, split, data_dir,
                                                                                            verify=False))
    code, out, err = bbans_main("bench", "--dataset", dataset, *QUICK, "--json")
    assert code == 0, err
    report = json.loads(out)  # --json alone: the report is all there is on standard output
    hier = f"{dataset}-hier"
    assert report["default_model"] == hier and list(report["models"]) == [hier, dataset]
    assert report["settings"]["models"] == [hier, dataset] and report["settings"]["default_models"] is True
    assert report["settings"]["model"] == f"{hier},{dataset}"  # schema 1's key, for old readers
    assert [(r["model"], r["method"], r["default"]) for r in report["methods"]] == [
        (hier, "baseline", True), (hier, "refit", True), (dataset, "baseline", False), (dataset, "refit", False)]
    assert report["summary"]["default_model"] == hier and report["summary"]["default_method"] == "refit"
    assert report["models"][dataset]["family"] == "paper" and report["models"][hier]["encoders"]["refit"]["hash"]


def test_cli_default_limit_and_all(bbans_main, fake_models):
    args = ("bench", "--dataset", "cifar10", *QUICK[:2], "--model", "cifar10", *QUICK[4:], "--json")
    code, out, err = bbans_main(*args)
    assert code == 0, err
    report = json.loads(out)
    assert report["settings"]["limit"] == bench.DEFAULT_LIMIT["cifar10"] and report["n_available"] == 6
    code, out, err = bbans_main(*args, "--all")
    assert code == 0, err
    assert json.loads(out)["settings"]["limit"] is None
    code, _, err = bbans_main(*args, "--all", "--limit", 3)
    assert code == EXIT_USAGE and "--all and --limit N contradict" in err


def test_cli_json_file_keeps_the_table_on_stdout(bbans_main, tmp_path, fake_models):
    js = tmp_path / "b.json"
    code, out, err = bbans_main("bench", "--dataset", "cifar10", "--model", "cifar10", *QUICK, "--json", js)
    assert code == 0, err
    assert "bbans bench: cifar10 test" in out and f"wrote {js}" in out
    report = json.loads(js.read_text())
    assert tuple(report) == bench.REPORT_KEYS and report["argv"][-2:] == ["--json", str(js)]
    # - is standard output too, as for the other commands.
    code, out, err = bbans_main("bench", "--dataset", "cifar10", "--model", "cifar10", *QUICK, "--json", "-")
    assert code == 0, err
    assert tuple(json.loads(out)) == bench.REPORT_KEYS


def test_cli_help_has_examples_and_exit_codes(bbans_main):
    code, out, _ = bbans_main("bench", "--help")
    assert code == 0
    examples = out[out.index("Examples:"):]
    assert "bbans bench --dataset mnist " in examples and "--json | jq" in examples
    assert "Exit codes:" in out and "2  usage error" in out
    assert "4 is a round trip (ours or a generic codec's) that did not give back" in out
    for dataset, n in bench.DEFAULT_LIMIT.items():
        assert f"{dataset} {n}" in out


@pytest.mark.parametrize("args, word", [(("--model", "nope"), "unknown model 'nope'"), (("--K", "1,a"), "--K takes"),
                                        (("--limit", "-1"), "--limit")])
def test_cli_bad_values_are_usage_errors(bbans_main, args, word):
    code, _, err = bbans_main("bench", "--dataset", "mnist", *args)
    assert code == EXIT_USAGE and word in err


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
    code, _, err = bbans_main("bench", "--dataset", "cifar10", "--model", "cifar10", "--data-dir", FIX, "--K", "0,1",
                              "--limit", 2, "--batch-size", 2, "--lanes", 4, "--device", "cpu", "--no-generic",
                              "--json", js, "-q")
    assert code == 0, err
    report = json.loads(js.read_text())
    assert [r["method"] for r in report["methods"]] == ["baseline", "baseline+K1"]
    why = "bundled model 'cifar10' is incomplete (decoder or refit encoder missing)"
    assert report["skipped_methods"] == [{"model": "cifar10", "method": "refit", "reason": why},
                                         {"model": "cifar10", "method": "refit+K1", "reason": why}]
    assert report["summary"]["default_method"] is None  # compress's default row (refit) did not run
    assert report["generic"] == []


def _break_decompress(monkeypatch):
    from bbans.coding import engine

    real = engine.decompress

    def broken(*a, **k):
        out = real(*a, **k)
        out[0, 0, 0, 0] ^= 1
        return out

    monkeypatch.setattr(engine, "decompress", broken)
    monkeypatch.setattr(bench, "_warm_up", lambda *a, **k: None)


def test_inexact_round_trip_is_reported(monkeypatch, binary_images):
    _break_decompress(monkeypatch)
    report = bench.run_bench(binary_images[:3], {"baseline": _mlp("bernoulli", 0)}, dataset="binary-mnist",
                             ks=(0,), engine_kwargs=ENGINE, generic=False)
    assert report["methods"][0]["exact"] is False and report["all_exact"] is False
    with pytest.raises(bench.RoundTripError) as err:
        bench.check_exact(report)
    assert err.value.exit_code == EXIT_MISMATCH


def test_cli_inexact_round_trip_exits_4_after_the_table(bbans_main, fake_models, monkeypatch):
    _break_decompress(monkeypatch)
    code, out, err = bbans_main("bench", "--dataset", "cifar10", "--model", "cifar10", *QUICK)
    assert code == EXIT_MISMATCH == 4
    assert "bbans bench: cifar10 test" in out and "a round trip was NOT exact" in out
    assert one_error_line(err) == "round trip not exact for: cifar10 baseline, cifar10 refit"


def test_cli_bench_json_and_plot(bbans_main, tmp_path, fake_models):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    # The CIFAR-10 fixture goes through the real loader (MNIST fixtures are not the published files,
    # so their md5 check would refuse them).
    code, out, err = bbans_main("bench", "--dataset", "cifar10", "--data-dir", FIX, "--K", "0,1", "--limit", 3,
                                "--batch-size", 2, "--lanes", 4, "--device", "cpu", "--threads", 1,
                                "--json", js, "--plot", png, "-q")
    # The default models: the hierarchical one `bbans compress` picks, and the paper one.
    assert code == 0, err
    assert "refit+K1" in out and "JPEG-XL" in out and "cifar10-hier (default)" in out
    report = json.loads(js.read_text())
    assert tuple(report) == bench.REPORT_KEYS
    assert report["dataset"] == "cifar10" and report["n_images"] == 3 and report["image_shape"] == [3, 32, 32]
    assert report["argv"][:3] == ["bbans", "bench", "--dataset"]
    assert report["settings"]["K"] == [0, 1] and report["settings"]["lanes"] == 4
    assert report["engine_config"]["lanes"] == 4 and report["device"] == "cpu"
    assert report["engine_config"]["threads"] == 1 and "--threads" in report["argv"]
    assert {"platform", "cpu_count", "torch"} <= set(report["machine"])
    assert report["models"]["cifar10"]["encoders"]["refit"]["hash"] == fake_hash("cifar10-refit")
    assert report["models"]["cifar10-hier"]["default"] is True
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
