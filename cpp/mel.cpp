#include "mel.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "simd.hpp"

namespace ser_edge {

double hz_to_mel(double hz, const std::string& scale) {
    if (scale == "htk") return 2595.0 * std::log10(1.0 + hz / 700.0);
    // Slaney: linear below 1 kHz, logarithmic above.
    const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = std::log(6.4) / 27.0;
    if (hz >= min_log_hz) return min_log_mel + std::log(hz / min_log_hz) / logstep;
    return hz / f_sp;
}

double mel_to_hz(double mel, const std::string& scale) {
    if (scale == "htk") return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
    const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = std::log(6.4) / 27.0;
    if (mel >= min_log_mel) return min_log_hz * std::exp(logstep * (mel - min_log_mel));
    return f_sp * mel;
}

MelFilterbank::MelFilterbank(const FeatureConfig& c) : n_mels_(c.n_mels), n_bins_(c.n_bins()) {
    const int n_points = n_mels_ + 2;
    const double mel_lo = hz_to_mel(c.fmin, c.mel_scale), mel_hi = hz_to_mel(c.fmax, c.mel_scale);
    std::vector<double> edges(n_points);
    for (int i = 0; i < n_points; ++i)
        edges[i] = mel_to_hz(mel_lo + (mel_hi - mel_lo) * i / (n_points - 1), c.mel_scale);

    std::vector<double> bin_hz(n_bins_);
    for (int k = 0; k < n_bins_; ++k) bin_hz[k] = static_cast<double>(k) * c.sample_rate / c.n_fft;

    start_.resize(n_mels_);
    offset_.resize(n_mels_);
    blocks_.resize(n_mels_);
    for (int m = 0; m < n_mels_; ++m) {
        const double lo = edges[m], mid = edges[m + 1], hi = edges[m + 2];
        const double scale = (c.mel_norm == "slaney") ? 2.0 / (hi - lo) : 1.0;
        std::vector<double> row(n_bins_);
        int first = n_bins_, last = -1;
        for (int k = 0; k < n_bins_; ++k) {
            const double up = (bin_hz[k] - lo) / (mid - lo);
            const double down = (hi - bin_hz[k]) / (hi - mid);
            row[k] = std::max(0.0, std::min(up, down)) * scale;
            if (row[k] > 0.0) {
                first = std::min(first, k);
                last = k;
            }
        }
        // A filter narrower than one bin has no weight: it outputs the floor, as librosa's does.
        if (last < 0) first = last = 0;
        const int len = last - first + 1;
        const int nblk = (len + kLanes - 1) / kLanes;
        start_[m] = first;
        offset_[m] = static_cast<int>(weights_.size());
        blocks_[m] = nblk;
        for (int j = 0; j < nblk * kLanes; ++j) {
            const int k = first + j;
            weights_.push_back((k <= last && k < n_bins_) ? static_cast<float>(row[k]) : 0.0f);
        }
    }
}

std::vector<float> MelFilterbank::dense() const {
    std::vector<float> out(static_cast<std::size_t>(n_mels_) * n_bins_, 0.0f);
    for (int m = 0; m < n_mels_; ++m)
        for (int j = 0; j < blocks_[m] * kLanes; ++j) {
            const int k = start_[m] + j;
            if (k < n_bins_) out[static_cast<std::size_t>(m) * n_bins_ + k] = weights_[offset_[m] + j];
        }
    return out;
}

namespace {

SER_EDGE_INLINE void reduce_lanes(const float* SER_EDGE_RESTRICT partial, int n, float* SER_EDGE_RESTRICT out) {
    constexpr int L = MelFilterbank::kLanes;
    static_assert(L == 8, "the reduction tree below is written for 8 lanes");
    for (int m = 0; m < n; ++m) {
        const float* a = partial + m * L;
        out[m] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
}

}  // namespace

SER_EDGE_MULTIVERSION
void MelFilterbank::apply(const float* power, float* energies, float* partial) const {
    // Each band accumulates kLanes partial sums; the final reductions run as a second pass
    // over all bands, where they vectorise across bands instead of one band at a time.
    for (int m = 0; m < n_mels_; ++m) {
        const float* SER_EDGE_RESTRICT w = weights_.data() + offset_[m];
        const float* SER_EDGE_RESTRICT p = power + start_[m];
        v8f acc = {};
        for (int b = 0; b < blocks_[m]; ++b) acc += load_v<v8f>(w + b * kLanes) * load_v<v8f>(p + b * kLanes);
        store_v(partial + m * kLanes, acc);
    }
    reduce_lanes(partial, n_mels_, energies);
}

}  // namespace ser_edge
