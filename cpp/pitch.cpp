#include "pitch.hpp"

#include <cmath>

#include "simd.hpp"

namespace ser_edge {
namespace {

// d[tau] for tau = 1..max_lag. The outer loop runs over the window, the inner one over the
// lags: each d[tau] is summed in the same order (j = 0, 1, ...) by every clone, and the
// inner loop vectorises across lags without reassociating any sum (measured faster than
// keeping blocks of lags in registers, which is bound by the latency of the adds).
SER_EDGE_MULTIVERSION
void difference(const float* SER_EDGE_RESTRICT x, int window, int max_lag, float* SER_EDGE_RESTRICT d) {
    for (int tau = 1; tau <= max_lag; ++tau) d[tau] = 0.0f;
    for (int j = 0; j < window; ++j) {
        const float xj = x[j];
        const float* SER_EDGE_RESTRICT shifted = x + j;
        for (int tau = 1; tau <= max_lag; ++tau) {
            const float e = xj - shifted[tau];
            d[tau] += e * e;
        }
    }
}

}  // namespace

int YinPitch::min_lag(int sample_rate, double f0_max) {
    return static_cast<int>(std::floor(sample_rate / f0_max));
}

int YinPitch::max_lag(int sample_rate, double f0_min) {
    return static_cast<int>(std::ceil(sample_rate / f0_min));
}

bool YinPitch::fits(int sample_rate, double f0_min, int frame_length) {
    // Compared in double: the lag of an absurdly low f0_min does not fit an int.
    return std::ceil(sample_rate / f0_min) <= frame_length / 2;
}

YinPitch::YinPitch(int sample_rate, double f0_min, double f0_max, int frame_length)
    : frame_length_(frame_length),
      tau_min_(min_lag(sample_rate, f0_max)),
      tau_max_(max_lag(sample_rate, f0_min)),
      scaled_(static_cast<std::size_t>(frame_length)),
      diff_(static_cast<std::size_t>(tau_max_) + 1, 0.0f),
      cmnd_(static_cast<std::size_t>(tau_max_) + 1, 1.0) {}

YinPitch::Estimate YinPitch::estimate(const float* frame) {
    const int L = frame_length_;
    float peak = 0.0f;
    for (int i = 0; i < L; ++i) peak = std::fmax(peak, std::fabs(frame[i]));
    int exponent = 0;
    std::frexp(peak, &exponent);  // peak = m * 2^exponent, m in [0.5, 1); exponent 0 for silence
    // In double: 2^-exponent overflows float for a subnormal peak. The products are exact
    // (up to the float rounding of those far below the peak).
    const double scale = std::ldexp(1.0, -exponent);
    for (int i = 0; i < L; ++i) scaled_[i] = static_cast<float>(frame[i] * scale);

    difference(scaled_.data(), L - tau_max_, tau_max_, diff_.data());

    double running = 0.0;
    for (int tau = 1; tau <= tau_max_; ++tau) {
        running += diff_[tau];
        if (tau >= tau_min_) cmnd_[tau] = running > 0.0 ? diff_[tau] * static_cast<double>(tau) / running : 1.0;
    }

    int tau = tau_min_;
    while (tau <= tau_max_ && !(cmnd_[tau] < kThreshold)) ++tau;
    const bool voiced = tau <= tau_max_;
    if (voiced) {
        while (tau < tau_max_ && cmnd_[tau + 1] < cmnd_[tau]) ++tau;
    } else {
        tau = tau_min_;
        for (int t = tau_min_ + 1; t <= tau_max_; ++t)
            if (cmnd_[t] < cmnd_[tau]) tau = t;
    }

    double shift = 0.0;
    if (tau > tau_min_ && tau < tau_max_) {
        const double a = cmnd_[tau + 1] + cmnd_[tau - 1] - 2.0 * cmnd_[tau];
        const double b = 0.5 * (cmnd_[tau + 1] - cmnd_[tau - 1]);
        if (std::fabs(b) < std::fabs(a)) shift = -b / a;
    }
    const double voicing = std::fmin(1.0, std::fmax(0.0, 1.0 - cmnd_[tau]));
    return {tau + shift, voicing, voiced};
}

}  // namespace ser_edge
