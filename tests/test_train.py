"""Training and refitting (bbans.training.train) on the fixture images, and `bbans train`."""

import json

import numpy as np
import pytest
import torch

from bbans.errors import EXIT_ERROR, BBANSError
from bbans.models.architecture import default_architecture
from bbans.models.paper import MLPVAE
from bbans.training import train as T
from conftest import one_error_line, training_data

TINY = {"type": "mlp", "likelihood": "bernoulli", "image_shape": [1, 28, 28], "hidden": 32, "latent": 4, "layers": 2}


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    m = MLPVAE("logistic", hidden=32, latent=4)
    x = torch.from_numpy(training_data()[0][:20])
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    with torch.no_grad():
        before = float(m.neg_elbo(x, torch.Generator().manual_seed(1)).mean())
    for _ in range(5):
        loss = m.neg_elbo(x, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(m.neg_elbo(x, torch.Generator().manual_seed(1)).mean())
    assert after < before


def test_mixture_batch_extremes():
    real = torch.zeros(6, 1, 2, 2, dtype=torch.uint8)
    calls = []

    def sampler(k):
        calls.append(k)
        return torch.ones(k, 1, 2, 2, dtype=torch.uint8)

    x, w, src = T.mixture_batch(0.0, real, sampler, 4)
    assert not src.any() and len(x) == 6 and calls == [] and (x == 0).all()
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    x, w, src = T.mixture_batch(1.0, None, sampler, 4)
    assert src.all() and len(x) == 4 and calls == [4] and (x == 1).all()
    x, w, src = T.mixture_batch(0.5, real, sampler, 4)
    torch.testing.assert_close(w[~src].sum(), torch.tensor(0.5))
    torch.testing.assert_close(w[src].sum(), torch.tensor(0.5))
    with pytest.raises(BBANSError):
        T.mixture_batch(1.5, real, sampler, 4)


def _train(tmp_path, epochs=2, **kw):
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=epochs, batch_size=10, lr=1e-3, architecture=dict(TINY),
                        eval_every=1, **kw)
    return T.run(cfg, tmp_path / "base", data=training_data(), progress=False)


def test_run_resume_matches_uninterrupted(tmp_path):
    full = _train(tmp_path / "a", epochs=2)
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=2, batch_size=10, lr=1e-3, architecture=dict(TINY), eval_every=1)
    T.run(cfg, tmp_path / "b" / "base", data=training_data(), progress=False, max_epochs_this_call=1)
    with pytest.raises(BBANSError, match="resume"):
        T.run(cfg, tmp_path / "b" / "base", data=training_data(), progress=False)
    resumed = T.run(cfg, tmp_path / "b" / "base", data=training_data(), progress=False, resume=True)
    assert resumed["test_bits_per_dim"] == pytest.approx(full["test_bits_per_dim"], abs=1e-6)
    assert full["history"][-1]["test_bpd"] < full["history"][0]["loss_bpd"]


def test_resume_takes_the_new_learning_rate_and_records_it(tmp_path):
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=2, batch_size=10, lr=1e-3, architecture=dict(TINY), eval_every=1)
    T.run(cfg, tmp_path / "base", data=training_data(), progress=False, max_epochs_this_call=1)
    cfg.lr = 2e-4
    meta = T.run(cfg, tmp_path / "base", data=training_data(), progress=False, resume=True)
    assert [e["lr"] for e in meta["history"]] == [1e-3, 2e-4]
    state = json.loads((tmp_path / "base" / "state.json").read_text())
    assert all(g["lr"] == 2e-4 for g in state["param_groups"])


def test_resume_refuses_another_pixel_grouping(tmp_path):
    arch = {**default_architecture("binary-mnist", width=4, family="hierarchical", pixel_groups=4), "latent_channels": 1}
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=2, batch_size=10, lr=1e-3, architecture=dict(arch),
                        family="hierarchical", pixel_groups=4, eval_every=1)
    T.run(cfg, tmp_path / "base", data=training_data(), progress=False, max_epochs_this_call=1)
    other = T.TrainConfig(dataset="binary-mnist", epochs=2, batch_size=10, lr=1e-3, family="hierarchical", eval_every=1)
    with pytest.raises(BBANSError, match="pixel_groups"):
        T.run(other, tmp_path / "base", data=training_data(), progress=False, resume=True)


