// YIN fundamental-frequency estimation of one frame (de Cheveigné & Kawahara, JASA 2002).
//
// Over a frame x[0..L) and lags tau in [tau_min, tau_max]:
//   tau_min = floor(sample_rate / f0_max), tau_max = ceil(sample_rate / f0_min);
//   integration window W = L - tau_max (the config requires W >= tau_max, so the window
//   holds at least one period of f0_min and every lag reads inside the frame);
//   d(tau)  = sum_{j=0}^{W-1} (x[j] - x[j+tau])^2;
//   d'(tau) = d(tau) * tau / sum_{k=1}^{tau} d(k), and 1 where that sum is 0 (silence);
//   the chosen lag is the first tau with d'(tau) < kThreshold, followed down to the local
//   minimum it leads to (voiced); when no lag falls below the threshold, the first global
//   minimum of d' (unvoiced);
//   the lag is refined by a parabola through d' at tau-1, tau, tau+1 (only for interior
//   lags, and only when the vertex lies within half a lag), as librosa.yin does.
// The frame is scaled by a power of two first, so the estimate is the same for every
// gain that is a power of two and cannot overflow for any finite input.
#pragma once

#include <vector>

namespace ser_edge {

class YinPitch {
public:
    static constexpr double kThreshold = 0.1;  // librosa.yin's trough_threshold default

    // Lags of the search range for frequencies in [f0_min, f0_max] Hz.
    static int min_lag(int sample_rate, double f0_max);
    static int max_lag(int sample_rate, double f0_min);
    // Whether the lags and the integration window fit a frame: frame_length >= 2 * max_lag.
    static bool fits(int sample_rate, double f0_min, int frame_length);

    // Requires fits() and 0 < f0_min < f0_max <= sample_rate / 2 (FeatureConfig::validate checks them).
    YinPitch(int sample_rate, double f0_min, double f0_max, int frame_length);

    struct Estimate {
        double period;   // samples, the refined lag; f0 = sample_rate / period
        double voicing;  // 1 - d'(tau) at the chosen integer lag, clipped to [0, 1]
        bool voiced;     // some lag's d' fell below kThreshold
    };
    // frame: frame_length samples, not windowed.
    Estimate estimate(const float* frame);

    int tau_min() const { return tau_min_; }
    int tau_max() const { return tau_max_; }

private:
    int frame_length_;
    int tau_min_, tau_max_;
    std::vector<float> scaled_;  // the frame scaled to a peak in [0.5, 1)
    std::vector<float> diff_;    // d(tau), tau = 0..tau_max
    std::vector<double> cmnd_;   // d'(tau), tau = 0..tau_max (read on [tau_min, tau_max])
};

}  // namespace ser_edge
