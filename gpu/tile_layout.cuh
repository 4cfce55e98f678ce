// The tile layout of the planes (bcq_core/layout.py tile_planes), read by imma_gemm.cu and dequantize.cu
// (bmma_gemv.cu reads it as its mma fragments):
//
//   tiles[i, nt, s, 64 e + 8 gid + 2 t + h] = planes[i, 16 nt + 8 h + gid, 8 s + 2 t + e]
//
// A tile is 16 rows x 8 words (256 inputs) of one plane, 512 contiguous bytes; a row tile's tiles follow
// each other along K, zero-padded to whole tiles in both directions.
#pragma once

namespace bcq {

constexpr int kTileRows = 16, kTileWords = 8, kTileSize = kTileRows * kTileWords;

// Where word kw of row r (r < 16) of a row tile sits among that row tile's words: the formula above.
__device__ __forceinline__ int tile_word(int r, int kw) {
  return (kw >> 3) * kTileSize + 64 * (kw & 1) + 8 * (r & 7) + 2 * ((kw >> 1) & 3) + (r >> 3);
}

}  // namespace bcq
