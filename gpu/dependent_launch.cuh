// Programmatic dependent launch (sm_90+; gpu/launch.py says why and how the GEMM is launched).
//
// The encoder signals first thing, so the GEMM's blocks can be scheduled while it runs; the GEMM
// waits before its first read of an encoded word.  The wait returns once the encoder has finished
// and its writes are visible, and at once when the kernel was launched in plain stream order, so
// neither call changes what a kernel computes.  Before sm_90 both are empty.
#pragma once

namespace bcq {

__device__ __forceinline__ void let_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace bcq
