// Sample formats accepted at the edge of the core.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ser_edge {

// Index of the first NaN or infinite sample, or n when all are finite.
std::size_t first_non_finite(const float* x, std::size_t n);

// int16 PCM to float: x / 32768, so -32768 maps to -1.0 and 32767 to 32767/32768.
void int16_to_float(const std::int16_t* x, std::size_t n, float* out);

void double_to_float(const double* x, std::size_t n, float* out);

}  // namespace ser_edge
