// Integer tensor-core BCQ GEMM for batches:  y[M, N] = x[M, K] * W_hat[N, K]^T,  M <= 8 per launch, p <= 4.
//
// Bit-exact with reference/exact_mma.py: the contract of mma_gemm.cu and bmma_gemv.cu, hence the
// same bytes.  The contract makes every group sum an exact integer, S_i = sum_k beta_ik fix_k with
// beta_ik in {0, 1} the stored bits and |fix_k| < 2^21.  Here int8 tensor cores form it:
//
//   fix = 2^14 h + 2^7 m + l,   l, m in [0, 127],  h in [-128, 127]      (encode_digits, per input)
//   S_i = 2^14 (beta_i . h) + 2^7 (beta_i . m) + (beta_i . l)            three mma.m16n8k32.s8 per word
//
// Each dot product is exact in int32 (|beta . h| <= 256 * 128), and so is S_i (|S_i| < 2^29).  A plane
// word becomes the mma's A fragment with one shift and one AND per register: the bits a thread owns
// in the fragment are chosen to be 4 bits of the word 8 apart, exactly the bytes of (word >> s) & 0x01010101.
// Against mma_gemm.cu (fp16 digits, one rotate + AND per two weights, 4 mma per word) that is half
// the unpacking and 3/4 of the mma; against bmma_gemv.cu the cost does not grow with the batch (the
// 8 batch rows are the mma's 8 columns).
//
// Fragments of mma.m16n8k32 (thread: gid = lane / 4, tig = lane % 4), for plane word w of a row:
//   A reg 0 / 2 (rows gid, gid + 8 in regs 0-1, 2-3): byte j = bit tig + 8j / bit tig + 4 + 8j of w
//   B reg 0 / 1 (column gid = batch row): byte j = digit of input tig + 8j / tig + 4 + 8j of the word
// so fragment position k of A and of B is the same input, whatever order the tensor core adds in.
//
// Loop nest of one warp (16 rows, one split of the contract's groups; steps of 4 words = 128 inputs):
//   for step in split:                                      (the next step's loads already in flight)
//     for word in step, plane i < P:  acc[i][digit] += A(word) * B(word, digit)     (3 mma)
//       at the last word of a group:  S_i = 2^14 acc_h + 2^7 acc_m + acc_l          (exact)
//                                     a = a + alpha_i * float(2 S_i - X)            (plane order)
//                                     y_split += (a [+ beta float(X)]) * 2^(E - 21) (group order)
//   last block of a row tile: y = sum of split partials, in split order; fp16

#include <cuda_fp16.h>

#include "fixed_point.cuh"
#include "split_k.cuh"

namespace bcq {

using u32 = unsigned int;
constexpr int kImmaWarps = 4;
constexpr int kImmaRows = 16;         // rows per warp (the mma's M)
constexpr int kStepWordsI8 = 4;       // words per pipeline step
constexpr int kDigitRegs = 6;         // per word and lane: 3 digits x B regs 0, 1
constexpr u32 kByteOnes = 0x01010101u;

// x [M, K] (M <= 8) -> digits u32 [KS, 32 lanes, 4 words, 6], E int [M, G], X int [M, G];  KS = ceil(K / 128).
// Register (lane = 4 n + tig, word, 2 d + half) byte j = digit d of fix[n, 32 word + tig + 4 half + 8 j];
// zero for n >= M and for words past K.  One warp per (n < 8, word): lane k owns input 32 word + k, and
// gathers the bytes of its register by four shuffles.  x 2^(21 - E) is exact (a power of two, no
// overflow), so it equals the reference's ldexp.
__global__ void encode_digits(const __half* __restrict__ x, u32* __restrict__ digits, int* __restrict__ E_out,
                              int* __restrict__ X_out, int M, int K, int group_size) {
  const int KW = K >> 5, KS = (KW + kStepWordsI8 - 1) / kStepWordsI8, G = K / group_size;
  const int idx = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (idx >= 8 * KS * kStepWordsI8) return;  // whole warps leave together
  const int n = idx / (KS * kStepWordsI8), w = idx % (KS * kStepWordsI8);
  int f = 0;
  if (n < M && w < KW) f = warp_fix(x + (size_t)n * K, w, group_size, E_out + n * G, X_out + n * G, lane);
  // lane < 24 builds register (tig = lane % 4, r = lane / 4 = 2 d + half)
  const int tig = lane & 3, r = (lane >> 2) % kDigitRegs, d = r >> 1, half = r & 1;
  u32 reg = 0u;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int v = __shfl_sync(0xffffffffu, f, tig + 4 * half + 8 * j);
    const u32 byte = d == 0 ? (v & 127) : d == 1 ? ((v >> 7) & 127) : ((v >> 14) & 255);  // h: two's complement
    reg |= byte << (8 * j);
  }
  if (lane < 4 * kDigitRegs)
    digits[(((size_t)(w / kStepWordsI8) * 32 + n * 4 + tig) * kStepWordsI8 + w % kStepWordsI8) * kDigitRegs + r] = reg;
}

