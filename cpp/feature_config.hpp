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
//   "prosody":     3 values from the raw (un-windowed) frame, see pitch.hpp for YIN:
//                  [0] ln F0 (F0 in Hz) of the YIN lag; ln(f0_min) when the frame is unvoiced
//                      (no lag's d' below 0.1: silence, noise); a voiced F0 may fall a little
//                      outside [f0_min, f0_max] through the sub-sample refinement;
//                  [1] voicing 1 - d'(tau) at the chosen lag, clipped to [0, 1]
//                      (1 = perfectly periodic), also for unvoiced frames;
//                  [2] ln(max(mean of x^2 over the frame, log_floor))
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
    double log_floor = 1e-10;     // floor on mel energies and prosody's frame energy before ln
    // Prosody's F0 search range, Hz. The lags sample_rate/f0_max .. sample_rate/f0_min and
    // YIN's integration window must fit the frame: frame_length >= 2 * ceil(sample_rate / f0_min),
    // hence 80 Hz (not lower) for 400-sample frames at 16 kHz.
    double f0_min = 80.0;
    double f0_max = 400.0;
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
