// The pybind11 module vad_edge._C. Thin on purpose: vad_edge/ops checks shapes, dtypes, devices and
// contiguity, allocates the outputs and passes raw addresses here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ops/anomaly_score.h"
#include "ops/cluster_distance.h"
#include "ops/prepare_clip.h"
#include "ops/variance_attention.h"

#if defined(VAD_EDGE_CUDA_EMULATION)
#include "emulation/cuda_emulation.h"
#elif defined(VAD_EDGE_WITH_CUDA)
#include <cuda_runtime.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using vad_edge::DType;
using vad_edge::FrameStrides;
using vad_edge::StreamHandle;

namespace {

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

FrameStrides frame_strides(const std::vector<int64_t>& s) {
  if (s.size() != 5) throw py::value_error("frame strides: expected 5 values");
  return FrameStrides{s[0], s[1], s[2], s[3], s[4]};
}

vad_edge::ScoreWeights score_weights(const std::vector<float>& w) {
  if (w.size() != 4) throw py::value_error("score weights: expected 4 values (appearance, motion, cluster, paper)");
  return vad_edge::ScoreWeights{w[0], w[1], w[2], w[3]};
}

#if defined(VAD_EDGE_WITH_CUDA) && !defined(VAD_EDGE_CUDA_EMULATION)
std::vector<std::string> split_archs(const std::string& archs) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : archs) {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}
#endif

#ifndef VAD_EDGE_CUDA_EMULATION
// The vector instructions GCC's auto-vectoriser could use in the CPU kernels: the baseline of the
// architecture the module was compiled for (no -march flags: x86-64's SSE2, aarch64's NEON, which every
// ARMv8 core has), or more when the build was given flags such as -march=native. The kernels carry no
// intrinsics, so the same source is the whole path on every CPU.
constexpr const char* kCpuSimd =
#if defined(__AVX512F__)
    "avx512";
#elif defined(__AVX2__)
    "avx2";
#elif defined(__SSE2__)
    "sse2";
#elif defined(__ARM_NEON)
    "neon";
#else
    "scalar";
#endif

void register_cpu(py::module_& m) {
  m.def("prepare_clip_cpu", [](std::uintptr_t frames, const std::vector<int64_t>& strides, int64_t N, int64_t H,
                               int64_t W, bool bgr, std::uintptr_t clip, std::uintptr_t diff, int dtype, int threads) {
    const FrameStrides s = frame_strides(strides);
    py::gil_scoped_release release;
    vad_edge::prepare_clip_cpu(ptr<const uint8_t>(frames), s, N, H, W, bgr, ptr<void>(clip), ptr<void>(diff),
                               static_cast<DType>(dtype), threads);
  });
  m.def("variance_attention_cpu", [](std::uintptr_t p, std::uintptr_t x, std::uintptr_t out, int dtype, int64_t N,
                                     int64_t C, int64_t H, int64_t W, int64_t pool, int threads) {
    py::gil_scoped_release release;
    vad_edge::variance_attention_cpu(ptr<const void>(p), ptr<const void>(x), ptr<void>(out), static_cast<DType>(dtype),
                                     N, C, H, W, pool, threads);
  });
  m.def("cluster_distance_cpu", [](std::uintptr_t z, std::uintptr_t centers, std::uintptr_t cmap,
                                   std::uintptr_t nearest, std::uintptr_t dmin, int dtype, int64_t N, int64_t D,
                                   int64_t P, int64_t K, float alpha, int threads) {
    py::gil_scoped_release release;
    vad_edge::cluster_distance_cpu(ptr<const void>(z), ptr<const float>(centers), ptr<void>(cmap),
                                   ptr<int64_t>(nearest), ptr<void>(dmin), static_cast<DType>(dtype), N, D, P, K,
                                   alpha, threads);
  });
  // mask: 0 for none.
  m.def("anomaly_score_cpu", [](std::uintptr_t fif_hat, std::uintptr_t d_hat, std::uintptr_t first,
                                std::uintptr_t last, std::uintptr_t cmap, std::uintptr_t mask, int64_t mask_batch,
                                const std::vector<float>& weights, std::uintptr_t score, std::uintptr_t emap,
                                int dtype, int64_t N, int64_t H, int64_t W, int64_t h, int64_t w, int threads) {
    const auto wt = score_weights(weights);
    py::gil_scoped_release release;
    vad_edge::anomaly_score_cpu(ptr<const void>(fif_hat), ptr<const void>(d_hat), ptr<const void>(first),
                                ptr<const void>(last), ptr<const void>(cmap), ptr<const void>(mask), mask_batch, wt,
                                ptr<void>(score), ptr<void>(emap), static_cast<DType>(dtype), N, H, W, h, w, threads);
  });
}

#endif

#ifdef VAD_EDGE_WITH_CUDA
StreamHandle stream_of(std::uintptr_t handle) { return reinterpret_cast<StreamHandle>(handle); }

// Runs a CUDA launcher for `device` without the GIL, so other Python threads go on while it enqueues.
template <typename Fn>
void on_device(int device, Fn&& launch) {
  py::gil_scoped_release release;
#ifdef VAD_EDGE_CUDA_EMULATION
  (void)device;
#else
  // The module links its own static CUDA runtime, whose current device is not torch's: set it every call.
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    throw std::runtime_error("cudaSetDevice(" + std::to_string(device) + "): " + cudaGetErrorString(err));
  }
