#include "ops/cluster_distance.h"
#include "ops/cuda/cuda_utils.cuh"

namespace vad_edge {

namespace {

// A block scores 64 pixels of one sample against the centres, 32 centres per pass (the model's K = 32 takes
// one): a small matrix product, tiled. 256 threads = 64 pixels x 4 groups of 8 centres; each step stages
// 32 channels of the block's latents ([d][pixel]: coalesced loads, conflict-free reads) and of the centres
// ([d][k]: every lane of a warp reads the same 8 centres, a broadcast, as two 16-byte loads).
constexpr int kPixels = 64;
constexpr int kGroups = 4;
constexpr int kPerThread = 8;
constexpr int kChunkK = kGroups * kPerThread;
constexpr int kTileD = 32;
constexpr int kThreads = kPixels * kGroups;

// |c_k|^2 once per call, in a fixed order.
__global__ void center_norms_kernel(const float* __restrict__ centers, float* __restrict__ norms, int64_t D, int K) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= K) return;
  float sum = 0.0f;
  for (int64_t d = 0; d < D; ++d) sum += centers[k * D + d] * centers[k * D + d];
  norms[k] = sum;
}

template <typename T>
__global__ void cluster_distance_kernel(const T* __restrict__ z, const float* __restrict__ centers,
                                        const float* __restrict__ center_sq, T* __restrict__ cmap,
                                        int64_t* __restrict__ nearest, T* __restrict__ dmin, int64_t D, int P,
                                        int K, float alpha) {
  __shared__ float z_tile[kTileD][kPixels];
  __shared__ __align__(16) float c_tile[kTileD][kChunkK];
  __shared__ float dist[kChunkK][kPixels + 1];
  __shared__ float inv_norm_s[kPixels], unit_s[kPixels];
  __shared__ bool finite_s[kPixels];
  const int tid = threadIdx.x, px = tid % kPixels, group = tid / kPixels;
  const int p0 = blockIdx.x * kPixels, p = p0 + px;
  const int64_t n = blockIdx.y;
  const T* zn = z + n * D * P;

  // |z| without overflow (a component near 1e20 squares past float's range): a running scale and the sum
  // of squares relative to it, kept by group 0. A NaN or infinite component makes every distance NaN, as in
  // the reference: it must never read as the distance 0, "perfectly normal".
  float scale = 0.0f, ssq = 0.0f;
  bool finite = true;
  // Online softmax over the centres seen so far (group 0): best distance, sum of exp(-alpha (d - best)) and
  // sum of d * exp(-alpha (d - best)).
  float best = INFINITY, weight_sum = 0.0f, weighted = 0.0f;
  int best_k = 0;

  for (int k0 = 0; k0 < K; k0 += kChunkK) {
    float acc[kPerThread];
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) acc[j] = 0.0f;
    for (int64_t d0 = 0; d0 < D; d0 += kTileD) {
      __syncthreads();  // the previous tiles are consumed
      for (int e = tid; e < kTileD * kPixels; e += kThreads) {
        const int dd = e / kPixels, q = p0 + e % kPixels;
        z_tile[dd][e % kPixels] = d0 + dd < D && q < P ? cuda::to_float(zn[(d0 + dd) * P + q]) : 0.0f;
      }
      for (int e = tid; e < kTileD * kChunkK; e += kThreads) {
        const int kk = e / kTileD, dd = e % kTileD;
        c_tile[dd][kk] = k0 + kk < K && d0 + dd < D ? centers[(k0 + kk) * D + d0 + dd] : 0.0f;
      }
      __syncthreads();
      const int depth = static_cast<int>(D - d0 < kTileD ? D - d0 : kTileD);
      for (int dd = 0; dd < depth; ++dd) {
        const float v = z_tile[dd][px];
        if (k0 == 0 && group == 0) {
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
        const float4* c = reinterpret_cast<const float4*>(&c_tile[dd][group * kPerThread]);
        const float4 lo = c[0], hi = c[1];
        acc[0] += v * lo.x;
        acc[1] += v * lo.y;
        acc[2] += v * lo.z;
        acc[3] += v * lo.w;
        acc[4] += v * hi.x;
        acc[5] += v * hi.y;
        acc[6] += v * hi.z;
        acc[7] += v * hi.w;
      }
    }
    if (k0 == 0 && group == 0) {  // |z/|z| - c|^2 = |z|^2/|z|^2 - 2 z.c/|z| + |c|^2, with F.normalize's eps
      const float norm = scale * sqrtf(ssq), inv = 1.0f / fmaxf(norm, 1e-12f);
      inv_norm_s[px] = inv;
      unit_s[px] = norm * inv;
      finite_s[px] = finite;
    }
    __syncthreads();
    const float inv = inv_norm_s[px], unit = unit_s[px];
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int kk = group * kPerThread + j;
      if (k0 + kk < K) {
        const float sq = unit * unit - 2.0f * inv * acc[j] + center_sq[k0 + kk];
        dist[kk][px] = finite_s[px] ? sqrtf(fmaxf(sq, 0.0f)) : NAN;  // rounding can leave sq a hair below 0
      }
    }
    __syncthreads();
    if (group == 0) {
      const int chunk = K - k0 < kChunkK ? K - k0 : kChunkK;
      for (int kk = 0; kk < chunk; ++kk) {  // in centre order: the same result on every run
        const float d = dist[kk][px];
        if (d < best) {
          const float rescale = isinf(best) ? 0.0f : __expf(-alpha * (best - d));
          weight_sum = weight_sum * rescale + 1.0f;
          weighted = weighted * rescale + d;
          best = d;
          best_k = k0 + kk;
        } else {
          const float q = __expf(-alpha * (d - best));
          weight_sum += q;
          weighted += q * d;
        }
      }
    }
  }
  if (group != 0 || p >= P) return;
  const bool ok = finite_s[px];
  const int64_t out = n * P + p;
  cmap[out] = cuda::from_float<T>(ok ? weighted / weight_sum / static_cast<float>(K) : NAN);
  nearest[out] = best_k;
  dmin[out] = cuda::from_float<T>(ok ? best : NAN);
}

}  // namespace

void cluster_distance_cuda(const void* z, const float* centers, void* cmap, int64_t* nearest, void* dmin,
                           float* workspace, DType dtype, int64_t N, int64_t D, int64_t P, int64_t K, float alpha,
                           StreamHandle stream) {
  cuda::require_batch(N, "cluster_distance");
  cuda::require(D >= 1 && P >= 1 && K >= 1, "cluster_distance: D, P and K must be >= 1");
  cuda::require(P <= 0x7fffffff && K <= 0x7fffffff, "cluster_distance: too many pixels or centres");
  cuda::launch(center_norms_kernel, cuda::blocks_for(K, 128), 128, 0, stream, centers, workspace, D,
               static_cast<int>(K));
  cuda::check_launch("cluster_distance (centre norms)");
  const dim3 grid(cuda::blocks_for(P, kPixels), static_cast<unsigned int>(N));
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::launch(cluster_distance_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(z), centers,
                 static_cast<const float*>(workspace), static_cast<T*>(cmap), nearest, static_cast<T*>(dmin), D,
                 static_cast<int>(P), static_cast<int>(K), alpha);
  });
  cuda::check_launch("cluster_distance");
}

}  // namespace vad_edge
