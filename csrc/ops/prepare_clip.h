#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// frames: uint8 [N, 5, H, W, 3], any strides (BGR when bgr, else RGB)
// clip:   [N, 15, H, W] of `dtype`, contiguous; channels are frame0 RGB, frame1 RGB, ..., frame4 RGB in [0, 1]
// diff:   [N, 3, H, W] of `dtype`, contiguous; frame4 - frame0
// dtype: float32 or bfloat16 (float16 throws std::invalid_argument).
void prepare_clip_cpu(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                      void* clip, void* diff, DType dtype, int num_threads);

// Same contract for a float32 / float16 / bfloat16 clip and diff (`dtype`).
void prepare_clip_cuda(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                       void* clip, void* diff, DType dtype, StreamHandle stream);

}  // namespace vad_edge
