// LUT-GEMM GEMV for multi-precision BCQ:  y[M, N] = x[M, K] * W_hat[N, K]^T  at precision p.
//
// Bit-exact with reference/lut_gemv.py; reference/contract.md is the arithmetic, step by step.
//
// Loop nest of one thread block (512 threads = 16 warps), block (s, r) = (split s, row tile r):
//
//   for tile t in split s:                         // a tile = W = 32/Mp words of K for Mp batch columns
//     build tables: lane (c, j) owns bank `lane`:  // c = lane / W batch column, j = lane % W word
//        T_b[e] for the 4 bytes b of word j, column c, e = 0..255   (4 x 256 fp32 per lane = 128 KB)
//     for row n in row tile r (warp w takes rows w*RW .. w*RW+RW-1):
//        for plane i < p:  q_i = sum of 4 lookups T_b[byte_b(planes[i, n, word])]
//        a = sum_i alpha_i * q_i                   // word partial
//        tile partial[n, c] = adjacent-pair tree over the W lanes of column c
//        split partial[n, c] += tile partial       // sequential over tiles
//   last block of row tile r: y[c, n] = sequential sum over splits, rounded to fp16
//
// Picture (M = 1, so W = 32 words = 1024 inputs per tile):
//
//            K -->   | tile 0 (1024) | tile 1 | ... | tile 7 |  tile 8 ...
//   rows     block   |<------------ split 0 (8192) ------->|<-- split 1 ...
//   r*R ..   (0, r)  |  warp 0: rows r*R + 0..RW-1, lane j reads word j of each row
//   r*R+R-1          |  warp 15: ...
//
// Why each lane owns a bank: a warp's 32 lookups then hit 32 different banks whatever the keys
// are, so a LUT read is one shared-memory wavefront instead of the ~3-4 that random keys into a
// shared table cost.  Why fp32 tables: the sums of 8 fp16 activations can neither overflow nor
// lose bits the way fp16 tables do, and the arithmetic is IEEE single, easy to reproduce.
// Every float op below is an explicit __fadd_rn / __fmul_rn: no FMA contraction, no reassociation.

#include <cuda_fp16.h>

#include "split_k.cuh"
// No <stdint.h>: NVRTC does not ship it, so 32-bit words are spelled unsigned int (u32).

namespace bcq {

using u32 = unsigned int;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kEntries = 256;           // 2^mu, mu = 8
constexpr int kTablesPerLane = 4;       // 4 bytes per 32-bit word
constexpr int kSplitWords = 256;        // 8192 inputs per split (contract step 5)
constexpr int kRowChunk = 16;           // rows per warp between two lane reductions
constexpr int kAccFloats = 8192;        // rows_per_block * Mp <= kAccFloats
constexpr int kUnroll = 8;              // rows per pipeline step (their words load together)
constexpr int kGroupsPerChunk = kRowChunk / kUnroll;

struct SharedStorage {
  float tables[kTablesPerLane * kEntries * 32];   // [b][e][lane]: lane owns bank `lane`
  float red[kWarps][kRowChunk][33];                // lane partials, padded against conflicts
  float acc[kAccFloats];                           // split partial per (row in tile, column)
};

// Step 1 of the contract for one lane's 8 activations: warp w builds table b = w % 4,
// entries whose top two bits equal h = w / 4.  T[e] for e = h*64 + low adds, in bit order,
// the low-bit chain first and then 2*x6, 2*x7: the same operations as the doubling recurrence.
__device__ __forceinline__ void build_table_slice(float* tab, const __half* x8, bool valid, int h, int lane) {
  float xs[8];
#pragma unroll
  for (int s = 0; s < 8; ++s) xs[s] = valid ? __half2float(x8[s]) : 0.0f;
  float two_x[8];
#pragma unroll
  for (int s = 0; s < 8; ++s) two_x[s] = __fmul_rn(2.0f, xs[s]);
  float t[64];
  float t0 = -xs[0];
#pragma unroll
  for (int s = 1; s < 8; ++s) t0 = __fsub_rn(t0, xs[s]);
  t[0] = t0;
#pragma unroll
  for (int e = 1; e < 64; ++e) {  // T[e] = T[e - 2^s] + 2 x_s, s = the top set bit of e
    const int s = e >= 32 ? 5 : e >= 16 ? 4 : e >= 8 ? 3 : e >= 4 ? 2 : e >= 2 ? 1 : 0;
    t[e] = __fadd_rn(t[e - (1 << s)], two_x[s]);
  }
#pragma unroll
  for (int low = 0; low < 64; ++low) {
    float v = t[low];
    if (h & 1) v = __fadd_rn(v, two_x[6]);
    if (h & 2) v = __fadd_rn(v, two_x[7]);
    tab[(h * 64 + low) * 32 + lane] = v;
  }
}

// Step 2: four lookups, summed left to right.  `lane_tables` is the 32-bit shared-memory
// address of this lane's entry 0 of table 0; table b starts kEntries * 32 * 4 bytes later and
// entry e sits e * 128 bytes in.  Each lookup is a byte extract and a shift-add (PRMT/SHF + LEA)
// feeding one LDS: the fewest ALU instructions we found per lookup.
__device__ __forceinline__ float lds_f32(unsigned addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
  return v;
}

__device__ __forceinline__ float word_sum(unsigned lane_tables, u32 wd) {
  constexpr unsigned kTableBytes = kEntries * 32 * 4;
  const unsigned b0 = wd & 0xFFu, b1 = __byte_perm(wd, 0, 0x4441), b2 = __byte_perm(wd, 0, 0x4442), b3 = wd >> 24;
  const float t0 = lds_f32(lane_tables + (b0 << 7));
  const float t1 = lds_f32(lane_tables + kTableBytes + (b1 << 7));
  const float t2 = lds_f32(lane_tables + 2 * kTableBytes + (b2 << 7));
  const float t3 = lds_f32(lane_tables + 3 * kTableBytes + (b3 << 7));
  return __fadd_rn(__fadd_rn(__fadd_rn(t0, t1), t2), t3);
}

// The plane words and scales of one pipeline step: plane i of kUnroll consecutive rows.
// Scales stay fp16 here and are widened at use: widening at load time would make the load's
// consumer wait for it right away and defeat the pipeline (seen in Nsight Compute).
struct Step {
  u32 wd[kUnroll];
  __half al[kUnroll];
};

// Where a warp's steps read from, for one tile: a step is (row group grp, plane i).
struct RowSource {
  const u32* planes;
  const __half* alpha;
  size_t plane_stride, alpha_stride, KW, G;
  int kw, group;
  bool word_ok;
  int n_warp, rows_per_warp, N, p;

