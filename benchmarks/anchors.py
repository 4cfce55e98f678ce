"""The peers' numbers we compare against, transcribed from the project's anchor table.

Any-Precision LLM (SNU-ARC kernel, built for sm_90) on one NVIDIA H100 80GB HBM3, measured with
triton.testing.do_bench (median), weights rotated past L2.  Microseconds, keyed (layer, batch).
"""
H100_COPY_BANDWIDTH_BPS = 3.03e12  # the same session's device-to-device copy (bytes read + written per second)
ANY_PRECISION_H100_US = {
    ("8B q/k/v", 1): {3: 13.2, 4: 15.6}, ("8B o", 1): {3: 10.8, 4: 12.4},
    ("8B gate+up", 1): {3: 35.6, 4: 44.8}, ("8B down", 1): {3: 25.6, 4: 32.4},
    ("70B q/k/v", 1): {3: 30.7, 4: 38.1}, ("70B o", 1): {3: 24.3, 4: 29.8},
    ("70B gate+up", 1): {3: 110.4, 4: 150.7}, ("70B down", 1): {3: 66.3, 4: 87.7},
    ("70B gate+up", 4): {3: 191.1, 4: 202.6}, ("70B gate+up", 8): {3: 338.0, 4: 384.1},
    ("70B down", 8): {3: 175.4, 4: 194.9},
}
CUBLAS_FP16_H100_US = {
    ("8B q/k/v", 1): 30.3, ("8B o", 1): 23.3, ("8B gate+up", 1): 95.4, ("8B down", 1): 56.5,
    ("70B q/k/v", 1): 76.2, ("70B o", 1): 59.7, ("70B gate+up", 1): 348.0, ("70B down", 1): 176.4,
    ("70B gate+up", 4): 343.7, ("70B gate+up", 8): 345.0, ("70B down", 8): 176.9,
}
