// Integer tensor-core BCQ GEMM for batches:  y[M, N] = x[M, K] * W_hat[N, K]^T,  M <= 8 NT <= 16, p <= 4.
//
// Bit-exact with reference/exact_mma.py: the contract of mma_gemm.cu and bmma_gemv.cu, hence the
// same bytes.  The contract makes every group sum an exact integer, S_i = sum_k beta_ik fix_k with
// beta_ik in {0, 1} the stored bits and fix_k an int16 (|fix_k| < 2^15).  Here int8 tensor cores form it:
//
//   fix = 2^8 h + l,   l in [0, 255] (u8),  h in [-128, 127] (s8)      (encode_digits: fix's two bytes)
//   S_i = 2^8 (beta_i . h) + (beta_i . l)                              two mma.m16n8k32 per word (s8 x u8, s8 x s8)
//
// Each dot product is exact in int32 (|beta . l| <= 256 * 255), and so is S_i (|S_i| < 2^23).  A plane
// word becomes the mma's A fragment with one shift and one AND per register: the bits a thread owns
// in the fragment are chosen to be 4 bits of the word 8 apart, exactly the bytes of (word >> s) & 0x01010101.
// The 8 batch rows of a tile are the mma's 8 columns, so the cost does not grow with the batch up to 8;
// NT = 2 tiles (batch 9-16, one launch: gpu/kernels.py imma_tiles) share every A fragment.
//
// Fragments of mma.m16n8k32 (thread: gid = lane / 4, tig = lane % 4), for plane word w of a row:
//   A reg 0 / 2 (rows gid, gid + 8 in regs 0-1, 2-3): byte j = bit tig + 8j / bit tig + 4 + 8j of w
//   B reg 0 / 1 (column gid = batch row): byte j = digit of input tig + 8j / tig + 4 + 8j of the word
// so fragment position k of A and of B is the same input, whatever order the tensor core adds in.
//
// Data movement.  A block is 4 warps of 16 rows; all of them walk the same split in steps of 4 words
// (128 inputs).  The planes come in the tile layout of bmma_gemv.cu (bcq_core/layout.py tile_planes:
// 16 rows x 8 words per 512-byte tile), so both tensor-core kernels read one copy of the planes.  A
// step is half a tile: for each parity e of the step's words and each gid, 16 contiguous bytes hold
// words e and e + 2 of rows gid and gid + 8, exactly what thread (gid, tig) multiplies.  A step's
// plane words (16 bytes per row pair, parity and plane) and its B fragments (512 bytes
// per word, the same for every row) go global -> shared memory by cp.async, STAGES - 1 steps ahead
// of the step being multiplied: the loads in flight no longer depend on how many warps fit or on
// registers, and the block fetches the activations once instead of once per warp.  At g = 128 (MODE
// kGroupIsStep, the common case) a step is exactly one group: its X and E come through the ring too,
// the step's first mma starts the sums (no zeroing), and no word needs a bounds check.
//
// Loop nest of one warp (16 rows, one split of the contract's groups):
//   for step in split:                    (steps s+1 .. s+STAGES-1 in flight to shared memory)
//     for word in step, plane i < P, tile t < NT:  acc[i][digit][t] += A(word) * B(word, digit, t)  (2 mma)
//       at the last word of a group:  S_i = 2^8 acc_h + acc_l                       (exact)
//                                     a = a + alpha_i * float(2 S_i - X)            (plane order)
//                                     y_split += (a [+ beta float(X)]) * 2^(E - 15) (group order)
//   last block of a row tile: y = sum of split partials, in split order; fp16

#include <cuda_fp16.h>

#include "fixed_point.cuh"
#include "split_k.cuh"
#include "tile_layout.cuh"

