"""Specifications of the codecs over the rANS message (bbans.coding.codecs)."""

import numpy as np
import pytest
import torch
from conftest import codec_round_trip as roundtrip
from hypothesis import HealthCheck, given, settings, strategies as st

from bbans.coding import codecs as C, compose, distributions as D
from bbans.coding.ans import Message
from bbans.errors import ANSError, BBANSError
from bbans.models.likelihoods import LogisticRGB


def rgb_pixels(mean, log_scale, coeffs, prec, mask=None):
    """The RGB likelihood's codec: images (N, 3, H, W), a pixel mask (N, H, W)."""
    return LogisticRGB().codec({"mean": mean, "log_scale": log_scale, "coeffs": coeffs}, prec, mask)

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LANES = st.sampled_from([1, 2, 7, 64, 128, 333])


def information_bits(qcdf, x):
    """-log2 of the quantised probability of each symbol, summed; qcdf is (n, K+1) int64."""
    qcdf = torch.as_tensor(qcdf)
    x = torch.as_tensor(np.asarray(x)).reshape(-1, 1)
    f = qcdf.gather(1, x + 1) - qcdf.gather(1, x)
    prec = int(qcdf[0, -1]).bit_length() - 1
    return float((prec - torch.log2(f.double())).sum())


def pixel_params(seed, shape):
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(shape, generator=g) * 2 - 1
    log_scale = torch.rand(shape, generator=g) * 3 - 5
    coeffs = torch.randn(shape, generator=g)
    return mean, log_scale, coeffs


