#include "ops/prepare_clip.h"

namespace vad_edge {

void prepare_clip_cpu(const uint8_t* frames, FrameStrides s, int64_t N, int64_t H, int64_t W, bool bgr,
                      float* clip, float* diff, int num_threads) {
  constexpr float kScale = 1.0f / 255.0f;
  const int64_t plane = H * W;
  // One task per (sample, image row): each reads 5 frames x 3 channels of that row once and writes the
  // matching 15 clip rows and 3 difference rows while they are still in cache.
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t y = 0; y < H; ++y) {
      float* clip_n = clip + n * 15 * plane + y * W;
      for (int64_t t = 0; t < 5; ++t) {
        for (int64_t c = 0; c < 3; ++c) {
          const int64_t src_c = bgr ? 2 - c : c;
          const uint8_t* src = frames + n * s.n + t * s.t + y * s.h + src_c * s.c;
          float* dst = clip_n + (t * 3 + c) * plane;
          for (int64_t x = 0; x < W; ++x) dst[x] = static_cast<float>(src[x * s.w]) * kScale;
        }
      }
      float* diff_n = diff + n * 3 * plane + y * W;
      for (int64_t c = 0; c < 3; ++c) {
        const float* first = clip_n + c * plane;
        const float* last = clip_n + (12 + c) * plane;
        float* dst = diff_n + c * plane;
        for (int64_t x = 0; x < W; ++x) dst[x] = last[x] - first[x];
      }
    }
  }
}

}  // namespace vad_edge
