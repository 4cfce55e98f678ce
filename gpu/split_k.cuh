// Split-K epilogue shared by the GEMV kernels (included by every kernel file but dequantize.cu).
//
// Every block of row tile `tile` (the kernel passes it: its grid says which index that is) has
// written its split's fp32 partials to workspace[split, M, N].  The last block to finish (an
// integer atomic counter says which) sums them in split order and writes fp16 y: the float sums
// happen in one block, in a fixed order, so the result is deterministic, and the counter is reset
// for the next launch (graph replays too).
#pragma once
#include <cuda_fp16.h>

// The exact tensor-core contract's split of this module, one of reference/exact_mma.py:
// SPLIT_CHOICES (contract_split picks it per layer shape); gpu/kernels.py compiles a module per split.
#ifndef BCQ_EXACT_SPLIT_INPUTS
#error "compile with -DBCQ_EXACT_SPLIT_INPUTS=<one of reference.exact_mma.SPLIT_CHOICES>"
#endif

namespace bcq {

constexpr int kExactSplitInputs = BCQ_EXACT_SPLIT_INPUTS;

// One output (batch row m, row n) of this block's split: y itself when there is one split, else the
// split's fp32 partial for finish_split_k.
__device__ __forceinline__ void store_split_output(__half* y, float* workspace, int num_splits, int split, int M,
                                                   int N, int m, int n, float v) {
  if (num_splits == 1) y[(size_t)m * N + n] = __float2half_rn(v);
  else workspace[((size_t)split * M + m) * N + n] = v;
}

__device__ __forceinline__ void finish_split_k(const float* workspace, unsigned int* counters, __half* y,
                                               int M, int N, int num_splits, int row0, int rows, int tile) {
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[tile], 1u) == (unsigned)(num_splits - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int idx = threadIdx.x; idx < rows * M; idx += blockDim.x) {
    const int rr = idx % rows, c = idx / rows, n = row0 + rr;
    if (n >= N) continue;
    float s = __ldcg(workspace + (size_t)c * N + n);
    for (int sp = 1; sp < num_splits; ++sp) s = __fadd_rn(s, __ldcg(workspace + ((size_t)sp * M + c) * N + n));
    y[(size_t)c * N + n] = __float2half_rn(s);
  }
  if (threadIdx.x == 0) counters[tile] = 0u;
}

}  // namespace bcq