def sample_logistic(mean, log_scale, seed):
    """Pixels drawn near their logistic means, so the coded length is meaningful."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(mean.shape, generator=g).clamp(1e-6, 1 - 1e-6)
    v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return ((v + 1) * 127.5).round().clamp(0, 255).to(torch.int64).numpy()


# ------------------------------------------------------------- quantize_cdf


@FAST
@given(k=st.integers(1, 300), prec=st.integers(9, 31), seed=st.integers(0, 2**16), rows=st.integers(1, 5))
def test_quantized_cdf_gives_every_symbol_a_frequency_and_sums_to_two_to_the_precision(k, prec, seed, rows):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(rows, k, generator=g) ** 8  # many near-zero masses
    cdf = torch.cat([torch.zeros(rows, 1), torch.cumsum(p / p.sum(1, keepdim=True), 1)], 1)
    q = C.quantize_cdf(cdf, prec)
    assert q.dtype == torch.int64
    assert (q[:, 0] == 0).all() and (q[:, -1] == 1 << prec).all()
    assert (q.diff(dim=1) >= 1).all()
    assert torch.equal(q, C.quantize_cdf(cdf.clone(), prec))


def test_quantized_cdf_of_a_row_does_not_depend_on_the_other_rows():
    g = torch.Generator().manual_seed(4)
    mean, log_scale = torch.rand(300, generator=g, dtype=torch.float64), torch.rand(300, generator=g, dtype=torch.float64) - 4
    whole = C.quantize_cdf(D.discretized_logistic_cdf(mean, log_scale), 20)
    for i in (0, 7, 299):
        part = C.quantize_cdf(D.discretized_logistic_cdf(mean[i : i + 1], log_scale[i : i + 1]), 20)
        assert torch.equal(part[0], whole[i])


def test_quantized_cdf_survives_nan_and_non_monotone_input():
    cdf = torch.tensor([[0.0, 0.7, float("nan"), 0.5, 1.2], [0.1, 0.2, 0.3, 0.4, 0.9]])
    q = C.quantize_cdf(cdf, 8)
    assert (q.diff(dim=1) >= 1).all() and (q[:, -1] == 256).all() and (q[:, 0] == 0).all()


def test_quantized_cdf_rejects_more_symbols_than_the_precision_holds():
    with pytest.raises(ANSError, match="do not fit"):
        C.quantize_cdf(torch.linspace(0, 1, 258), 8)


def test_quantized_cdf_of_a_float_table_is_its_floor_plus_one_count_per_symbol():
    cdf = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert C.quantize_cdf(cdf, 4).tolist() == [0, 4, 8, 16]  # 13 spare: floor(3.25)+1, floor(6.5)+2


# --------------------------------------------------------------- round trips


@FAST
@given(lanes=LANES, n=st.integers(0, 2000), prec=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_uniform_roundtrip_is_exact(lanes, n, prec, seed):
    x = np.random.default_rng(seed).integers(0, 1 << prec, n)
    bits, y = roundtrip(C.uniform(n, prec), x, lanes)
    np.testing.assert_array_equal(y, x)


@FAST
@given(lanes=LANES, n=st.integers(1, 400), k=st.integers(1, 300), prec=st.integers(9, 24), seed=st.integers(0, 2**16))
def test_categorical_roundtrip_is_exact_for_any_table_width(lanes, n, k, prec, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g) ** 4
    cdf = torch.cat([torch.zeros(n, 1), torch.cumsum(p / p.sum(1, keepdim=True), 1)], 1)
    q = C.quantize_cdf(cdf, prec).numpy()
    x = np.random.default_rng(seed).integers(0, k, n)
    bits, y = roundtrip(C.categorical(q, prec), x, lanes)
    np.testing.assert_array_equal(y, x)
    assert bits <= 1.01 * information_bits(q, x) + 64 * lanes + 128


@FAST
@given(
    lanes=LANES,
    shape=st.sampled_from([(5,), (3, 1, 7, 9), (2, 2, 4, 4)]),
    prec=st.integers(1, 24),
    seed=st.integers(0, 2**16),
    masked=st.booleans(),
)
def test_bernoulli_roundtrip_is_exact_and_unmasked_elements_pop_as_zero(lanes, shape, prec, seed, masked):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(shape, generator=g, dtype=torch.float64) ** 3
    x = (torch.rand(shape, generator=g, dtype=torch.float64) < p).to(torch.uint8)
    mask = None
    if masked:
        mshape = (shape[0],) + shape[2:] if len(shape) == 4 else shape
        mask = torch.rand(mshape, generator=g) < 0.6
        bmask = mask[:, None] if len(shape) == 4 else mask
        x = x * bmask
        mask = np.broadcast_to(bmask.numpy(), shape).reshape(-1).copy()
    codec = C.bernoulli(p, prec) if mask is None else compose.masked(C.bernoulli(p.reshape(-1)[torch.as_tensor(mask)], prec), mask)
    bits, y = roundtrip(codec, x, lanes)
    np.testing.assert_array_equal(y, x.reshape(-1).numpy())


@FAST
@given(lanes=LANES, n=st.integers(1, 3), c=st.integers(1, 3), hw=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_logistic_roundtrip_is_exact(lanes, n, c, hw, seed):
    mean, log_scale, _ = pixel_params(seed, (n, c, hw, hw))
    x = sample_logistic(mean, log_scale, seed)
    bits, y = roundtrip(C.logistic(mean, log_scale, 16), x, lanes)
    np.testing.assert_array_equal(y, x.reshape(-1))


@FAST
@given(lanes=LANES, n=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16), masked=st.booleans())
def test_logistic_rgb_roundtrip_is_exact_with_and_without_a_mask(lanes, n, h, w, seed, masked):
    mean, log_scale, coeffs = pixel_params(seed, (n, 3, h, w))
    x = sample_logistic(mean, log_scale, seed)
    mask = None
    if masked:
        mask = np.random.default_rng(seed).random((n, h, w)) < 0.7
        x = x * mask[:, None]
    bits, y = roundtrip(rgb_pixels(mean, log_scale, coeffs, 14, mask=mask), x, lanes)
    np.testing.assert_array_equal(y, x.reshape(-1))


@FAST
@given(lanes=LANES, n=st.integers(0, 300), pp=st.integers(1, 10), extra=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_gaussian_posterior_roundtrip_is_exact(lanes, n, pp, extra, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, generator=g) * 2
    std = torch.rand(n, generator=g) + 1e-3
    x = np.random.default_rng(seed).integers(0, 1 << pp, n)
    bits, y = roundtrip(C.gaussian_posterior(mu, std, pp, pp + extra), x, lanes)
    np.testing.assert_array_equal(y, x)


def test_serial_pops_in_list_order_what_it_pushed():
    codec = compose.serial([C.uniform(10, 4), C.bernoulli(torch.full((6,), 0.3), 12), C.uniform(3, 20)])
    xs = [np.arange(10), np.array([0, 1, 1, 0, 0, 1]), np.array([5, 1 << 19, 7])]
    msg = Message(4)
    codec.push(msg, xs)
    for a, b in zip(codec.pop(msg), xs):
        np.testing.assert_array_equal(a, b)
    assert msg == Message(4)
    with pytest.raises(ANSError):
        codec.push(msg, xs[:2])


def test_every_codec_hands_the_coder_intervals_that_pass_its_checks():
    mean, log_scale, coeffs = pixel_params(9, (2, 3, 5, 5))
    x = sample_logistic(mean, log_scale, 9)
    mu, std = torch.randn(40), torch.rand(40) + 0.1
    q = C.quantize_cdf(D.discretized_logistic_cdf(mean.double().reshape(-1), log_scale.double().reshape(-1)), 12)
    cases = [
        (C.logistic(mean, log_scale, 12), x),
        (rgb_pixels(mean, log_scale, coeffs, 12, mask=np.ones((2, 5, 5), dtype=bool)), x),
        (C.categorical(q.numpy(), 12), x.reshape(-1)),
        (C.bernoulli(torch.full((2, 1, 5, 5), 0.9), 10), (x[:, :1] > 128).astype(np.int64)),
        (C.gaussian_posterior(mu, std, 6, 14), np.arange(40)),
        (C.uniform(40, 6), np.arange(40)),
    ]
    for codec, sym in cases:
        msg = Message(3, check=True)
        codec.push(msg, sym)
        np.testing.assert_array_equal(codec.pop(msg), sym.reshape(-1))
        assert msg == Message(3)


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize("lanes", [1, 64, 1024])
def test_logistic_coded_length_is_within_one_percent_plus_64_bits_per_lane_of_the_information(lanes):
    mean, log_scale, _ = pixel_params(lanes, (1 if lanes == 1 else 4, 3, 16, 16))
    x = sample_logistic(mean, log_scale, lanes)
    bits, _ = roundtrip(C.logistic(mean, log_scale, 16), x, lanes)
    q = C.quantize_cdf(D.discretized_logistic_cdf(mean.double().reshape(-1), log_scale.double().reshape(-1)), 16)
    assert bits <= 1.01 * information_bits(q, x.reshape(-1)) + 64 * lanes + 128


def sample_logistic_rgb(mean, log_scale, coeffs, seed):
    """Pixels drawn from the channel-dependent model: R, then G given R, then B given R and G."""
    x = torch.zeros(mean.shape, dtype=torch.int64)
    for c in range(3):
        means = D.rgb_dependent_means(mean, coeffs, x.to(torch.uint8))
        x[:, c] = torch.as_tensor(sample_logistic(means[:, c], log_scale[:, c], seed + c))
    return x.numpy()


def test_logistic_rgb_rate_matches_the_training_likelihood_with_channel_dependence():
    mean, log_scale, coeffs = pixel_params(5, (2, 3, 16, 16))
    x = sample_logistic_rgb(mean, log_scale, coeffs, 5)
    bits, _ = roundtrip(rgb_pixels(mean, log_scale, coeffs, 18), x, 32)
    means = D.rgb_dependent_means(mean, coeffs, torch.as_tensor(x).to(torch.uint8))
    nats = -D.discretized_logistic_logp(torch.as_tensor(x), means, log_scale).sum()
    ideal = float(nats) / np.log(2)
    assert 0.99 * ideal - 64 <= bits <= 1.01 * ideal + 64 * 32 + 128
    # Ignoring the dependence costs more on data that has it.
    independent, _ = roundtrip(C.logistic(mean, log_scale, 18), x, 32)
    assert independent > 1.05 * bits


def test_masked_pixels_cost_nothing():
    mean, log_scale, coeffs = pixel_params(1, (2, 3, 8, 8))
    x = sample_logistic(mean, log_scale, 1)
    mask = np.zeros((2, 8, 8), dtype=bool)
    mask[:, :4] = True
    with_mask, _ = roundtrip(rgb_pixels(mean, log_scale, coeffs, 16, mask=mask), x * mask[:, None], 8)
    cropped, _ = roundtrip(rgb_pixels(mean[:, :, :4], log_scale[:, :, :4], coeffs[:, :, :4], 16), x[:, :, :4], 8)
    assert with_mask == cropped


def test_bits_back_cycle_on_the_posterior_returns_to_a_fresh_message():
    # Encoder: pop a posterior sample (initial bits), push the prior. Decoder: the reverse.
    mu, std = torch.randn(500) * 0.5, torch.rand(500) * 0.3 + 0.05
    post, prior = C.gaussian_posterior(mu, std, 8, 18), C.uniform(500, 8)
    msg = Message(16, seed=3)
    z = post.pop(msg)
    assert msg.phantom_words > 0
    prior.push(msg, z)
    dec = Message.from_bytes(msg.to_bytes(), seed=3)
    z2 = prior.pop(dec)
    np.testing.assert_array_equal(z2, z)
    post.push(dec, z2)
    assert dec == Message(16, seed=3)


# ---------------------------------------------------- errors and wrong models


def test_decoding_with_the_wrong_model_gives_different_symbols_without_crashing():
    mean, log_scale, coeffs = pixel_params(2, (2, 3, 8, 8))
    x = sample_logistic(mean, log_scale, 2)
    msg = Message(16)
    rgb_pixels(mean, log_scale, coeffs, 16).push(msg, x)
    y = rgb_pixels(mean + 0.01, log_scale, coeffs, 16).pop(msg.copy())
    assert y.shape == (x.size,) and y.min() >= 0 and y.max() <= 255
    assert not np.array_equal(y, x.reshape(-1))
    y = rgb_pixels(mean, log_scale, -coeffs, 16).pop(msg.copy())
    assert not np.array_equal(y, x.reshape(-1))


@pytest.mark.parametrize(
    "codec, bad",
    [
        (C.uniform(3, 4), [0, 16, 1]),
        (C.bernoulli(torch.full((3,), 0.5), 8), [0, 2, 1]),
        (C.logistic(torch.zeros(3), torch.zeros(3), 12), [0, 256, 1]),
        (C.logistic(torch.zeros(3), torch.zeros(3), 12), [0, -1, 1]),
        (C.gaussian_posterior(torch.zeros(3), torch.ones(3), 4, 8), [0, 16, 1]),
        (C.uniform(3, 4), [0, 1]),
        (C.uniform(3, 4), [0.5, 1, 2]),
    ],
)
def test_out_of_range_or_misshaped_symbols_raise_ans_error(codec, bad):
    msg = Message(2)
    with pytest.raises(ANSError):
        codec.push(msg, np.array(bad))
    assert msg == Message(2)


def test_categorical_rejects_tables_with_zero_frequencies_or_a_wrong_total():
    for table in ([[0, 5, 5, 16]], [[0, 5, 9, 15]], [[1, 5, 9, 16]]):
        with pytest.raises(ANSError):
            C.categorical(np.array(table), 4).push(Message(1), [0])


def test_invalid_parameters_raise_ans_error():
    with pytest.raises(ANSError):
        C.gaussian_posterior(torch.zeros(2), torch.tensor([1.0, 0.0]), 4, 8)
    with pytest.raises(ANSError):
        C.gaussian_posterior(torch.zeros(2), torch.ones(2), 8, 4)
    with pytest.raises(ANSError):
        C.logistic(torch.zeros(2), torch.zeros(2), 7)
    with pytest.raises(ANSError):
        C.logistic_rgb(torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4, 1), 12)
    with pytest.raises(BBANSError):
        rgb_pixels(torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3), 8,
                   mask=np.ones((2, 2, 2), dtype=bool))


def _pixel_codecs(seed: int, n: int):
    """logistic, logistic_mix and logistic_rgb codecs of random parameters, with their symbols:
    mostly dark pixels (as digits are), some at the top, where a table's prefix is the whole row."""
    g = torch.Generator().manual_seed(seed)
    x = np.where(np.random.default_rng(seed).random(3 * n) < 0.7, 0,
                 np.random.default_rng(seed + 1).integers(0, 256, 3 * n))
    x[:5] = 255
    mean = torch.rand(3 * n, generator=g, dtype=torch.float64) * 2 - 1
    ls = torch.rand(3 * n, generator=g, dtype=torch.float64) * 6 - 6
    w, mu, s = (torch.randn(3 * n, 3, generator=g, dtype=torch.float64) for _ in range(3))
    coeffs = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return [(C.logistic(mean, ls, 16), x), (C.logistic_mix(w, mu, s - 3, 16), x),
            (C.logistic_rgb(mean.reshape(n, 3), ls.reshape(n, 3), coeffs, 16), x)]


