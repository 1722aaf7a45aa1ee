// bfloat16 stored values: the upper 16 bits of an IEEE float32.
//
// A value is kept as its bit pattern in a one-member struct (not a bare
// uint16_t), so a BitmapMatrix<bfloat16_t> cannot be mistaken for an integer
// matrix. Widening to float32 is exact (a 16-bit shift); narrowing rounds to
// nearest even, as torch's float32 -> bfloat16 conversion does, bit for bit.
//
// StoredValue<V> names what the kernels compute in for stored values of type
// V: V itself for float and double, float for bfloat16.
#pragma once

#include <cstdint>
#include <cstring>

namespace sparsegemm {

struct bfloat16_t {
  uint16_t bits;
};
static_assert(sizeof(bfloat16_t) == 2, "bfloat16_t must be 2 bytes (packed value arrays)");

inline float bf16_to_float(bfloat16_t v) {
  const uint32_t wide = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Round to nearest, ties to even. Every NaN becomes the quiet NaN 0x7FC0
// (rounding could otherwise carry a NaN's payload into an Inf), as torch's
// scalar conversion does (its vectorised one gives 0xFFFF: NaN either way).
inline bfloat16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bfloat16_t{0x7FC0};
  const uint32_t rounding_bias = 0x7FFFu + ((u >> 16) & 1u);
  return bfloat16_t{static_cast<uint16_t>((u + rounding_bias) >> 16)};
}

// The compute type of stored values of type V, and the conversions to and from it.
template <typename V>
struct StoredValue {
  using compute = V;
  static V widen(V v) { return v; }
  static V narrow(V v) { return v; }
  // The value as stored, in the compute type: what a threshold is tested on.
  static V rounded(V v) { return v; }
};

template <>
struct StoredValue<bfloat16_t> {
  using compute = float;
  static float widen(bfloat16_t v) { return bf16_to_float(v); }
  static bfloat16_t narrow(float f) { return float_to_bf16(f); }
  static float rounded(float f) { return bf16_to_float(float_to_bf16(f)); }
};

template <typename V>
using compute_t = typename StoredValue<V>::compute;

}  // namespace sparsegemm
