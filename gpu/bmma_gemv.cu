// Binary tensor-core BCQ GEMV:  y[M, N] = x[M, K] * W_hat[N, K]^T  for small batches.
//
// Bit-exact with reference/exact_mma.py: the same contract, hence the same bytes, as mma_gemm.cu.
// That contract makes every sum over a group an exact integer, S_i = sum_k beta_ik fix_k with
// beta_ik in {0, 1} the stored plane bits and fix_k the 15-bit fixed-point activations (int16).
// Here the integer is formed by the 1-bit tensor cores straight from the packed plane words:
//
//   fix_k = sum_j w_j xbit_j(k)            16 two's-complement bit-planes, w_j = 2^j (j < 15), w_15 = -2^15
//   S_i   = sum_j w_j popc(plane word AND xbit_j word)      mma.m16n8k256 .b1 .and.popc, exact in int32
//
// so a plane word is never expanded into numbers (mma_gemm.cu spends one rotate + AND per two
// weights on that; the LUT kernel four table lookups per word).  encode_bits lays the activation
// bit-planes out as the mma's B fragments once per call; the weights are the A fragments as stored
// (in the tile layout below).
//
// One mma = 16 rows x 256 inputs (8 plane words) x 8 columns.  Thread (gid = lane / 4, t = lane % 4)
// holds words 2t and 2t + 1 of the step for rows gid and gid + 8: the mma's k-blocks t and t + 4.
// The planes come in the tile layout (bcq_core/layout.py: tile_planes): a warp's step of one plane
// is one 512-byte tile whose first half holds every lane's words 2t (rows gid, gid + 8) and second
// half its words 2t + 1, so a plane costs two 8-byte loads per lane, each reading 256 contiguous
// bytes (2 full cache lines).  The row-major layout took 8-byte loads from 8 lines, 32 bytes each.
// The 8 columns are 8 activation bit-planes of one (batch row m, slot), a slot being one group of
// the step (S = 256 / g groups per step): a column only sees the inputs of its slot, because B is
// zero elsewhere.  So a step costs 2 mma per (m, slot) and plane (the contract's int16 is exactly
// 2 x 8 columns; at 21 bits it took 3), and each of the 4 results of an mma is weighted by its
// bit-plane's w_j and added into the (m, slot) sum.
//
// Loop nest of one warp (16 rows, one split of the contract = kExactSplitInputs / 256 steps):
//   for step s in split:                                   (the next step's loads already in flight)
//     for plane i < p:
//       acc[m, slot][row] = sum over 2 mma of w_j * D      (integer, exact)
//       S_i = sum of acc over the 4 threads of a quad      (reduce-scatter: each thread keeps its items)
//       a   = a + alpha_i * float(2 S_i - X)               (contract step 3, plane order)
//     c = (a [+ beta float(X)]) * 2^(E - 15);  y_split[m, row] += c in group order
//   (with PARTS warps per tile and split, each walks 1/PARTS of the steps; part 0 sums, the others
//    keep their c for it: BmmaLater.  With RT = 2 tiles per warp, the plane loop runs once per tile in
//    each step, on the step's shared activation fragments: 32 rows.)
//   last block of a row tile: y = sum of split partials, in split order; fp16

#include <cuda_fp16.h>

#include "fixed_point.cuh"
#include "dependent_launch.cuh"
#include "split_k.cuh"

