#include "ops/variance_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_utils.h"

namespace vad_edge {

namespace {

// Average-pools one [H, W] plane into [H/pool, W/pool]. The pool rows of a cell are first added into a
// full-width float row (a contiguous, vectorised loop), which is then reduced in groups of pool.
template <typename T>
void avg_pool_plane(const T* plane, float* pooled, int64_t H, int64_t W, int64_t pool, float* row_sum) {
  const int64_t wp = W / pool;
  const float inv_area = 1.0f / static_cast<float>(pool * pool);
  for (int64_t i = 0; i < H / pool; ++i) {
    std::fill(row_sum, row_sum + W, 0.0f);
    for (int64_t y = i * pool; y < (i + 1) * pool; ++y) {
      const T* row = plane + y * W;
      for (int64_t x = 0; x < W; ++x) row_sum[x] += cpu::to_float(row[x]);
    }
    for (int64_t j = 0; j < wp; ++j) {
      float sum = 0.0f;
      for (int64_t dx = 0; dx < pool; ++dx) sum += row_sum[j * pool + dx];
      pooled[i * wp + j] = sum * inv_area;
    }
  }
}

// Turns the pooled projection [C, cells] of one sample into exp(softmax over cells of the channel variance).
void attention_weights(const float* pooled, float* weights, int64_t C, int64_t cells) {
  // Double accumulation: the maps are small (C x 16 x 16 in the model), the sum of squares is not.
  std::vector<double> variance(cells);
  for (int64_t i = 0; i < cells; ++i) {
    double mean = 0.0;
    for (int64_t c = 0; c < C; ++c) mean += pooled[c * cells + i];
    mean /= static_cast<double>(C);
    double sq = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double d = pooled[c * cells + i] - mean;
      sq += d * d;
    }
    variance[i] = sq;
  }
  const double vmax = *std::max_element(variance.begin(), variance.end());
  double total = 0.0;
  for (int64_t i = 0; i < cells; ++i) total += (variance[i] = std::exp(variance[i] - vmax));
  for (int64_t i = 0; i < cells; ++i) weights[i] = static_cast<float>(std::exp(variance[i] / total));
}

// The kernel for one element type T (float or BFloat16); everything in between is float or double.
template <typename T>
void variance_attention(const T* p, const T* x, T* out, int64_t N, int64_t C, int64_t H, int64_t W, int64_t pool,
                        int num_threads) {
  const int64_t hp = H / pool, wp = W / pool, cells = hp * wp, plane = H * W;
  std::vector<float> pooled(N * C * cells);
  // Weights expanded along x (one row of W per pooled row), so the final multiply is a plain vector loop.
  std::vector<float> weight_rows(N * hp * W);

  // Pass 1 over p: pooling, one plane per task.
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> row_sum(W);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        avg_pool_plane(p + (n * C + c) * plane, pooled.data() + (n * C + c) * cells, H, W, pool, row_sum.data());
  }

  // Channel variance and softmax on the small pooled maps.
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> weights(cells);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      attention_weights(pooled.data() + n * C * cells, weights.data(), C, cells);
      for (int64_t i = 0; i < hp; ++i)
        for (int64_t xx = 0; xx < W; ++xx) weight_rows[(n * hp + i) * W + xx] = weights[i * wp + xx / pool];
    }
  }

  // Pass 2 over x: out = weight * x.
#pragma omp parallel for collapse(3) schedule(static) num_threads(num_threads)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y) {
        const float* wrow = weight_rows.data() + (n * hp + y / pool) * W;
        const int64_t offset = (n * C + c) * plane + y * W;
        const T* src = x + offset;
        T* dst = out + offset;
        for (int64_t xx = 0; xx < W; ++xx) dst[xx] = cpu::from_float<T>(cpu::to_float(src[xx]) * wrow[xx]);
      }
}

}  // namespace

void variance_attention_cpu(const void* p, const void* x, void* out, DType dtype, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t pool, int num_threads) {
  cpu::dispatch_float(dtype, "variance_attention", [&](auto tag) {
    using T = decltype(tag);
    variance_attention(static_cast<const T*>(p), static_cast<const T*>(x), static_cast<T*>(out), N, C, H, W, pool,
                       num_threads);
  });
}

}  // namespace vad_edge
