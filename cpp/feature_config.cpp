#include "feature_config.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "fft.hpp"

namespace ser_edge {
namespace {

const char* const kBlocks[] = {"spectrogram", "logmel", "mfcc"};

[[noreturn]] void bad(const std::string& field, const std::string& why) {
    throw std::invalid_argument("FeatureConfig." + field + ": " + why);
}

bool is_known_block(const std::string& b) {
    return std::find(std::begin(kBlocks), std::end(kBlocks), b) != std::end(kBlocks);
}

}  // namespace

void FeatureConfig::validate() const {
    if (sample_rate <= 0) bad("sample_rate", "must be > 0 Hz, got " + std::to_string(sample_rate));
    if (frame_length <= 0) bad("frame_length", "must be > 0 samples, got " + std::to_string(frame_length));
    if (hop_length <= 0) bad("hop_length", "must be > 0 samples, got " + std::to_string(hop_length));
    if (hop_length > frame_length)
        bad("hop_length", "must be <= frame_length (" + std::to_string(frame_length) +
                              "), got " + std::to_string(hop_length));
    if (!RealFft::supported_size(n_fft))
        bad("n_fft", "must be a power of two from " + std::to_string(RealFft::kMinSize) + " to " +
                         std::to_string(RealFft::kMaxSize) + ", got " + std::to_string(n_fft));
    if (frame_length > n_fft)
        bad("frame_length", "must be <= n_fft (" + std::to_string(n_fft) + "), got " +
                                std::to_string(frame_length));
    if (window != "hamming" && window != "hann")
        bad("window", "must be 'hamming' or 'hann', got '" + window + "'");
    if (mel_scale != "htk" && mel_scale != "slaney")
        bad("mel_scale", "must be 'htk' or 'slaney', got '" + mel_scale + "'");
    if (mel_norm != "none" && mel_norm != "slaney")
        bad("mel_norm", "must be 'none' or 'slaney', got '" + mel_norm + "'");
    if (!(fmin >= 0.0)) bad("fmin", "must be >= 0 Hz, got " + std::to_string(fmin));
    if (!(fmax > fmin)) bad("fmax", "must be > fmin (" + std::to_string(fmin) + " Hz), got " + std::to_string(fmax));
    if (fmax > sample_rate / 2.0)
        bad("fmax", "must be <= sample_rate / 2 (" + std::to_string(sample_rate / 2.0) + " Hz), got " +
                        std::to_string(fmax));
    if (!(power_floor > 0.0)) bad("power_floor", "must be > 0");
    if (!(log_floor > 0.0)) bad("log_floor", "must be > 0");
    if (blocks.empty()) bad("blocks", "no block enabled; choose from spectrogram, logmel, mfcc");
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        if (!is_known_block(blocks[i]))
            bad("blocks", "unknown block '" + blocks[i] + "'; choose from spectrogram, logmel, mfcc");
        for (std::size_t j = 0; j < i; ++j)
            if (blocks[j] == blocks[i]) bad("blocks", "block '" + blocks[i] + "' listed twice");
    }
    if (has_block("logmel") || has_block("mfcc")) {
        if (n_mels <= 0) bad("n_mels", "must be > 0, got " + std::to_string(n_mels));
    }
    if (has_block("mfcc")) {
        const int available = mfcc_include_c0 ? n_mels : n_mels - 1;
        if (n_mfcc <= 0 || n_mfcc > available)
            bad("n_mfcc", "must be in 1.." + std::to_string(available) + " for n_mels=" +
                              std::to_string(n_mels) + ", got " + std::to_string(n_mfcc));
    }
}

bool FeatureConfig::has_block(const std::string& block) const {
    return std::find(blocks.begin(), blocks.end(), block) != blocks.end();
}

int FeatureConfig::block_dim(const std::string& block) const {
    if (block == "spectrogram") return n_bins();
    if (block == "logmel") return n_mels;
    if (block == "mfcc") return n_mfcc;
    throw std::invalid_argument("unknown block '" + block + "'");
}

int FeatureConfig::dim() const {
    int d = 0;
    for (const auto& b : blocks) d += block_dim(b);
    return d;
}

std::size_t FeatureConfig::num_frames(std::size_t n_samples) const {
    const auto L = static_cast<std::size_t>(frame_length);
    if (n_samples < L) return 0;
    return 1 + (n_samples - L) / static_cast<std::size_t>(hop_length);
}

FeatureConfig FeatureConfig::preset(const std::string& name) {
    FeatureConfig c;
    if (name == "seed") return c;
    if (name == "logmel") {
        c.blocks = {"logmel"};
        return c;
    }
    if (name == "mfcc") {
        c.blocks = {"mfcc"};
        return c;
    }
    throw std::invalid_argument("unknown FeatureConfig preset '" + name + "'; choose from seed, logmel, mfcc");
}

bool FeatureConfig::operator==(const FeatureConfig& o) const {
    return sample_rate == o.sample_rate && frame_length == o.frame_length &&
           hop_length == o.hop_length && n_fft == o.n_fft && window == o.window &&
           n_mels == o.n_mels && fmin == o.fmin && fmax == o.fmax && mel_scale == o.mel_scale &&
           mel_norm == o.mel_norm && n_mfcc == o.n_mfcc && mfcc_include_c0 == o.mfcc_include_c0 &&
           power_floor == o.power_floor && log_floor == o.log_floor && blocks == o.blocks;
}

}  // namespace ser_edge
