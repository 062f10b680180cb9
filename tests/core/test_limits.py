"""Limits belong to the wire: none in a user's own process unless asked for."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamint_core import (
    InputTooLargeError,
    RequestDeadlineExceeded,
    VolumeResource,
    request_limits,
)
from datamint_core._limits import (
    RequestLimits,
    applying,
    check_deadline,
    check_decoded_size,
    check_slice_count,
)


def test_outside_a_request_nothing_is_limited_whatever_the_server_environment(monkeypatch):
    monkeypatch.setenv("DATAMINT_SERVE_MAX_SLICES", "2")
    monkeypatch.setenv("DATAMINT_SERVE_MAX_DECODED_BYTES", "1K")

    check_slice_count(10**9, "slices")
    assert check_decoded_size([4096, 4096, 4096], 8, "a huge volume") == 8 * 4096**3
    with pytest.raises(ValueError, match="declares the shape"):
        check_decoded_size([-1, 4], 1, "a bad header")  # the shape is still checked

    with applying(RequestLimits.from_env()):  # a server applies them to each request
        with pytest.raises(InputTooLargeError, match="over the limit of 2 per request"):
            check_slice_count(3, "slices")


def test_request_limits_apply_inside_the_block_only():
    with request_limits(max_slices=5, max_decoded_bytes="1K", timeout_s=0.001) as limits:
        with pytest.raises(InputTooLargeError, match="--max-slices"):
            check_slice_count(6, "slices")
        with pytest.raises(InputTooLargeError, match="over the limit of 1024 decoded bytes"):
            check_decoded_size([1025], 1, "an array")
        time.sleep(0.01)
        assert limits.deadline is not None and limits.deadline < time.monotonic()
        with pytest.raises(RequestDeadlineExceeded):
            check_deadline()
    check_slice_count(6, "slices")
    check_deadline()
    with pytest.raises(ValueError, match="timeout_s=-1 is not valid"):
        with request_limits(timeout_s=-1):
            pass
    assert issubclass(RequestDeadlineExceeded, TimeoutError)


def mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a mapped file."""
    import mmap

    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def test_a_users_own_npy_is_mapped_copy_on_write_and_a_requests_is_read(tmp_path):
    path = tmp_path / "ct.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4))

    own = VolumeResource(path=str(path)).pixels
    own[0, 0, 0] = 99.0  # a model writing into its input changes nothing on disk
    with applying(RequestLimits()):
        requested = VolumeResource(path=str(path)).pixels

    assert mapped(own) and not mapped(requested)
    assert np.load(path)[0, 0, 0] == 0.0
    assert np.array_equal(requested, np.load(path))


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(
        st.one_of(st.integers(0, 4), st.integers(0, 2**66)), min_size=1, max_size=6
    ).filter(lambda shape: 0 in shape),
    itemsize=st.sampled_from([1, 2, 4, 8]),
)
def test_an_empty_shape_either_allocates_or_is_refused_by_the_check_never_by_numpy(
    shape, itemsize
):
    # A 0 dimension makes the array empty, but numpy still refuses non-zero dimensions that
    # multiply past its index range ("array is too big"): the check must refuse them first,
    # so that a header declaring (0, 1328, 1328, 1307475577696) is a 4xx, not a 500.
    try:
        assert check_decoded_size(shape, itemsize, "an array") == 0
    except ValueError as error:
        assert "no array can have" in str(error) or "dimensions" in str(error), error
        return
    assert np.empty(shape, dtype=f"u{itemsize}").size == 0


def test_an_npy_header_declaring_an_empty_array_too_big_for_numpy_is_unreadable_pixel_data():
    import io

    from datamint_core._npy import load_array
    from datamint_core.errors import ResourceError

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1328, 1328, 1307475577696), }"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    with pytest.raises(ResourceError, match="no array can have"):
        load_array(io.BytesIO(npy), "part 'ct'", ".npy")