namespace bcq {

using u32 = unsigned int;
constexpr int kImmaWarps = 4;
constexpr int kImmaRows = 16;         // rows per warp (the mma's M)
constexpr int kStepWordsI8 = 4;       // words per pipeline step
static_assert(kImmaRows == kTileRows && 2 * kStepWordsI8 == kTileWords, "a warp's step is half of one tile");
constexpr int kDigits = 2;            // bytes of fix: l (u8), h (s8)
constexpr int kWordFrag = kDigits * 32;  // B fragments of one word: [2 digits][32 lanes] of uint2 (regs 0, 1)
constexpr u32 kByteOnes = 0x01010101u;
constexpr int kImmaSmemBytes = 46 * 1024;  // the ring stays under the 48 KB of static shared memory

// x [M, K] (M <= 16) -> digits uint2 [K/32 words, 2 digits, NT tiles of 8 batch rows, 32 lanes],
// E int [G, 8 NT], X int [G, 8 NT]; NT = 1 for M <= 8, else 2.  Lane (4 n + tig)'s uint2 of digit d in
// tile t: .x byte j = byte d of fix[8 t + n, 32 word + tig + 8 j] (two's complement int16), .y byte j =
// of input tig + 4 + 8 j; zero for batch rows >= M.  E and X hold a group's 8 NT batch rows side by
// side (zero for rows >= M), so that a thread's two batch rows are one 8-byte load and a group's one
// 32-byte copy per tile.  One warp per (batch row < 8 NT, word): lane k owns input 32 word + k
// (fixed_point.cuh), and gathers the bytes of its register by four shuffles.
__global__ void encode_digits(const __half* __restrict__ x, u32* __restrict__ digits, int* __restrict__ E_out,
                              int* __restrict__ X_out, int M, int K, int group_size) {
  const int KW = K >> 5, wpg = group_size >> 5, NT = M > 8 ? 2 : 1, R = 8 * NT;
  const int idx = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (idx >= R * KW) return;  // whole warps leave together
  const int m = idx / KW, w = idx % KW, t = m >> 3, n = m & 7;
  int f = 0;
  if (m < M) {
    f = warp_fix(x + (size_t)m * K, w, group_size, E_out + m, X_out + m, R, lane);
  } else if (lane == 0 && w % wpg == 0) {
    E_out[(w / wpg) * R + m] = 0;
    X_out[(w / wpg) * R + m] = 0;
  }
  // lane < 16 builds register (tig = lane % 4, r = lane / 4 = 2 d + half)
  const int tig = lane & 3, r = (lane >> 2) & 3, d = r >> 1, half = r & 1;
  u32 reg = 0u;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int v = __shfl_sync(0xffffffffu, f, tig + 4 * half + 8 * j);
    reg |= (((u32)v >> (8 * d)) & 255u) << (8 * j);  // byte d of the int16: l unsigned, h two's complement
  }
  if (lane < 16) digits[((((size_t)w * kDigits + d) * NT + t) * 32 + n * 4 + tig) * 2 + half] = reg;
}

// c = (FRESH ? 0 : c) + A B over 32 k; A: the plane bits as s8 0 / 1; B: digit D of fix, u8 (D = 0: the
// low byte) or s8 (D = 1).  FRESH starts a group's sum without zeroing the accumulators first.
template <int D, bool FRESH = false>
__device__ __forceinline__ void imma_16832(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#define BCQ_IMMA(TYPES, OUT, CIN)                                                                       \
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8." TYPES ".s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " CIN \
      ";\n"                                                                                             \
      : OUT(c[0]), OUT(c[1]), OUT(c[2]), OUT(c[3])                                                      \
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0))
  if constexpr (D == 0 && FRESH) BCQ_IMMA("u8", "=r", "{%10,%10,%10,%10}");
  else if constexpr (D == 0) BCQ_IMMA("u8", "+r", "{%0,%1,%2,%3}");
  else if constexpr (FRESH) BCQ_IMMA("s8", "=r", "{%10,%10,%10,%10}");
  else BCQ_IMMA("s8", "+r", "{%0,%1,%2,%3}");
#undef BCQ_IMMA
}

