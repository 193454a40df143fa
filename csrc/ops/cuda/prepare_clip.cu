#include "ops/cuda/cuda_utils.cuh"
#include "ops/prepare_clip.h"

namespace vad_edge {

namespace {

// Grid (pixel blocks, N); one thread per output pixel (n, y, x): reads its 5 x 3 bytes once, writes 15 clip
// values and 3 differences (from the float values, so a half-precision difference is rounded once).
template <typename T>
__global__ void prepare_clip_kernel(const uint8_t* __restrict__ frames, FrameStrides s, int H, int W, bool bgr,
                                    T* __restrict__ clip, T* __restrict__ diff) {
  const int pix = blockIdx.x * blockDim.x + threadIdx.x, plane = H * W;
  if (pix >= plane) return;
  const int64_t n = blockIdx.y, y = pix / W, x = pix % W;
  const uint8_t* src = frames + n * s.n + y * s.h + x * s.w;
  float first[3];
  for (int t = 0; t < 5; ++t) {
    for (int c = 0; c < 3; ++c) {
      const float v = src[t * s.t + (bgr ? 2 - c : c) * s.c] * (1.0f / 255.0f);
      clip[(n * 15 + t * 3 + c) * plane + pix] = cuda::from_float<T>(v);
      if (t == 0) first[c] = v;
      if (t == 4) diff[(n * 3 + c) * plane + pix] = cuda::from_float<T>(v - first[c]);
    }
  }
}

}  // namespace

void prepare_clip_cuda(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                       void* clip, void* diff, DType dtype, StreamHandle stream) {
  constexpr int kThreads = 256;
  cuda::require_batch(N, "prepare_clip");
  cuda::require_plane(H, W, "prepare_clip");
  const dim3 grid(cuda::blocks_for(H * W, kThreads), static_cast<unsigned int>(N));
  cuda::dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::launch(prepare_clip_kernel<T>, grid, kThreads, 0, stream, frames, strides, static_cast<int>(H),
                 static_cast<int>(W), bgr, static_cast<T*>(clip), static_cast<T*>(diff));
  });
  cuda::check_launch("prepare_clip");
}

}  // namespace vad_edge
