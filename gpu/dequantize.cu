// Dequantize multi-precision BCQ to float16 W_hat [N, K] at precision p (prefill, large batches:
// dequantize once, then cuBLAS).  Bit-exact with reference/dequant.py.
//
// One thread per (row pair, 32-input word kw): rows n and n + 8 of a 16-row tile, for which it reads p plane
// words and p scales each and makes 2 x 64 bytes of W.
//   for t in 0..31:  w = +-alpha_0;  w = w + (+-alpha_i) for i = 1..p-1;  w = w + beta;  out = fp16(w)
// The planes come row-major ([p, N, K/32]) or in the tensor-core kernels' tile layout ([p, ceil(N/16),
// ceil(K/256), 128], bcq_core/layout.py tile_planes), where a word of row n and the same word of row n + 8
// are neighbours in one 32-byte sector.  A thread's fixed work (index, group, addresses) is spread over 64
// outputs.  Consecutive threads take consecutive words of a row pair, so a warp makes 2048 contiguous bytes
// of W per row (W is 4-8 times the plane bytes); it stores them through shared memory, each store
// instruction 512 contiguous bytes.

#include <cuda_fp16.h>
// No <stdint.h>: NVRTC does not ship it, so 32-bit words are spelled unsigned int (u32).

#include "divide.cuh"
#include "tile_layout.cuh"