// cp.async global -> shared; src_bytes = 0 fills zeros without reading (rows past N, words past K).
// smem: a shared-window address (smem_addr), computed once per thread and offset per ring slot.
__device__ __forceinline__ void cp_async16(unsigned smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async4(unsigned smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ unsigned smem_addr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// How the contract's groups fall on the 4-word steps: a template parameter, chosen by gpu/kernels.py.
constexpr int kGroupsInStep = 0;     // g < 128: groups end anywhere, several in one step
constexpr int kGroupEndsInStep = 1;  // g > 128: at most one group ends in a step
constexpr int kGroupIsStep = 2;      // g = 128: a step is exactly one group

// One ring slot: a step's plane words ([plane][warp, parity e, gid] -> words e, e + 2 of rows gid, gid + 8
// of the warp, interleaved as in the tile: {row gid word e, row gid + 8 word e, row gid word e + 2, row
// gid + 8 word e + 2}), B fragments ([word][digit, tile, lane]), and (kGroupIsStep) the X and E of the
// step's group ([batch row pair] -> rows 2 j, 2 j + 1 of the NT tiles, one 8-byte load per thread and tile).
template <int P, int NT>
struct ImmaSlot {
  uint4 planes[P][kImmaWarps * kImmaRows];
  uint2 frag[kStepWordsI8][kWordFrag * NT];
  int2 X[4 * NT], E[4 * NT];
};
// Ring slots: as many as fit in kImmaSmemBytes, at most 8; but 7 at p = 3 with one tile on splits longer
// than 4096 inputs where the scales are read through L1 (g <= 128).  There 4 blocks' rings of 8 (166 KB)
// made the SM configure 201 KB of shared memory and left L1 too little for the scale loads (hit rate
// 14 %, 34 % with 7 slots); on splits of 16 steps or fewer the eighth slot measured worth more than that
// L1, and at g > 128 (scales prefetched into L2 a step ahead) 7 slots measured no faster (docs/kernels.md, H200).
template <int P, int MODE, int NT>
constexpr int kImmaMaxStages = (P == 3 && NT == 1 && MODE != kGroupEndsInStep && kExactSplitInputs > 4096) ? 7 : 8;
template <int P, int MODE, int NT>
constexpr int kImmaStages = kImmaSmemBytes / (int)sizeof(ImmaSlot<P, NT>) < kImmaMaxStages<P, MODE, NT>
                                ? kImmaSmemBytes / (int)sizeof(ImmaSlot<P, NT>) : kImmaMaxStages<P, MODE, NT>;

// A group's epilogue operands for this thread: scales (rows a, b) of NAL planes, offsets, and X, E of
// the thread's two batch rows in each of the NT tiles.  The scales' bits are kept one per 32-bit
// register until the epilogue: pairing two halves in one register (or zeroing half of one) would wait
// for the loads there.
template <int NAL, int NT>
struct GroupOperands {
  unsigned al[NAL][2], be[2];
  int X[NT][2], E[NT][2];
};
__device__ __forceinline__ unsigned half_bits(const __half* p) { return __half_as_ushort(*p); }
__device__ __forceinline__ float half_value(unsigned bits) {
  return __half2float(__ushort_as_half((unsigned short)bits));
}

// Word e (0..3) of the step for the thread's row a (B = false) or b (B = true), from its two 16-byte
// pieces: v0 holds the even words, v1 the odd ones (ImmaSlot).
template <bool B>
__device__ __forceinline__ u32 word_of(const uint4& v0, const uint4& v1, int e) {
  const uint4& v = (e & 1) ? v1 : v0;
  return e < 2 ? (B ? v.y : v.x) : (B ? v.w : v.z);
}

// Whether a word's mma starts its group's sums (the first word of a kGroupIsStep step) or adds to them.
template <bool F>
struct WordMma {
  static constexpr bool kFresh = F;
};
using Fresh = WordMma<true>;
using Accumulate = WordMma<false>;

template <int P, int MODE, int NT>
__device__ __forceinline__ void imma_gemm_body(
    const u32* __restrict__ digits, const int* __restrict__ E_in, const int* __restrict__ X_in,
    const u32* __restrict__ tiles, const __half* __restrict__ alpha, const __half* __restrict__ beta,
    __half* __restrict__ y, float* __restrict__ workspace, unsigned int* __restrict__ counters,
    int M, int N, int K, int group_size) {
  constexpr int kRows = kImmaWarps * kImmaRows, kThreads = kImmaWarps * 32, kStages = kImmaStages<P, MODE, NT>;
  constexpr bool kOneEnd = MODE != kGroupsInStep;  // a group's operands can be loaded a step ahead
  constexpr int NAL = kOneEnd ? P : 1;
  using Slot = ImmaSlot<P, NT>;
  using Ops = GroupOperands<NAL, NT>;
  static_assert(kStages >= 2, "the ring needs two slots");
  __shared__ Slot ring[kStages];

  const int KW = K >> 5, G = K / group_size, wpg = group_size >> 5;
  const int groups_per_split = kExactSplitInputs / group_size;
  const int num_splits = (G + groups_per_split - 1) / groups_per_split;
  const int tile = blockIdx.x, split = blockIdx.y;  // grid (row tiles, splits): bmma_gemv.cu says why
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int row0 = tile * kRows;
  const int ra = warp * kImmaRows + gid, rb = ra + 8;  // the thread's rows in the block
  const int row_a = row0 + ra, row_b = row0 + rb;
  const int g_begin = split * groups_per_split, g_end = min(g_begin + groups_per_split, G);
  const int kw_begin = g_begin * wpg, kw_end = g_end * wpg;
  const int n_steps = (kw_end - kw_begin + kStepWordsI8 - 1) / kStepWordsI8;
  // A step that starts on a 4-word boundary is half a tile: one 16-byte copy per (plane, warp, parity,
  // gid); always so when a step is a group.  Its words past the split are copied (the tiles are padded
  // to whole tiles, so they are in bounds) and never multiplied.
  const bool aligned = (kw_begin % kStepWordsI8) == 0;
  const int col0 = 2 * tig, col1 = 2 * tig + 1;  // the C fragment's batch rows of this thread (tile 0)

  // What this thread copies each step, fixed for the whole loop: NC (plane, warp, parity, gid) pieces
  // of 16 bytes, ND 16-byte pieces of the step's B fragments, and (kGroupIsStep, threads 0 to 4 NT - 1)
  // 16 bytes of the group's X or E.  Tiles past the last (row tiles of a block past N) read the first
  // with zero bytes (cp.async fills zeros); rows past N within the last tile are the layout's zero
  // padding.  Their outputs are never stored.
  constexpr int NC = (P * kRows + kThreads - 1) / kThreads;
  constexpr int kFragChunks = kWordFrag * 8 / 16;  // 16-byte pieces of one word's fragments
  constexpr int kWordChunks = kFragChunks * NT;      // of one word's fragments for every tile
  constexpr int ND = (kStepWordsI8 * kWordChunks + kThreads - 1) / kThreads;
  const int row_tiles = (N + kTileRows - 1) / kTileRows, tile_steps = (KW + kTileWords - 1) / kTileWords;
  const u32* plane_src[NC];  // word 64 e + 8 gid of the piece's tile at step 0 of the tiles
  unsigned plane_dst[NC];    // in slot 0; slot t is t * sizeof(Slot) further
  int plane_bytes[NC];
  bool plane_live[NC];
#pragma unroll
  for (int j = 0; j < NC; ++j) {
    const int c = threadIdx.x + j * kThreads, i = c / kRows, r = c % kRows;  // r = 16 warp + 8 e + gid
    const int nt = tile * kImmaWarps + r / kImmaRows, e = (r >> 3) & 1, gid = r & 7;
    plane_live[j] = c < P * kRows;
    const bool in = plane_live[j] && nt < row_tiles;
    plane_src[j] = tiles + (in ? ((size_t)i * row_tiles + nt) * tile_steps * kTileSize + 64 * e + 8 * gid : 0);
    plane_dst[j] = smem_addr(&ring[0].planes[0][0] + (plane_live[j] ? c : 0));
    plane_bytes[j] = in ? 16 : 0;
  }
  int frag_src[ND];  // uint4 offset within a step's fragments (4 words of kFragChunks)
  unsigned frag_dst[ND];
  bool frag_live[ND];
#pragma unroll
  for (int j = 0; j < ND; ++j) {
    const int c = threadIdx.x + j * kThreads;
    frag_live[j] = c < kStepWordsI8 * kWordChunks;
    frag_src[j] = c;
    frag_dst[j] = smem_addr(reinterpret_cast<uint4*>(ring[0].frag[0]) + (frag_live[j] ? c : 0));
  }
  const int xe_part = threadIdx.x % (2 * NT);  // 16 bytes = 4 batch rows
  const bool xe_is_x = (int)threadIdx.x < 2 * NT;
  const int* const xe_src = (xe_is_x ? X_in : E_in) + g_begin * 8 * NT + 4 * xe_part;
  const unsigned xe_dst = smem_addr(xe_is_x ? &ring[0].X[2 * xe_part] : &ring[0].E[2 * xe_part]);

  // Step s -> ring slot s % kStages, by the whole block; always one commit group per call, so that
  // wait_group counts steps.
  auto issue = [&](int s) {
    if (s < n_steps) {
      const unsigned slot = (unsigned)(s % kStages) * (unsigned)sizeof(Slot);
      const int kw0 = kw_begin + s * kStepWordsI8;
      if (MODE == kGroupIsStep || aligned) {  // words kw0 .. kw0 + 3 are half of tile kw0 / 8
        const int off = (kw0 >> 3) * kTileSize + (kw0 & 4);
#pragma unroll
        for (int j = 0; j < NC; ++j)
          if (plane_live[j]) cp_async16(plane_dst[j] + slot, plane_src[j] + off, plane_bytes[j]);
      } else {  // a split that does not start on a 4-word boundary: word by word, zero past the split
#pragma unroll
        for (int j = 0; j < NC; ++j) {
          if (!plane_live[j]) continue;
          const int e = ((threadIdx.x + j * kThreads) >> 3) & 1;
#pragma unroll
          for (int k = 0; k < 4; ++k) {  // piece element k: row gid + 8 (k & 1), step word e + 2 (k >> 1)
            const int w = kw0 + e + 2 * (k >> 1);
            const bool in = plane_bytes[j] != 0 && w < kw_end;
            // tile_word(8 (k & 1) + gid, w) - tile_word(gid, e), spelled out: through tile_word ptxas schedules
            // every variant differently (not measured), so the kernel keeps the code it was measured with
            const int off = (w >> 3) * kTileSize + 64 * ((w & 1) - e) + 2 * ((w >> 1) & 3) + (k & 1);
            cp_async4(plane_dst[j] + slot + 4 * k, in ? plane_src[j] + off : tiles, in ? 4 : 0);
          }
        }
      }
      const uint4* src = reinterpret_cast<const uint4*>(digits + (size_t)kw0 * kWordFrag * 2 * NT);
#pragma unroll
      for (int j = 0; j < ND; ++j)  // words past the split are never multiplied
        if (frag_live[j] && (MODE == kGroupIsStep || kw0 + frag_src[j] / kWordChunks < kw_end))
          cp_async16(frag_dst[j] + slot, src + frag_src[j], 16);
      if constexpr (MODE == kGroupIsStep)
        if ((int)threadIdx.x < 4 * NT) cp_async16(xe_dst + slot, xe_src + s * 8 * NT, 16);
    }
    cp_async_commit();
  };

  // Epilogue operands, group by group in order (both paths ask for groups g_begin, g_begin + 1, ...),
  // as 32-bit element offsets from the kernel's pointer arguments (gpu/kernels.py checks that the
  // scales have fewer than 2^31 elements).  Rows past N read row N - 1: valid addresses, and outputs
  // that are never stored; batch rows past M have X = E = 0 (encode_digits).
  const int a_off = min(row_a, N - 1) * G, b_off = min(row_b, N - 1) * G, al_stride = N * G;
  auto operands = [&](int grp, Ops& o) {
#pragma unroll
    for (int i = 0; i < (kOneEnd ? P : 0); ++i) {
      o.al[i][0] = half_bits(alpha + i * al_stride + a_off + grp);
      o.al[i][1] = half_bits(alpha + i * al_stride + b_off + grp);
    }
    o.be[0] = beta != nullptr ? half_bits(beta + a_off + grp) : 0u;
    o.be[1] = beta != nullptr ? half_bits(beta + b_off + grp) : 0u;
    if constexpr (MODE != kGroupIsStep) {  // there X and E come through the ring
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int2 X = __ldg(reinterpret_cast<const int2*>(X_in + (grp * NT + t) * 8) + tig);
        const int2 E = __ldg(reinterpret_cast<const int2*>(E_in + (grp * NT + t) * 8) + tig);
        o.X[t][0] = X.x;
        o.X[t][1] = X.y;
        o.E[t][0] = E.x;
        o.E[t][1] = E.y;
      }
    }
  };
  // scales 16 groups on go to L2 now (a 32-byte sector holds 16), so that the operand loads a step
  // ahead wait for L2, not HBM
  auto prefetch_scales = [&](int s, int grp) {
    if (tig == 0 && (s & 7) == 0) {
      const int gpre = min(grp + 16, g_end - 1);
#pragma unroll
      for (int i = 0; i < P; ++i) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(alpha + i * al_stride + a_off + gpre));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(alpha + i * al_stride + b_off + gpre));
      }
    }
  };

  int acc[P][kDigits][NT][4];
  float ysum[NT][4] = {};
  // Contract steps 2-4 of group grp for the thread's 4 NT outputs (rows a, b x 2 batch rows per tile),
  // from acc.
  auto finish_group = [&](int grp, const Ops& op) {
    float a[NT][4];
#pragma unroll
    for (int i = 0; i < P; ++i) {
      float al_a, al_b;
      if constexpr (kOneEnd) {
        al_a = half_value(op.al[i][0]);
        al_b = half_value(op.al[i][1]);
      } else {  // one plane's scales at a time keeps the registers of the many-groups-per-step path low
        al_a = __half2float(alpha[i * al_stride + a_off + grp]);
        al_b = __half2float(alpha[i * al_stride + b_off + grp]);
      }
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int S = acc[i][1][t][c] * 256 + acc[i][0][t][c];
          const int D = 2 * S - op.X[t][c & 1];
          const float term = __fmul_rn(c < 2 ? al_a : al_b, __int2float_rn(D));
          a[t][c] = (i == 0) ? term : __fadd_rn(a[t][c], term);
        }
    }
    const float be_a = half_value(op.be[0]), be_b = half_value(op.be[1]);
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float v = a[t][c];
        const int X = op.X[t][c & 1], E = op.E[t][c & 1];
        if (beta != nullptr) v = __fadd_rn(v, __fmul_rn(c < 2 ? be_a : be_b, __int2float_rn(X)));
        // v 2^(E - 15): one multiply by a normal power of two is ldexp's rounding (subnormals included)
        v = __fmul_rn(v, pow2(E - kFixBits));
        ysum[t][c] = (grp == g_begin) ? v : __fadd_rn(ysum[t][c], v);
      }
  };
  // acc[i] (+)= A(word e of the step, plane i) B(word e, digit, tile), for both digits and every tile:
  // the A fragment, unpacked once, serves the NT tiles of 8 batch rows
  auto multiply_word = [&](const Slot& sl, const uint4 (&w0)[P], const uint4 (&w1)[P], int e, auto fresh) {
    uint2 b[kDigits][NT];
#pragma unroll
    for (int d = 0; d < kDigits; ++d)
#pragma unroll
      for (int t = 0; t < NT; ++t) b[d][t] = sl.frag[e][(d * NT + t) * 32 + lane];
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const u32 ta = word_of<false>(w0[i], w1[i], e) >> tig, tb = word_of<true>(w0[i], w1[i], e) >> tig;
      const u32 a0 = ta & kByteOnes, a1 = tb & kByteOnes, a2 = (ta >> 4) & kByteOnes, a3 = (tb >> 4) & kByteOnes;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        imma_16832<0, decltype(fresh)::kFresh>(acc[i][0][t], a0, a1, a2, a3, b[0][t].x, b[0][t].y);
        imma_16832<1, decltype(fresh)::kFresh>(acc[i][1][t], a0, a1, a2, a3, b[1][t].x, b[1][t].y);
      }
    }
  };

  if constexpr (MODE == kGroupIsStep) {
    // Step s is group g_begin + s.  Its first word starts the sums; its scales load a step ahead into
    // the other of two operand sets.  For p <= 3 the steps go in pairs, so that no copy between the sets
    // waits for those loads; at p = 4 one step at a time with a copy measured faster (H200, batch 8:
    // 70B gate+up 226 against 263 us; pairs win at 2 bits, 118 against 163 us, and at 3, 191 against
    // 206 us; docs/kernels.md).
    constexpr bool kPairs = P <= 3;
    Ops ops[2];
    auto step = [&](int s, Ops& cur, Ops& nxt) {
      cp_async_wait<kStages - 2>();  // step s has landed (this thread's copies) ...
      __syncthreads();               // ... everyone's, and slot (s - 1) % kStages is free again
      issue(s + kStages - 1);
      const int grp = g_begin + s;
      if (s + 1 < n_steps) operands(grp + 1, nxt);
      prefetch_scales(s, grp);
      const Slot& sl = ring[s % kStages];
      uint4 w0[P], w1[P];  // the step's even and odd words of rows a and b
#pragma unroll
      for (int i = 0; i < P; ++i) {
        w0[i] = sl.planes[i][ra];
        w1[i] = sl.planes[i][ra + 8];
      }
      multiply_word(sl, w0, w1, 0, Fresh{});
#pragma unroll
      for (int e = 1; e < kStepWordsI8; ++e) multiply_word(sl, w0, w1, e, Accumulate{});
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int2 X = sl.X[4 * t + tig], E = sl.E[4 * t + tig];
        cur.X[t][0] = X.x;
        cur.X[t][1] = X.y;
        cur.E[t][0] = E.x;
        cur.E[t][1] = E.y;
      }
      finish_group(grp, cur);
    };
    operands(g_begin, ops[0]);
