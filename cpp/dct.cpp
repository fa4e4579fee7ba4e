#include "dct.hpp"

#include <cmath>

#include "simd.hpp"

namespace ser_edge {

Dct::Dct(int n_in, int first_coef, int n_out) : n_in_(n_in), n_out_(n_out), stride_((n_out + 15) / 16 * 16) {
    basis_.assign(static_cast<std::size_t>(n_in) * stride_, 0.0f);
    const double pi = 3.141592653589793238462643383279;
    for (int c = 0; c < n_out; ++c) {
        const int k = first_coef + c;
        const double scale = std::sqrt((k == 0 ? 1.0 : 2.0) / n_in);
        for (int m = 0; m < n_in; ++m)
            basis_[static_cast<std::size_t>(m) * stride_ + c] =
                static_cast<float>(scale * std::cos(pi * k * (2.0 * m + 1.0) / (2.0 * n_in)));
    }
}

std::vector<float> Dct::matrix() const {
    std::vector<float> out(static_cast<std::size_t>(n_out_) * n_in_);
    for (int c = 0; c < n_out_; ++c)
        for (int m = 0; m < n_in_; ++m) out[static_cast<std::size_t>(c) * n_in_ + m] = basis_[m * stride_ + c];
    return out;
}

SER_EDGE_MULTIVERSION
void Dct::apply(const float* in, float* out, float* scratch) const {
    // Accumulate over inputs with the coefficients as the vector lanes: a fixed summation
    // order per coefficient, and no horizontal reductions.
    float* SER_EDGE_RESTRICT a = scratch;
    for (int c = 0; c < stride_; ++c) a[c] = 0.0f;
    for (int m = 0; m < n_in_; ++m) {
        const float x = in[m];
        const float* SER_EDGE_RESTRICT row = basis_.data() + static_cast<std::size_t>(m) * stride_;
        for (int c = 0; c < stride_; ++c) a[c] += row[c] * x;
    }
    for (int c = 0; c < n_out_; ++c) out[c] = a[c];
}

}  // namespace ser_edge
