#include "ops/anomaly_score.h"
#include "ops/cuda/cuda_utils.cuh"

namespace vad_edge {

namespace {

constexpr int kThreads = 256;

// Grid (kAnomalyScoreBlocks, N): each block strides over the pixels of one sample, writes the localisation
// map and leaves one partial sum of it in the workspace.
template <typename T>
__global__ void error_map_kernel(const T* __restrict__ fif_hat, const T* __restrict__ d_hat,
                                 const T* __restrict__ first, const T* __restrict__ last,
                                 const T* __restrict__ cmap, const T* __restrict__ mask, int64_t mask_batch,
                                 ScoreWeights weights, T* __restrict__ emap, float* __restrict__ partials, int H,
                                 int W, int h, int w) {
  __shared__ float scratch[kThreads / 32];
  const int plane = H * W, sy = H / h, sx = W / w;
  const int64_t n = blockIdx.y, rgb = n * 3 * plane;
  const T* sample_mask = mask ? mask + (mask_batch == 1 ? 0 : n) * plane : nullptr;
  float sum = 0.0f;
  for (int pix = blockIdx.x * blockDim.x + threadIdx.x; pix < plane; pix += gridDim.x * blockDim.x) {
    const int y = pix / W, x = pix % W;
    float v = weighted_score(weights, fif_hat, d_hat, first, last, rgb + pix, plane,
                             cuda::to_float(cmap[(n * h + y / sy) * w + x / sx]),
                             [](T value) { return cuda::to_float(value); });
    if (sample_mask) v *= cuda::to_float(sample_mask[pix]);
    emap[n * plane + pix] = cuda::from_float<T>(v);
    sum += v;
  }
  sum = cuda::block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[n * gridDim.x + blockIdx.x] = sum;
}

// One thread per sample sums the partials in a fixed order: the score is deterministic.
template <typename T>
__global__ void finish_score_kernel(const float* __restrict__ partials, T* __restrict__ score, int64_t N,
                                    int64_t plane) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  float total = 0.0f;
  for (int64_t b = 0; b < kAnomalyScoreBlocks; ++b) total += partials[n * kAnomalyScoreBlocks + b];
  score[n] = cuda::from_float<T>(total / static_cast<float>(plane));
}

}  // namespace

void anomaly_score_cuda(const void* fif_hat, const void* d_hat, const void* first, const void* last,
                        const void* cmap, const void* mask, int64_t mask_batch, ScoreWeights weights, void* score,
                        void* emap, float* workspace, DType dtype, int64_t N, int64_t H, int64_t W, int64_t h,
                        int64_t w, StreamHandle stream) {
  cuda::require_batch(N, "anomaly_score");
  cuda::require_plane(H, W, "anomaly_score");
  cuda::require(h >= 1 && w >= 1 && H % h == 0 && W % w == 0, "anomaly_score: the cluster map's h x w must divide H x W");
  cuda::require(mask == nullptr || mask_batch == 1 || mask_batch == N,
                "anomaly_score: the mask's batch must be 1 or the inputs' N");
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned int>(kAnomalyScoreBlocks), static_cast<unsigned int>(N));
    cuda::launch(error_map_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(fif_hat),
                 static_cast<const T*>(d_hat), static_cast<const T*>(first), static_cast<const T*>(last),
                 static_cast<const T*>(cmap), static_cast<const T*>(mask), mask_batch, weights,
                 static_cast<T*>(emap), workspace, static_cast<int>(H), static_cast<int>(W),
                 static_cast<int>(h), static_cast<int>(w));
    cuda::check_launch("anomaly_score (error map)");
    cuda::launch(finish_score_kernel<T>, cuda::blocks_for(N, kThreads), kThreads, 0, stream,
                 static_cast<const float*>(workspace), static_cast<T*>(score), N, H * W);
    cuda::check_launch("anomaly_score (sum)");
  });
}

}  // namespace vad_edge
