"""Specifications of the vectorized rANS message (bbans.coding.ans)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbans.coding.ans import MAX_PRECISION, RANS_L, Message
from bbans.errors import ANSError

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_cdf(rng, k, prec, skew=0.3):
    """A strictly increasing integer CDF of k symbols ending at 2**prec."""
    p = rng.dirichlet(np.full(k, skew))
    freqs = np.floor(p * ((1 << prec) - k)).astype(np.int64) + 1
    freqs[np.argmax(freqs)] += (1 << prec) - freqs.sum()
    return np.concatenate([[0], np.cumsum(freqs)])


def stream_case(seed, n, prec, k=None):
    rng = np.random.default_rng(seed)
    k = k or int(min(1 << prec, rng.integers(2, 300)))
    cdf = random_cdf(rng, k, prec)
    x = rng.choice(k, size=n, p=np.diff(cdf) / (1 << prec))
    return cdf, x, cdf[x], cdf[x + 1] - cdf[x]


def table_lookup(cdf):
    def lookup(lo, hi, cf):
        sym = np.searchsorted(cdf, cf, side="right") - 1
        return sym, cdf[sym], cdf[sym + 1] - cdf[sym]

    return lookup


def test_fresh_message_has_seeded_heads_just_above_the_lower_bound_and_an_empty_tail():
    msg = Message(5)
    assert msg.lanes == 5
    assert (msg.heads >= RANS_L).all() and (msg.heads < 2**32).all()
    assert (msg.heads == Message(msg.lanes, seed=msg.seed).heads).all()
    assert msg.tail.size == 0 and msg.phantom_words == 0


@FAST
@given(
    lanes=st.integers(1, 300),
    n=st.integers(0, 3000),
    prec=st.integers(1, MAX_PRECISION),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_is_exact_for_any_lane_count_length_and_precision(lanes, n, prec, seed):
    cdf, x, s, f = stream_case(seed, n, prec)
    msg = Message(lanes, seed=seed)
    msg.push_stream(s, f, prec)
    assert msg.heads.min() >= RANS_L and msg.heads.max() < 2**63
    assert msg.tail.size <= n
    back = Message.from_bytes(msg.to_bytes(), seed=seed)
    assert back == msg
    y = back.pop_stream(n, prec, table_lookup(cdf))
    np.testing.assert_array_equal(y, x)
    assert back == Message(lanes, seed=seed)


def test_stream_positions_pop_in_forward_order_with_one_symbol_per_lane_per_chunk():
    msg = Message(4)
    starts = np.arange(10)
    msg.push_stream(starts, np.ones(10, dtype=np.int64), 4)
    seen = []

    def lookup(lo, hi, cf):
        seen.append((lo, hi))
        return cf, cf, np.ones(hi - lo, dtype=np.int64)

    np.testing.assert_array_equal(msg.pop_stream(10, 4, lookup), np.arange(10))
    assert seen == [(0, 4), (4, 8), (8, 10)]


@FAST
@given(lanes=st.integers(1, 64), prec=st.integers(1, MAX_PRECISION), seed=st.integers(0, 2**32 - 1))
def test_lane_level_push_and_pop_are_inverse_and_interleave_with_streams(lanes, prec, seed):
    rng = np.random.default_rng(seed)
    cdf, x, s, f = stream_case(seed, 3 * lanes + 1, prec)
    n = int(rng.integers(0, lanes + 1))
    cdf2, x2, s2, f2 = stream_case(seed + 1, n, prec)
    msg = Message(lanes)
    msg.push_stream(s, f, prec)
    msg.push(s2, f2, prec)
    cf, finish = msg.pop(prec, n)
    sym = np.searchsorted(cdf2, cf, side="right") - 1
    np.testing.assert_array_equal(sym, x2)
    finish(cdf2[sym], cdf2[sym + 1] - cdf2[sym])
    np.testing.assert_array_equal(msg.pop_stream(x.size, prec, table_lookup(cdf)), x)
    assert msg == Message(lanes)


def test_renormalisation_words_of_a_chunk_return_to_their_own_lanes():
    # Lanes 0 and 2 are pushed until they emit a word in the same step; distinct heads make any
    # mix-up of the words visible.
    msg = Message(3)
    prec = 8
    for i in range(40):
        msg.push(np.array([i % 7, 0, (3 * i) % 5]), np.array([1, 256, 1]), prec)
    assert msg.tail.size >= 4
    for i in reversed(range(40)):
        cf, finish = msg.pop(prec)
        np.testing.assert_array_equal(cf, [i % 7, cf[1], (3 * i) % 5])
        finish(np.array([i % 7, 0, (3 * i) % 5]), np.array([1, 256, 1]))
    assert msg == Message(3)


def test_popping_an_exhausted_message_is_deterministic_for_a_seed_and_counts_phantom_words():
    def draw(seed):
        msg = Message(16, seed=seed)
        x = msg.pop_stream(500, 12, lambda lo, hi, cf: (cf, cf, np.ones(hi - lo, dtype=np.int64)))
        return x, msg

    a, ma = draw(7)
    b, mb = draw(7)
    c, _ = draw(8)
    np.testing.assert_array_equal(a, b)
    assert ma == mb
    assert not np.array_equal(a, c)
    assert ma.phantom_words > 0 and ma.tail.size == 0
    # 500 draws of 12 bits: the phantom words must look uniform, as bits-back's first samples.
    assert abs(a.mean() / 4095 - 0.5) < 0.05
    assert ma.phantom_words * 32 >= 500 * 12 - 16 * 32


@FAST
@given(
    lanes=st.integers(1, 100),
    pushed=st.integers(0, 400),
    popped=st.integers(1, 1500),
    prec=st.integers(1, MAX_PRECISION),
    seed=st.integers(0, 2**32 - 1),
)
def test_pop_past_the_bottom_then_push_back_restores_the_message_exactly(lanes, pushed, popped, prec, seed):
    cdf, x, s, f = stream_case(seed, pushed, prec)
    msg = Message(lanes, seed=seed)
    msg.push_stream(s, f, prec)
    before = msg.copy()
    cdf2 = random_cdf(np.random.default_rng(seed + 1), int(min(1 << prec, 50)), prec)
    y = msg.pop_stream(popped, prec, table_lookup(cdf2))
    msg.push_stream(cdf2[y], cdf2[y + 1] - cdf2[y], prec)
    assert msg == before
    np.testing.assert_array_equal(msg.pop_stream(pushed, prec, table_lookup(cdf)), x)


@pytest.mark.parametrize("lanes", [1, 64, 1024])
def test_coded_length_is_within_one_percent_plus_64_bits_per_lane_of_the_information(lanes):
    for prec, k in [(8, 4), (16, 256), (24, 1000)]:
        cdf, x, s, f = stream_case(lanes + prec, 5_000 if lanes == 1 else 40_000, prec, k)
        msg = Message(lanes)
        msg.push_stream(s, f, prec)
        info = float(np.sum(prec - np.log2(f)))
        assert msg.bits() <= 1.01 * info + 64 * lanes + 128, (lanes, prec)


def test_bits_is_eight_times_the_serialised_length():
    cdf, x, s, f = stream_case(3, 1000, 12)
    msg = Message(10)
    msg.push_stream(s, f, 12)
    assert msg.bits() == 8 * len(msg.to_bytes())


def test_copy_is_independent_of_the_original():
    msg = Message(8)
    msg.push_stream(np.arange(100) % 16, np.ones(100, dtype=np.int64), 4)
    dup = msg.copy()
    assert dup == msg
    dup.push_stream(np.zeros(50, dtype=np.int64), np.ones(50, dtype=np.int64), 4)
    assert dup != msg
    np.testing.assert_array_equal(
        msg.pop_stream(100, 4, lambda lo, hi, cf: (cf, cf, np.ones(hi - lo, dtype=np.int64))), np.arange(100) % 16
    )


@pytest.mark.parametrize(
    "starts, freqs, prec, what",
    [
        ([0, 1], [1, 0], 4, "frequency 0"),
        ([15, 0], [2, 1], 4, "exceeds"),
        ([-1, 0], [1, 1], 4, "exceeds"),
        ([0], [17], 4, "frequency 17"),
    ],
)
def test_check_mode_rejects_invalid_intervals_with_a_clear_error(starts, freqs, prec, what):
    msg = Message(2, check=True)
    with pytest.raises(ANSError, match=what):
        msg.push_stream(np.array(starts), np.array(freqs), prec)
    with pytest.raises(ANSError, match=what):
        msg.push(np.array(starts), np.array(freqs), prec)
    assert msg == Message(2)


@pytest.mark.parametrize("prec", [0, 32, -3, 2.5, True])
def test_precision_outside_1_to_31_is_rejected_in_any_mode(prec):
    msg = Message(2)
    with pytest.raises(ANSError, match="precision"):
        msg.push_stream(np.zeros(2, dtype=np.int64), np.ones(2, dtype=np.int64), prec)
    with pytest.raises(ANSError, match="precision"):
        msg.pop(prec)


def test_check_mode_rejects_a_decode_lookup_whose_interval_misses_cf():
    msg = Message(4, check=True)
    msg.push_stream(np.array([3, 5, 7, 9]), np.ones(4, dtype=np.int64), 4)
    with pytest.raises(ANSError, match="does not contain cf"):
        msg.pop_stream(4, 4, lambda lo, hi, cf: (cf, cf + 1, np.ones(hi - lo, dtype=np.int64)))
    cf, finish = Message(4, check=True).pop(4)
    with pytest.raises(ANSError, match="does not contain cf"):
        finish(cf + 1, np.ones(4, dtype=np.int64))


def test_mismatched_lengths_and_too_many_lane_symbols_are_rejected():
    msg = Message(3)
    with pytest.raises(ANSError):
        msg.push_stream(np.zeros(3, dtype=np.int64), np.ones(4, dtype=np.int64), 4)
    with pytest.raises(ANSError, match="push_stream"):
        msg.push(np.zeros(4, dtype=np.int64), np.ones(4, dtype=np.int64), 4)
    with pytest.raises(ANSError):
        msg.pop(4, n=4)
    with pytest.raises(ANSError):
        Message(0)


@FAST
@given(lanes=st.integers(1, 50), n=st.integers(0, 500), seed=st.integers(0, 2**16))
def test_to_bytes_and_from_bytes_round_trip_with_no_other_arguments(lanes, n, seed):
    cdf, x, s, f = stream_case(seed, n, 16)
    msg = Message(lanes, seed=seed)
    msg.pop_stream(n // 7, 16, table_lookup(cdf))  # phantom words are part of the state
    msg.push_stream(s, f, 16)
    data = msg.to_bytes()
    back = Message.from_bytes(data, seed=seed)
    assert back == msg and back.to_bytes() == data


@FAST
@given(data=st.binary(max_size=200))
def test_garbage_bytes_raise_ans_error(data):
    try:
        msg = Message.from_bytes(data)
    except ANSError:
        return
    # The rare garbage that parses is a valid message and decodes without crashing.
    msg.pop_stream(50, 8, table_lookup(random_cdf(np.random.default_rng(0), 5, 8)))


def test_truncated_or_extended_messages_raise_ans_error():
    msg = Message(4)
    msg.push_stream(np.arange(200) % 16, np.ones(200, dtype=np.int64), 4)
    data = msg.to_bytes()
    for bad in (data[:-1], data[:5], data + b"\0", b"", b"\x00" + data[1:]):
        with pytest.raises(ANSError):
            Message.from_bytes(bad)
    with pytest.raises(ANSError):
        Message.from_bytes("not bytes")


def test_a_head_outside_its_range_is_rejected_when_read_back():
    data = bytearray(Message(2).to_bytes())
    data[13:21] = (5).to_bytes(8, "little")
    with pytest.raises(ANSError, match="head"):
        Message.from_bytes(bytes(data))


def test_decoding_the_wrong_message_gives_wrong_symbols_not_a_crash():
    cdf, x, s, f = stream_case(11, 5000, 16)
    msg = Message(32)
    msg.push_stream(s, f, 16)
    data = bytearray(msg.to_bytes())
    data[16] ^= 0xFF  # flip bits in the middle of lane 0's head: still a valid head
    y = Message.from_bytes(bytes(data)).pop_stream(5000, 16, table_lookup(cdf))
    assert y.shape == x.shape and not np.array_equal(y, x)
    other = random_cdf(np.random.default_rng(99), cdf.size - 1, 16)
    y = Message.from_bytes(msg.to_bytes()).pop_stream(5000, 16, table_lookup(other))
    assert not np.array_equal(y, x)


def _uniform_lookup(prec):
    def lookup(lo, hi, cf):
        return cf, cf, np.ones_like(cf)

    return lookup


def _bits_back_like_history(lanes=4, prec=12, seed=3):
    """Pop from an empty message (phantom words), push the same symbols back with the same
    distribution (the words are given back), then pop more and push other data: the phantom
    count peaks in the middle and ends lower. Returns (message, the symbols, the final data)."""
    msg = Message(lanes, seed=seed)
    n = 64
    first = msg.pop_stream(n, prec, _uniform_lookup(prec))
    ones = np.ones(n, dtype=np.int64)
    msg.push_stream(first, ones, prec)  # collapsed: pushing with q's own distribution gives the words back
    second = msg.pop_stream(n // 4, prec, _uniform_lookup(prec))
    cdf, data, starts, freqs = stream_case(seed, 400, prec)
    msg.push_stream(starts, freqs, prec)
    return msg, second, (cdf, data)


def test_the_phantom_peak_counts_words_given_back_before_the_end():
    msg, _, _ = _bits_back_like_history()
    assert msg.phantom_peak > msg.phantom_words > 0


def test_a_decoder_limited_to_the_peak_decodes_a_faithful_message():
    msg, second, (cdf, data) = _bits_back_like_history()
    dec = Message.from_bytes(msg.to_bytes(), seed=3, phantom_limit=msg.phantom_peak)
    assert np.array_equal(dec.pop_stream(len(data), 12, table_lookup(cdf)), data)
    dec.push_stream(second, np.ones_like(second), 12)
    # Undoing the give-backs reads phantom words again, up to the peak and no further.
    first = dec.pop_stream(64, 12, _uniform_lookup(12))
    dec.push_stream(first, np.ones_like(first), 12)
    assert dec == Message(4, seed=3)
    # The final count alone is not enough: the same faithful decode passes above it.
    low = Message.from_bytes(msg.to_bytes(), seed=3, phantom_limit=msg.phantom_words)
    low.pop_stream(len(data), 12, table_lookup(cdf))
    low.push_stream(second, np.ones_like(second), 12)
    with pytest.raises(ANSError, match="ran out"):
        low.pop_stream(64, 12, _uniform_lookup(12))


def test_a_decoder_stops_at_the_first_word_that_was_never_written():
    msg, _, (cdf, data) = _bits_back_like_history()
    raw = bytearray(msg.to_bytes())
    lanes, top = 4, msg.tail.size
    cut = bytes(raw[:5]) + np.uint32(0).tobytes() + bytes(raw[9:13 + 8 * lanes])  # no tail words
    dec = Message.from_bytes(cut, seed=3, phantom_limit=msg.phantom_peak)
    with pytest.raises(ANSError, match="ran out before decoding finished"):
        for _ in range(top + 1):
            dec.pop_stream(len(data), 12, table_lookup(cdf))
    # Without the limit the same message decodes on into seeded words.
    free = Message.from_bytes(cut, seed=3)
    free.pop_stream(len(data), 12, table_lookup(cdf))


def test_a_declared_peak_below_the_phantom_count_is_refused():
    msg, _, _ = _bits_back_like_history()
    with pytest.raises(ANSError, match="more than its peak"):
        Message.from_bytes(msg.to_bytes(), seed=3, phantom_limit=msg.phantom_words - 1)


def test_a_bare_message_is_its_bytes_without_the_header_and_frames_back_exactly():
    msg = Message(4, seed=3)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 1000, 64)
    msg.push_stream(starts, np.full(64, 10), 12)
    msg.pop(12)  # any state: a few phantom words may be held
    full = msg.to_bytes()
    bare = Message.bare(full)
    assert len(bare) <= len(full) - 12
    assert Message.framed(bare, 4) == full
    with pytest.raises(ANSError):
        Message.framed(bare[:-1], 4)  # not whole words
    with pytest.raises(ANSError):
        Message.framed(bare, 40)  # fewer bytes than 40 heads
