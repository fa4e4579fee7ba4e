#include "frame_processor.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "fastmath.hpp"
#include "simd.hpp"
#include "window.hpp"

namespace ser_edge {
namespace {

constexpr float kTenOverLn10 = 4.3429448190325182765f;  // 10 / ln(10)

SER_EDGE_MULTIVERSION
void apply_window(const float* SER_EDGE_RESTRICT frame, const float* SER_EDGE_RESTRICT window, int n,
                  float* SER_EDGE_RESTRICT out) {
    for (int i = 0; i < n; ++i) out[i] = frame[i] * window[i];
}

SER_EDGE_MULTIVERSION
void power_spectrum(const float* SER_EDGE_RESTRICT re, const float* SER_EDGE_RESTRICT im, int n,
                    float* SER_EDGE_RESTRICT power) {
    // An input far outside [-1, 1] can overflow the power; keep it finite so that the
    // zero weights of the mel bands cannot turn it into NaN (0 * inf).
    for (int k = 0; k < n; ++k) {
        const float p = re[k] * re[k] + im[k] * im[k];
        power[k] = p > FLT_MAX ? FLT_MAX : p;
    }
}

// out[i] = scale * ln(clamp(x[i], floor, FLT_MAX)); the upper clamp keeps an overflowed power finite.
SER_EDGE_MULTIVERSION
void scaled_log(const float* SER_EDGE_RESTRICT x, int n, float floor, float scale, float* SER_EDGE_RESTRICT out) {
    for (int i = 0; i < n; ++i) {
        // Written so that NaN (only reachable from absurd, overflowing input) takes the floor.
        float v = !(x[i] >= floor) ? floor : x[i];
        v = v > FLT_MAX ? FLT_MAX : v;
        out[i] = scale * fast_ln(v);
    }
}

// ln(clamp(mean of x^2, floor, FLT_MAX)): the energy of the prosody block, summed in double
// so that no finite input overflows.
float log_energy(const float* x, int n, float floor) {
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
    const double mean = sum / n;
    const float v = mean > FLT_MAX ? FLT_MAX : static_cast<float>(mean);
    return fast_ln(v >= floor ? v : floor);
}

}  // namespace

FrameProcessor::FrameProcessor(const FeatureConfig& config)
    : config_((config.validate(), config)), dim_(config.dim()), fft_(config.n_fft) {
    window_ = make_window(config_.window, config_.frame_length);
    const bool need_mel = config_.has_block("logmel") || config_.has_block("mfcc");
    if (need_mel) mel_ = std::make_unique<MelFilterbank>(config_);
    if (config_.has_block("mfcc")) {
        dct_ = std::make_unique<Dct>(config_.n_mels, config_.mfcc_include_c0 ? 0 : 1, config_.n_mfcc);
    }
    if (config_.has_block("prosody"))
        pitch_ = std::make_unique<YinPitch>(config_.sample_rate, config_.f0_min, config_.f0_max, config_.frame_length);
    spectral_ = config_.has_block("spectrogram") || need_mel;
    int at = 0;
    for (const auto& b : config_.blocks) {
        if (b == "spectrogram") spec_at_ = at;
        if (b == "logmel") logmel_at_ = at;
        if (b == "mfcc") mfcc_at_ = at;
        if (b == "prosody") prosody_at_ = at;
        at += config_.block_dim(b);
    }
    const int n_bins = config_.n_bins();
    padded_.assign(config_.n_fft, 0.0f);  // the tail past frame_length stays zero
    work_.resize(fft_.workspace_size());
    re_.resize(n_bins);
    im_.resize(n_bins);
    power_.assign(n_bins + MelFilterbank::kPad, 0.0f);  // the padded tail stays zero
    if (mel_) {
        energies_.resize(config_.n_mels);
        mel_partial_.resize(static_cast<std::size_t>(config_.n_mels) * MelFilterbank::kLanes);
        log_energies_.resize(config_.n_mels);
    }
}

void FrameProcessor::compute(const float* frame, float* out) {
    if (spectral_) compute_spectral(frame, out);
    if (pitch_) compute_prosody(frame, out + prosody_at_);
}

void FrameProcessor::compute_spectral(const float* frame, float* out) {
    const int n_bins = config_.n_bins();
    apply_window(frame, window_.data(), config_.frame_length, padded_.data());
    fft_.forward(padded_.data(), re_.data(), im_.data(), work_.data());
    power_spectrum(re_.data(), im_.data(), n_bins, power_.data());
    if (spec_at_ >= 0)
        scaled_log(power_.data(), n_bins, static_cast<float>(config_.power_floor), kTenOverLn10, out + spec_at_);
    if (mel_) {
        mel_->apply(power_.data(), energies_.data(), mel_partial_.data());
        float* log_mel = logmel_at_ >= 0 ? out + logmel_at_ : log_energies_.data();
        scaled_log(energies_.data(), config_.n_mels, static_cast<float>(config_.log_floor), 1.0f, log_mel);
        if (dct_) dct_->apply(log_mel, out + mfcc_at_);
    }
}

void FrameProcessor::compute_prosody(const float* frame, float* out) {
    const YinPitch::Estimate e = pitch_->estimate(frame);
    const double f0 = e.voiced ? config_.sample_rate / e.period : config_.f0_min;
    out[0] = static_cast<float>(std::log(f0));
    out[1] = static_cast<float>(e.voicing);
    out[2] = log_energy(frame, config_.frame_length, static_cast<float>(config_.log_floor));
}

void FrameProcessor::compute_frames(const float* signal, std::size_t n_frames, float* out) {
    const std::size_t hop = static_cast<std::size_t>(config_.hop_length);
    for (std::size_t i = 0; i < n_frames; ++i) compute(signal + i * hop, out + i * dim_);
}

}  // namespace ser_edge