#endif
  launch();
}

void register_cuda(py::module_& m) {
  m.def("prepare_clip_cuda", [](std::uintptr_t frames, const std::vector<int64_t>& strides, int64_t N, int64_t H,
                                int64_t W, bool bgr, std::uintptr_t clip, std::uintptr_t diff, int dtype, int device,
                                std::uintptr_t stream) {
    const FrameStrides s = frame_strides(strides);
    on_device(device, [&] {
      vad_edge::prepare_clip_cuda(ptr<const uint8_t>(frames), s, N, H, W, bgr, ptr<void>(clip), ptr<void>(diff),
                                  static_cast<DType>(dtype), stream_of(stream));
    });
  });
  m.def("variance_attention_cuda", [](std::uintptr_t p, std::uintptr_t x, std::uintptr_t out,
                                      std::uintptr_t workspace, int dtype, int64_t N, int64_t C, int64_t H, int64_t W,
                                      int64_t pool, int device, std::uintptr_t stream) {
    on_device(device, [&] {
      vad_edge::variance_attention_cuda(ptr<const void>(p), ptr<const void>(x), ptr<void>(out), ptr<float>(workspace),
                                        static_cast<DType>(dtype), N, C, H, W, pool, stream_of(stream));
    });
  });
  m.def("cluster_distance_cuda", [](std::uintptr_t z, std::uintptr_t centers, std::uintptr_t cmap,
                                    std::uintptr_t nearest, std::uintptr_t dmin, std::uintptr_t workspace, int dtype,
                                    int64_t N, int64_t D, int64_t P, int64_t K, float alpha, int device,
                                    std::uintptr_t stream) {
    on_device(device, [&] {
      vad_edge::cluster_distance_cuda(ptr<const void>(z), ptr<const float>(centers), ptr<void>(cmap),
                                      ptr<int64_t>(nearest), ptr<void>(dmin), ptr<float>(workspace),
                                      static_cast<DType>(dtype), N, D, P, K, alpha, stream_of(stream));
    });
  });
  m.def("anomaly_score_cuda", [](std::uintptr_t fif_hat, std::uintptr_t d_hat, std::uintptr_t first,
                                 std::uintptr_t last, std::uintptr_t cmap, std::uintptr_t mask, int64_t mask_batch,
                                 const std::vector<float>& weights, std::uintptr_t score, std::uintptr_t emap,
                                 std::uintptr_t workspace, int dtype, int64_t N, int64_t H, int64_t W, int64_t h,
                                 int64_t w, int device, std::uintptr_t stream) {
    const auto wt = score_weights(weights);
    on_device(device, [&] {
      vad_edge::anomaly_score_cuda(ptr<const void>(fif_hat), ptr<const void>(d_hat), ptr<const void>(first),
                                   ptr<const void>(last), ptr<const void>(cmap), ptr<const void>(mask), mask_batch,
                                   wt, ptr<void>(score), ptr<void>(emap), ptr<float>(workspace),
                                   static_cast<DType>(dtype), N, H, W, h, w, stream_of(stream));
    });
  });
  m.attr("ANOMALY_SCORE_BLOCKS") = vad_edge::kAnomalyScoreBlocks;
#ifndef VAD_EDGE_CUDA_EMULATION
  // (driver, runtime) as CUDA numbers them (13000 = 13.0). A driver older than the runtime this module
  // links fails every launch; the Python layer says so in words.
  m.def("cuda_versions", [] {
    int driver = 0, runtime = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
    return std::make_pair(driver, runtime);
  });
#endif
}
#endif

}  // namespace

#ifdef VAD_EDGE_CUDA_EMULATION
// The CUDA launchers over kernels compiled for the host (csrc/emulation): for tests without a GPU.
PYBIND11_MODULE(_cuda_emulated, m) {
  m.doc() = "vad-edge CUDA kernels run on the CPU by an emulation of blocks, barriers and warps (tests only)";
  register_cuda(m);
  m.def("launch_held_gil", [] { return vad_edge::emulation::gil_held_at_launch; },
        "whether the last kernel launch happened with the GIL held (the bindings must release it)");
}
#else
PYBIND11_MODULE(_C, m) {
  m.doc() = "vad-edge C++/CUDA kernels (raw pointers; use vad_edge.ops, which checks the arguments)";
  register_cpu(m);
#ifdef VAD_EDGE_WITH_CUDA
  register_cuda(m);
  m.attr("WITH_CUDA") = true;
  m.attr("CUDA_ARCHS") = split_archs(VAD_EDGE_CUDA_ARCHS);
  m.attr("CUDA_VERSION") = VAD_EDGE_CUDA_VERSION;
#else
  m.attr("WITH_CUDA") = false;
  m.attr("CUDA_ARCHS") = std::vector<std::string>{};
  m.attr("CUDA_VERSION") = py::none();
#endif
  m.attr("CPU_SIMD") = kCpuSimd;
#ifdef _OPENMP
  m.attr("WITH_OPENMP") = true;
  m.attr("OPENMP_MAX_THREADS") = omp_get_max_threads();
#else
  m.attr("WITH_OPENMP") = false;
  m.attr("OPENMP_MAX_THREADS") = 1;
#endif
}
#endif
