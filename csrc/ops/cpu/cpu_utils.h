// Helpers shared by the CPU kernels: element conversion and dtype dispatch (the CPU side of cuda_utils.cuh).
#pragma once

#include <stdexcept>
#include <string>

#include "vad_edge/bfloat16.h"
#include "vad_edge/common.h"

namespace vad_edge::cpu {

inline float to_float(float v) { return v; }
inline float to_float(BFloat16 v) { return bfloat16_bits_to_float(v.bits); }

template <typename T>
T from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }
template <>
inline BFloat16 from_float<BFloat16>(float v) { return BFloat16{float_to_bfloat16_bits(v)}; }

// Calls fn with a value of the element type that matches dtype: fn(float{}) or fn(BFloat16{}). No float16:
// CPU autocast produces bfloat16, and the Python layer keeps float16 CPU tensors on the reference ops.
template <typename Fn>
void dispatch_float(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: fn(float{}); return;
    case DType::BFloat16: fn(BFloat16{}); return;
    case DType::Float16: break;
  }
  throw std::invalid_argument(std::string(op) + ": the CPU kernels take float32 and bfloat16, got dtype code " +
                              std::to_string(static_cast<int>(dtype)));
}

}  // namespace vad_edge::cpu