#pragma unroll 1
    for (int s = 0; s < kStages - 1; ++s) issue(s);
#pragma unroll 1
    for (int s = 0; s < n_steps; s += kPairs ? 2 : 1) {
      step(s, ops[0], ops[1]);
      if constexpr (kPairs) {
        if (s + 1 < n_steps) step(s + 1, ops[1], ops[0]);
      } else {
        ops[0] = ops[1];
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < P; ++i)
#pragma unroll
      for (int d = 0; d < kDigits; ++d)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][d][t][e] = 0;
    int grp = g_begin;                 // the current group
    [[maybe_unused]] int left = wpg;   // its words still to come (!kOneEnd)

    // kOneEnd (g > 128: at most one group ends in a step): the word of the step where a group ends
    // (kStepWordsI8 if none), kept step by step from the offset of the step's first word in its group,
    // and that group's operands, loaded a step ahead.
    Ops ops_cur, ops_nxt;
    int end_cur = kStepWordsI8, end_nxt = kStepWordsI8, offset = 0, g_ops = g_begin;
    if constexpr (kOneEnd) {
      end_cur = wpg - 1 < kStepWordsI8 ? wpg - 1 : kStepWordsI8;
      if (end_cur < kStepWordsI8) operands(g_ops++, ops_cur);
    }
