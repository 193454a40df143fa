#include "ops/cluster_distance.h"
#include "ops/cuda/cuda_utils.cuh"

namespace vad_edge {

namespace {

constexpr int kThreads = 128;  // pixels per block
constexpr int kChunkK = 32;    // centres per pass over z; the model's K = 32 takes one pass
constexpr int kTileD = 64;     // channels of the centre chunk staged in shared memory at a time

// One thread per pixel. Reads its D latent values (coalesced: adjacent threads, adjacent pixels) once per
// chunk of 32 centres, and folds distance, soft assignment and the weighted mean into one online pass, so
// no K-wide intermediate ever reaches memory.
template <typename T>
__global__ void cluster_distance_kernel(const T* __restrict__ z, const float* __restrict__ centers,
                                        T* __restrict__ cmap, int64_t* __restrict__ nearest, T* __restrict__ dmin,
                                        int64_t D, int64_t P, int64_t K, float alpha) {
  __shared__ float tile[kChunkK][kTileD];
  __shared__ float center_sq[kChunkK];
  const int64_t n = blockIdx.y, p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool valid = p < P;
  const T* zp = z + n * D * P + (valid ? p : 0);

  // |z| without overflow (a component near 1e20 squares past float's range): a running scale and the sum
  // of squares relative to it. A NaN or infinite component makes every distance NaN, as in the reference;
  // it must never read as the distance 0, "perfectly normal".
  float scale = 0.0f, ssq = 0.0f;
  bool finite = true;
  // Online softmax state over the centres seen so far: best distance, sum of exp(-alpha (d - best)) and
  // sum of d * exp(-alpha (d - best)).
  float best = INFINITY, weight_sum = 0.0f, weighted = 0.0f;
  int64_t best_k = 0;

  for (int64_t k0 = 0; k0 < K; k0 += kChunkK) {
    float acc[kChunkK];
#pragma unroll
    for (int kk = 0; kk < kChunkK; ++kk) acc[kk] = 0.0f;
    __syncthreads();
    for (int kk = threadIdx.x; kk < kChunkK; kk += blockDim.x) center_sq[kk] = 0.0f;

    for (int64_t d0 = 0; d0 < D; d0 += kTileD) {
      __syncthreads();
      for (int e = threadIdx.x; e < kChunkK * kTileD; e += blockDim.x) {
        const int kk = e / kTileD, dd = e % kTileD;
        const bool inside = k0 + kk < K && d0 + dd < D;
        tile[kk][dd] = inside ? centers[(k0 + kk) * D + d0 + dd] : 0.0f;
      }
      __syncthreads();
      if (threadIdx.x < kChunkK) {  // in a fixed order, so results do not vary from run to run
        for (int dd = 0; dd < kTileD; ++dd) center_sq[threadIdx.x] += tile[threadIdx.x][dd] * tile[threadIdx.x][dd];
      }
      if (!valid) continue;
      const int64_t dc = min(static_cast<int64_t>(kTileD), D - d0);
      for (int64_t dd = 0; dd < dc; ++dd) {
        const float v = cuda::to_float(zp[(d0 + dd) * P]);
        if (k0 == 0) {
          const float a = fabsf(v);
          finite = finite && a <= FLT_MAX;
          if (a > scale) {
            const float r = scale / a;
            ssq = ssq * r * r + 1.0f;
            scale = a;
          } else if (a > 0.0f) {
            const float r = a / scale;
            ssq += r * r;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kChunkK; ++kk) acc[kk] += v * tile[kk][dd];
      }
    }
    __syncthreads();
    if (!valid) continue;

    // |z/|z| - c|^2 = |z|^2/|z|^2 - 2 z.c/|z| + |c|^2, with F.normalize's eps on |z|.
    const float norm = scale * sqrtf(ssq);
    const float inv_norm = 1.0f / fmaxf(norm, 1e-12f), unit = norm * inv_norm;
#pragma unroll
    for (int kk = 0; kk < kChunkK; ++kk) {
      if (k0 + kk >= K) break;
      const float sq = unit * unit - 2.0f * inv_norm * acc[kk] + center_sq[kk];
      const float dist = finite ? sqrtf(fmaxf(sq, 0.0f)) : NAN;  // rounding can leave sq a hair below 0
      if (dist < best) {
        const float rescale = isinf(best) ? 0.0f : __expf(-alpha * (best - dist));
        weight_sum = weight_sum * rescale + 1.0f;
        weighted = weighted * rescale + dist;
        best = dist;
        best_k = k0 + kk;
      } else {
        const float q = __expf(-alpha * (dist - best));
        weight_sum += q;
        weighted += q * dist;
      }
    }
  }
  if (!valid) return;
  const int64_t out = n * P + p;
  cmap[out] = cuda::from_float<T>(finite ? weighted / weight_sum / static_cast<float>(K) : NAN);
  nearest[out] = best_k;
  dmin[out] = cuda::from_float<T>(finite ? best : NAN);
}

}  // namespace

void cluster_distance_cuda(const void* z, const float* centers, void* cmap, int64_t* nearest, void* dmin,
                           DType dtype, int64_t N, int64_t D, int64_t P, int64_t K, float alpha,
                           StreamHandle stream) {
  cuda::require(N >= 1 && N <= cuda::kMaxGridY, "cluster_distance: N must be 1 to 65535, got " + std::to_string(N));
  cuda::require(D >= 1 && P >= 1 && K >= 1, "cluster_distance: D, P and K must be >= 1");
  const dim3 grid(cuda::blocks_for(P, kThreads), static_cast<unsigned int>(N));
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::launch(cluster_distance_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(z), centers,
                 static_cast<T*>(cmap), nearest, static_cast<T*>(dmin), D, P, K, alpha);
  });
  cuda::check_launch("cluster_distance");
}

}  // namespace vad_edge
