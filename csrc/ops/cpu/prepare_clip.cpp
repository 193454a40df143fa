#include "ops/prepare_clip.h"

#include <array>

#include "ops/cpu/cpu_utils.h"

namespace vad_edge {

namespace {

constexpr float kScale = 1.0f / 255.0f;

// The kernel for one output element type T (float or BFloat16).
template <typename T>
void prepare_clip(const uint8_t* frames, FrameStrides s, int64_t N, int64_t H, int64_t W, bool bgr, T* clip, T* diff,
                  int num_threads) {
  const int64_t plane = H * W;
  // A byte has 256 values: their float values and clip elements, computed once per call. A lookup is cheaper
  // than converting every element (the reads are strided, 3 bytes apart in OpenCV's layout, so they are
  // not vectorised either way).
  std::array<float, 256> value;
  std::array<T, 256> clip_value;
  for (int k = 0; k < 256; ++k) {
    value[k] = static_cast<float>(k) * kScale;
    clip_value[k] = cpu::from_float<T>(value[k]);
  }
  // One task per (sample, image row): each reads 5 frames x 3 channels of that row once and writes the
  // matching 15 clip rows and 3 difference rows while they are still in cache.
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t y = 0; y < H; ++y) {
      const auto source_row = [&](int64_t t, int64_t c) {
        return frames + n * s.n + t * s.t + y * s.h + (bgr ? 2 - c : c) * s.c;
      };
      T* clip_n = clip + n * 15 * plane + y * W;
      for (int64_t t = 0; t < 5; ++t) {
        for (int64_t c = 0; c < 3; ++c) {
          const uint8_t* src = source_row(t, c);
          T* dst = clip_n + (t * 3 + c) * plane;
          for (int64_t x = 0; x < W; ++x) dst[x] = clip_value[src[x * s.w]];
        }
      }
      // From the bytes (in cache), not from the clip: a bfloat16 clip would round the difference twice.
      T* diff_n = diff + n * 3 * plane + y * W;
      for (int64_t c = 0; c < 3; ++c) {
        const uint8_t* first = source_row(0, c);
        const uint8_t* last = source_row(4, c);
        T* dst = diff_n + c * plane;
        for (int64_t x = 0; x < W; ++x) dst[x] = cpu::from_float<T>(value[last[x * s.w]] - value[first[x * s.w]]);
      }
    }
  }
}

}  // namespace

void prepare_clip_cpu(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                      void* clip, void* diff, DType dtype, int num_threads) {
  cpu::dispatch_float(dtype, "prepare_clip", [&](auto tag) {
    using T = decltype(tag);
    prepare_clip(frames, strides, N, H, W, bgr, static_cast<T*>(clip), static_cast<T*>(diff), num_threads);
  });
}

}  // namespace vad_edge