namespace bcq {

using u32 = unsigned int;
constexpr int kXPlanes = 16;          // bit-planes of fix (|fix| < 2^15)
constexpr int kXMma = kXPlanes / 8;   // mma per (m, slot) and plane: 8 bit-planes (columns) each
constexpr int kStepWords = 8;         // one m16n8k256 mma covers 8 plane words
constexpr int kBmmaWarps = 4;
constexpr int kBmmaRows = 16;         // rows per warp (the mma's M)
constexpr int kBmmaMaxP = 4;          // planes kept in registers (one code path each); more: mma_gemm

// x [M, K] -> bfrag u32 [M, KS, 32 lanes, 2, 2], E int [M, G], X int [M, G];  KS = ceil(K / 256).
// Element (lane = 4 gid + t, r, e) of step s is bit-plane 8r + gid of fix over word 8s + 2t + e.
// One warp per (m, word): lane k owns input 32 w + k; a ballot per bit-plane makes its word.  The
// warp of a group's first word also writes the group's E and X (fixed_point.cuh).
__global__ void encode_bits(const __half* __restrict__ x, u32* __restrict__ bfrag, int* __restrict__ E_out,
                            int* __restrict__ X_out, int M, int K, int group_size) {
  let_dependents_launch();
  const int KW = K >> 5, KS = (KW + kStepWords - 1) / kStepWords, G = K / group_size;
  const int idx = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (idx >= M * KS * kStepWords) return;  // whole warps leave together
  const int m = idx / (KS * kStepWords), w = idx % (KS * kStepWords);
  const int s = w / kStepWords, t = (w % kStepWords) >> 1, e = w & 1;
  u32 word = 0u;  // lane j < 16: bit-plane j of this word
  if (w < KW) {
    const int f = warp_fix(x + (size_t)m * K, w, group_size, E_out + m * G, X_out + m * G, 1, lane);
#pragma unroll
    for (int j = 0; j < kXPlanes; ++j) {
      const u32 b = __ballot_sync(0xffffffffu, ((u32)f >> j) & 1u);
      if (lane == j) word = b;
    }
  }
  if (lane < kXPlanes)
    bfrag[((size_t)m * KS + s) * 32 * 2 * kXMma + ((lane & 7) * 4 + t) * 2 * kXMma + (lane >> 3) * 2 + e] = word;
}

__device__ __forceinline__ void bmma_16816_b1(int (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}

// Sum each of the quad's NI = 2 MS values over its 4 threads, leaving item it * 4 + t (NI >= 4) or
// item t % 2 (NI = 2) in out[it].  Item i is acc[i / 2][i % 2].  3 (NI = 4) shuffles for 4 sums.
template <int MS>
__device__ __forceinline__ void quad_reduce(const int (&acc)[MS][2], int t, int (&out)[MS >= 2 ? MS / 2 : 1]) {
  constexpr int NI = 2 * MS;
  const bool hi = t & 2, lo = t & 1;
  if constexpr (NI == 2) {
    int v0 = acc[0][0] + __shfl_xor_sync(0xffffffffu, acc[0][0], 2);
    int v1 = acc[0][1] + __shfl_xor_sync(0xffffffffu, acc[0][1], 2);
    const int send = lo ? v0 : v1, keep = lo ? v1 : v0;
    out[0] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
  } else {
    int w[NI / 2];
#pragma unroll
    for (int i = 0; i < NI; i += 4)
#pragma unroll
      for (int l = 0; l < 2; ++l) {
        const int i0 = i + l, i1 = i + l + 2;
        const int v0 = acc[i0 >> 1][i0 & 1], v1 = acc[i1 >> 1][i1 & 1];
        const int send = hi ? v0 : v1, keep = hi ? v1 : v0;
        w[(i / 4) * 2 + l] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
      }
#pragma unroll
    for (int j = 0; j < NI / 2; j += 2) {
      const int send = lo ? w[j] : w[j + 1], keep = lo ? w[j + 1] : w[j];
      out[j / 2] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
    }
  }
}

// What one step needs, loaded one step ahead: the plane words of the thread's two rows in each tile, the
// activation fragments, and per item (m, slot, row) its scales, X and E.
template <int S, int Mp, int P, int RT>
struct BmmaStep {
  static constexpr int MS = S * Mp;
  static constexpr int IT = MS >= 2 ? MS / 2 : 1;
  u32 wa[RT][P][2], wb[RT][P][2];
  uint2 bf[Mp][kXMma];
  __half al[RT][P][IT];
  int X[IT], E[IT];
};

template <int S, int Mp, int RT>
using BmmaShared = float[kBmmaWarps][kBmmaRows * RT][Mp][S];  // one step's group results, per warp

// PARTS warps share one 16-row tile's split, each walking a contiguous 1/PARTS of its steps, so a
// layer with fewer (tile, split) pairs than a GPU has warp slots still fills them, with shorter
// chains of steps.  The contract sums a split's groups in order from its first, and float addition
// does not reassociate: so parts 1.. keep every group result (not a partial sum) here, and part 0,
// having summed its own steps, adds them in step order after a block barrier.
template <int S, int Mp, int PARTS, int RT>
struct BmmaLater {
  static constexpr int kLen = (kExactSplitInputs / 256 + PARTS - 1) / PARTS;  // steps per part
  float v[PARTS > 1 ? kBmmaWarps / PARTS : 1][PARTS > 1 ? (PARTS - 1) * kLen : 1][kBmmaRows * RT][Mp][S];
};

// The kernel body for P = p planes (P is a template parameter so that no code is spent on the
// planes a call does not have).
template <int S, int Mp, int P, int PARTS, int RT>
__device__ __forceinline__ void bmma_gemv_body(
    BmmaShared<S, Mp, RT>& cbuf, BmmaLater<S, Mp, PARTS, RT>& later, const u32* __restrict__ bfrag, const int* __restrict__ E_in,
    const int* __restrict__ X_in, const u32* __restrict__ tiles, const __half* __restrict__ alpha,
    const __half* __restrict__ beta, __half* __restrict__ y, float* __restrict__ workspace,
    unsigned int* __restrict__ counters, int M, int N, int K, int p, int group_size) {
  constexpr int ROWS = kBmmaRows * RT;  // a warp's rows: RT 16-row tiles
  constexpr int MS = S * Mp, NI = 2 * MS, IT = BmmaStep<S, Mp, P, RT>::IT;
  constexpr int YP = (ROWS * Mp + 31) / 32;  // (row, m) running sums per lane
  static_assert(MS <= 8, "S * Mp <= 8");

  const int KW = K >> 5, KS = (KW + kStepWords - 1) / kStepWords, G = K / group_size, wpg = group_size >> 5;
  constexpr int split_steps = kExactSplitInputs / 256;  // g divides 256: a split is whole steps and groups
  static_assert(kExactSplitInputs % 256 == 0, "a split is whole 256-input steps");
  const int num_splits = (KS + split_steps - 1) / split_steps;
  // grid = (row tiles, splits): consecutive blocks take consecutive row tiles of one split, so the
  // blocks resident on a SM mix splits (with splits in x, 4 splits and 132 SMs put every block of
  // a SM on one split, and the SMs of a shorter last split idled).
  const int tile = blockIdx.x, split = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, t = lane & 3;
  constexpr int kTiles = kBmmaWarps / PARTS;  // 16-row tiles per block
  static_assert(kBmmaWarps % PARTS == 0, "PARTS divides the block's warps");
  const int sub = warp / PARTS, part = warp % PARTS;
  const int n0 = (tile * kTiles + sub) * ROWS;
  const int NT = (N + kBmmaRows - 1) / kBmmaRows;  // 16-row tiles; rows and steps past the ends are zero words
  // 32-bit offsets (gpu/kernels.py refuses tile and scale sets of 2^31 elements or more): fewer registers
  const u32 plane_stride = (u32)NT * KS * 64, alpha_stride = (u32)N * G;  // uint2 per plane; scales per plane

  int wgt[kXMma][2];  // w_j of this thread's columns 2t, 2t + 1 in each of a (m, slot)'s mma
#pragma unroll
  for (int r = 0; r < kXMma; ++r)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int j = 8 * r + 2 * t + e;
      wgt[r][e] = j < kXPlanes - 1 ? (1 << j) : -(1 << j);  // the top plane is the sign: two's complement
    }
  const int slot_e0 = S == 1 ? 0 : (2 * t) / wpg, slot_e1 = S == 1 ? 0 : (2 * t + 1) / wpg;

  // Items this thread finishes: item i = 2 pair + rowbit, pair = m S + slot (quad_reduce's order).
  int it_m[IT], it_slot[IT], it_rl[IT];
  bool it_live[RT][IT];
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const int i = NI >= 4 ? it * 4 + t : (t & 1);
    const int pair = i >> 1;
    it_m[it] = pair / S;
    it_slot[it] = pair % S;
    it_rl[it] = gid + 8 * (i & 1);
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
      it_live[rt][it] = (NI >= 4 || t < 2) && it_m[it] < M && n0 + kBmmaRows * rt + it_rl[it] < N;
  }

