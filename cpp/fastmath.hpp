// Natural logarithm for positive normal floats, written so that loops calling it vectorise.
//
// Range reduction x = m 2^e with m in [sqrt(1/2), sqrt(2)), then the minimax polynomial
// of the Cephes logf (max relative error about 1e-7 on that range). Inputs must be
// finite, positive and normal: callers clamp to a floor first.
#pragma once

#include <cstdint>
#include <cstring>

#include "simd.hpp"

namespace ser_edge {

SER_EDGE_INLINE float fast_ln(float x) {
    // Offsetting the bits by those of sqrt(1/2) puts the mantissa in [sqrt(1/2), sqrt(2))
    // without a branch (the reduction of musl's logf).
    constexpr std::uint32_t kSqrtHalf = 0x3F3504F3u;
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const std::uint32_t u = bits - kSqrtHalf;
    const float e = static_cast<float>(static_cast<std::int32_t>(u) >> 23);
    const std::uint32_t mbits = (u & 0x007FFFFFu) + kSqrtHalf;
    float m;
    std::memcpy(&m, &mbits, sizeof m);
    const float f = m - 1.0f;
    const float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = f * z * p;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return (f + y) + 0.693359375f * e;
}

}  // namespace ser_edge