  __device__ __forceinline__ void load(Step& s, int grp, int i) const {
    // Rows past the warp's share or past N read nothing; one bound per step, pointer strides per row.
    const int r0 = grp * kUnroll, n0 = n_warp + r0;
    const int valid = word_ok ? min(kUnroll, min(rows_per_warp - r0, N - n0)) : 0;
    const u32* pw = planes + i * plane_stride + (size_t)n0 * KW + kw;
    const __half* pa = alpha + i * alpha_stride + (size_t)n0 * G + group;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      s.wd[u] = u < valid ? __ldg(pw) : 0u;
      s.al[u] = u < valid ? __ldg(pa) : __float2half_rn(0.0f);
      pw += KW;
      pa += G;
    }
  }
};

// Pull the next tile's plane words and scales of this warp's rows into L2 while this tile is
// being worked on: a one-step register pipeline hides an L2 hit but not a DRAM miss, and
// prefetches cost no registers.  One 128-byte line per (row, plane); lines shared with the
// current tile (small tiles, M > 1) are skipped.
__device__ __forceinline__ void prefetch_tile_rows(const u32* planes, const __half* alpha, size_t plane_stride,
                                                   size_t alpha_stride, int KW, int G, int tile, int W,
                                                   int words_per_group, int n_warp, int rows_per_warp, int N,
                                                   int p, int lane) {
  const int kw = tile * W;
  if (kw >= KW || (kw & 31) >= W) return;  // the line was fetched with an earlier tile
  const int group = kw / words_per_group;
  for (int idx = lane; idx < rows_per_warp * p; idx += 32) {
    const int r = idx / p, i = idx - r * p, n = n_warp + r;
    if (n >= N) break;
    asm volatile("prefetch.global.L2 [%0];" :: "l"(planes + i * plane_stride + (size_t)n * KW + kw));
    asm volatile("prefetch.global.L2 [%0];" :: "l"(alpha + i * alpha_stride + (size_t)n * G + group));
  }
}

