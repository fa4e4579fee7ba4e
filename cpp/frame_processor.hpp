// Turns one frame of samples into one feature vector; the only per-frame code path, shared by
// one-shot extraction and streaming so that chunking cannot change a bit.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "dct.hpp"
#include "feature_config.hpp"
#include "fft.hpp"
#include "mel.hpp"
#include "pitch.hpp"

namespace ser_edge {

class FrameProcessor {
public:
    explicit FrameProcessor(const FeatureConfig& config);  // validates config

    const FeatureConfig& config() const { return config_; }
    int dim() const { return dim_; }

    // frame: frame_length samples. out: dim() floats.
    void compute(const float* frame, float* out);
    // n_frames frames starting every hop_length samples from signal; out: n_frames rows of dim().
    void compute_frames(const float* signal, std::size_t n_frames, float* out);

private:
    void compute_spectral(const float* frame, float* out);  // spectrogram, logmel, mfcc
    void compute_prosody(const float* frame, float* out);   // the 3 prosody values

    FeatureConfig config_;
    int dim_;
    RealFft fft_;
    std::vector<float> window_;
    std::unique_ptr<MelFilterbank> mel_;
    std::unique_ptr<Dct> dct_;
    std::unique_ptr<YinPitch> pitch_;
    bool spectral_ = false;  // some block needs the power spectrum
    // Where each block starts in the output vector, -1 when disabled.
    int spec_at_ = -1, logmel_at_ = -1, mfcc_at_ = -1, prosody_at_ = -1;

    // Scratch, reused for every frame.
    std::vector<float> padded_, work_, re_, im_, power_, energies_, log_energies_, mel_partial_;
};

}  // namespace ser_edge
