#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// The weights of the score's four per-pixel terms, each a mean over RGB (see vad_edge.ops.reference):
// appearance (fif_hat - first)^2, motion (first + d_hat - last)^2, cluster up(cmap), and the paper's
// (fif_hat + d_hat - last)^2 * up(cmap). The paper's score is {0, 0, 0, 1}.
struct ScoreWeights {
  float appearance, motion, cluster, paper;
};

// fif_hat, d_hat, first, last: [N, 3, H, W] contiguous; cmap: [N, 1, h, w] contiguous, h | H and w | W.
// mask: null, or [M, 1, H, W] contiguous with M = 1 (every sample) or N: a weight per pixel (a camera's
// zones: 0 where nothing counts, above 1 where it counts more).
// emap:  [N, 1, H, W] = weighted sum of the terms, times the mask; up() = nearest upsampling of cmap to H x W
// score: [N] = mean over pixels of emap
// All of them float32 or all bfloat16 (`dtype`; float16 throws std::invalid_argument); float32 per pixel,
// double sums for the score.
void anomaly_score_cpu(const void* fif_hat, const void* d_hat, const void* first, const void* last, const void* cmap,
                       const void* mask, int64_t mask_batch, ScoreWeights weights, void* score, void* emap,
                       DType dtype, int64_t N, int64_t H, int64_t W, int64_t h, int64_t w, int num_threads);

// Number of partial sums per sample that anomaly_score_cuda needs in its workspace.
constexpr int64_t kAnomalyScoreBlocks = 64;

// Same contract for float32 / float16 / bfloat16 tensors (all of `dtype`), float32 accumulation.
// workspace: float32 [N, kAnomalyScoreBlocks], per-block partial sums (summed in a fixed order, so the
// score is deterministic).
void anomaly_score_cuda(const void* fif_hat, const void* d_hat, const void* first, const void* last,
                        const void* cmap, const void* mask, int64_t mask_batch, ScoreWeights weights, void* score,
                        void* emap, float* workspace, DType dtype, int64_t N, int64_t H, int64_t W, int64_t h,
                        int64_t w, StreamHandle stream);

// One pixel's weighted score. Its channel c is element pixel + c * plane of the [N, 3, H, W] inputs, read as
// float by to_float; cluster is its cluster-map value. Host and device share it, so both compute the same sum.
template <typename T, typename ToFloat>
VAD_EDGE_HOST_DEVICE inline float weighted_score(const ScoreWeights& wt, const T* fif_hat, const T* d_hat,
                                                 const T* first, const T* last, int64_t pixel, int64_t plane,
                                                 float cluster, ToFloat to_float) {
  float appearance = 0.0f, motion = 0.0f, paper = 0.0f;
  for (int c = 0; c < 3; ++c) {
    const int64_t i = pixel + c * plane;
    const float fif = to_float(fif_hat[i]), d = to_float(d_hat[i]), f0 = to_float(first[i]), f4 = to_float(last[i]);
    const float ra = fif - f0, rm = f0 + d - f4, rp = fif + d - f4;
    appearance += ra * ra;
    motion += rm * rm;
    paper += rp * rp;
  }
  constexpr float third = 1.0f / 3.0f;
  return wt.appearance * appearance * third + wt.motion * motion * third + wt.cluster * cluster +
         wt.paper * paper * third * cluster;
}

}  // namespace vad_edge
