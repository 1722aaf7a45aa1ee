// The scalar level walks the set bits of each row (int8_bitmap_kernels.inl,
// the `!E::kVector` branches), so its Int8Expand only says so.
// Included inside an ISA namespace; it must not include headers itself.

struct Int8Expand {
  static constexpr bool kVector = false;
};
