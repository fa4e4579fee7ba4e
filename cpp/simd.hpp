// Runtime ISA dispatch for the hot kernels.
//
// Wheels must run on any x86-64 CPU, so the baseline build targets plain x86-64 and
// each hot kernel is compiled again for x86-64-v3 (AVX2) and x86-64-v4 (AVX-512); the
// loader picks the best clone for the CPU it runs on. The build uses
// -ffp-contract=off, so every clone performs the same IEEE operations in the same order
// and the features are bit-identical whichever clone runs.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(SER_EDGE_NO_MULTIVERSION)
#define SER_EDGE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SER_EDGE_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SER_EDGE_INLINE inline __attribute__((always_inline))
#define SER_EDGE_RESTRICT __restrict__
#else
#define SER_EDGE_INLINE inline
#define SER_EDGE_RESTRICT
#endif
