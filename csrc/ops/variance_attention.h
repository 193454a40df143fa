#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// p:   [N, C, H, W] contiguous, the 1x1-conv projection of x
// x:   [N, C, H, W] contiguous
// out: [N, C, H, W] contiguous, exp(up_nearest(softmax_hw(sum_c (avgpool(p) - mean_c avgpool(p))^2))) * x
// pool divides H and W. p, x and out are all float32 or all bfloat16 (`dtype`; float16 throws
// std::invalid_argument); float32 pooling, double variance and softmax.
void variance_attention_cpu(const void* p, const void* x, void* out, DType dtype, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t pool, int num_threads);

// Same contract for float32 / float16 / bfloat16 p, x and out (all of `dtype`), float32 accumulation.
// workspace: float32 [N, (H/pool) * (W/pool)], scratch for the per-cell variance and then the weights.
void variance_attention_cuda(const void* p, const void* x, void* out, float* workspace, DType dtype, int64_t N,
                             int64_t C, int64_t H, int64_t W, int64_t pool, StreamHandle stream);

}  // namespace vad_edge