  // Per-thread bases, fixed for the whole call; a step adds its offset.  A warp past the last row
  // reads the last tile (a valid address); its outputs are never stored.
  const uint2* pt[RT];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
    pt[rt] = reinterpret_cast<const uint2*>(tiles) + (size_t)min(n0 / kBmmaRows + rt, NT - 1) * KS * 64 + lane;
  const uint2* pf = reinterpret_cast<const uint2*>(bfrag) + (size_t)lane * kXMma;
  u32 it_alpha[RT][IT];  // row * G + slot of each item
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int it = 0; it < IT; ++it)
      it_alpha[rt][it] = (u32)(it_live[rt][it] ? n0 + kBmmaRows * rt + it_rl[it] : 0) * G + it_slot[it];

  // a step's operands in two parts: the weights' (plane words, scales), then encode_bits' outputs
  auto load_weights = [&](BmmaStep<S, Mp, P, RT>& d, int s) {
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
      for (int i = 0; i < P; ++i) {  // the tile's two 256-byte halves: words 2t, then words 2t + 1
        uint2 v0 = make_uint2(0u, 0u), v1 = v0;
        if (i < p) {
          v0 = __ldg(pt[rt] + (i * plane_stride + (u32)s * 64));
          v1 = __ldg(pt[rt] + (i * plane_stride + (u32)s * 64 + 32));
        }
        d.wa[rt][i][0] = v0.x; d.wb[rt][i][0] = v0.y; d.wa[rt][i][1] = v1.x; d.wb[rt][i][1] = v1.y;
      }
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
      for (int it = 0; it < IT; ++it) {
        const bool live = it_live[rt][it] && s * S + it_slot[it] < G;
        const u32 a0 = it_alpha[rt][it] + (u32)s * S;
#pragma unroll
        for (int i = 0; i < P; ++i)
          d.al[rt][i][it] = (live && i < p) ? alpha[i * alpha_stride + a0] : __float2half_rn(0.0f);
      }
  };
  // (plain cached loads, not the read-only path: the encoder may still be writing these when the
  // kernel starts, which the read-only path's contract does not allow)
  auto load_activations = [&](BmmaStep<S, Mp, P, RT>& d, int s) {
#pragma unroll
    for (int m = 0; m < Mp; ++m)
#pragma unroll
      for (int r = 0; r < kXMma; ++r)
        d.bf[m][r] = m < M ? __ldca(pf + ((u32)(m * KS + s) * 32 * kXMma + r)) : make_uint2(0u, 0u);
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int grp = s * S + it_slot[it];
      const bool live = it_live[0][it] && grp < G;  // (E, X) are the batch row's: shared by the row tiles
      d.X[it] = live ? __ldca(X_in + it_m[it] * G + grp) : 0;
      d.E[it] = live ? __ldca(E_in + it_m[it] * G + grp) : 0;
    }
  };

  float ysum[YP];
