// Types shared by every kernel. No torch headers: the Python layer hands us raw pointers, sizes, strides
// and (for CUDA) the stream, so one binary serves any torch version.
#pragma once

#include <cstdint>

// Small helpers that CPU and CUDA code share.
#ifdef __CUDACC__
#define VAD_EDGE_HOST_DEVICE __host__ __device__
#else
#define VAD_EDGE_HOST_DEVICE
#endif

namespace vad_edge {

// Element type of a floating-point tensor. The numbers are part of the Python <-> C++ contract
// (vad_edge/ops/_dispatch.py maps torch dtypes onto them).
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// A cudaStream_t, passed as an opaque handle so that CPU-only translation units need no CUDA headers.
using StreamHandle = void*;

// Strides, in elements, of a uint8 frame window [N, 5, H, W, 3]. The window usually is a view into a
// ring buffer, so prepare_clip reads it through strides instead of asking for a copy.
struct FrameStrides {
  int64_t n, t, h, w, c;
};

}  // namespace vad_edge
