// Orthonormal DCT-II as a precomputed matrix (only the coefficients kept).
#pragma once

#include <vector>

namespace ser_edge {

class Dct {
public:
    // Coefficients first_coef .. first_coef + n_out - 1 of the orthonormal DCT-II of n_in values
    // (scipy.fft.dct(x, type=2, norm="ortho")).
    Dct(int n_in, int first_coef, int n_out);

    int n_in() const { return n_in_; }
    int n_out() const { return n_out_; }
    // Row-major [n_out x n_in] (for inspection and tests).
    std::vector<float> matrix() const;

    void apply(const float* in, float* out) const;

private:
    static constexpr int kBlock = 16;  // coefficients per register block
    int n_in_;
    int n_out_;
    int stride_;                 // n_out rounded up so the inner loop is whole vectors
    std::vector<float> basis_;   // [n_in x stride_]: basis_[m * stride_ + c]
};

}  // namespace ser_edge
