#include "ops/anomaly_score.h"

#include <vector>

namespace vad_edge {

void anomaly_score_cpu(const float* fif_hat, const float* d_hat, const float* first, const float* last,
                       const float* cmap, ScoreWeights weights, float* score, float* emap, int64_t N, int64_t H,
                       int64_t W, int64_t h, int64_t w, int num_threads) {
  const int64_t plane = H * W, sy = H / h, sx = W / w;
  std::vector<double> row_sums(N * H);
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t y = 0; y < H; ++y) {
      const float* crow = cmap + (n * h + y / sy) * w;
      const int64_t base = n * 3 * plane + y * W;
      float* erow = emap + n * plane + y * W;
      float sum = 0.0f;
      for (int64_t x = 0; x < W; ++x) {
        const auto load = [&](int c, float& fif, float& d, float& f0, float& f4) {
          const int64_t i = base + c * plane + x;
          fif = fif_hat[i];
          d = d_hat[i];
          f0 = first[i];
          f4 = last[i];
        };
        const float v = weighted_score(weights, load, crow[x / sx]);
        erow[x] = v;
        sum += v;
      }
      row_sums[n * H + y] = sum;
    }
  }
  // Rows are summed in a fixed order, so the score does not depend on the thread count.
  for (int64_t n = 0; n < N; ++n) {
    double total = 0.0;
    for (int64_t y = 0; y < H; ++y) total += row_sums[n * H + y];
    score[n] = static_cast<float>(total / static_cast<double>(plane));
  }
}

}  // namespace vad_edge
