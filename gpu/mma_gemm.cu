// Exact-integer tensor-core BCQ GEMM for batches:  y[M, N] = x[M, K] * W_hat[N, K]^T,  M <= 16.
//
// Bit-exact with reference/exact_mma.py.  The trick: activations become two fp16 "digits" of a
// 15-bit fixed-point value per group (encode_activations), bits become fp16 0 / 2^-14, so every
// product the tensor core forms is exact and every partial sum is an integer multiple of 2^-14
// far below 2^24 (times 2^-14): whatever order the tensor core adds in, the fp32 sum is exact.
// Only the per-group epilogue rounds, in the order the contract fixes.
//
// Loop nest of one warp (16 rows n0..n0+15, one split of the contract's groups, NT tiles of 8 batch columns):
//   for group G in split:
//     for plane i < p:
//       for word w in G, chunk c in {0, 1} (16 inputs each):
//         A = bits of rows (n0 + gid, n0 + gid + 8) as fp16 0 / 2^-14     (SHF.W rotate + LOP3)
//         S_hi += A * hi digits,  S_lo += A * lo digits                   (mma.m16n8k16, exact)
//       a += alpha_i * float(2 * (2048 S_hi + S_lo) * 2^14 - X)          (epilogue, rounded)
//     acc += a * 2^(E - 15)
//   last block of a row tile: y = sum of split partials, in order; fp16
//
// mma k-order: the 16 "k" of one mma are free to be any 16 inputs as long as A and B agree.
// Thread (gid = lane / 4, tig = lane % 4) takes, for chunk c of word w, the input pairs
// (t, t + 16) and (t + 4, t + 20) with t = 8c + tig: then its A halves are bits t and t + 16 of
// one plane word, moved into fp16 exponent position by one rotate, and the matching x digits
// were laid out in that order by encode_activations.

#include <cuda_fp16.h>

#include "fixed_point.cuh"
#include "split_k.cuh"

namespace bcq {

using u32 = unsigned int;
constexpr int kWarpsPerBlock = 4;
constexpr int kRowsPerWarp = 16;
constexpr u32 kOneBits = 0x04000400u;  // fp16 2^-14 in both halves: the value of a set bit
constexpr int kMaxWordsPerGroup = 8;   // group size <= 256 (reference/exact_mma.py: MAX_GROUP)

// x [M, K] -> xfrag u32 [M, K/32, 4 (tig), 8 (c, j, digit)], E int [M, G], X int [M, G].
// One thread per (m, group): two passes over the group (max, then digits).
__global__ void encode_activations(const __half* __restrict__ x, u32* __restrict__ xfrag,
                                   int* __restrict__ E_out, int* __restrict__ X_out,
                                   int M, int K, int group_size) {
  const int G = K / group_size;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= M * G) return;
  const int m = idx / G, grp = idx % G;
  const __half* xg = x + (size_t)m * K + (size_t)grp * group_size;
  float amax = 0.0f;
  for (int k = 0; k < group_size; ++k) amax = fmaxf(amax, fabsf(__half2float(xg[k])));
  int E = 0;
  if (amax > 0.0f) frexpf(amax, &E);
  const int shift = kFixBits - E;
  int X = 0;
  for (int w = 0; w < group_size / 32; ++w) {
    const int kw = grp * (group_size / 32) + w;
    u32* out = xfrag + ((size_t)m * (K / 32) + kw) * 32;
    for (int tig = 0; tig < 4; ++tig)
      for (int c = 0; c < 2; ++c)
        for (int j = 0; j < 2; ++j) {
          const int t = 8 * c + tig + 4 * j;
          const float f0 = rintf(ldexpf(__half2float(xg[32 * w + t]), shift));
          const float f1 = rintf(ldexpf(__half2float(xg[32 * w + t + 16]), shift));
          const float h0 = rintf(f0 * (1.0f / 2048.0f)), h1 = rintf(f1 * (1.0f / 2048.0f));
          const float l0 = f0 - h0 * 2048.0f, l1 = f1 - h1 * 2048.0f;  // exact: integers < 2^16
          X += (int)f0 + (int)f1;
          const __half2 hi = __halves2half2(__float2half_rn(h0), __float2half_rn(h1));
          const __half2 lo = __halves2half2(__float2half_rn(l0), __float2half_rn(l1));
          out[tig * 8 + c * 4 + j * 2 + 0] = *reinterpret_cast<const u32*>(&hi);
          out[tig * 8 + c * 4 + j * 2 + 1] = *reinterpret_cast<const u32*>(&lo);
        }
  }
  E_out[idx] = E;
  X_out[idx] = X;
}

