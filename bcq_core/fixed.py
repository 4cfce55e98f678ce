r"""Fixed-precision BCQ: every bit-width fitted on its own (the baseline AnyBCQ is compared with).

For each p in bits, independently: greedy + T rounds of alternating refinement
(``bcq_core.alternating.fit``), so p bits get p planes of their own and 2 + 3 + 4 = 9 planes are
stored for a 2/3/4-bit model instead of 4.  Its error at each p is what a multi-precision quantizer
(``bcq_core.anybcq``, ``bcq_core.joint``) gives up for sharing planes.
"""
from __future__ import annotations

from .alternating import fit


def fixed(W, bits, g, iters=20, importance=None, asymmetric=False):
    """{p: (codes uint8 [N, K] with p planes, alpha float64 [N, G, p], beta float64 [N, G])} for p in bits."""
    return {int(p): fit(W, int(p), g, iters, importance, asymmetric) for p in sorted(bits)}
