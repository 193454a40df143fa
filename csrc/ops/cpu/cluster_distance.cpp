#include "ops/cluster_distance.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/cpu/cpu_utils.h"

namespace vad_edge {

namespace {

// Pixels per tile: the tile's K x kTile dot products stay in L1 while all D channels stream through once.
constexpr int64_t kTile = 64;

// `len` latents of one channel as floats: float32 rows are read in place, bfloat16 rows are widened once into
// `buffer` (kTile floats), not once per centre in the K-fold inner loop.
template <typename T>
const float* float_row(const T* row, int64_t len, float* buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
    for (int64_t j = 0; j < len; ++j) buffer[j] = cpu::to_float(row[j]);
    return buffer;
  }
}

// The kernel for one element type T (float or BFloat16) of z, cmap and dmin; the arithmetic is float / double.
template <typename T>
void cluster_distance(const T* z, const float* centers, T* cmap, int64_t* nearest, T* dmin, int64_t N, int64_t D,
                      int64_t P, int64_t K, float alpha, int num_threads) {
  // Centres transposed to [D, K] so the inner loops read them contiguously, and their squared norms.
  std::vector<float> centers_t(D * K);
  std::vector<double> center_sq(K, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) {
      const float c = centers[k * D + d];
      centers_t[d * K + k] = c;
      center_sq[k] += static_cast<double>(c) * c;
    }
  const int64_t tiles = (P + kTile - 1) / kTile;

#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> dots(K * kTile);
    std::vector<double> sumsq(kTile);  // double: a component near 1e20 squares past float's range
    std::vector<double> dist(K);
    std::vector<float> z_buffer(kTile);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t p0 = tile * kTile, len = std::min(kTile, P - p0);
        std::fill(dots.begin(), dots.end(), 0.0f);
        std::fill(sumsq.begin(), sumsq.end(), 0.0);
        // The z / |z| . c_k products, as a small matrix product: D x len latents against D x K centres.
        for (int64_t d = 0; d < D; ++d) {
          const float* zrow = float_row(z + (n * D + d) * P + p0, len, z_buffer.data());
          const float* crow = centers_t.data() + d * K;
          for (int64_t j = 0; j < len; ++j) sumsq[j] += static_cast<double>(zrow[j]) * zrow[j];
          for (int64_t k = 0; k < K; ++k) {
            const float c = crow[k];
            float* acc = dots.data() + k * kTile;
            for (int64_t j = 0; j < len; ++j) acc[j] += c * zrow[j];
          }
        }
        for (int64_t j = 0; j < len; ++j) {
          // |z/|z| - c|^2 = |z|^2/|z|^2 - 2 z.c/|z| + |c|^2, with F.normalize's eps on |z|.
          const double inv_norm = 1.0 / std::max(std::sqrt(sumsq[j]), 1e-12);
          const double unit_sq = sumsq[j] * inv_norm * inv_norm;
          int64_t best = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double sq = unit_sq - 2.0 * inv_norm * dots[k * kTile + j] + center_sq[k];
            dist[k] = std::sqrt(std::max(sq, 0.0));
            if (dist[k] < dist[best]) best = k;
          }
          const double dbest = dist[best];
          double weight_sum = 0.0, weighted = 0.0;
          for (int64_t k = 0; k < K; ++k) {
            const double q = std::exp(-static_cast<double>(alpha) * (dist[k] - dbest));
            weight_sum += q;
            weighted += q * dist[k];
          }
          const int64_t idx = n * P + p0 + j;
          cmap[idx] = cpu::from_float<T>(static_cast<float>(weighted / weight_sum / static_cast<double>(K)));
          nearest[idx] = best;
          dmin[idx] = cpu::from_float<T>(static_cast<float>(dbest));
        }
      }
    }
  }
}

}  // namespace

void cluster_distance_cpu(const void* z, const float* centers, void* cmap, int64_t* nearest, void* dmin, DType dtype,
                          int64_t N, int64_t D, int64_t P, int64_t K, float alpha, int num_threads) {
  cpu::dispatch_float(dtype, "cluster_distance", [&](auto tag) {
    using T = decltype(tag);
    cluster_distance(static_cast<const T*>(z), centers, static_cast<T*>(cmap), nearest, static_cast<T*>(dmin), N, D,
                     P, K, alpha, num_threads);
  });
}

}  // namespace vad_edge
