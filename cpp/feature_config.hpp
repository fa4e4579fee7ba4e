// FeatureConfig: the one definition of the features a model is trained on and run with.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ser_edge {

// Output blocks, concatenated per frame in the order they are listed.
//   "spectrogram": 10*log10(max(P, power_floor)) for the n_fft/2+1 power bins (dB)
//   "logmel":      ln(max(E_m, log_floor)) for the n_mels mel energies
//   "mfcc":        orthonormal DCT-II of the log-mel vector, n_mfcc coefficients
//                  starting at c1 (or c0 when mfcc_include_c0)
struct FeatureConfig {
    static constexpr int kMaxMels = 4096;

    int sample_rate = 16000;      // Hz
    int frame_length = 400;       // samples per frame (25 ms)
    int hop_length = 160;         // samples between frame starts (10 ms)
    int n_fft = 512;              // FFT size; the windowed frame is zero-padded to it
    std::string window = "hamming";   // "hamming" | "hann" (both symmetric)
    int n_mels = 40;
    double fmin = 0.0;            // Hz
    double fmax = 8000.0;         // Hz, at most sample_rate / 2
    std::string mel_scale = "htk";    // "htk" | "slaney"
    std::string mel_norm = "none";    // "none" | "slaney" (area normalisation)
    int n_mfcc = 13;
    bool mfcc_include_c0 = false;
    double power_floor = 1e-10;   // floor on the power spectrum before dB
    double log_floor = 1e-10;     // floor on mel energies before ln
    std::vector<std::string> blocks = {"spectrogram", "mfcc"};

    // Throws std::invalid_argument naming the first bad field.
    void validate() const;

    int n_bins() const { return n_fft / 2 + 1; }
    int block_dim(const std::string& block) const;
    int dim() const;   // values per frame
    bool has_block(const std::string& block) const;

    // Number of complete frames in n samples: max(0, 1 + (n - frame_length) / hop_length).
    std::size_t num_frames(std::size_t n_samples) const;

    // Named presets: "seed" (spectrogram + mfcc, the default), "logmel", "mfcc".
    static FeatureConfig preset(const std::string& name);

    bool operator==(const FeatureConfig& other) const;
    bool operator!=(const FeatureConfig& other) const { return !(*this == other); }
};

}  // namespace ser_edge
