// Triangular mel filterbank, stored as one band of non-zero weights per filter.
#pragma once

#include <vector>

#include "feature_config.hpp"

namespace ser_edge {

double hz_to_mel(double hz, const std::string& scale);
double mel_to_hz(double mel, const std::string& scale);

class MelFilterbank {
public:
    // Weights follow librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=(scale == "htk"),
    // norm=(None | "slaney")): computed in double, stored as float.
    explicit MelFilterbank(const FeatureConfig& config);

    int n_mels() const { return n_mels_; }
    int n_bins() const { return n_bins_; }
    // Dense [n_mels x n_bins] matrix, row-major (for inspection and tests).
    std::vector<float> dense() const;

    // Reads n_bins() + kPad floats of power (the caller keeps the kPad tail at zero) and
    // writes the n_mels energies. partial: scratch of n_mels() * kLanes floats.
    void apply(const float* power, float* energies, float* partial) const;

    static constexpr int kLanes = 8;  // partial sums per filter (one v8f); fixed, so the summation order is too
    static constexpr int kPad = kLanes;

private:
    int n_mels_;
    int n_bins_;
    std::vector<int> start_;          // first bin of each band
    std::vector<int> offset_;         // offset of each band's weights in weights_
    std::vector<int> blocks_;         // band length in units of kLanes
    std::vector<float> weights_;      // bands, zero-padded to whole blocks
};

}  // namespace ser_edge