#pragma unroll
  for (int q = 0; q < YP; ++q) ysum[q] = 0.0f;
  const int s_begin = split * split_steps, s_end = min(s_begin + split_steps, KS);
  constexpr int kLen = BmmaLater<S, Mp, PARTS, RT>::kLen;
  // This part's steps.  The small one-part variants see the whole split (their code is what it was
  // before parts existed: 70B gate+up at batch 1 measured 0.97x with run-time bounds); the larger
  // variants keep run-time bounds even with one part, with which ptxas moves fewer predicates through
  // registers in their run-time-p loop (5 P2R instead of 12) and batch 2 measured 1.01-1.16x faster
  // (benchmarks/results/h200/kernel_ab_bmma_parts.md).
  constexpr bool kWholeSplit = PARTS == 1 && S * Mp <= 2;
  const int ps_begin = kWholeSplit ? s_begin : min(s_begin + part * kLen, s_end);
  const int ps_end = kWholeSplit ? s_end : min(ps_begin + kLen, s_end);
  const bool any_step = kWholeSplit || ps_begin < ps_end;
  BmmaStep<S, Mp, P, RT> cur, nxt;  // loads run one step ahead
  if (any_step) load_weights(cur, ps_begin);  // in flight while encode_bits may still run
  wait_for_previous_kernel();                 // (dependent_launch.cuh)
  if (any_step) load_activations(cur, ps_begin);
  for (int s = ps_begin; s < ps_end; ++s) {
    if (s + 1 < ps_end) {
      load_weights(nxt, s + 1);
      load_activations(nxt, s + 1);
    }
    float a[RT][IT];
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int i = 0; i < P; ++i) {
      if (i >= p) break;
      int acc[MS][2];
#pragma unroll
      for (int m = 0; m < Mp; ++m)
#pragma unroll
        for (int sl = 0; sl < S; ++sl) {
          int (&ac)[2] = acc[m * S + sl];
          ac[0] = ac[1] = 0;
#pragma unroll
          for (int r = 0; r < kXMma; ++r) {
            const u32 b0 = slot_e0 == sl ? cur.bf[m][r].x : 0u, b1 = slot_e1 == sl ? cur.bf[m][r].y : 0u;
            int d[4];
            bmma_16816_b1(d, cur.wa[rt][i][0], cur.wb[rt][i][0], cur.wa[rt][i][1], cur.wb[rt][i][1], b0, b1);
            ac[0] += d[0] * wgt[r][0] + d[1] * wgt[r][1];
            ac[1] += d[2] * wgt[r][0] + d[3] * wgt[r][1];
          }
        }
      int S_i[IT];
      quad_reduce<MS>(acc, t, S_i);
#pragma unroll
      for (int it = 0; it < IT; ++it) {
        const int D = 2 * S_i[it] - cur.X[it];
        const float term = __fmul_rn(__half2float(cur.al[rt][i][it]), __int2float_rn(D));
        a[rt][it] = (i == 0) ? term : __fadd_rn(a[rt][it], term);
      }
    }
