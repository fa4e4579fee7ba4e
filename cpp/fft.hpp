// Real FFT of a fixed power-of-two size, planned once.
//
// Method: the n real samples are packed into n/2 complex values, whose FFT is computed
// with a four-step decomposition (n/2 = rows x cols): FFTs down the columns, a twiddle
// multiply fused with a transpose, FFTs down the columns again. Each step runs radix-4/2
// Stockham stages whose innermost loop walks whole rows of contiguous floats, so the
// compiler vectorises it; a final pass splits the packed spectrum into the n/2+1 bins.
#pragma once

#include <cstddef>
#include <vector>

namespace ser_edge {

class RealFft {
public:
    static constexpr int kMinSize = 16;
    static constexpr int kMaxSize = 65536;
    static bool supported_size(int n);

    explicit RealFft(int n);

    int size() const { return n_; }
    int n_bins() const { return n_ / 2 + 1; }
    // Floats of scratch memory forward() needs.
    std::size_t workspace_size() const { return 4 * static_cast<std::size_t>(nc_); }

    // in: n real samples. out_re/out_im: n/2+1 bins each, X[k] = sum_t in[t] e^{-2 pi i k t / n}.
    // work: workspace_size() floats. Distinct calls may share one RealFft but not one workspace.
    void forward(const float* in, float* out_re, float* out_im, float* work) const;

    struct Stage {
        int radix;          // 4 or 2
        int length;         // transform length at this stage
        int stride;         // distance between butterfly inputs, in elements
        std::size_t twiddle;  // offset of this stage's twiddles
    };

private:
    int n_;
    int nc_;    // complex length n/2
    int rows_;
    int cols_;
    std::vector<Stage> row_stages_;  // length-rows_ FFTs, cols_ lanes each
    std::vector<Stage> col_stages_;  // length-cols_ FFTs, rows_ lanes each
    std::vector<float> stage_re_, stage_im_;
    std::vector<float> mid_re_, mid_im_;    // four-step twiddles W_nc^(k1 n2), [k1][n2]
    std::vector<float> post_re_, post_im_;  // e^{-2 pi i k / n}, k = 0..nc
};

}  // namespace ser_edge
