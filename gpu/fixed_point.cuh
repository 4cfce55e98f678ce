// Contract step 1 of reference/exact_mma.py for one word of activations, one warp: the fixed-point
// value of each lane's input, and the group's E and X.  Shared by the encoders of bmma_gemv.cu and
// imma_gemm.cu, which then lay the values out in their own fragment orders.
#pragma once
#include <cuda_fp16.h>

namespace bcq {

constexpr int kFixBits = 15;  // reference/exact_mma.py: FIX_BITS (|fix| < 2^15, an int16)

// 2^e as a float, exactly, for e in the normal range [-126, 127]: the contract's powers 2^(15 - E) and
// 2^(E - 15) lie in [2^-38, 2^38], so a product with one is ldexp's single rounding.
__device__ __forceinline__ float pow2(int e) { return __int_as_float((127 + e) << 23); }

// fix = rint(x 2^(15 - E)) of input 32 w + lane of the row xr (K inputs), E from the group's amax
// (amax = f 2^E, f in [1/2, 1); E = 0 for an all-zero group).  x 2^(15 - E) is exact (a power of
// two, no overflow: |x| 2^(15 - E) < 2^15), so this equals the reference's ldexp.  The warp of a
// group's first word writes the group's E and X = sum of its fix to E_row[grp stride], X_row[grp stride].
// Call with the whole warp (it shuffles).
__device__ __forceinline__ int warp_fix(const __half* __restrict__ xr, int w, int group_size,
                                        int* __restrict__ E_row, int* __restrict__ X_row, int stride, int lane) {
  const int wpg = group_size >> 5, grp = w / wpg;
  const __half* xg = xr + (size_t)grp * group_size;
  float amax = 0.0f;
  for (int k = lane; k < group_size; k += 32) amax = fmaxf(amax, fabsf(__half2float(xg[k])));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  int E = 0;
  if (amax > 0.0f) frexpf(amax, &E);
  const float scale = pow2(kFixBits - E);  // 15 - E in [-1, 38]
  if (w % wpg == 0) {
    int X = 0;
    for (int k = lane; k < group_size; k += 32) X += __float2int_rn(__fmul_rn(__half2float(xg[k]), scale));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) X += __shfl_xor_sync(0xffffffffu, X, o);
    if (lane == 0) {
      E_row[grp * stride] = E;
      X_row[grp * stride] = X;
    }
  }
  return __float2int_rn(__fmul_rn(__half2float(xr[(size_t)w * 32 + lane]), scale));
}

}  // namespace bcq
