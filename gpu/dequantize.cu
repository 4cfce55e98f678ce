// Dequantize multi-precision BCQ to float16 W_hat [N, K] at precision p (prefill, large batches:
// dequantize once, then cuBLAS).  Bit-exact with reference/dequant.py.
//
// One thread per (row n, 32-input word kw): it reads p plane words and p scales, writes 64 bytes.
//   for t in 0..31:  w = +-alpha_0;  w = w + (+-alpha_i) for i = 1..p-1;  w = w + beta;  out = fp16(w)
// The planes come row-major ([p, N, K/32]) or in the tensor-core kernels' tile layout ([p, ceil(N/16),
// ceil(K/256), 128], bcq_core/layout.py tile_planes).  Either way consecutive threads take consecutive
// words of a row, so that their 64-byte stores of W are contiguous: W is 4-8 times the plane bytes.

#include <cuda_fp16.h>
// No <stdint.h>: NVRTC does not ship it, so 32-bit words are spelled unsigned int (u32).

#include "tile_layout.cuh"

namespace bcq {

using u32 = unsigned int;

constexpr int kMaxPlanes = 8;

// One word of W_hat: 32 outputs of row n from word `word` of each of the P planes.  P and the offset's
// presence are compile-time, so the loops hold exactly the operations of this precision: with a run-time p
// the compiler kept all kMaxPlanes planes' selects and adds, predicated off, and the kernel issued them.
// alpha_i b_i is alpha_i with its sign flipped where the bit is clear, so it is exact.
template <int P, bool BETA>
__device__ __forceinline__ void dequantize_word(const u32* __restrict__ planes, size_t plane_stride, size_t word,
                                                const __half* __restrict__ alpha, size_t alpha_plane, size_t ag,
                                                const __half* __restrict__ beta, __half* __restrict__ dst) {
  u32 wd[P];
  float al[P];
#pragma unroll
  for (int i = 0; i < P; ++i) {
    wd[i] = __ldg(planes + i * plane_stride + word);
    al[i] = __half2float(alpha[i * alpha_plane + ag]);
  }
  const float be = BETA ? __half2float(beta[ag]) : 0.0f;
  __align__(16) __half h[32];
#pragma unroll
  for (int t = 0; t < 32; ++t) {
    float w = ((wd[0] >> t) & 1u) ? al[0] : -al[0];
#pragma unroll
    for (int i = 1; i < P; ++i) w = __fadd_rn(w, ((wd[i] >> t) & 1u) ? al[i] : -al[i]);
    if (BETA) w = __fadd_rn(w, be);
    h[t] = __float2half_rn(w);
  }
  uint4* out = reinterpret_cast<uint4*>(dst);
  const uint4* src = reinterpret_cast<const uint4*>(h);
#pragma unroll
  for (int v = 0; v < 4; ++v) out[v] = src[v];
}

template <int P>
__device__ __forceinline__ void dequantize_word(const u32* planes, size_t plane_stride, size_t word,
                                                const __half* alpha, size_t alpha_plane, size_t ag,
                                                const __half* beta, __half* dst) {
  if (beta != nullptr) dequantize_word<P, true>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, dst);
  else dequantize_word<P, false>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, dst);
}

__global__ void __launch_bounds__(256)
dequantize(const u32* __restrict__ planes,   // [p, N, K/32], or the tiles [p, NT, KS, 128] if tiled
           const __half* __restrict__ alpha,      // [p, N, G]
           const __half* __restrict__ beta,       // [N, G] or nullptr
           __half* __restrict__ out,              // [N, K]
           int N, int K, int p, int group_size, int tiled) {
  const int KW = K >> 5;
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * KW) return;
  const int n = (int)(idx / KW), kw = (int)(idx % KW);
  size_t word = idx, plane_stride = (size_t)N * KW;
  if (tiled) {
    const int NT = (N + kTileRows - 1) / kTileRows, KS = (KW + kTileWords - 1) / kTileWords;
    plane_stride = (size_t)NT * KS * kTileSize;
    word = ((size_t)(n / kTileRows) * KS) * kTileSize + tile_word(n & (kTileRows - 1), kw);
  }
  const int G = K / group_size;
  const size_t ag = (size_t)n * G + kw / (group_size >> 5);  // this word's group in alpha[i] and beta
  __half* dst = out + (size_t)n * K + (size_t)kw * 32;
  switch (p) {  // the same for every thread: no divergence
    case 1: dequantize_word<1>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 2: dequantize_word<2>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 3: dequantize_word<3>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 4: dequantize_word<4>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 5: dequantize_word<5>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 6: dequantize_word<6>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    case 7: dequantize_word<7>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
    default: dequantize_word<kMaxPlanes>(planes, plane_stride, word, alpha, (size_t)N * G, ag, beta, dst); break;
  }
}

}  // namespace bcq