#pragma unroll
    for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      if (!it_live[rt][it] || s * S + it_slot[it] >= G) continue;
      float v = a[rt][it];
      // the offset is read here, not a step ahead (its register spilled at p = 4); its 128-byte
      // line holds the row's 64 groups, so after a split's first step it comes from L1
      if (beta != nullptr) {
        const float be = __half2float(beta[it_alpha[rt][it] + (size_t)s * S]);
        v = __fadd_rn(v, __fmul_rn(be, __int2float_rn(cur.X[it])));
      }
      // v 2^(E - 15): one multiply by a normal power of two is ldexp's rounding (subnormals included)
      v = __fmul_rn(v, pow2(cur.E[it] - kFixBits));
      if (PARTS > 1 && part > 0) later.v[sub][s - s_begin - kLen][kBmmaRows * rt + it_rl[it]][it_m[it]][it_slot[it]] = v;
      else cbuf[warp][kBmmaRows * rt + it_rl[it]][it_m[it]][it_slot[it]] = v;
    }
    if (PARTS > 1 && part > 0) {  // kept for part 0 (above)
      cur = nxt;
      continue;
    }
    __syncwarp();
    // Contract step 4: the groups of a split are summed in order, one lane per (row, batch row).
#pragma unroll
    for (int q = 0; q < YP; ++q) {
      const int pr = lane + 32 * q, rl = pr % ROWS, m = pr / ROWS;
      if (pr >= ROWS * Mp) break;
#pragma unroll
      for (int sl = 0; sl < S; ++sl) {
        const int grp = s * S + sl;
        if (grp >= G) break;
        const float v = cbuf[warp][rl][m][sl];
        ysum[q] = (grp == s_begin * S) ? v : __fadd_rn(ysum[q], v);
      }
    }
    __syncwarp();
    cur = nxt;
  }

  if constexpr (PARTS > 1) {  // part 0 goes on summing the later parts' groups, in order
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int q = 0; q < YP; ++q) {
        const int pr = lane + 32 * q, rl = pr % ROWS, m = pr / ROWS;
        if (pr >= ROWS * Mp) break;
        for (int s = s_begin + kLen; s < s_end; ++s)
#pragma unroll
          for (int sl = 0; sl < S; ++sl) {
            if (s * S + sl >= G) break;
            ysum[q] = __fadd_rn(ysum[q], later.v[sub][s - s_begin - kLen][rl][m][sl]);
          }
      }
    }
  }
  if (part == 0) {
#pragma unroll
    for (int q = 0; q < YP; ++q) {
      const int pr = lane + 32 * q, rl = pr % ROWS, m = pr / ROWS, row = n0 + rl;
      if (pr >= ROWS * Mp || m >= M || row >= N) continue;
      store_split_output(y, workspace, num_splits, split, M, N, m, row, ysum[q]);
    }
  }
  if (num_splits == 1) return;
  finish_split_k(workspace, counters, y, M, N, num_splits, tile * kTiles * ROWS, kTiles * ROWS, tile);
}

