"""Format 5's packed header encoding: every header value round-trips, and bytes that are not
one canonical value are refused by name, never with a traceback or an unbounded allocation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbans.archive import packed
from bbans.errors import ArchiveError

HEADER = {
    "format": 5, "created_by": {"bbans": "0.1.0"}, "device": None, "groups": [],
    "entry_count": 2,
    "entry_columns": {"kind": "stored", "perm": 420, "path": ["a.txt", "b\udcff.bin"],
                      "mtime_ns": [1_796_662_199_615_829_048, -12], "sha256": ["0236cdc2441e3d27", "ff" * 8],
                      "data": [{"codec": "lzma2", "dict_size": 4096, "length": 48}, {"codec": "raw", "length": 3}],
                      "why": "not an image", "est_bits": [1.5e-07, -3.25]},
    "unknown key": [True, False, {"zz": 1, "aa": 2}],
}


def test_a_header_round_trips_and_checksums_take_their_bytes_not_their_digits():
    raw = packed.dumps(HEADER)
    assert packed.loads(raw) == HEADER
    assert bytes.fromhex("0236cdc2441e3d27") in raw and b"0236" not in raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_round_trips(value):
    assert packed.loads(packed.dumps(value)) == value


@pytest.mark.parametrize("raw,message", [
    (b"", "ends inside"),
    (bytes([packed.LIST, 5, 1]), "more items than"),
    (bytes([packed.STR]) + b"\x80" * 10 + b"\x01", "malformed number"),
    (bytes([packed.UINT, 5]), "non-canonical"),
    (bytes([packed.LIST]) + b"\x01" + bytes([packed.LIST, 1]) * 40 + bytes([packed.NULL]), "nested too deeply"),
    (bytes([packed.NULL, packed.NULL]), "after its end"),
    (bytes([0xF0]), "unknown tag"),
    (bytes([packed.WORD, 250]), "unknown word"),
    (bytes([packed.DICT, 2, 2, 1, 1, 1]), "out of order or repeated"),
    (bytes([packed.DICT, 1, 0, 6]) + b"format" + b"\x01", "spells out a key"),
    (bytes([packed.FLOAT, 5]) + b"1e999", "out of range"),
    (bytes([packed.FLOAT, 3]) + b"nan", "malformed number"),
    (bytes([packed.STR, 2]) + b"\xff\xfe", "not UTF-8"),
    (bytes([packed.HEX, 0]), "empty checksum"),
])
def test_bytes_that_are_not_one_canonical_value_are_refused(raw, message):
    with pytest.raises(ArchiveError, match=message):
        packed.loads(raw)


def test_a_count_of_a_billion_items_in_a_few_bytes_is_refused_before_allocating():
    with pytest.raises(ArchiveError, match="more items than"):
        packed.loads(bytes([packed.LIST, 0x80, 0x94, 0xEB, 0xDC, 0x03]))
