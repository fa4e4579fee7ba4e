#include "fft.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "simd.hpp"

namespace ser_edge {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

int log2_exact(int n) {
    int b = 0;
    while ((1 << b) < n) ++b;
    return b;
}

// Plans Stockham stages for a length-n transform and appends their twiddles.
std::vector<RealFft::Stage> plan_stages(int n, std::vector<float>& tw_re, std::vector<float>& tw_im) {
    std::vector<RealFft::Stage> stages;
    int length = n;
    int stride = 1;
    while (length > 1) {
        const int radix = (length % 4 == 0) ? 4 : 2;
        const int m = length / radix;
        stages.push_back({radix, length, stride, tw_re.size()});
        for (int r = 1; r < radix; ++r) {
            for (int p = 0; p < m; ++p) {
                const double a = -kTwoPi * r * p / length;
                tw_re.push_back(static_cast<float>(std::cos(a)));
                tw_im.push_back(static_cast<float>(std::sin(a)));
            }
        }
        length /= radix;
        stride *= radix;
    }
    return stages;
}

// Radix-4 butterflies over `run` contiguous lanes. Every row gets its own restrict
// pointer: that is what lets the compiler vectorise the loop.
SER_EDGE_INLINE void radix4_rows(std::size_t run, const float* SER_EDGE_RESTRICT ar_, const float* SER_EDGE_RESTRICT ai_,
                                 const float* SER_EDGE_RESTRICT br_, const float* SER_EDGE_RESTRICT bi_,
                                 const float* SER_EDGE_RESTRICT cr_, const float* SER_EDGE_RESTRICT ci_,
                                 const float* SER_EDGE_RESTRICT dr_, const float* SER_EDGE_RESTRICT di_,
                                 float* SER_EDGE_RESTRICT y0r, float* SER_EDGE_RESTRICT y0i,
                                 float* SER_EDGE_RESTRICT y1r, float* SER_EDGE_RESTRICT y1i,
                                 float* SER_EDGE_RESTRICT y2r, float* SER_EDGE_RESTRICT y2i,
                                 float* SER_EDGE_RESTRICT y3r, float* SER_EDGE_RESTRICT y3i, float w1r, float w1i,
                                 float w2r, float w2i, float w3r, float w3i) {
    for (std::size_t t = 0; t < run; ++t) {
        const float ar = ar_[t], ai = ai_[t];
        const float br = br_[t], bi = bi_[t];
        const float cr = cr_[t], ci = ci_[t];
        const float dr = dr_[t], di = di_[t];
        const float apc_r = ar + cr, apc_i = ai + ci;
        const float amc_r = ar - cr, amc_i = ai - ci;
        const float bpd_r = br + dr, bpd_i = bi + di;
        // -i * (b - d)
        const float jbmd_r = bi - di, jbmd_i = dr - br;
        y0r[t] = apc_r + bpd_r;
        y0i[t] = apc_i + bpd_i;
        const float u1r = amc_r + jbmd_r, u1i = amc_i + jbmd_i;
        const float u2r = apc_r - bpd_r, u2i = apc_i - bpd_i;
        const float u3r = amc_r - jbmd_r, u3i = amc_i - jbmd_i;
        y1r[t] = u1r * w1r - u1i * w1i;
        y1i[t] = u1r * w1i + u1i * w1r;
        y2r[t] = u2r * w2r - u2i * w2i;
        y2i[t] = u2r * w2i + u2i * w2r;
        y3r[t] = u3r * w3r - u3i * w3i;
        y3i[t] = u3r * w3i + u3i * w3r;
    }
}

// One radix-4 decimation-in-frequency Stockham stage over elements of `lanes` floats:
// y[q + s(4p + r)] = W_n^(rp) * DFT4(x[q + s(p + j m)], j = 0..3)[r].
SER_EDGE_INLINE void radix4_stage(const RealFft::Stage& st, const float* twr, const float* twi, int lanes,
                                  const float* xr, const float* xi, float* yr, float* yi) {
    const int m = st.length / 4;
    const std::size_t run = static_cast<std::size_t>(st.stride) * lanes;
    for (int p = 0; p < m; ++p) {
        const std::size_t ia = run * p, ib = run * (p + m), ic = run * (p + 2 * m), id = run * (p + 3 * m);
        const std::size_t o0 = run * (4 * p), o1 = o0 + run, o2 = o1 + run, o3 = o2 + run;
        radix4_rows(run, xr + ia, xi + ia, xr + ib, xi + ib, xr + ic, xi + ic, xr + id, xi + id, yr + o0, yi + o0,
                    yr + o1, yi + o1, yr + o2, yi + o2, yr + o3, yi + o3, twr[p], twi[p], twr[m + p], twi[m + p],
                    twr[2 * m + p], twi[2 * m + p]);
    }
}

SER_EDGE_INLINE void radix2_stage(const RealFft::Stage& st, const float* twr, const float* twi, int lanes,
                                  const float* SER_EDGE_RESTRICT xr, const float* SER_EDGE_RESTRICT xi,
                                  float* SER_EDGE_RESTRICT yr, float* SER_EDGE_RESTRICT yi) {
    const int m = st.length / 2;
    const std::size_t run = static_cast<std::size_t>(st.stride) * lanes;
    for (int p = 0; p < m; ++p) {
        const float wr = twr[p], wi = twi[p];
        const std::size_t ia = run * p, ib = run * (p + m);
        const std::size_t o0 = run * (2 * p), o1 = o0 + run;
        for (std::size_t t = 0; t < run; ++t) {
            const float ar = xr[ia + t], ai = xi[ia + t];
            const float br = xr[ib + t], bi = xi[ib + t];
            yr[o0 + t] = ar + br;
            yi[o0 + t] = ai + bi;
            const float dr = ar - br, di = ai - bi;
            yr[o1 + t] = dr * wr - di * wi;
            yi[o1 + t] = dr * wi + di * wr;
        }
    }
}

// Runs all stages, ping-ponging between the two buffers; returns true when the result
// ended in (yr, yi).
SER_EDGE_INLINE bool run_stages(const std::vector<RealFft::Stage>& stages, const float* twr, const float* twi,
                                int lanes, float* xr, float* xi, float* yr, float* yi) {
    bool in_y = false;
    for (const auto& st : stages) {
        const float* sr = in_y ? yr : xr;
        const float* si = in_y ? yi : xi;
        float* dr = in_y ? xr : yr;
        float* di = in_y ? xi : yi;
        if (st.radix == 4)
            radix4_stage(st, twr + st.twiddle, twi + st.twiddle, lanes, sr, si, dr, di);
        else
            radix2_stage(st, twr + st.twiddle, twi + st.twiddle, lanes, sr, si, dr, di);
        in_y = !in_y;
    }
    return in_y;
}

// z[j] = in[2j] + i in[2j+1]
SER_EDGE_INLINE void pack(int nc, const float* SER_EDGE_RESTRICT in, float* SER_EDGE_RESTRICT zr,
                          float* SER_EDGE_RESTRICT zi) {
    for (int j = 0; j < nc; ++j) {
        zr[j] = in[2 * j];
        zi[j] = in[2 * j + 1];
    }
}

#if defined(__clang__)
#define SER_EDGE_SHUFFLE(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
typedef int v4i __attribute__((vector_size(16)));
#define SER_EDGE_SHUFFLE(a, b, i, j, k, l) __builtin_shuffle(a, b, v4i{i, j, k, l})
#endif

// Writes the transpose of the 4 x 4 block held in rows a..d to z (row stride ld).
SER_EDGE_INLINE void store_transposed4(v4f a, v4f b, v4f c, v4f d, float* z, int ld) {
    const v4f t0 = SER_EDGE_SHUFFLE(a, b, 0, 4, 1, 5), t1 = SER_EDGE_SHUFFLE(a, b, 2, 6, 3, 7);
    const v4f t2 = SER_EDGE_SHUFFLE(c, d, 0, 4, 1, 5), t3 = SER_EDGE_SHUFFLE(c, d, 2, 6, 3, 7);
    store_v(z, SER_EDGE_SHUFFLE(t0, t2, 0, 1, 4, 5));
    store_v(z + ld, SER_EDGE_SHUFFLE(t0, t2, 2, 3, 6, 7));
    store_v(z + 2 * ld, SER_EDGE_SHUFFLE(t1, t3, 0, 1, 4, 5));
    store_v(z + 3 * ld, SER_EDGE_SHUFFLE(t1, t3, 2, 3, 6, 7));
}

// z[n2][k1] = y[k1][n2] * w[k1][n2] for y of R rows and C columns. Works on 4 x 4 blocks
// in registers where the sizes allow; the transpose is the one strided step of the FFT.
SER_EDGE_INLINE void twiddle_transpose(int R, int C, const float* SER_EDGE_RESTRICT yr,
                                       const float* SER_EDGE_RESTRICT yi, const float* SER_EDGE_RESTRICT wr,
                                       const float* SER_EDGE_RESTRICT wi, float* SER_EDGE_RESTRICT zr,
                                       float* SER_EDGE_RESTRICT zi) {
    if (R % 4 == 0 && C % 4 == 0) {
        for (int i = 0; i < R; i += 4) {
            for (int j = 0; j < C; j += 4) {
                v4f re[4], im[4];
                for (int r = 0; r < 4; ++r) {
                    const int at = (i + r) * C + j;
                    const v4f vr = load_v<v4f>(yr + at), vi = load_v<v4f>(yi + at);
                    const v4f tr = load_v<v4f>(wr + at), ti = load_v<v4f>(wi + at);
                    re[r] = vr * tr - vi * ti;
                    im[r] = vr * ti + vi * tr;
                }
                store_transposed4(re[0], re[1], re[2], re[3], zr + j * R + i, R);
                store_transposed4(im[0], im[1], im[2], im[3], zi + j * R + i, R);
            }
        }
        return;
    }
    for (int k1 = 0; k1 < R; ++k1) {
        for (int n2 = 0; n2 < C; ++n2) {
            const int at = k1 * C + n2;
            const float vr = yr[at], vi = yi[at];
            zr[n2 * R + k1] = vr * wr[at] - vi * wi[at];
            zi[n2 * R + k1] = vr * wi[at] + vi * wr[at];
        }
    }
}

// Splits the packed spectrum Z of nc points into the nc+1 bins of the real input:
// X[k] = E[k] + W_n^k O[k], E = (Z[k] + conj Z[nc-k]) / 2, O = (Z[k] - conj Z[nc-k]) / 2i.
// The mirrored half is first copied out in reverse so that the main loop runs forwards.
SER_EDGE_INLINE void split_spectrum(int nc, const float* SER_EDGE_RESTRICT zr, const float* SER_EDGE_RESTRICT zi,
                                    const float* SER_EDGE_RESTRICT pr, const float* SER_EDGE_RESTRICT pi,
                                    float* SER_EDGE_RESTRICT mr, float* SER_EDGE_RESTRICT mi,
                                    float* SER_EDGE_RESTRICT out_re, float* SER_EDGE_RESTRICT out_im) {
    for (int k = 1; k < nc; ++k) {
        mr[k] = zr[nc - k];
        mi[k] = zi[nc - k];
    }
    out_re[0] = zr[0] + zi[0];
    out_im[0] = 0.0f;
    out_re[nc] = zr[0] - zi[0];
    out_im[nc] = 0.0f;
    for (int k = 1; k < nc; ++k) {
        const float a_r = zr[k], a_i = zi[k];
        const float b_r = mr[k], b_i = -mi[k];
        const float er = 0.5f * (a_r + b_r), ei = 0.5f * (a_i + b_i);
        const float o_r = 0.5f * (a_i - b_i), o_i = -0.5f * (a_r - b_r);
        out_re[k] = er + (pr[k] * o_r - pi[k] * o_i);
        out_im[k] = ei + (pr[k] * o_i + pi[k] * o_r);
    }
}

}  // namespace

