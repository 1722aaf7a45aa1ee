// The scalar level expands bits one at a time inside bitmap_kernels.inl
// (the `kLanes == 1` branches), so BitExpand is only declared here.
// Included inside an ISA namespace; it must not include headers itself.

template <typename T>
struct BitExpand;