// S: groups per 256-input step (256 / g); Mp: batch rows rounded up to a power of two; S * Mp <= 8;
// p <= kBmmaMaxP (gpu/kernels.py checks all three before launch).  4 blocks of 4 warps per SM for
// the small variants: on the H200, 70B down at batch 1, 2-bit took 46.5 / 38.8 / 41.1 us with 3 / 4 / 5.
// PARTS: warps per 16-row tile and split (1 or 2; BmmaLater says why).  RT: 16-row tiles per warp (1 or
// 2): with 2 a warp walks two tiles' steps side by side, two independent chains that share the step's
// activation fragments, in half the warps, or with PARTS = 2 in as many warps as (tile, split) pairs
// (gpu/kernels.py: bmma_tiles_per_warp and bmma_parts say where).  Only at batch 1 (g = 128, 256) and
// p <= 2: at 3 and 4 planes it measured slower, and more words would not fit 4 blocks' registers.
// A block covers 64 RT / PARTS rows.
template <int S, int Mp, int PARTS, int RT>
__global__ void __launch_bounds__(kBmmaWarps * 32, S * Mp <= 2 ? 4 : 2)
bmma_gemv(const u32* __restrict__ bfrag, const int* __restrict__ E_in, const int* __restrict__ X_in,
          const u32* __restrict__ tiles,    // [p, ceil(N/16), ceil(K/256), 128]: bcq_core.layout.tile_planes
          const __half* __restrict__ alpha, // [p, N, G]
          const __half* __restrict__ beta,  // [N, G] or nullptr
          __half* __restrict__ y,           // [M, N]
          float* __restrict__ workspace,    // [num_splits, M, N]
          unsigned int* __restrict__ counters,
          int M, int N, int K, int p, int group_size) {
  static_assert(RT == 1 || (RT == 2 && Mp == 1 && S <= 2), "two tiles per warp: batch 1");
  __shared__ BmmaShared<S, Mp, RT> cbuf;
  __shared__ BmmaLater<S, Mp, PARTS, RT> later;
#define BCQ_BMMA_BODY(P) \
  bmma_gemv_body<S, Mp, P, PARTS, RT>(cbuf, later, bfrag, E_in, X_in, tiles, alpha, beta, y, workspace, counters, \
                                      M, N, K, p, group_size)
  if constexpr (S * Mp >= 4) {  // one path for every p (the body checks p at run time): the
    // per-p paths of these larger variants run out of registers
    BCQ_BMMA_BODY(kBmmaMaxP);
    return;
  } else if constexpr (RT == 2) {  // p <= 2 (the wrapper launches RT = 2 for no other)
    if (p == 1) BCQ_BMMA_BODY(1);
    else BCQ_BMMA_BODY(2);
    return;
  }
  switch (p) {
    case 1: BCQ_BMMA_BODY(1); break;
    case 2: BCQ_BMMA_BODY(2); break;
    case 3: BCQ_BMMA_BODY(3); break;
    default: BCQ_BMMA_BODY(4); break;
  }
#undef BCQ_BMMA_BODY
}

}  // namespace bcq