namespace bcq {

using u32 = unsigned int;

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

// The 32 outputs of one word of one row: four 16-byte pieces, written to the warp's staging slots of `lane`
// (each piece as soon as it is made: fewer live registers).  wd: the row's P plane words; al: its P scales'
// float32 bits; be: its offset.  P and the offset's presence are compile-time, so the loops hold exactly the
// operations of this precision: with a run-time p the compiler kept all eight planes' selects and adds,
// predicated off, and the kernel issued them.  __floats2half2_rn rounds each of its two floats to nearest,
// as __float2half_rn does, in one instruction.
template <int P, bool BETA>
__device__ __forceinline__ void stage_word(const u32 (&wd)[P], const u32 (&al)[P], float be, uint4* warp_stage,
                                           int lane) {
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

// Where a thread's word sits: rows n0 = 16 tile + r and n0 + 8 (r < 8) of a row tile, word kw of each.
struct PairWord {
  int tile, r, kw;
  bool live;  // the lane has a word (its index is below the grid's total)
};

// The launch's shape, the same for every thread.
struct Shape {
  int N, KW, G;         // rows, words per row, groups per row
  int KS;               // tiles along K (the tile layout)
  size_t plane_stride;  // words per plane, in the layout read
  bool tiled;
};

// Row n0's word, then row n0 + 8's, each followed by the warp's staged stores of that row.  Every lane of the
// warp runs it (the stores take pieces from other lanes); a lane without a word makes zeros it never stores.
template <int P, bool BETA>
__device__ __forceinline__ void dequantize_pair(const u32* __restrict__ planes, const __half* __restrict__ alpha,
                                                const __half* __restrict__ beta, __half* __restrict__ out,
                                                const Shape& sh, const PairWord& at, u32 group, uint4* warp_stage,
                                                int lane) {
  const int n0 = 16 * at.tile + at.r;
  const size_t alpha_plane = (size_t)sh.N * sh.G;
#pragma unroll 1  // unrolled, the compiler hoists the second row's loads and needs more registers
  for (int h = 0; h < 2; ++h) {
    // In the tiles the two rows' words are neighbours (tile_layout.cuh): row n0's load brings their sector
    // into L1, where row n0 + 8's load could find it (Nsight Compute says it mostly does not: L2 reads fell
    // by 8 % only).  One 8-byte load for both rows halves those reads but takes 64 registers, and measured
    // 0.83-0.96x (docs/kernels.md).
    const int n = n0 + 8 * h;
    const bool live = at.live && n < sh.N;
    const size_t ag = (size_t)n * sh.G + group;
    const u32* wp = planes + (sh.tiled ? (size_t)at.tile * sh.KS * kTileSize + tile_word(at.r + 8 * h, at.kw)
                                       : (size_t)n * sh.KW + at.kw);
    u32 wd[P], al[P];  // al: the scales' float32 bits
    float be = 0.0f;
    if (live) {
#pragma unroll
      for (int i = 0; i < P; ++i) {
        wd[i] = __ldg(wp + i * sh.plane_stride);
        al[i] = __float_as_uint(__half2float(alpha[i * alpha_plane + ag]));
      }
      if (BETA) be = __half2float(beta[ag]);
    } else {
#pragma unroll
      for (int i = 0; i < P; ++i) wd[i] = al[i] = 0u;
    }
    stage_word<P, BETA>(wd, al, be, warp_stage, lane);
    // Word kw of row n is bytes [64 (n K/32 + kw), + 64) of W.  Stored by each lane (four 16-byte stores 64
    // bytes apart) every store instruction would touch 16 lines in 16-byte halves of sectors; staged, store v
    // writes the 512 bytes of slots 32 v .. 32 v + 31, whose owners (lanes 8 v .. 8 v + 7) hold consecutive
    // words of one row except where the warp crosses from one row pair to the next.
    __syncwarp();
    const u32 mine = live ? (u32)n * sh.KW + at.kw : 0xFFFFFFFFu;  // this lane's word of W, or none
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int slot = 32 * v + lane, owner = slot >> 2;  // the lane whose word this 16-byte piece is
      const u32 w = __shfl_sync(0xFFFFFFFFu, mine, owner);
      if (w != 0xFFFFFFFFu)
        reinterpret_cast<uint4*>(out)[(size_t)w * 4 + (slot & 3)] = warp_stage[stage_slot(owner, slot & 3)];
    }
    __syncwarp();  // the slots are written again for the second row
  }
}

// dequantize_pair<p> for the run-time p in [P, TO]: one compiled loop per precision, picked at entry (the
// same for every thread: no divergence).
template <int P, int TO>
__device__ __forceinline__ void dequantize_pair_of(int p, const u32* planes, const __half* alpha,
                                                   const __half* beta, __half* out, const Shape& sh,
                                                   const PairWord& at, u32 group, uint4* warp_stage, int lane) {
  if constexpr (P < TO) {
    if (p != P) return dequantize_pair_of<P + 1, TO>(p, planes, alpha, beta, out, sh, at, group, warp_stage, lane);
  }
  if (beta != nullptr) dequantize_pair<P, true>(planes, alpha, beta, out, sh, at, group, warp_stage, lane);
  else dequantize_pair<P, false>(planes, alpha, beta, out, sh, at, group, warp_stage, lane);
}

constexpr int kThreads = 256;

// One kernel per range of precisions [FROM, TO] (gpu/kernels.py: 1-4 and 5-8), because a kernel's registers
// are those of its most demanding precision: one kernel for 1-8 took 64 registers, the 1-4 kernel takes 48.
// The launch's divisors come as (magic, shift) pairs from the host (divide.cuh): by_kw for K/32, by_gw for
// g/32, the words of a group.  The host checks 8 ceil(N/16) K/32 < 2^31, so a thread's index fits the 31
// bits that divide() takes.
template <int FROM, int TO>
__global__ void __launch_bounds__(kThreads)
dequantize(const u32* __restrict__ planes,   // [p, N, K/32], or the tiles [p, NT, KS, 128] if tiled
           const __half* __restrict__ alpha,      // [p, N, G]
           const __half* __restrict__ beta,       // [N, G] or nullptr
           __half* __restrict__ out,              // [N, K], 16-byte aligned
           int N, int KW, u32 kw_magic, u32 kw_shift, int G, u32 gw_magic, u32 gw_shift, int p, int tiled) {
  __shared__ uint4 stage[kThreads * 4];
  const int lane = threadIdx.x & 31, NT = (N + kTileRows - 1) / kTileRows, KS = (KW + kTileWords - 1) / kTileWords;
  const Shape sh{N, KW, G, KS, tiled ? (size_t)NT * KS * kTileSize : (size_t)N * KW, tiled != 0};
  // Thread idx takes word kw of row pair q = idx / (K/32): consecutive threads, consecutive words.
  const u32 total = (u32)NT * (kTileRows / 2) * KW, idx = blockIdx.x * kThreads + threadIdx.x;
  PairWord at{0, 0, 0, false};
  if (idx < total) {
    const u32 q = divide(idx, kw_magic, kw_shift);
    at = {(int)(q >> 3), (int)(q & 7), (int)(idx - q * KW), true};
  }
  dequantize_pair_of<FROM, TO>(p, planes, alpha, beta, out, sh, at, divide(at.kw, gw_magic, gw_shift),
                               stage + (threadIdx.x - lane) * 4, lane);
}

}  // namespace bcq
