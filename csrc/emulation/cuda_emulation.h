// Runs the project's CUDA kernels on the CPU, for tests on machines without a GPU.
//
// The .cu files are compiled as C++ with this header in place of the CUDA headers. A launch runs the grid's
// blocks one after another; the threads of a block run at once as real threads, so __syncthreads is a real
// barrier and __shfl_down_sync a real exchange between the 32 lanes of a warp. __shared__ variables are
// `static`: one copy, which is right while one block runs at a time. What a GPU would refuse (too many
// threads, too much shared memory) fails the launch here too, through cudaGetLastError.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "vad_edge/bfloat16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define VAD_EDGE_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::vad_edge::emulation::dynamic_shared())

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

struct alignas(16) float4 {
  float x, y, z, w;
};

using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9, cudaErrorInvalidValue = 1 };

extern "C" int PyGILState_Check(void);  // from the interpreter that loaded this module

namespace vad_edge::emulation {

// Limits of the GPUs the kernels target (every one since sm_70 shares them).
constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // without opting in to more
constexpr unsigned int kMaxGridY = 65535;

struct Block {
  std::barrier<> sync;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> lanes[2];  // per thread, what it offers to a shuffle; alternate calls use alternate rows
  std::vector<unsigned char> shared;
  Block(unsigned int threads, size_t shared_bytes)
      : sync(threads), lanes{std::vector<float>(threads), std::vector<float>(threads)}, shared(shared_bytes) {
    for (unsigned int w = 0; w < (threads + 31) / 32; ++w) {
      warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
    }
  }
};

inline thread_local Block* current = nullptr;
inline thread_local unsigned int shuffles = 0;  // shuffles this thread has made in its block
inline thread_local dim3 thread_index, block_index;
inline dim3 block_dim, grid_dim;
inline cudaError_t last_error = cudaSuccess;
inline bool gil_held_at_launch = false;  // tests check that the bindings release the GIL before launching
inline std::string last_message;

inline void* dynamic_shared() { return current->shared.data(); }

// Runs kernel(args...) over the grid. One thread per block thread, reused block after block; a barrier
// between blocks lets the next block start with fresh barriers and shared memory. Threads that return early
// drop out of their block's barriers, as exited threads do on a GPU.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Args... args) {
  const unsigned int threads = block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > kMaxGridY || grid.z > kMaxGridY) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (shared_bytes > kMaxSharedBytes) {
    last_error = cudaErrorInvalidValue;
    return;
  }
  gil_held_at_launch = PyGILState_Check() != 0;
  block_dim = block;
  grid_dim = grid;
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  std::optional<Block> state;
  state.emplace(threads, shared_bytes);
  std::barrier next_block(threads, [&]() noexcept { state.emplace(threads, shared_bytes); });
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_index = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      for (uint64_t b = 0; b < blocks; ++b) {
        current = &*state;
        shuffles = 0;
        block_index = dim3(b % grid.x, (b / grid.x) % grid.y, b / (static_cast<uint64_t>(grid.x) * grid.y));
        kernel(args...);
        current->warps[t / 32]->arrive_and_drop();
        current->sync.arrive_and_drop();
        next_block.arrive_and_wait();
      }
    });
  }
  for (auto& th : pool) th.join();
}

inline unsigned int linear_thread() {
  return thread_index.x + block_dim.x * (thread_index.y + block_dim.y * thread_index.z);
}

}  // namespace vad_edge::emulation

#define threadIdx (::vad_edge::emulation::thread_index)
#define blockIdx (::vad_edge::emulation::block_index)
#define blockDim (::vad_edge::emulation::block_dim)
#define gridDim (::vad_edge::emulation::grid_dim)

inline void __syncthreads() { vad_edge::emulation::current->sync.arrive_and_wait(); }

// Every kernel here shuffles with all 32 lanes: the mask is not consulted. One barrier per shuffle: a lane
// writes the row its previous shuffle did not use, and cannot come back to this row before every lane of
// its warp has passed the next shuffle's barrier, that is, has read this one.
inline float __shfl_down_sync(unsigned int /*mask*/, float v, unsigned int delta) {
  using namespace vad_edge::emulation;
  const unsigned int t = linear_thread(), lane = t % 32, warp = t / 32;
  auto& lanes = current->lanes[shuffles++ % 2];
  lanes[t] = v;
  current->warps[warp]->arrive_and_wait();
  const unsigned int width = std::min<unsigned int>(32, lanes.size() - 32 * warp);
  return lane + delta < width ? lanes[t + delta] : v;
}

inline float atomicAdd(float* address, float v) { return std::atomic_ref<float>(*address).fetch_add(v); }

inline cudaError_t cudaGetLastError() {
  const cudaError_t err = vad_edge::emulation::last_error;
  vad_edge::emulation::last_error = cudaSuccess;
  return err;
}

inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidValue: return "invalid argument";
  }
  return "unknown error";
}

inline float __expf(float x) { return std::exp(x); }
using std::fmaxf;
using std::isinf;
using std::isnan;
using std::min;
using std::max;

// --- float16 and bfloat16: storage types with round-to-nearest-even conversions -------------------------
struct __half {
  _Float16 value;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }
// The CPU kernels' bfloat16 conversions (vad_edge/bfloat16.h): the same bits as CUDA's.
inline float __bfloat162float(__nv_bfloat16 b) { return vad_edge::bfloat16_bits_to_float(b.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{vad_edge::float_to_bfloat16_bits(f)}; }
