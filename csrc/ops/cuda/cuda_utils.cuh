// Helpers shared by the CUDA kernels: element conversion, dtype dispatch, launches and their checks.
#pragma once

#ifdef VAD_EDGE_CUDA_EMULATION  // the kernels compiled for the host, for tests (csrc/emulation)
#include "emulation/cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// Dynamic shared memory, declared so that the host emulation can provide it.
#define VAD_EDGE_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#include <algorithm>
#include <cfloat>
#include <stdexcept>
#include <string>

#include "vad_edge/common.h"

namespace vad_edge::cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline cudaStream_t as_stream(StreamHandle s) { return static_cast<cudaStream_t>(s); }

// Raises the last launch error as a C++ exception (pybind11 turns it into a Python RuntimeError).
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Launches kernel on grid x block threads with shared_bytes of dynamic shared memory, on stream.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, StreamHandle stream,
            Args... args) {
#ifdef VAD_EDGE_CUDA_EMULATION
  (void)stream;
  emulation::launch(kernel, grid, block, shared_bytes, static_cast<Params>(args)...);
#else
  kernel<<<grid, block, shared_bytes, as_stream(stream)>>>(static_cast<Params>(args)...);
#endif
}

// Launchers check what the kernels index by (the Python layer checks too; these guard any other caller).
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Blocks of `threads` that cover n items: one grid dimension, at most 2^31 - 1 blocks.
inline unsigned int blocks_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  require(blocks <= 0x7fffffff, "too many items for one launch: " + std::to_string(n));
  return static_cast<unsigned int>(blocks);
}

// In-plane pixel indices are 32-bit (cheaper division); a plane must fit.
inline void require_plane(int64_t H, int64_t W, const char* op) {
  require(H >= 1 && W >= 1 && H * W <= 0x7fffffff, std::string(op) + ": H x W must be 1 to 2^31 - 1 pixels");
}

// Samples (or sample-channel planes) go on the grid's y axis.
constexpr int64_t kMaxGridY = 65535;

inline void require_batch(int64_t N, const char* op) {
  require(N >= 1 && N <= kMaxGridY, std::string(op) + ": N must be 1 to 65535 (the grid's y), got " + std::to_string(N));
}

// Calls fn with a value of the C++ element type that matches dtype: fn(float{}), fn(__half{}), ...
template <typename Fn>
void dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: fn(float{}); return;
    case DType::Float16: fn(__half{}); return;
    case DType::BFloat16: fn(__nv_bfloat16{}); return;
  }
  throw std::invalid_argument("unsupported dtype code " + std::to_string(static_cast<int>(dtype)));
}

// Sum of v over the block; every thread gets the result. shared needs blockDim.x / 32 floats.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < warps; ++i) total += shared[i];
  return total;
}

// Maximum of v over the block; every thread gets the result. shared needs blockDim.x / 32 floats.
__device__ __forceinline__ float block_max(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float best = shared[0];
  for (int i = 1; i < warps; ++i) best = fmaxf(best, shared[i]);
  return best;
}

}  // namespace vad_edge::cuda