#pragma unroll 1
    for (int s = 0; s < kStages - 1; ++s) issue(s);

#pragma unroll 1
    for (int s = 0; s < n_steps; ++s) {
      cp_async_wait<kStages - 2>();  // step s has landed (this thread's copies) ...
      __syncthreads();               // ... everyone's, and slot (s - 1) % kStages is free again
      issue(s + kStages - 1);
      if constexpr (kOneEnd) {
        offset += kStepWordsI8;
        if (offset >= wpg) offset -= wpg;  // of step s + 1
        end_nxt = wpg - 1 - offset < kStepWordsI8 ? wpg - 1 - offset : kStepWordsI8;
        if (end_nxt < kStepWordsI8 && s + 1 < n_steps) operands(g_ops++, ops_nxt);
      }
      const int kw0 = kw_begin + s * kStepWordsI8;
      prefetch_scales(s, grp);
      const Slot& sl = ring[s % kStages];
      uint4 w0[P], w1[P];  // the step's even and odd words of rows a and b
#pragma unroll
      for (int i = 0; i < P; ++i) {
        w0[i] = sl.planes[i][ra];
        w1[i] = sl.planes[i][ra + 8];
      }
#pragma unroll
      for (int e = 0; e < kStepWordsI8; ++e) {
        if (kw0 + e >= kw_end) break;
        multiply_word(sl, w0, w1, e, Accumulate{});
        if constexpr (kOneEnd) {
          if (e != end_cur) continue;
        } else {
          if (--left > 0) continue;
          left = wpg;
        }
        // The group is complete.
        Ops op;
        if constexpr (kOneEnd) op = ops_cur;
        else operands(grp, op);
        finish_group(grp, op);
#pragma unroll
        for (int i = 0; i < P; ++i)
#pragma unroll
          for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][0][t][c] = acc[i][1][t][c] = 0;
        ++grp;
      }
      if constexpr (kOneEnd) {
        ops_cur = ops_nxt;
        end_cur = end_nxt;
      }
    }
  }
  cp_async_wait<0>();  // no copy outlives the block (the trailing commit groups are empty)

  // C layout of tile t: c = 0, 1 -> row_a, batch rows 8 t + 2 tig, 8 t + 2 tig + 1; c = 2, 3 -> row_b.
