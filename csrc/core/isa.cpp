#include "core/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sparsegemm {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  if (name == "scalar" || name == "portable") return Isa::Scalar;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw std::invalid_argument("unknown ISA '" + name + "'; expected one of scalar, avx2, avx512");
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    // __builtin_cpu_supports also checks that the OS saves the vector state (XCR0).
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             isa_supported(Isa::Avx2);
#else
    default:
      return false;
#endif
  }
  return false;
}

Isa best_supported_isa() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Scalar;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

const std::vector<KernelChoiceVariable>& kernel_choice_variables() {
  static const std::vector<KernelChoiceVariable> variables = {
      {"SPARSEGEMM_GATHER", {"hardware", "scalar"}},
      {"SPARSEGEMM_BITMAP_WALK", {"expand", "compress"}},
      {"SPARSEGEMM_BITMAP_PREFETCH",
       {bitmap_prefetch_name(BitmapPrefetch::kNear), bitmap_prefetch_name(BitmapPrefetch::kFar),
        bitmap_prefetch_name(BitmapPrefetch::kOff)}},
      // "off" or "0" turns the extensions (AMX) off; "on" or "1" leaves the default.
      {"SPARSEGEMM_AVX512_EXTENSIONS", {"on", "off", "1", "0"}},
      {"SPARSEGEMM_AMX", {"on", "off", "1", "0"}},
      {"SPARSEGEMM_INT8_INDEXED", {"on", "off", "1", "0"}},
      {"SPARSEGEMM_HUGE_PAGES", {"on", "off", "1", "0"}},
  };
  return variables;
}

namespace {

Isa initial_isa() {
  const char* env = std::getenv("SPARSEGEMM_ISA");
  if (env == nullptr || *env == '\0') return best_supported_isa();
  Isa requested;
  try {
    requested = parse_isa(env);
  } catch (const std::invalid_argument&) {
    return best_supported_isa();  // The Python layer warns about a bad value.
  }
  // Asking for more than the CPU has cannot be honoured; fall back to the best.
  return isa_supported(requested) ? requested : best_supported_isa();
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("this CPU cannot run the '") + isa_name(isa) +
                                "' kernels");
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

namespace {

// An x86 CPU not made by AMD: where the Intel-like defaults of isa.h apply.
bool intel_like_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  return !__builtin_cpu_is("amd");
#else
  return false;
#endif
}

// The value of a kernel_choice_variables() entry when it is one of the values
// the table accepts for it, else null (unset or unknown: the default stands).
const char* kernel_choice(const char* variable) {
  const char* env = std::getenv(variable);
  if (env == nullptr) return nullptr;
  for (const KernelChoiceVariable& choice : kernel_choice_variables())
    if (std::string(choice.name) == variable)
      for (const std::string& value : choice.values)
        if (value == env) return env;
  return nullptr;
}

// Whether the variable names the first of its two values (true) or the second
// (false); the CPU vendor's default where it names neither: true on Intel,
// false on AMD (see isa.h).
bool vendor_choice(const char* variable, const char* intel_like) {
  const char* env = kernel_choice(variable);
  return env != nullptr ? std::string(env) == intel_like : intel_like_cpu();
}

std::atomic<bool>& gather_preference_slot() {
  static std::atomic<bool> slot{vendor_choice("SPARSEGEMM_GATHER", "hardware")};
  return slot;
}

std::atomic<bool>& bitmap_compress_walk_slot() {
  static std::atomic<bool> slot{!vendor_choice("SPARSEGEMM_BITMAP_WALK", "expand")};
  return slot;
}

BitmapPrefetch initial_bitmap_prefetch() {
  if (const char* env = kernel_choice("SPARSEGEMM_BITMAP_PREFETCH"))
    return parse_bitmap_prefetch(env);
  return intel_like_cpu() ? BitmapPrefetch::kNear : BitmapPrefetch::kFar;
}

std::atomic<int>& bitmap_prefetch_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_bitmap_prefetch())};
  return slot;
}

}  // namespace

const char* bitmap_prefetch_name(BitmapPrefetch mode) {
  switch (mode) {
    case BitmapPrefetch::kNear:
      return "near";
    case BitmapPrefetch::kFar:
      return "far";
    case BitmapPrefetch::kOff:
      return "off";
  }
  return "?";
}

