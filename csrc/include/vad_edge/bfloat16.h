// bfloat16 as plain bits: the upper half of a float32. The conversions are integer shifts and adds, with no
// intrinsics, so the same source builds on x86-64 and on aarch64 (a Jetson has no BF16 instructions) and GCC
// vectorises loops over them (memcpy type-puns for free; the NaN case is a select, not a branch).
#pragma once

#include <cstdint>
#include <cstring>

namespace vad_edge {

// A bfloat16 element as the CPU kernels store it (torch.bfloat16's layout).
struct BFloat16 {
  uint16_t bits;
};

inline float bfloat16_bits_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

// Round to nearest, ties to even (torch's rounding); a NaN stays a NaN (its quiet bit set, since rounding
// could carry a signalling NaN's payload into the exponent and make it an infinity).
inline uint16_t float_to_bfloat16_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(is_nan ? quiet_nan : rounded);
}

}  // namespace vad_edge
