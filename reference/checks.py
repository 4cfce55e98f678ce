"""Checks on the arguments of a GEMV call, shared by reference/ and gpu/ (which must reject
exactly the same inputs, before any work or launch)."""
from __future__ import annotations

MAX_LUT_BATCH = 32


def check_gemv_args(x_shape, x_dtype, planes_shape, planes_dtype, alpha_shape, alpha_dtype,
                    beta_shape, beta_dtype, group_size: int) -> tuple[int, int, int, int, int]:
    """Validate y = x W_hat^T arguments; return (M, N, K, p, G).

    x: float16 [M, K]; planes: uint32 [p, N, K/32]; alpha: float16 [p, N, G];
    beta: float16 [N, G] or None; group_size g: multiple of 32 dividing K.
    """
    if len(planes_shape) != 3 or str(planes_dtype) != "uint32":
        raise ValueError(f"planes: must be uint32 [p, N, K/32], got {planes_dtype} {tuple(planes_shape)}")
    p, N, KW = planes_shape
    K = KW * 32
    if p < 1 or N < 1 or KW < 1:
        raise ValueError(f"planes: every dimension must be positive, got {tuple(planes_shape)}")
    if p > 8:
        raise ValueError(f"planes: at most 8 planes per call, got p={p}")
    if len(x_shape) != 2 or str(x_dtype) != "float16":
        raise ValueError(f"x: must be float16 [M, K], got {x_dtype} {tuple(x_shape)}")
    M = x_shape[0]
    if x_shape[1] != K:
        raise ValueError(f"x: K must match planes (K = 32 * {KW} = {K}), got x.shape[1] = {x_shape[1]}")
    if M < 1:
        raise ValueError("x: batch M must be at least 1")
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 32 or K % group_size:
        raise ValueError(f"group_size: must be a positive multiple of 32 dividing K={K}, got {group_size}")
    G = K // group_size
    if tuple(alpha_shape) != (p, N, G) or str(alpha_dtype) != "float16":
        raise ValueError(f"alpha: must be float16 {(p, N, G)}, got {alpha_dtype} {tuple(alpha_shape)}")
    if beta_shape is not None and (tuple(beta_shape) != (N, G) or str(beta_dtype) != "float16"):
        raise ValueError(f"beta: must be float16 {(N, G)} or None, got {beta_dtype} {tuple(beta_shape)}")
    return M, N, K, p, G