BitmapPrefetch parse_bitmap_prefetch(const std::string& name) {
  for (BitmapPrefetch mode : {BitmapPrefetch::kNear, BitmapPrefetch::kFar, BitmapPrefetch::kOff})
    if (name == bitmap_prefetch_name(mode)) return mode;
  throw std::invalid_argument("bitmap prefetch must be 'near', 'far' or 'off', not '" + name + "'");
}

BitmapPrefetch bitmap_prefetch() {
  return static_cast<BitmapPrefetch>(bitmap_prefetch_slot().load(std::memory_order_relaxed));
}

void set_bitmap_prefetch(BitmapPrefetch mode) {
  bitmap_prefetch_slot().store(static_cast<int>(mode), std::memory_order_relaxed);
}

bool prefer_hardware_gather() { return gather_preference_slot().load(std::memory_order_relaxed); }

void set_prefer_hardware_gather(bool hardware) {
  gather_preference_slot().store(hardware, std::memory_order_relaxed);
}

bool bitmap_compress_walk() { return bitmap_compress_walk_slot().load(std::memory_order_relaxed); }

void set_bitmap_compress_walk(bool compress) {
  bitmap_compress_walk_slot().store(compress, std::memory_order_relaxed);
}

bool avx512_extensions_supported() {
#if defined(__x86_64__) || defined(__i386__)
  return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

bool avx512_bf16_supported() {
#if defined(__x86_64__) || defined(__i386__)
  return avx512_extensions_supported() && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

namespace {

// Whether the kernel choice variable `name` is "off" or "0".
bool turned_off_by_env(const char* name) {
  const char* env = kernel_choice(name);
  return env != nullptr && (std::string(env) == "off" || std::string(env) == "0");
}

bool initial_extension_use() {
  return !turned_off_by_env("SPARSEGEMM_AVX512_EXTENSIONS") && avx512_extensions_supported();
}

std::atomic<bool>& extension_use_slot() {
  static std::atomic<bool> slot{initial_extension_use()};
  return slot;
}

}  // namespace

bool use_avx512_extensions() { return extension_use_slot().load(std::memory_order_relaxed); }

bool amx_supported() {
#if defined(__linux__) && defined(__x86_64__)
  static const bool supported = [] {
    if (!avx512_extensions_supported() || !__builtin_cpu_supports("amx-tile") ||
        !__builtin_cpu_supports("amx-int8"))
      return false;
    // Linux enables the tile data state per process on request.
    constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return supported;
#else
  return false;
#endif
}

namespace {

std::atomic<bool>& amx_use_slot() {
  static std::atomic<bool> slot{!turned_off_by_env("SPARSEGEMM_AMX") && amx_supported()};
  return slot;
}

}  // namespace

bool use_amx() { return use_avx512_extensions() && amx_use_slot().load(std::memory_order_relaxed); }

void set_use_amx(bool use) {
  if (use && !amx_supported())
    throw std::invalid_argument("this CPU (or its operating system) does not offer AMX int8 tiles");
  amx_use_slot().store(use, std::memory_order_relaxed);
}

namespace {

std::atomic<bool>& int8_indexed_use_slot() {
  static std::atomic<bool> slot{!turned_off_by_env("SPARSEGEMM_INT8_INDEXED")};
  return slot;
}

}  // namespace

bool use_int8_indexed_walk() { return int8_indexed_use_slot().load(std::memory_order_relaxed); }

void set_use_int8_indexed_walk(bool use) {
  int8_indexed_use_slot().store(use, std::memory_order_relaxed);
}

bool huge_pages_enabled() {
  static const bool enabled = !turned_off_by_env("SPARSEGEMM_HUGE_PAGES");
  return enabled;
}

void set_use_avx512_extensions(bool use) {
  if (use && !avx512_extensions_supported())
    throw std::invalid_argument("this CPU lacks the AVX-512 VBMI, VBMI2 and VNNI extensions");
  extension_use_slot().store(use, std::memory_order_relaxed);
}

// sysconf's answer, 0 where the system gives none (or no such query exists).
int64_t l1_data_cache_bytes() {
#ifdef _SC_LEVEL1_DCACHE_SIZE
  static const long bytes = sysconf(_SC_LEVEL1_DCACHE_SIZE);
  return bytes > 0 ? bytes : 0;
#else
  return 0;
#endif
}

int64_t l2_cache_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE
  static const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return bytes > 0 ? bytes : 0;
#else
  return 0;
#endif
}

}  // namespace sparsegemm
