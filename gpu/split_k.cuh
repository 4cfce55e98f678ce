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

// A block arrives by one release-acquire atomic in thread 0 after a barrier, which orders the other
// threads' partial stores before it (the pattern of CUTLASS's semaphore), instead of __threadfence()
// in every thread before and after the atomic: that is a sequentially consistent MEMBAR.SC.GPU each.
__device__ __forceinline__ bool arrive_last(unsigned int* counter, int num_splits) {
  __shared__ bool is_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned int before;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(counter) : "memory");
    is_last = before == (unsigned)(num_splits - 1);
  }
  __syncthreads();  // thread 0's acquire, passed on to the block: the partials it reads below are complete
  return is_last;
}

__device__ __forceinline__ void finish_split_k(const float* workspace, unsigned int* counters, __half* y,
                                               int M, int N, int num_splits, int row0, int rows, int tile) {
  if (!arrive_last(&counters[tile], num_splits)) return;
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
