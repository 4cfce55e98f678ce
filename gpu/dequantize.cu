// Dequantize multi-precision BCQ to float16 W_hat [N, K] at precision p (prefill, large batches:
// dequantize once, then cuBLAS).  Bit-exact with reference/dequant.py.
//
// One thread per (row n, 32-input word kw): it reads p plane words and p scales and makes 64 bytes of W.
//   for t in 0..31:  w = +-alpha_0;  w = w + (+-alpha_i) for i = 1..p-1;  w = w + beta;  out = fp16(w)
// The planes come row-major ([p, N, K/32]) or in the tensor-core kernels' tile layout ([p, ceil(N/16),
// ceil(K/256), 128], bcq_core/layout.py tile_planes).  Either way consecutive threads take consecutive
// words of a row, so a warp makes 2048 contiguous bytes of W (W is 4-8 times the plane bytes); it
// stores them through shared memory, each store instruction 512 contiguous bytes.

#include <cuda_fp16.h>
// No <stdint.h>: NVRTC does not ship it, so 32-bit words are spelled unsigned int (u32).

#include "divide.cuh"
#include "tile_layout.cuh"

namespace bcq {

using u32 = unsigned int;

constexpr int kMaxPlanes = 8;

// kSignShift[t] = 2^(31 - t): multiplying a plane word by it moves bit t to the sign position.  In
// constant memory, so that the compiler cannot see the power of two and turn the multiply into a shift:
// the multiply (IMAD) runs on the FMA pipe, a shift (SHF) on the integer-logic (ALU) pipe, the kernel's
// busiest (docs/kernels.md).
__constant__ u32 kSignShift[32] = {
    1u << 31, 1u << 30, 1u << 29, 1u << 28, 1u << 27, 1u << 26, 1u << 25, 1u << 24,
    1u << 23, 1u << 22, 1u << 21, 1u << 20, 1u << 19, 1u << 18, 1u << 17, 1u << 16,
    1u << 15, 1u << 14, 1u << 13, 1u << 12, 1u << 11, 1u << 10, 1u << 9,  1u << 8,
    1u << 7,  1u << 6,  1u << 5,  1u << 4,  1u << 3,  1u << 2,  1u << 1,  1u << 0};

// alpha_i b_it, b = +-1 from bit t of the plane word: alpha with its sign bit flipped where the bit is
// clear (exact, -0 for alpha = +0 as the reference's negation).  One IMAD (FMA pipe) and one LOP3 (ALU
// pipe) per output and plane, where a bit test and a select took two ALU instructions.
__device__ __forceinline__ float signed_scale(u32 plane_word, int t, u32 alpha_bits) {
  const u32 at_sign = plane_word * kSignShift[t];
  return __uint_as_float((~at_sign & 0x80000000u) ^ alpha_bits);
}

// Where piece v of lane t's word sits in its warp's 128 staging slots: slot 4t + v, its low two bits
// XOR-ed with bits 1-2 of t, so that the 8 lanes of each 16-byte shared-memory wavefront hit 8 different
// 16-byte bank groups, both when a lane writes its pieces and when the warp reads 32 consecutive slots.
__device__ __forceinline__ int stage_slot(int t, int v) { return 4 * t + (v ^ ((t >> 1) & 3)); }

// One word of W_hat: 32 outputs of row n from word `word` of each of the P planes, written as four 16-byte
// pieces to the warp's staging slots of `lane` (each piece as soon as it is made: fewer live registers).
// P and the offset's presence are compile-time, so the loops hold exactly the operations of this precision:
// with a run-time p the compiler kept all kMaxPlanes planes' selects and adds, predicated off, and the
// kernel issued them.  __floats2half2_rn rounds each of its two floats to nearest, as __float2half_rn does,
// in one instruction.
template <int P, bool BETA>
__device__ __forceinline__ void dequantize_word(const u32* __restrict__ planes, size_t plane_stride, size_t word,
                                                const __half* __restrict__ alpha, size_t alpha_plane, size_t ag,
                                                const __half* __restrict__ beta, uint4* warp_stage, int lane) {
  u32 wd[P], al[P];  // al: the scales' float32 bits
#pragma unroll
  for (int i = 0; i < P; ++i) {
    wd[i] = __ldg(planes + i * plane_stride + word);
    al[i] = __float_as_uint(__half2float(alpha[i * alpha_plane + ag]));
  }
  const float be = BETA ? __half2float(beta[ag]) : 0.0f;
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    u32 pair[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float w[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int t = 8 * v + 2 * q + j;
        w[j] = signed_scale(wd[0], t, al[0]);
#pragma unroll
        for (int i = 1; i < P; ++i) w[j] = __fadd_rn(w[j], signed_scale(wd[i], t, al[i]));
        if (BETA) w[j] = __fadd_rn(w[j], be);
      }
      const __half2 h = __floats2half2_rn(w[0], w[1]);  // output t in the low half: little-endian order
      pair[q] = *reinterpret_cast<const u32*>(&h);
    }
    warp_stage[stage_slot(lane, v)] = make_uint4(pair[0], pair[1], pair[2], pair[3]);
  }
}