// Mp: batch bucket (power of two, 1..32); W = 32 / Mp words per tile.
template <int Mp>
__global__ void __launch_bounds__(kThreads, 1)
lut_gemv(const __half* __restrict__ x,          // [M, K]
         const u32* __restrict__ planes,   // [p, N, K/32]
         const __half* __restrict__ alpha,      // [p, N, G]
         const __half* __restrict__ beta,       // [N, G] or nullptr
         __half* __restrict__ y,                // [M, N]
         float* __restrict__ workspace,         // [num_splits, M, N] when num_splits > 1
         unsigned int* __restrict__ counters,   // [num_row_tiles], zero on entry, zero on exit
         int M, int N, int K, int p, int group_size, int rows_per_block) {
  constexpr int W = 32 / Mp;
  constexpr int kTilesPerSplit = kSplitWords / W;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  SharedStorage& sm = *reinterpret_cast<SharedStorage*>(smem_raw);

  const int KW = K >> 5;
  const int G = K / group_size;
  const int words_per_group = group_size >> 5;
  const int num_tiles = (KW + W - 1) / W;
  const int num_splits = (num_tiles + kTilesPerSplit - 1) / kTilesPerSplit;
  const int split = blockIdx.x;
  const int row0 = blockIdx.y * rows_per_block;
  const int rows_per_warp = rows_per_block / kWarps;

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int col = lane / W;      // batch column of this lane
  const int j = lane % W;        // word of the tile of this lane
  const size_t plane_stride = (size_t)N * KW;
  const size_t alpha_stride = (size_t)N * G;

  const int tile_begin = split * kTilesPerSplit;
  const int tile_end = min(tile_begin + kTilesPerSplit, num_tiles);
  const unsigned lane_tables = (unsigned)__cvta_generic_to_shared(sm.tables) + lane * 4;
  const int n_warp = row0 + warp * rows_per_warp;  // this warp's first row
  const int groups = (rows_per_warp + kUnroll - 1) / kUnroll;
  const int steps = groups * p;                      // one step = one plane of kUnroll rows
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int kw = tile * W + j;
    const bool word_ok = kw < KW;
    const bool lane_ok = word_ok && col < M;
    const int group = word_ok ? (kw / words_per_group) : 0;
    const RowSource src{planes, alpha, plane_stride, alpha_stride, (size_t)KW, (size_t)G, kw, group,
                        word_ok, n_warp, rows_per_warp, N, p};
    // Two steps in flight (rows of the next two steps), issued before the tables are built.
    Step next, after;
    src.load(next, 0, 0);
    if (steps > 1) src.load(after, p > 1 ? 0 : 1, p > 1 ? 1 : 0);
    if (tile + 1 < tile_end) prefetch_tile_rows(planes, alpha, plane_stride, alpha_stride, KW, G, tile + 1, W,
                                               words_per_group, n_warp, rows_per_warp, N, p, lane);
    __syncthreads();  // the previous tile's lookups are done before its tables are overwritten
    {
      const int b = warp & 3, h = warp >> 2;
      const __half* x8 = x + (size_t)(lane_ok ? col : 0) * K + (size_t)(word_ok ? kw : 0) * 32 + b * 8;
      build_table_slice(sm.tables + b * kEntries * 32, x8, lane_ok, h, lane);
    }
    __syncthreads();
    float xsum = 0.0f;
    if (beta != nullptr) xsum = word_sum(lane_tables, 0xFFFFFFFFu);

    float a[kUnroll];
    int grp = 0, i = 0;  // this step's row group and plane (no division in the loop)
    for (int step = 0; step < steps; ++step, i = (i + 1 == p) ? 0 : i + 1, grp += (i == 0)) {
      // Software pipeline, two deep: step + 2's plane words are requested before this step's lookups.
      const Step cur = next;
      next = after;
      if (step + 2 < steps) {
        int i2 = i + 2, g2 = grp;
        while (i2 >= p) { i2 -= p; ++g2; }  // at most two passes
        src.load(after, g2, i2);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float term = __fmul_rn(__half2float(cur.al[u]), word_sum(lane_tables, cur.wd[u]));
        a[u] = (i == 0) ? term : __fadd_rn(a[u], term);
      }
      if (i != p - 1) continue;
      const int slot = (grp % kGroupsPerChunk) * kUnroll;  // rows of this group in sm.red
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int n = n_warp + grp * kUnroll + u;
        if (beta != nullptr) {
          const float be = (word_ok && n < N) ? __half2float(beta[(size_t)n * G + group]) : 0.0f;
          a[u] = __fadd_rn(a[u], __fmul_rn(be, xsum));
        }
        sm.red[warp][slot + u][lane] = word_ok ? a[u] : 0.0f;  // +0.0 past K
      }
      if (slot + kUnroll < kRowChunk && grp + 1 < groups) continue;
      __syncwarp();
      // Step 4: tree over the W lanes of each (row, column); step 5: add to the split partial.
      const int c0 = grp * kUnroll - slot;  // first row of this chunk, relative to the warp
      const int chunk = min(kRowChunk, rows_per_warp - c0);
      for (int pair = lane; pair < chunk * Mp; pair += 32) {
        const int rr = pair / Mp, c = pair % Mp;
        float v[W];
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] = sm.red[warp][rr][c * W + k];
#pragma unroll
        for (int level = 1; level < W; level *= 2) {  // adjacent pairs, then pairs of pairs, ...
#pragma unroll
          for (int k = 0; k < W; k += 2 * level) v[k] = __fadd_rn(v[k], v[k + level]);
        }
        float& acc = sm.acc[(warp * rows_per_warp + c0 + rr) * Mp + c];
        acc = (tile == tile_begin) ? v[0] : __fadd_rn(acc, v[0]);
      }
      __syncwarp();
    }
  }

  __syncthreads();  // every warp's split partials are in sm.acc before any thread reads them
  for (int idx = threadIdx.x; idx < rows_per_block * Mp; idx += kThreads) {
    const int rr = idx / Mp, c = idx % Mp, n = row0 + rr;
    if (c >= M || n >= N) continue;
    store_split_output(y, workspace, num_splits, split, M, N, c, n, sm.acc[rr * Mp + c]);
  }
  if (num_splits == 1) return;
  finish_split_k(workspace, counters, y, M, N, num_splits, row0, rows_per_block, blockIdx.y);
}

}  // namespace bcq
