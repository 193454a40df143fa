#include "ops/anomaly_score.h"

#include <stdexcept>
#include <vector>

#include "ops/cpu/cpu_utils.h"

namespace vad_edge {

namespace {

// The kernel for one element type T (float or BFloat16); per-pixel values in float, the score in double.
template <typename T>
void anomaly_score(const T* fif_hat, const T* d_hat, const T* first, const T* last, const T* cmap, const T* mask,
                   int64_t mask_batch, ScoreWeights weights, T* score, T* emap, int64_t N, int64_t H, int64_t W,
                   int64_t h, int64_t w, int num_threads) {
  const int64_t plane = H * W, sy = H / h, sx = W / w;
  std::vector<double> row_sums(N * H);
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t y = 0; y < H; ++y) {
      const T* crow = cmap + (n * h + y / sy) * w;
      const int64_t base = n * 3 * plane + y * W;
      T* erow = emap + n * plane + y * W;
      const T* mrow = mask ? mask + (mask_batch == 1 ? 0 : n) * plane + y * W : nullptr;
      float sum = 0.0f;
      for (int64_t x = 0; x < W; ++x) {
        float v = weighted_score(weights, fif_hat, d_hat, first, last, base + x, plane, cpu::to_float(crow[x / sx]),
                                 [](T value) { return cpu::to_float(value); });
        if (mrow) v *= cpu::to_float(mrow[x]);
        erow[x] = cpu::from_float<T>(v);
        sum += v;  // the unrounded value: the score does not pay for emap's storage precision
      }
      row_sums[n * H + y] = sum;
    }
  }
  // Rows are summed in a fixed order, so the score does not depend on the thread count.
  for (int64_t n = 0; n < N; ++n) {
    double total = 0.0;
    for (int64_t y = 0; y < H; ++y) total += row_sums[n * H + y];
    score[n] = cpu::from_float<T>(static_cast<float>(total / static_cast<double>(plane)));
  }
}

}  // namespace

void anomaly_score_cpu(const void* fif_hat, const void* d_hat, const void* first, const void* last, const void* cmap,
                       const void* mask, int64_t mask_batch, ScoreWeights weights, void* score, void* emap,
                       DType dtype, int64_t N, int64_t H, int64_t W, int64_t h, int64_t w, int num_threads) {
  if (mask != nullptr && mask_batch != 1 && mask_batch != N) {
    throw std::invalid_argument("anomaly_score: the mask's batch must be 1 or the inputs' N");
  }
  cpu::dispatch_float(dtype, "anomaly_score", [&](auto tag) {
    using T = decltype(tag);
    anomaly_score(static_cast<const T*>(fif_hat), static_cast<const T*>(d_hat), static_cast<const T*>(first),
                  static_cast<const T*>(last), static_cast<const T*>(cmap), static_cast<const T*>(mask), mask_batch,
                  weights, static_cast<T*>(score), static_cast<T*>(emap), N, H, W, h, w, num_threads);
  });
}

}  // namespace vad_edge