template <int P>
__device__ __forceinline__ void dequantize_word(const u32* planes, size_t plane_stride, size_t word,
                                                const __half* alpha, size_t alpha_plane, size_t ag,
                                                const __half* beta, uint4* warp_stage, int lane) {
  if (beta != nullptr) dequantize_word<P, true>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane);
  else dequantize_word<P, false>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane);
}

constexpr int kThreads = 256;

// The launch's divisors come as (magic, shift) pairs from the host (divide.cuh): by_kw for K/32, by_gw for
// g/32, the words of a group.  The host checks N K/32 < 2^31, so a thread's index fits the 31 bits that
// divide() takes.
__global__ void __launch_bounds__(kThreads)
dequantize(const u32* __restrict__ planes,   // [p, N, K/32], or the tiles [p, NT, KS, 128] if tiled
           const __half* __restrict__ alpha,      // [p, N, G]
           const __half* __restrict__ beta,       // [N, G] or nullptr
           __half* __restrict__ out,              // [N, K], 16-byte aligned
           int N, int KW, u32 kw_magic, u32 kw_shift, int G, u32 gw_magic, u32 gw_shift, int p, int tiled) {
  __shared__ uint4 stage[kThreads * 4];
  const int lane = threadIdx.x & 31;
  const u32 total = (u32)N * KW, idx = blockIdx.x * kThreads + threadIdx.x;
  uint4* warp_stage = stage + (threadIdx.x - lane) * 4;
  if (idx < total) {  // no early return: every lane of the warp takes part in the staged store below
    const u32 n = divide(idx, kw_magic, kw_shift), kw = idx - n * KW;
    size_t word = idx, plane_stride = total;
    if (tiled) {
      const int NT = (N + kTileRows - 1) / kTileRows, KS = (KW + kTileWords - 1) / kTileWords;
      plane_stride = (size_t)NT * KS * kTileSize;
      word = ((size_t)(n / kTileRows) * KS) * kTileSize + tile_word(n & (kTileRows - 1), kw);
    }
    const size_t alpha_plane = (size_t)N * G, ag = (size_t)n * G + divide(kw, gw_magic, gw_shift);  // the group
    switch (p) {  // the same for every thread: no divergence
      case 1: dequantize_word<1>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 2: dequantize_word<2>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 3: dequantize_word<3>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 4: dequantize_word<4>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 5: dequantize_word<5>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 6: dequantize_word<6>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      case 7: dequantize_word<7>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
      default: dequantize_word<kMaxPlanes>(planes, plane_stride, word, alpha, alpha_plane, ag, beta, warp_stage, lane); break;
    }
  }
  // Word idx is bytes [64 idx, 64 idx + 64) of W, so the warp's 32 words are 2048 contiguous bytes.  Stored
  // by each lane (four 16-byte stores 64 bytes apart) every store instruction would touch 16 lines in
  // 16-byte halves of sectors; staged, store v writes the 512 bytes of slots 32 v .. 32 v + 31.
  __syncwarp();
  const size_t warp_first = idx - lane;
  uint4* warp_out = reinterpret_cast<uint4*>(out) + warp_first * 4;
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    const int slot = 32 * v + lane, owner = slot >> 2;  // the lane whose word this 16-byte piece is
    if (warp_first + owner < total) warp_out[slot] = warp_stage[stage_slot(owner, slot & 3)];
  }
}

}  // namespace bcq