__device__ __forceinline__ void imma_16832(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One step's loads: 4 plane words of the thread's two rows per plane, the step's B fragments, and
// (ONE_END: groups of at least 4 words, so at most one group ends in a step) that group's epilogue
// operands: its word in the step (e_end, 4 if none), scales and offsets of rows a, b, and X, E of the
// thread's two batch rows.
template <int NAL>
struct GroupOperands {
  __half2 al[NAL], be;  // (row a, row b) scales of NAL planes, offsets
  int X[2], E[2];       // of the thread's two batch rows
};

template <int P, bool ONE_END>
struct ImmaStep {
  u32 wa[P][kStepWordsI8], wb[P][kStepWordsI8];
  u32 b[kStepWordsI8][kDigitRegs];
  GroupOperands<ONE_END ? P : 1> ops;
  int e_end;
};

template <int P, bool ONE_END>
__device__ __forceinline__ void imma_gemm_body(
    const u32* __restrict__ digits, const int* __restrict__ E_in, const int* __restrict__ X_in,
    const u32* __restrict__ planes, const __half* __restrict__ alpha, const __half* __restrict__ beta,
    __half* __restrict__ y, float* __restrict__ workspace, unsigned int* __restrict__ counters,
    int M, int N, int K, int group_size) {
  const int KW = K >> 5, G = K / group_size, wpg = group_size >> 5;
  const int groups_per_split = kExactSplitInputs / group_size;
  const int num_splits = (G + groups_per_split - 1) / groups_per_split;
  const int split = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int n0 = (blockIdx.y * kImmaWarps + warp) * kImmaRows;
  const int row_a = n0 + gid, row_b = row_a + 8;
  const bool ok_a = row_a < N, ok_b = row_b < N;
  const size_t plane_stride = (size_t)N * KW, alpha_stride = (size_t)N * G;
  const int g_begin = split * groups_per_split, g_end = min(g_begin + groups_per_split, G);
  const int kw_begin = g_begin * wpg, kw_end = g_end * wpg;
  const int n_steps = (kw_end - kw_begin + kStepWordsI8 - 1) / kStepWordsI8;
  // 16-byte loads of 4 words (planes) and of a step's B fragments need step-aligned words
  const bool aligned = (KW % kStepWordsI8) == 0 && (kw_begin % kStepWordsI8) == 0;

  const u32* pa = planes + (size_t)(ok_a ? row_a : 0) * KW;
  const u32* pb = planes + (size_t)(ok_b ? row_b : 0) * KW;
  const u32* pd = digits + (size_t)lane * kStepWordsI8 * kDigitRegs;
  const int col0 = 2 * tig, col1 = 2 * tig + 1;  // the C fragment's batch rows of this thread
  const bool live0 = col0 < M, live1 = col1 < M;

  // Epilogue operands of group grp for this thread (the !ONE_END path reads one plane's scales at a
  // time in the epilogue instead, which keeps its registers low).
  auto operands = [&](int grp, GroupOperands<ONE_END ? P : 1>& o) {
    const __half zero = __float2half_rn(0.0f);
#pragma unroll
    for (int i = 0; i < (ONE_END ? P : 0); ++i)
      o.al[i] = __halves2half2(ok_a ? alpha[i * alpha_stride + (size_t)row_a * G + grp] : zero,
                               ok_b ? alpha[i * alpha_stride + (size_t)row_b * G + grp] : zero);
    o.be = __halves2half2((beta != nullptr && ok_a) ? beta[(size_t)row_a * G + grp] : zero,
                          (beta != nullptr && ok_b) ? beta[(size_t)row_b * G + grp] : zero);
    o.X[0] = live0 ? __ldg(X_in + col0 * G + grp) : 0;
    o.X[1] = live1 ? __ldg(X_in + col1 * G + grp) : 0;
    o.E[0] = live0 ? __ldg(E_in + col0 * G + grp) : 0;
    o.E[1] = live1 ? __ldg(E_in + col1 * G + grp) : 0;
  };

  auto load = [&](ImmaStep<P, ONE_END>& st, int s) {
    const int kw0 = kw_begin + s * kStepWordsI8;
    if constexpr (ONE_END) {  // the group ending in this step, if any (splits start on a group)
      const int o = (s * kStepWordsI8) % wpg, e_end = wpg - 1 - o;
      st.e_end = (e_end < kStepWordsI8 && kw0 + e_end < kw_end) ? e_end : kStepWordsI8;
      if (st.e_end < kStepWordsI8) operands((kw0 + e_end) / wpg, st.ops);
    }
    if (aligned && kw0 + kStepWordsI8 <= kw_end) {
#pragma unroll
      for (int i = 0; i < P; ++i) {
        uint4 va = make_uint4(0u, 0u, 0u, 0u), vb = va;
        if (ok_a) va = __ldg(reinterpret_cast<const uint4*>(pa + i * plane_stride + kw0));
        if (ok_b) vb = __ldg(reinterpret_cast<const uint4*>(pb + i * plane_stride + kw0));
        st.wa[i][0] = va.x; st.wa[i][1] = va.y; st.wa[i][2] = va.z; st.wa[i][3] = va.w;
        st.wb[i][0] = vb.x; st.wb[i][1] = vb.y; st.wb[i][2] = vb.z; st.wb[i][3] = vb.w;
      }
      const uint4* src = reinterpret_cast<const uint4*>(pd + (size_t)(kw0 / kStepWordsI8) * 32 * kStepWordsI8 * kDigitRegs);
#pragma unroll
      for (int q = 0; q < kStepWordsI8 * kDigitRegs / 4; ++q) {
        const uint4 v = __ldg(src + q);
        st.b[(4 * q) / kDigitRegs][(4 * q) % kDigitRegs] = v.x;
        st.b[(4 * q + 1) / kDigitRegs][(4 * q + 1) % kDigitRegs] = v.y;
        st.b[(4 * q + 2) / kDigitRegs][(4 * q + 2) % kDigitRegs] = v.z;
        st.b[(4 * q + 3) / kDigitRegs][(4 * q + 3) % kDigitRegs] = v.w;
      }
    } else {  // a split or a row that does not start on a 4-word boundary, or the split's last words
#pragma unroll
      for (int e = 0; e < kStepWordsI8; ++e) {
        const int kw = kw0 + e;
        const bool in = kw < kw_end;
#pragma unroll
        for (int i = 0; i < P; ++i) {
          st.wa[i][e] = (in && ok_a) ? __ldg(pa + i * plane_stride + kw) : 0u;
          st.wb[i][e] = (in && ok_b) ? __ldg(pb + i * plane_stride + kw) : 0u;
        }
        const uint2* src = reinterpret_cast<const uint2*>(
            pd + ((size_t)(kw / kStepWordsI8) * 32 * kStepWordsI8 + kw % kStepWordsI8) * kDigitRegs);
#pragma unroll
        for (int q = 0; q < kDigitRegs / 2; ++q) {
          const uint2 v = in ? __ldg(src + q) : make_uint2(0u, 0u);
          st.b[e][2 * q] = v.x;
          st.b[e][2 * q + 1] = v.y;
        }
      }
    }
  };

  int acc[P][3][4];
#pragma unroll
  for (int i = 0; i < P; ++i)
#pragma unroll
    for (int d = 0; d < 3; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][d][e] = 0;
  float ysum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int grp = g_begin;                 // the current group
  [[maybe_unused]] int left = wpg;   // its words still to come (!ONE_END)

  ImmaStep<P, ONE_END> cur, nxt;  // loads run one step ahead
  load(cur, 0);
  for (int s = 0; s < n_steps; ++s) {
    if (s + 1 < n_steps) load(nxt, s + 1);
    const int kw0 = kw_begin + s * kStepWordsI8;
    // At the start of each 128-byte line of plane words, the next line of this quad's two rows
    // (and their scales 32 words on) goes to L2, so the register loads wait for L2, not HBM.
    if (tig == 0 && (kw0 & 31) == 0 && kw0 + 32 < kw_end) {
      const int gpre = (kw0 + 32) / wpg;
      for (int i = 0; i < P; ++i) {
        if (ok_a) asm volatile("prefetch.global.L2 [%0];" :: "l"(pa + i * plane_stride + kw0 + 32));
        if (ok_b) asm volatile("prefetch.global.L2 [%0];" :: "l"(pb + i * plane_stride + kw0 + 32));
        if (ok_a) asm volatile("prefetch.global.L2 [%0];" :: "l"(alpha + i * alpha_stride + (size_t)row_a * G + gpre));
        if (ok_b) asm volatile("prefetch.global.L2 [%0];" :: "l"(alpha + i * alpha_stride + (size_t)row_b * G + gpre));
      }
    }
#pragma unroll
    for (int e = 0; e < kStepWordsI8; ++e) {
      if (kw0 + e >= kw_end) break;
#pragma unroll
      for (int i = 0; i < P; ++i) {
        const u32 ta = cur.wa[i][e] >> tig, tb = cur.wb[i][e] >> tig;
        const u32 a0 = ta & kByteOnes, a1 = tb & kByteOnes, a2 = (ta >> 4) & kByteOnes, a3 = (tb >> 4) & kByteOnes;
#pragma unroll
        for (int d = 0; d < 3; ++d) imma_16832(acc[i][d], a0, a1, a2, a3, cur.b[e][2 * d], cur.b[e][2 * d + 1]);
      }
      if constexpr (ONE_END) {
        if (e != cur.e_end) continue;
      } else {
        if (--left > 0) continue;
        left = wpg;
      }
      // The group is complete: contract steps 2-4 for the thread's 4 outputs (rows a, b x 2 batch rows).
      GroupOperands<ONE_END ? P : 1> op;
      if constexpr (ONE_END) op = cur.ops;
      else operands(grp, op);
      float a[4];
#pragma unroll
      for (int i = 0; i < P; ++i) {
        float al_a, al_b;
        if constexpr (ONE_END) {
          al_a = __low2float(op.al[i]);
          al_b = __high2float(op.al[i]);
        } else {  // one plane's scales at a time keeps the registers of the many-groups-per-step path low
          al_a = ok_a ? __half2float(alpha[i * alpha_stride + (size_t)row_a * G + grp]) : 0.0f;
          al_b = ok_b ? __half2float(alpha[i * alpha_stride + (size_t)row_b * G + grp]) : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int S = acc[i][2][c] * 16384 + acc[i][1][c] * 128 + acc[i][0][c];
          const int D = 2 * S - op.X[c & 1];
          const float term = __fmul_rn(c < 2 ? al_a : al_b, __int2float_rn(D));
          a[c] = (i == 0) ? term : __fadd_rn(a[c], term);
          acc[i][0][c] = acc[i][1][c] = acc[i][2][c] = 0;
        }
      }
      const float be_a = __low2float(op.be), be_b = __high2float(op.be);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float v = a[c];
        const int X = op.X[c & 1], E = op.E[c & 1];
        if (beta != nullptr) v = __fadd_rn(v, __fmul_rn(c < 2 ? be_a : be_b, __int2float_rn(X)));
        // v 2^(E - 21) by one multiply: the power of two is a normal float (E - 21 in [-44, -5]),
        // so this is ldexp's single rounding, subnormal results included.
        v = __fmul_rn(v, __int_as_float((127 + E - kFixBits) << 23));
        ysum[c] = (grp == g_begin) ? v : __fadd_rn(ysum[c], v);
      }
      ++grp;
    }
    cur = nxt;
  }

  // C layout: c = 0, 1 -> row_a, batch rows 2 tig, 2 tig + 1; c = 2, 3 -> row_b.
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int col = (c & 1) ? col1 : col0, row = c < 2 ? row_a : row_b;
    if (col >= M || row >= N) continue;
    store_split_output(y, workspace, num_splits, split, M, N, col, row, ysum[c]);
  }
  if (num_splits == 1) return;
  finish_split_k(workspace, counters, y, M, N, num_splits, blockIdx.y * kImmaWarps * kImmaRows,
                 kImmaWarps * kImmaRows);
}

// P = p planes (1..4, checked by gpu/kernels.py before launch): a template parameter so that the
// registers of one step hold exactly the planes the call reads.  ONE_END: g >= 128 (a group spans at
// least one step), so a group's epilogue operands can be loaded a step ahead with its weights.
// The kernel waits on memory latency, so resident warps count: 3 blocks per SM for p <= 2 (168
// registers, no spills), 2 above (3 would spill).
template <int P, bool ONE_END>
__global__ void __launch_bounds__(kImmaWarps * 32, P <= 2 ? 3 : 2)
imma_gemm(const u32* __restrict__ digits, const int* __restrict__ E_in, const int* __restrict__ X_in,
          const u32* __restrict__ planes,   // [p, N, K/32]
          const __half* __restrict__ alpha, // [p, N, G]
          const __half* __restrict__ beta,  // [N, G] or nullptr
          __half* __restrict__ y,           // [M, N]
          float* __restrict__ workspace,    // [num_splits, M, N]
          unsigned int* __restrict__ counters,
          int M, int N, int K, int group_size) {
  imma_gemm_body<P, ONE_END>(digits, E_in, X_in, planes, alpha, beta, y, workspace, counters, M, N, K, group_size);
}

}  // namespace bcq
