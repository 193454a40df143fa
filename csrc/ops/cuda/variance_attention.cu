#include "ops/cuda/cuda_utils.cuh"
#include "ops/variance_attention.h"

namespace vad_edge {

namespace {

constexpr int kThreads = 256;

// One block per (pooled cell, sample): pools every channel of p over its pool x pool window (adjacent
// threads read adjacent pixels) and writes the channel variance sum_c (pooled_c - mean_c)^2 of that cell.
// Dynamic shared memory: C floats.
template <typename T>
__global__ void pooled_variance_kernel(const T* __restrict__ p, float* __restrict__ variance, int64_t C, int64_t H,
                                       int64_t W, int pool) {
  extern __shared__ float pooled[];
  __shared__ float scratch[kThreads / 32];
  const int64_t wp = W / pool, cells = (H / pool) * wp;
  const int64_t cell = blockIdx.x, n = blockIdx.y;
  const int64_t y0 = (cell / wp) * pool, x0 = (cell % wp) * pool;
  const int area = pool * pool;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) pooled[c] = 0.0f;
  __syncthreads();
  const T* sample = p + n * C * H * W;
  for (int64_t e = threadIdx.x; e < C * area; e += blockDim.x) {
    const int64_t c = e / area, r = e % area;
    const float v = cuda::to_float(sample[(c * H + y0 + r / pool) * W + x0 + r % pool]);
    atomicAdd(&pooled[c], v);
  }
  __syncthreads();
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) sum += pooled[c];
  const float mean = cuda::block_sum(sum, scratch) / (static_cast<float>(C) * area);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = pooled[c] / area - mean;
    sq += d * d;
  }
  sq = cuda::block_sum(sq, scratch);
  if (threadIdx.x == 0) variance[n * cells + cell] = sq;
}

// One block per sample: variance -> exp(softmax over cells), in place.
__global__ void softmax_exp_kernel(float* __restrict__ values, int64_t cells) {
  __shared__ float scratch[kThreads / 32];
  float* v = values + blockIdx.x * cells;
  float vmax = -INFINITY;
  for (int64_t i = threadIdx.x; i < cells; i += blockDim.x) vmax = fmaxf(vmax, v[i]);
  vmax = cuda::block_max(vmax, scratch);
  float total = 0.0f;
  for (int64_t i = threadIdx.x; i < cells; i += blockDim.x) total += expf(v[i] - vmax);
  total = cuda::block_sum(total, scratch);
  for (int64_t i = threadIdx.x; i < cells; i += blockDim.x) v[i] = expf(expf(v[i] - vmax) / total);
}

// out = weight(cell of the pixel) * x, one thread per element.
template <typename T>
__global__ void apply_weights_kernel(const T* __restrict__ x, const float* __restrict__ weights, T* __restrict__ out,
                                     int64_t total, int64_t C, int64_t H, int64_t W, int pool) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= total) return;
  const int64_t plane = H * W, xx = idx % W, y = (idx / W) % H, n = idx / (C * plane);
  const int64_t wp = W / pool, cells = (H / pool) * wp;
  const float weight = weights[n * cells + (y / pool) * wp + xx / pool];
  out[idx] = cuda::from_float<T>(cuda::to_float(x[idx]) * weight);
}

}  // namespace

void variance_attention_cuda(const void* p, const void* x, void* out, float* workspace, DType dtype, int64_t N,
                             int64_t C, int64_t H, int64_t W, int64_t pool, StreamHandle stream) {
  const cudaStream_t s = cuda::as_stream(stream);
  const int64_t cells = (H / pool) * (W / pool), total = N * C * H * W;
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned int>(cells), static_cast<unsigned int>(N));
    pooled_variance_kernel<T><<<grid, kThreads, C * sizeof(float), s>>>(static_cast<const T*>(p), workspace, C, H,
                                                                       W, static_cast<int>(pool));
    cuda::check_launch("variance_attention (pooled variance)");
    softmax_exp_kernel<<<static_cast<unsigned int>(N), kThreads, 0, s>>>(workspace, cells);
    cuda::check_launch("variance_attention (softmax)");
    apply_weights_kernel<T><<<cuda::blocks_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(x), workspace, static_cast<T*>(out), total, C, H, W, static_cast<int>(pool));
    cuda::check_launch("variance_attention (apply)");
  });
}

}  // namespace vad_edge