bool RealFft::supported_size(int n) {
    return n >= kMinSize && n <= kMaxSize && (n & (n - 1)) == 0;
}

RealFft::RealFft(int n) : n_(n), nc_(n / 2) {
    if (!supported_size(n))
        throw std::invalid_argument("RealFft: size must be a power of two from " + std::to_string(kMinSize) +
                                    " to " + std::to_string(kMaxSize) + ", got " + std::to_string(n));
    const int bits = log2_exact(nc_);
    cols_ = 1 << (bits / 2);
    rows_ = nc_ / cols_;
    row_stages_ = plan_stages(rows_, stage_re_, stage_im_);
    col_stages_ = plan_stages(cols_, stage_re_, stage_im_);

    mid_re_.resize(nc_);
    mid_im_.resize(nc_);
    for (int n2 = 0; n2 < cols_; ++n2) {
        for (int k1 = 0; k1 < rows_; ++k1) {
            const double a = -kTwoPi * static_cast<double>(k1) * n2 / nc_;
            mid_re_[k1 * cols_ + n2] = static_cast<float>(std::cos(a));
            mid_im_[k1 * cols_ + n2] = static_cast<float>(std::sin(a));
        }
    }
    post_re_.resize(nc_ + 1);
    post_im_.resize(nc_ + 1);
    for (int k = 0; k <= nc_; ++k) {
        const double a = -kTwoPi * k / n_;
        post_re_[k] = static_cast<float>(std::cos(a));
        post_im_[k] = static_cast<float>(std::sin(a));
    }
}

