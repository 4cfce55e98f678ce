"""Host half of gpu/divide.cuh: division by an invariant divisor as a multiply-high, an add and a shift.

For a divisor 1 <= d < 2^31 (Granlund and Montgomery, 1994, section 4):

    s = ceil(log2 d),   m = floor(2^32 (2^s - d) / d) + 1,   floor(n / d) = (umulhi(n, m) + n) >> s

for every 0 <= n < 2^31, where umulhi(n, m) = floor(n m / 2^32) and the add cannot carry past 32 bits.
"""
from __future__ import annotations

import numpy as np

MAX_DIVIDEND = 2**31 - 1


def magic_divisor(d: int) -> tuple[int, int]:
    """(m, s) for divisor d: both fit in a uint32."""
    d = int(d)
    if not 1 <= d <= MAX_DIVIDEND:
        raise ValueError(f"d: must be in [1, 2^31), got {d}")
    s = (d - 1).bit_length()  # ceil(log2 d); 0 for d = 1
    return ((2**32) * (2**s - d)) // d + 1, s


def divide(n, magic: int, shift: int) -> np.ndarray:
    """The device's floor(n / d), emulated in uint64 with the device's 32-bit wrap-around: n uint [...] < 2^31."""
    n = np.asarray(n, dtype=np.uint64)
    high = (n * np.uint64(magic)) >> np.uint64(32)
    return ((high + n) & np.uint64(0xFFFFFFFF)) >> np.uint64(shift)
