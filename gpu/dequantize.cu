// Dequantize multi-precision BCQ to float16 W_hat [N, K] at precision p (prefill, large batches:
// dequantize once, then cuBLAS).  Bit-exact with reference/dequant.py.
//
// One thread per (row n, 32-input word kw, byte c of it): it reads the word's p plane words and p scales
// and writes W_hat[n, 32 kw + 8 c .. + 7], one 16-byte store.
//   for t in 8c..8c+7:  w = +-alpha_0;  w = w + (+-alpha_i) for i = 1..p-1;  w = w + beta;  out = fp16(w)
// The planes come row-major ([p, N, K/32]) or in the tensor-core kernels' tile layout ([p, ceil(N/16),
// ceil(K/256), 128], bcq_core/layout.py tile_planes).  Either way consecutive threads take consecutive
// bytes of a row, so a warp's store is 512 contiguous bytes of W (W is 4-8 times the plane bytes); the
// four threads of a word load the same words, which the warp's one load request serves.

#include <cuda_fp16.h>
// No <stdint.h>: NVRTC does not ship it, so 32-bit words are spelled unsigned int (u32).

#include "tile_layout.cuh"

namespace bcq {

using u32 = unsigned int;

constexpr int kMaxPlanes = 8;

// alpha_i b_i is alpha_i with its sign flipped where the bit is clear, so it is exact.
// Grid: (ceil(4 K/32 / 256), min(N, 65535)) blocks of 256; block row y takes rows y, y + gridDim.y, ...
// (no index division; grid.y is limited to 65535 rows).
__global__ void __launch_bounds__(256)
dequantize(const u32* __restrict__ planes,   // [p, N, K/32], or the tiles [p, NT, KS, 128] if tiled
           const __half* __restrict__ alpha,      // [p, N, G]
           const __half* __restrict__ beta,       // [N, G] or nullptr
           __half* __restrict__ out,              // [N, K]
           int N, int K, int p, int group_size, int tiled) {
  const int KW = K >> 5;
  const int q = blockIdx.x * blockDim.x + threadIdx.x;  // (kw, c) of a row
  if (q >= KW * 4) return;
  const int kw = q >> 2, c = q & 3;
  const int G = K / group_size, group = kw / (group_size >> 5);
  const int KS = (KW + kTileWords - 1) / kTileWords;
  const size_t plane_stride = tiled ? (size_t)((N + kTileRows - 1) / kTileRows) * KS * kTileSize : (size_t)N * KW;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    const size_t word = tiled ? (size_t)(n / kTileRows) * KS * kTileSize + tile_word(n & (kTileRows - 1), kw)
                              : (size_t)n * KW + kw;
    u32 bits[kMaxPlanes];
    float al[kMaxPlanes];
#pragma unroll
    for (int i = 0; i < kMaxPlanes; ++i) {
      bits[i] = i < p ? __ldg(planes + i * plane_stride + word) >> (8 * c) : 0u;
      al[i] = i < p ? __half2float(__ldg(alpha + ((size_t)i * N + n) * G + group)) : 0.0f;
    }
    const float be = beta != nullptr ? __half2float(__ldg(beta + (size_t)n * G + group)) : 0.0f;
    u32 h[4];
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      float w = ((bits[0] >> t) & 1u) ? al[0] : -al[0];
#pragma unroll
      for (int i = 1; i < kMaxPlanes; ++i)
        if (i < p) w = __fadd_rn(w, ((bits[i] >> t) & 1u) ? al[i] : -al[i]);
      if (beta != nullptr) w = __fadd_rn(w, be);
      const u32 v = __half_as_ushort(__float2half_rn(w));
      h[t >> 1] = (t & 1) ? (h[t >> 1] | (v << 16)) : v;
    }
    // one 16-byte store, a warp's 512 contiguous bytes of W (__stwb: a plain assignment compiled to four
    // 4-byte stores)
    __stwb(reinterpret_cast<uint4*>(out + (size_t)n * K + (size_t)kw * 32 + 8 * c), make_uint4(h[0], h[1], h[2], h[3]));
  }
}

}  // namespace bcq