__device__ __forceinline__ void mma_16816(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Bits t and t + 16 of w as fp16 {0, 2^-14} in the low and high half.
__device__ __forceinline__ u32 bit_pair(u32 w, int rot) { return __funnelshift_l(w, w, rot) & kOneBits; }

// NT: tiles of 8 batch columns (M <= 8 * NT).
template <int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
mma_gemm(const u32* __restrict__ xfrag, const int* __restrict__ E_in, const int* __restrict__ X_in,
         const u32* __restrict__ planes,   // [p, N, K/32]
         const __half* __restrict__ alpha, // [p, N, G]
         const __half* __restrict__ beta,  // [N, G] or nullptr
         __half* __restrict__ y,           // [M, N]
         float* __restrict__ workspace,    // [num_splits, M, N]
         unsigned int* __restrict__ counters,
         int M, int N, int K, int p, int group_size) {
  const int KW = K >> 5, G = K / group_size, wpg = group_size >> 5;
  const int groups_per_split = kExactSplitInputs / group_size;
  const int num_splits = (G + groups_per_split - 1) / groups_per_split;
  const int tile = blockIdx.x, split = blockIdx.y;  // grid (row tiles, splits): bmma_gemv.cu says why
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int n0 = (tile * kWarpsPerBlock + warp) * kRowsPerWarp;
  const int row_a = n0 + gid, row_b = n0 + gid + 8;  // the two rows of this thread's A and C
  const bool ok_a = row_a < N, ok_b = row_b < N;
  const size_t plane_stride = (size_t)N * KW, alpha_stride = (size_t)N * G;
  // rotate amounts that move bit t = 8c + tig + 4j to bit 10 (and t + 16 to 26)
  int rot[2][2];
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int j = 0; j < 2; ++j) rot[c][j] = (10 - (8 * c + tig + 4 * j)) & 31;

  float acc[NT][4];
  const int g_begin = split * groups_per_split, g_end = min(g_begin + groups_per_split, G);
  for (int grp = g_begin; grp < g_end; ++grp) {
    // At the start of each 128-byte line of plane words, pull the next line of this thread's
    // two rows into L2 for every plane: the in-loop loads then wait for L2, not for HBM.
    if (((grp * wpg) & 31) == 0 && (grp * wpg + 32) < KW) {
      for (int i = 0; i < p; ++i) {
        if (ok_a) asm volatile("prefetch.global.L2 [%0];" :: "l"(planes + i * plane_stride + (size_t)row_a * KW + grp * wpg + 32));
        if (ok_b) asm volatile("prefetch.global.L2 [%0];" :: "l"(planes + i * plane_stride + (size_t)row_b * KW + grp * wpg + 32));
      }
    }
    float a[NT][4];
    int X[NT][2], E[NT][2];
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = t * 8 + tig * 2 + e;
        X[t][e] = col < M ? X_in[col * G + grp] : 0;
        E[t][e] = col < M ? E_in[col * G + grp] : 0;
      }
    for (int i = 0; i < p; ++i) {
      float s_hi[NT][4], s_lo[NT][4];
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) s_hi[t][e] = s_lo[t][e] = 0.0f;
      const u32* pa = planes + i * plane_stride + (size_t)row_a * KW + (size_t)grp * wpg;
      const u32* pb = planes + i * plane_stride + (size_t)row_b * KW + (size_t)grp * wpg;
      // All words of the group first, so their loads are in flight together.
      u32 wa[kMaxWordsPerGroup], wb[kMaxWordsPerGroup];
#pragma unroll
      for (int w = 0; w < kMaxWordsPerGroup; ++w) {
        wa[w] = (ok_a && w < wpg) ? __ldg(pa + w) : 0u;
        wb[w] = (ok_b && w < wpg) ? __ldg(pb + w) : 0u;
      }
#pragma unroll
      for (int w = 0; w < kMaxWordsPerGroup; ++w) {
        if (w >= wpg) break;
        const int kw = grp * wpg + w;
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          const int col = t * 8 + gid;  // B fragment column of this thread
          uint4 f0 = make_uint4(0, 0, 0, 0), f1 = f0;
          if (col < M) {
            const uint4* src = reinterpret_cast<const uint4*>(xfrag + ((size_t)col * KW + kw) * 32 + tig * 8);
            f0 = __ldg(src);
            f1 = __ldg(src + 1);
          }
          // f0 = chunk 0: (j0 hi, j0 lo, j1 hi, j1 lo), f1 = chunk 1
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const uint4 f = c ? f1 : f0;
            const u32 a0 = bit_pair(wa[w], rot[c][0]), a1 = bit_pair(wb[w], rot[c][0]);
            const u32 a2 = bit_pair(wa[w], rot[c][1]), a3 = bit_pair(wb[w], rot[c][1]);
            mma_16816(s_hi[t], a0, a1, a2, a3, f.x, f.z);
            mma_16816(s_lo[t], a0, a1, a2, a3, f.y, f.w);
          }
        }
      }
      const float al_a = ok_a ? __half2float(alpha[i * alpha_stride + (size_t)row_a * G + grp]) : 0.0f;
      const float al_b = ok_b ? __half2float(alpha[i * alpha_stride + (size_t)row_b * G + grp]) : 0.0f;
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // exact integers: s * 2^14 undoes the 2^-14 of a set bit
          const int S = __float2int_rn(s_hi[t][e] * 16384.0f) * 2048 + __float2int_rn(s_lo[t][e] * 16384.0f);
          const int D = 2 * S - X[t][e & 1];
          const float term = __fmul_rn(e < 2 ? al_a : al_b, __int2float_rn(D));
          a[t][e] = (i == 0) ? term : __fadd_rn(a[t][e], term);
        }
    }
    const float be_a = (beta != nullptr && ok_a) ? __half2float(beta[(size_t)row_a * G + grp]) : 0.0f;
    const float be_b = (beta != nullptr && ok_b) ? __half2float(beta[(size_t)row_b * G + grp]) : 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = a[t][e];
        if (beta != nullptr) v = __fadd_rn(v, __fmul_rn(e < 2 ? be_a : be_b, __int2float_rn(X[t][e & 1])));
        v = ldexpf(v, E[t][e & 1] - kFixBits);
        acc[t][e] = (grp == g_begin) ? v : __fadd_rn(acc[t][e], v);
      }
  }

  // C layout: e = 0, 1 -> row_a, columns 2 tig, 2 tig + 1; e = 2, 3 -> row_b.
#pragma unroll
  for (int t = 0; t < NT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = t * 8 + tig * 2 + (e & 1), row = e < 2 ? row_a : row_b;
      if (col >= M || row >= N) continue;
      store_split_output(y, workspace, num_splits, split, M, N, col, row, acc[t][e]);
    }
  if (num_splits == 1) return;
  finish_split_k(workspace, counters, y, M, N, num_splits, tile * kWarpsPerBlock * kRowsPerWarp,
                 kWarpsPerBlock * kRowsPerWarp, tile);
}

}  // namespace bcq
