"""gpu/divide.py: division by an invariant divisor as multiply-high, add and shift (no GPU needed)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpu.divide import MAX_DIVIDEND, divide, magic_divisor

DIVISORS = st.one_of(st.integers(1, 4096), st.integers(1, MAX_DIVIDEND))
DIVIDENDS = st.one_of(st.integers(0, 1 << 16), st.integers(0, MAX_DIVIDEND))


@given(d=DIVISORS, n=st.lists(DIVIDENDS, min_size=1, max_size=64))
def test_divide_is_floor_division(d, n):
    magic, shift = magic_divisor(d)
    assert 0 < magic < 2**32 and 0 <= shift <= 31
    n = np.array(n, dtype=np.uint64)
    np.testing.assert_array_equal(divide(n, magic, shift), n // np.uint64(d))


@given(d=DIVISORS)
def test_divide_is_exact_at_the_edges(d):
    """Next to every multiple of d that bounds the dividend range, where a wrong magic number first errs."""
    top = MAX_DIVIDEND // d * d
    n = np.array([0, 1, d - 1, d, d + 1, top - 1, top, MAX_DIVIDEND - 1, MAX_DIVIDEND], dtype=np.int64)
    n = n[(n >= 0) & (n <= MAX_DIVIDEND)].astype(np.uint64)
    np.testing.assert_array_equal(divide(n, *magic_divisor(d)), n // np.uint64(d))


@pytest.mark.parametrize("d", [0, -3, MAX_DIVIDEND + 1])
def test_magic_divisor_refuses_divisors_out_of_range(d):
    with pytest.raises(ValueError, match=r"^d: must be in \[1, 2\^31\)"):
        magic_divisor(d)