#pragma unroll
  for (int t = 0; t < NT; ++t)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int col = 8 * t + ((c & 1) ? col1 : col0), row = c < 2 ? row_a : row_b;
      if (col >= M || row >= N) continue;
      store_split_output(y, workspace, num_splits, split, M, N, col, row, ysum[t][c]);
    }
  if (num_splits == 1) return;
  finish_split_k(workspace, counters, y, M, N, num_splits, row0, kRows, tile);
}

// P = p planes (1..4, checked by gpu/kernels.py before launch): a template parameter so that the
// registers hold exactly the planes the call reads.  MODE: how groups fall on steps (above); NT: tiles
// of 8 batch rows.  Blocks of 4 warps (64 rows): 8 warps fetch the activations half as often but
// measured slower on every benchmark shape (H200).
// At least 4 blocks per SM for p <= 2, 3 above (the register budget; more would spill); at p = 3 with
// one tile the registers stay <= 128, so 4 fit there too.  At p = 4 with two tiles and g > 128 the 168
// registers of 3 blocks spill 48 bytes; it still measured 1.43-1.57x two launches of one tile.
template <int P, int MODE, int NT>
__global__ void __launch_bounds__(kImmaWarps * 32, P <= 2 ? 4 : 3)
imma_gemm(const u32* __restrict__ digits, const int* __restrict__ E_in, const int* __restrict__ X_in,
          const u32* __restrict__ tiles,    // [p, ceil(N/16), ceil(K/256), 128]: bcq_core/layout.py tile_planes
          const __half* __restrict__ alpha, // [p, N, G]
          const __half* __restrict__ beta,  // [N, G] or nullptr
          __half* __restrict__ y,           // [M, N]
          float* __restrict__ workspace,    // [num_splits, M, N]
          unsigned int* __restrict__ counters,
          int M, int N, int K, int group_size) {
  imma_gemm_body<P, MODE, NT>(digits, E_in, X_in, tiles, alpha, beta, y, workspace, counters, M, N, K, group_size);
}

}  // namespace bcq
