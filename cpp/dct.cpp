#include "dct.hpp"

#include <cmath>

#include "simd.hpp"

namespace ser_edge {

Dct::Dct(int n_in, int first_coef, int n_out) : n_in_(n_in), n_out_(n_out), stride_((n_out + kBlock - 1) / kBlock * kBlock) {
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
void Dct::apply(const float* in, float* out) const {
    // Coefficients are the vector lanes, accumulated in registers: no horizontal
    // reductions. Two partial sums (even and odd inputs) halve the chain of dependent
    // additions; the summation order is still fixed.
    for (int c0 = 0; c0 < stride_; c0 += kBlock) {
        v16f even = {}, odd = {};
        const float* SER_EDGE_RESTRICT row = basis_.data() + c0;
        int m = 0;
        for (; m + 1 < n_in_; m += 2, row += 2 * stride_) {
            even += load_v<v16f>(row) * in[m];
            odd += load_v<v16f>(row + stride_) * in[m + 1];
        }
        if (m < n_in_) even += load_v<v16f>(row) * in[m];
        float sum[kBlock];
        store_v(sum, even + odd);
        for (int j = 0; j < kBlock && c0 + j < n_out_; ++j) out[c0 + j] = sum[j];
    }
}

}  // namespace ser_edge
