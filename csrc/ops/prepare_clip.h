#pragma once
#include "vad_edge/common.h"

namespace vad_edge {

// frames: uint8 [N, 5, H, W, 3], any strides (BGR when bgr, else RGB)
// clip:   float32 [N, 15, H, W], contiguous; channels are frame0 RGB, frame1 RGB, ..., frame4 RGB in [0, 1]
// diff:   float32 [N, 3, H, W], contiguous; frame4 - frame0
void prepare_clip_cpu(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                      float* clip, float* diff, int num_threads);

void prepare_clip_cuda(const uint8_t* frames, FrameStrides strides, int64_t N, int64_t H, int64_t W, bool bgr,
                       float* clip, float* diff, StreamHandle stream);

}  // namespace vad_edge
