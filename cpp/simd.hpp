// Runtime ISA dispatch for the hot kernels.
//
// Wheels must run on any x86-64 CPU, so the baseline build targets plain x86-64 and
// each hot kernel is compiled again for x86-64-v3 (AVX2) and x86-64-v4 (AVX-512); the
// loader picks the best clone for the CPU it runs on. The build uses
// -ffp-contract=off, so every clone performs the same IEEE operations in the same order
// and the features are bit-identical whichever clone runs.
#pragma once

#include <cstring>

#if !defined(__GNUC__) && !defined(__clang__)
#error "the ser-edge core uses GCC/Clang vector extensions: build with GCC or Clang (clang-cl on Windows)"
#endif

// Clones need GCC >= 12 (target_clones with arch= levels) and glibc's ifunc.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(SER_EDGE_NO_MULTIVERSION)
#define SER_EDGE_HAS_MULTIVERSION 1
#define SER_EDGE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SER_EDGE_HAS_MULTIVERSION 0
#define SER_EDGE_MULTIVERSION
#endif

#define SER_EDGE_INLINE inline __attribute__((always_inline))
#define SER_EDGE_RESTRICT __restrict__

namespace ser_edge {

// Portable SIMD values: the compiler maps them onto the widest registers of each clone
// (two AVX2 or four SSE registers for a v16f on narrower ISAs).
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

template <typename V>
SER_EDGE_INLINE V load_v(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename V>
SER_EDGE_INLINE void store_v(float* p, V v) {
    std::memcpy(p, &v, sizeof v);
}

}  // namespace ser_edge