SER_EDGE_MULTIVERSION
void RealFft::forward(const float* in, float* out_re, float* out_im, float* work) const {
    const int nc = nc_, R = rows_, C = cols_;
    float* ar = work;
    float* ai = work + nc;
    float* br = work + 2 * nc;
    float* bi = work + 3 * nc;

    pack(nc, in, ar, ai);  // rows x cols, row-major
    // Step 1: length-R FFTs down each of the C columns.
    if (run_stages(row_stages_, stage_re_.data(), stage_im_.data(), C, ar, ai, br, bi)) {
        std::swap(ar, br);
        std::swap(ai, bi);
    }
    // Step 2: z[n2][k1] = y[k1][n2] W_nc^(k1 n2), into the free buffer.
    twiddle_transpose(R, C, ar, ai, mid_re_.data(), mid_im_.data(), br, bi);
    // Step 3: length-C FFTs down each of the R columns; X[k1 + R k2] lands at row k2, column k1.
    if (run_stages(col_stages_, stage_re_.data(), stage_im_.data(), R, br, bi, ar, ai)) {
        std::swap(ar, br);
        std::swap(ai, bi);
    }
    // The spectrum is in (br, bi); (ar, ai) is free for the mirrored copy.
    split_spectrum(nc, br, bi, post_re_.data(), post_im_.data(), ar, ai, out_re, out_im);
}

}  // namespace ser_edge