@pytest.mark.parametrize("arith", ["exact-1", "float"])
def test_pixel_pushes_from_table_prefixes_code_exactly_as_whole_tables(arith, monkeypatch):
    """Pushing builds each pixel's CDF row only up to its symbol: the message must be the one
    the whole rows give (old archives were coded with them), and popping must read it back."""
    from bbans.coding import arithmetic

    def whole_rows(m):
        m.setattr(C._TableStream, "__init__", lambda self, *a, prefix=None, **kw: orig(self, *a, **kw))

    orig = C._TableStream.__init__
    with arithmetic.using(arithmetic.named(arith)):
        for i, (codec, x) in enumerate(_pixel_codecs(3, 700)):
            by_prefix = Message(16, seed=0)
            codec.push(by_prefix, x)
            with monkeypatch.context() as m:
                whole_rows(m)
                whole_codec, _ = _pixel_codecs(3, 700)[i]
                whole = Message(16, seed=0)
                whole_codec.push(whole, x)
                back_whole = whole_codec.pop(Message.from_bytes(whole.to_bytes(), seed=0))
            assert by_prefix.to_bytes() == whole.to_bytes()
            back = codec.pop(Message.from_bytes(by_prefix.to_bytes(), seed=0))
            assert np.array_equal(np.asarray(back).reshape(-1), x)
            assert np.array_equal(np.asarray(back_whole).reshape(-1), x)


def test_a_cdf_prefix_is_the_first_columns_of_the_whole_rows():
    g = torch.Generator().manual_seed(0)
    w, mu, s = (torch.randn(50, 3, generator=g, dtype=torch.float64) for _ in range(3))
    whole = C.quantize_cdf(D.discretized_logistic_mix_cdf(w, mu, s - 4), 16)
    for c in (2, 33, 256, 257):
        assert torch.equal(C.quantize_cdf(D.discretized_logistic_mix_cdf(w, mu, s - 4, c), 16, D.LEVELS), whole[:, :c])
