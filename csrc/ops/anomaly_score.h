#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// fif_hat, d_hat, lif: [N, 3, H, W] contiguous; cmap: [N, 1, h, w] contiguous, h divides H and w divides W
// emap:  [N, 1, H, W] = mean_rgb (fif_hat + d_hat - lif)^2 * up_nearest(cmap)
// score: [N] = mean over pixels of emap
void anomaly_score_cpu(const float* fif_hat, const float* d_hat, const float* lif, const float* cmap, float* score,
                       float* emap, int64_t N, int64_t H, int64_t W, int64_t h, int64_t w, int num_threads);

// Number of partial sums per sample that anomaly_score_cuda needs in its workspace.
constexpr int64_t kAnomalyScoreBlocks = 64;

// Same contract for float32 / float16 / bfloat16 tensors (all of `dtype`), float32 accumulation.
// workspace: float32 [N, kAnomalyScoreBlocks], per-block partial sums (summed in a fixed order, so the
// score is deterministic).
void anomaly_score_cuda(const void* fif_hat, const void* d_hat, const void* lif, const void* cmap, void* score,
                        void* emap, float* workspace, DType dtype, int64_t N, int64_t H, int64_t W, int64_t h,
                        int64_t w, StreamHandle stream);

}  // namespace vad_edge
