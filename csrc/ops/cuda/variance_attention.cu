#include "ops/cuda/cuda_utils.cuh"
#include "ops/variance_attention.h"

namespace vad_edge {

namespace {

constexpr int kThreads = 256;

// Lanes that pool one channel: the smallest power of two covering the pool's area, at most a warp.
inline int group_width(int area) {
  int width = 1;
  while (width < area && width < 32) width <<= 1;
  return width;
}

// One block per (pooled cell, sample). Each group of `width` lanes pools one channel over the cell's
// pool x pool window (a shuffle reduction: no atomics, the same sum on every run), and folds the pooled
// value into its running mean and sum of squared deviations (Welford); thread 0 merges the groups in a
// fixed order (Chan et al.). Nothing per channel is kept, so any number of channels fits.
template <typename T>
__global__ void pooled_variance_kernel(const T* __restrict__ p, float* __restrict__ variance, int64_t C, int H, int W,
                                       int pool, int width) {
  __shared__ float part_count[kThreads], part_mean[kThreads], part_m2[kThreads];
  const int wp = W / pool, cells = (H / pool) * wp, cell = blockIdx.x;
  const int64_t n = blockIdx.y;
  const int y0 = (cell / wp) * pool, x0 = (cell % wp) * pool, area = pool * pool;
  const int group = threadIdx.x / width, lane = threadIdx.x % width, groups = blockDim.x / width;
  const int64_t plane = static_cast<int64_t>(H) * W;
  const T* sample = p + n * C * plane;

  float count = 0.0f, mean = 0.0f, m2 = 0.0f;
  for (int64_t c0 = 0; c0 < C; c0 += groups) {  // every lane takes every turn: the shuffles need all 32
    const int64_t c = c0 + group;
    float sum = 0.0f;
    if (c < C) {
      const T* window = sample + c * plane + static_cast<int64_t>(y0) * W + x0;
      for (int r = lane; r < area; r += width) sum += cuda::to_float(window[(r / pool) * W + r % pool]);
    }
    for (int offset = width / 2; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0 && c < C) {
      const float v = sum / static_cast<float>(area), delta = v - mean;
      count += 1.0f;
      mean += delta / count;
      m2 += delta * (v - mean);
    }
  }
  if (lane == 0) {
    part_count[group] = count;
    part_mean[group] = mean;
    part_m2[group] = m2;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  float total = 0.0f, merged_mean = 0.0f, merged_m2 = 0.0f;
  for (int g = 0; g < groups; ++g) {
    const float nb = part_count[g];
    if (nb == 0.0f) continue;
    const float sum_n = total + nb, delta = part_mean[g] - merged_mean;
    merged_mean += delta * nb / sum_n;
    merged_m2 += part_m2[g] + delta * delta * total * nb / sum_n;
    total = sum_n;
  }
  variance[n * cells + cell] = merged_m2;
}

// One block per sample: variance -> exp(softmax over cells), in place.
__global__ void softmax_exp_kernel(float* __restrict__ values, int cells) {
  __shared__ float scratch[kThreads / 32];
  float* v = values + static_cast<int64_t>(blockIdx.x) * cells;
  float vmax = -INFINITY;
  for (int i = threadIdx.x; i < cells; i += blockDim.x) vmax = fmaxf(vmax, v[i]);
  vmax = cuda::block_max(vmax, scratch);
  float total = 0.0f;
  for (int i = threadIdx.x; i < cells; i += blockDim.x) total += expf(v[i] - vmax);
  total = cuda::block_sum(total, scratch);
  for (int i = threadIdx.x; i < cells; i += blockDim.x) v[i] = expf(expf(v[i] - vmax) / total);
}

// out = weight(cell of the pixel) * x. Grid (pixel blocks, planes): 32-bit in-plane indices, and the
// sample of a plane found once per plane, not per element.
template <typename T>
__global__ void apply_weights_kernel(const T* __restrict__ x, const float* __restrict__ weights, T* __restrict__ out,
                                     int64_t planes, int64_t C, int H, int W, int pool) {
  const int pix = blockIdx.x * blockDim.x + threadIdx.x, plane = H * W;
  if (pix >= plane) return;
  const int wp = W / pool, cells = (H / pool) * wp, cell = (pix / W / pool) * wp + (pix % W) / pool;
  for (int64_t nc = blockIdx.y; nc < planes; nc += gridDim.y) {
    const int64_t i = nc * plane + pix;
    out[i] = cuda::from_float<T>(cuda::to_float(x[i]) * weights[(nc / C) * cells + cell]);
  }
}

}  // namespace

void variance_attention_cuda(const void* p, const void* x, void* out, float* workspace, DType dtype, int64_t N,
                             int64_t C, int64_t H, int64_t W, int64_t pool, StreamHandle stream) {
  cuda::require_batch(N, "variance_attention");
  cuda::require(C >= 1, "variance_attention: C must be >= 1");
  cuda::require_plane(H, W, "variance_attention");
  cuda::require(pool >= 1 && H % pool == 0 && W % pool == 0,
                "variance_attention: pool " + std::to_string(pool) + " must divide H and W");
  const int cells = static_cast<int>((H / pool) * (W / pool)), area = static_cast<int>(pool * pool);
  const int64_t planes = N * C;
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::launch(pooled_variance_kernel<T>, dim3(cells, static_cast<unsigned int>(N)), kThreads, 0, stream,
                 static_cast<const T*>(p), workspace, C, static_cast<int>(H), static_cast<int>(W),
                 static_cast<int>(pool), group_width(area));
    cuda::check_launch("variance_attention (pooled variance)");
    cuda::launch(softmax_exp_kernel, static_cast<unsigned int>(N), kThreads, 0, stream, workspace, cells);
    cuda::check_launch("variance_attention (softmax)");
    const dim3 grid(cuda::blocks_for(H * W, kThreads), static_cast<unsigned int>(std::min(planes, cuda::kMaxGridY)));
    cuda::launch(apply_weights_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(x),
                 static_cast<const float*>(workspace), static_cast<T*>(out), planes, C, static_cast<int>(H),
                 static_cast<int>(W), static_cast<int>(pool));
    cuda::check_launch("variance_attention (apply)");
  });
}

}  // namespace vad_edge
