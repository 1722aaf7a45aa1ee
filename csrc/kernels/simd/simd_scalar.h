// Portable "vector" of one lane, so the kernel templates compile to plain C++.
// Included inside an ISA namespace by the scalar kernel files; it must not
// include headers itself.

template <typename T>
struct Vec {
  using value_type = T;
  using reg = T;
  using mask = int;  // number of active lanes (0 or 1)
  using ireg = int32_t;
  static constexpr int kLanes = 1;
  static constexpr int kRegisters = 16;  // xmm0-15 hold the scalars: sizes register tiles

  static reg zero() { return T(0); }
  static reg set1(T a) { return a; }
  static reg load(const T* p) { return *p; }
  static void store(T* p, reg a) { *p = a; }
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static reg add(reg a, reg b) { return a + b; }
  static mask tail_mask(int64_t active) { return static_cast<int>(active); }
  // Lane 0 is active when lo <= 0 < hi.
  static mask range_mask(int64_t lo, int64_t hi) { return lo <= 0 && hi > 0 ? 1 : 0; }
  static reg maskz_load(mask m, const T* p) { return m ? *p : T(0); }
  static void mask_store(T* p, mask m, reg a) {
    if (m) *p = a;
  }
  static ireg load_indices(const int32_t* p) { return *p; }
  static ireg load_indices(const uint16_t* p) { return *p; }
  static ireg scale_indices(ireg i, int32_t s) { return i * s; }
  // A bfloat16 bit pattern (as load_indices widens it) as a float (T = float only).
  static reg from_bf16_bits(ireg i) {
    static_assert(sizeof(T) == 4, "bfloat16 widens to float");
    const uint32_t wide = static_cast<uint32_t>(i) << 16;
    T f;
    __builtin_memcpy(&f, &wide, sizeof(f));  // a builtin: this header includes nothing
    return f;
  }
  static reg gather(ireg i, const T* base) { return base[i]; }
  static reg maskz_gather(mask m, ireg i, const T* base) { return m ? base[i] : T(0); }
  static T reduce_add(reg a) { return a; }
  static void prefetch(const void*) {}
};
