// Instruction-set levels and run-time selection.
//
// Every kernel family is compiled once per level (see CMakeLists.txt: the ISA
// flags are set per source file). At run time the best level this CPU and OS
// support is chosen once; SPARSEGEMM_ISA=scalar|avx2|avx512 or set_active_isa()
// can force a lower level so tests and users can exercise every path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sparsegemm {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
// Throws std::invalid_argument for an unknown name.
Isa parse_isa(const std::string& name);

// The highest level this CPU and OS can run.
Isa best_supported_isa();
bool isa_supported(Isa isa);
std::vector<Isa> supported_isas();

// The level kernels dispatch to. Initialised from SPARSEGEMM_ISA (if set and
// valid) or best_supported_isa(). set_active_isa throws std::invalid_argument
// if the CPU cannot run the requested level.
Isa active_isa();
void set_active_isa(Isa isa);

// The environment variables that choose between kernel variants (below), each
// with the values it accepts. Every reading of them here goes through this
// table, and the Python package warns at import about any other value, which
// keeps the CPU's default: one list, so the two cannot drift apart.
struct KernelChoiceVariable {
  const char* name;
  std::vector<std::string> values;
};
const std::vector<KernelChoiceVariable>& kernel_choice_variables();

// Whether the batch-1 CSR kernel uses vector gathers (fast on Intel) or
// scalar loads (faster where gathers are microcoded, as on AMD Zen). The
// default follows the CPU vendor; SPARSEGEMM_GATHER=hardware|scalar or
// set_prefer_hardware_gather() overrides it, so tests can run both.
bool prefer_hardware_gather();
void set_prefer_hardware_gather(bool hardware);

// How the batch-1 bitmap kernel prefetches each row's packed values:
//   near: into L1 (prefetcht0), 1-4 KB ahead (Intel default, where measured);
//   far:  into L2 (prefetcht2), 8 KB ahead, a row at a time where x is short
//         (AMD default: on Zen 4 it streamed 50% rows 15-25% faster than
//         near or none, as L2 can keep more lines in flight than L1);
//   off:  none, the hardware prefetchers alone.
// SPARSEGEMM_BITMAP_PREFETCH=near|far|off or set_bitmap_prefetch() overrides
// the default. Results are the same in every mode.
enum class BitmapPrefetch { kNear, kFar, kOff };
BitmapPrefetch bitmap_prefetch();
void set_bitmap_prefetch(BitmapPrefetch mode);
const char* bitmap_prefetch_name(BitmapPrefetch mode);
// Throws std::invalid_argument for anything but near, far or off.
BitmapPrefetch parse_bitmap_prefetch(const std::string& name);

// How the AVX-512 batch-1 bitmap kernel multiplies 16 columns (8 doubles) of
// a row:
//   expand:   the packed values are expanded to their columns' lanes (one
//             expand load) and multiplied with x (Intel default, where the
//             kernel was tuned);
//   compress: the lanes of x whose bit is set are compressed to the front and
//             multiplied with the next packed values (plain load). On Zen 4
//             the expand load is slow and a compress of a register is not:
//             4096 x 4096 at 70% sparsity, cold, ran 1.2x faster
//             (kernels/bitmap/bitmap_kernels.inl). AMD default.
// Both give the product to rounding (the lanes sum in a different order).
// SPARSEGEMM_BITMAP_WALK=expand|compress or set_bitmap_compress_walk()
// overrides the default; other levels and bfloat16 values always expand.
bool bitmap_compress_walk();
void set_bitmap_compress_walk(bool compress);

// AVX-512 extensions that Ice Lake, Zen 4 and later CPUs add to the avx512
// level: byte permutes (VBMI), byte and word expand loads (VBMI2) and int8
// dot products (VNNI).
// The int8 and bfloat16 bitmap kernels of the avx512 level use them where the
// CPU has both, and otherwise run the AVX2 kernels. They are not a level of
// their own, because every other family is the same with or without them.
// SPARSEGEMM_AVX512_EXTENSIONS=off or set_use_avx512_extensions(false) turns
// them off, so tests can run both kernels on one CPU.
bool avx512_extensions_supported();
// Supported and not turned off.
bool use_avx512_extensions();
// Throws std::invalid_argument when turning on what the CPU cannot run.
void set_use_avx512_extensions(bool use);
// AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4) on top of the extensions
// above: bfloat16 dot products, used by the bfloat16 bitmap kernel for
// bfloat16 inputs while use_avx512_extensions().
bool avx512_bf16_supported();

// AMX tiles with int8 multiplies (Sapphire Rapids and later), and the
// operating system's leave to use them (asked for once, on Linux). The int8
// bitmap kernels use them for batches above 4 while use_amx(), which needs
// use_avx512_extensions() too. SPARSEGEMM_AMX=off or set_use_amx(false) turns
// them off, so tests can run the kernels they replace on one CPU.
bool amx_supported();
bool use_amx();
// Throws std::invalid_argument when turning on what the CPU cannot run.
void set_use_amx(bool use);

// Whether the int8 VNNI kernels walk very sparse rows by their stored
// columns (ColumnIndexPlan, drivers/int8_bitmap_driver.cpp) instead of by their
// bitmap. On by default; SPARSEGEMM_INT8_INDEXED=off or
// set_use_int8_indexed_walk(false) turns it off, so tests and A/B runs can
// compare both walks in one process. Results are the same either way.
bool use_int8_indexed_walk();
void set_use_int8_indexed_walk(bool use);

// Whether a matrix's large arrays go on transparent huge pages
// (core/large_array.h). On by default; SPARSEGEMM_HUGE_PAGES=off keeps plain
// allocations. Read once, at the first large allocation.
bool huge_pages_enabled();

// Per-core cache sizes in bytes as the operating system reports them (glibc's
// sysconf), 0 where it reports none: the CSR panel kernels size their column
// panels and chunks by them (kernels/csr/csr_kernels.inl).
int64_t l1_data_cache_bytes();
int64_t l2_cache_bytes();

}  // namespace sparsegemm
