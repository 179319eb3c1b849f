"""pickle_scan.py: opcodes vetted before unpickling (declared lengths, tuple sizes)."""

from __future__ import annotations

import io
import pickle

import pytest

from deepgaze_jax.pickle_scan import MAX_TUPLE_NODES, check_pickle


def test_ordinary_pickles_pass_and_the_file_stops_after_stop():
    first = pickle.dumps({"a": (1, 2, (3, 4)), "b": [b"x" * 1000, "text"], "c": frozenset({(5, 6)})}, protocol=4)
    file = io.BytesIO(first + pickle.dumps(7, protocol=2))
    check_pickle(file)
    assert file.tell() == len(first)
    check_pickle(file)


def _nested_tuple(depth: int) -> bytes:
    return b"\x80\x02N" + b"\x85" * depth + b"."


def test_tuple_sizes_are_bounded_counting_shared_items_each_time():
    check_pickle(io.BytesIO(_nested_tuple(MAX_TUPLE_NODES - 1)))
    with pytest.raises(pickle.UnpicklingError, match="tuple of"):
        check_pickle(io.BytesIO(_nested_tuple(MAX_TUPLE_NODES)))
    shared = b"\x80\x02N\x85q\x000" + b"h\x00h\x00\x86q\x000" * 11 + b"h\x00."  # t = (t, t): 2**12 - 1 nodes
    with pytest.raises(pickle.UnpicklingError, match="tuple of"):
        check_pickle(io.BytesIO(shared))


@pytest.mark.parametrize(
    "data",
    [b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b".", b"\x80\x02K\x01", b"\x80\x02\xff.", b"\x80\x02t."],
    ids=["length-beyond-data", "no-stop", "unknown-opcode", "tuple-without-mark"],
)
def test_malformed_pickles_raise_before_any_object_is_built(data):
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        check_pickle(io.BytesIO(data))