def test_pixel_groups_outside_the_hierarchy_fail_before_a_run_folder_is_made(tmp_path):
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=1, batch_size=10, family="paper", pixel_groups=4)
    with pytest.raises(BBANSError, match="hierarchical"):
        T.run(cfg, tmp_path / "run", data=training_data(), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("shared")
    _train(d, epochs=1)
    return d


@pytest.mark.parametrize("alpha,sigma,agg", [(0.0, 0.0, False), (1.0, 0.0, False), (0.5, 0.0, True), (0.5, 0.2, False)])
def test_refit_keeps_decoder(tmp_path, base_run, alpha, sigma, agg):
    cfg = T.TrainConfig(dataset="binary-mnist", epochs=1, batch_size=10, mode="refit", base=str(base_run / "base"),
                        alpha=alpha, denoise_sigma=sigma, aggregate=agg, eval_every=1)
    meta = T.run(cfg, tmp_path / "refit", data=training_data(), progress=False)
    from bbans.models.checkpoints import load_tensors

    a = load_tensors(base_run / "base" / "model.decoder.safetensors")
    b = load_tensors(tmp_path / "refit" / "model.decoder.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea = load_tensors(base_run / "base" / "model.encoder.safetensors")
    eb = load_tensors(tmp_path / "refit" / "model.encoder.safetensors")
    assert any(not torch.equal(ea[k], eb[k]) for k in ea)
    assert meta["recipe"]["alpha"] == alpha and "base" in meta


def test_refit_alpha1_never_reads_real_images(tmp_path):
    # Reverse sleep: the loss must not change when the real images do.
    m = MLPVAE("bernoulli", hidden=16, latent=2)
    cfg = T.TrainConfig(dataset="binary-mnist", mode="refit", alpha=1.0)
    real_a = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    real_b = torch.ones(8, 1, 28, 28, dtype=torch.uint8)
    train_x = np.zeros((8, 1, 28, 28), np.uint8)
    la = T._refit_loss(m, cfg, real_a, train_x, np.random.RandomState(0), torch.Generator().manual_seed(0), True)
    lb = T._refit_loss(m, cfg, real_b, train_x, np.random.RandomState(0), torch.Generator().manual_seed(0), True)
    assert float(la.detach()) == float(lb.detach())
    cfg0 = T.TrainConfig(dataset="binary-mnist", mode="refit", alpha=0.0)
    l0 = T._refit_loss(m, cfg0, real_a, train_x, np.random.RandomState(0), torch.Generator().manual_seed(0), True)
    torch.testing.assert_close(l0, m.neg_elbo(real_a, torch.Generator().manual_seed(0)).mean())


def test_cli_missing_data_is_one_line(bbans_main, tmp_path, monkeypatch):
    monkeypatch.setenv("BBANS_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = bbans_main("train", "--dataset", "mnist", "--epochs", 1, "--out", tmp_path / "o")
    assert code == EXIT_ERROR
    message = one_error_line(err)
    assert "not found" in message and str(tmp_path / "nothing") in message
    assert not (tmp_path / "o").exists()


def test_step_guard_drops_loss_spikes_and_clips_at_a_multiple_of_the_median_norm():
    from bbans.training.train import StepGuard

    off = StepGuard(0.0)
    assert not off.admit_loss(float("nan"))
    assert all(off.admit_loss(1.0) for _ in range(60)) and off.admit_loss(1e10)  # off: only non-finite is dropped
    assert off.norm_limit() == float("inf")

    g = StepGuard(3.0)
    for _ in range(49):
        assert g.admit_loss(1.0) and g.admit_norm(2.0)
    assert g.admit_loss(5.0)  # still warming up: no median to compare with
    assert g.norm_limit() == float("inf")
    g.admit_norm(2.0)
    assert not g.admit_loss(2.5)  # over twice the median loss
    assert g.admit_loss(1.9)
    assert g.norm_limit() == 6.0
    assert not g.admit_norm(float("inf"))
    assert g.norm_limit() == 6.0  # a dropped norm leaves the window as it was
