#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// z:       [N, D, h, w] contiguous, unnormalised latents (L2-normalised per pixel inside the kernel)
// centers: float32 [K, D] contiguous
// cmap:    [N, h, w] = mean_k q_k d_k with d_k = |z/|z| - c_k|_2 and q = softmax_k(-alpha d)
// nearest: int64 [N, h, w] = argmin_k d_k
// dmin:    [N, h, w] = min_k d_k
// z, cmap and dmin are all float32 or all bfloat16 (`dtype`; float16 throws std::invalid_argument); float32
// dot products, double norms and distances.
void cluster_distance_cpu(const void* z, const float* centers, void* cmap, int64_t* nearest, void* dmin, DType dtype,
                          int64_t N, int64_t D, int64_t P, int64_t K, float alpha, int num_threads);

// Same contract for float32 / float16 / bfloat16 z, cmap and dmin (all of `dtype`); centers stay float32.
// workspace: float32 [K], the centres' squared norms.
void cluster_distance_cuda(const void* z, const float* centers, void* cmap, int64_t* nearest, void* dmin,
                           float* workspace, DType dtype, int64_t N, int64_t D, int64_t P, int64_t K, float alpha,
                           StreamHandle stream);

}  // namespace vad_edge
