// Division by a divisor fixed for the whole launch, as a multiply-high, an add and a shift (Granlund and
// Montgomery, "Division by invariant integers using multiplication", 1994, section 4):
//
//   q = floor(n / d) = (umulhi(n, m) + n) >> s,   s = ceil(log2 d),   m = floor(2^32 (2^s - d) / d) + 1
//
// exact for 0 <= n < 2^31 (so that the 32-bit add cannot carry out) and 1 <= d < 2^31.  The host makes
// (m, s) once per launch (gpu/divide.py magic_divisor).  Why: a division by a run-time int compiles to
// about twenty instructions (a float reciprocal and its corrections), most on the integer-logic pipe,
// which dequantize.cu keeps busy (docs/kernels.md).
#pragma once

namespace bcq {

__device__ __forceinline__ unsigned int divide(unsigned int n, unsigned int magic, unsigned int shift) {
  return (__umulhi(n, magic) + n) >> shift;
}

}  // namespace bcq
