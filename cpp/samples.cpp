#include "samples.hpp"

#include <cstring>

#include "simd.hpp"

namespace ser_edge {

SER_EDGE_MULTIVERSION
std::size_t first_non_finite(const float* x, std::size_t n) {
    // Scan in blocks with a branch-free test of the exponent bits, then locate within the block.
    constexpr std::size_t kBlock = 256;
    for (std::size_t start = 0; start < n; start += kBlock) {
        const std::size_t end = start + kBlock < n ? start + kBlock : n;
        std::uint32_t any = 0;
        for (std::size_t i = start; i < end; ++i) {
            std::uint32_t bits;
            std::memcpy(&bits, x + i, sizeof bits);
            any |= static_cast<std::uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
        }
        if (any) {
            for (std::size_t i = start; i < end; ++i) {
                std::uint32_t bits;
                std::memcpy(&bits, x + i, sizeof bits);
                if ((bits & 0x7F800000u) == 0x7F800000u) return i;
            }
        }
    }
    return n;
}

SER_EDGE_MULTIVERSION
void int16_to_float(const std::int16_t* SER_EDGE_RESTRICT x, std::size_t n, float* SER_EDGE_RESTRICT out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i]) * (1.0f / 32768.0f);
}

SER_EDGE_MULTIVERSION
void double_to_float(const double* SER_EDGE_RESTRICT x, std::size_t n, float* SER_EDGE_RESTRICT out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i]);
}

}  // namespace ser_edge
