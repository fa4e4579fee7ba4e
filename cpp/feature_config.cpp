#include "feature_config.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "fft.hpp"
#include "pitch.hpp"

namespace ser_edge {
namespace {

const char* const kBlocks[] = {"spectrogram", "logmel", "mfcc", "prosody"};

[[noreturn]] void bad(const std::string& field, const std::string& why) {
    throw std::invalid_argument("FeatureConfig." + field + ": " + why);
}

// Shortest round-trip form of a number, for messages ("4000", "1e-45").
std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
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
    if (!(fmin >= 0.0)) bad("fmin", "must be >= 0 Hz, got " + num(fmin));
    if (!(fmax > fmin)) bad("fmax", "must be > fmin (" + num(fmin) + " Hz), got " + num(fmax));
    if (fmax > sample_rate / 2.0)
        bad("fmax", "must be <= sample_rate / 2 (" + num(sample_rate / 2.0) + " Hz), got " + num(fmax));
    // The floors are applied in float32 and must be normal numbers there.
    if (!(power_floor >= FLT_MIN && power_floor <= FLT_MAX))
        bad("power_floor", "must be a normal float32 in [1.2e-38, 3.4e38], got " + num(power_floor));
    if (!(log_floor >= FLT_MIN && log_floor <= FLT_MAX))
        bad("log_floor", "must be a normal float32 in [1.2e-38, 3.4e38], got " + num(log_floor));
    if (!(f0_min > 0.0)) bad("f0_min", "must be > 0 Hz, got " + num(f0_min));
    if (!(f0_max > f0_min)) bad("f0_max", "must be > f0_min (" + num(f0_min) + " Hz), got " + num(f0_max));
    if (f0_max > sample_rate / 2.0)
        bad("f0_max", "must be <= sample_rate / 2 (" + num(sample_rate / 2.0) + " Hz), got " + num(f0_max));
    if (n_mels < 1 || n_mels > kMaxMels)
        bad("n_mels", "must be in 1.." + std::to_string(kMaxMels) + ", got " + std::to_string(n_mels));
    if (blocks.empty()) bad("blocks", "no block enabled; choose from spectrogram, logmel, mfcc, prosody");
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        if (!is_known_block(blocks[i]))
            bad("blocks", "unknown block '" + blocks[i] + "'; choose from spectrogram, logmel, mfcc, prosody");
        for (std::size_t j = 0; j < i; ++j)
            if (blocks[j] == blocks[i]) bad("blocks", "block '" + blocks[i] + "' listed twice");
    }
    if (has_block("mfcc")) {
        const int available = mfcc_include_c0 ? n_mels : n_mels - 1;
        if (available < 1) bad("n_mels", "must be >= 2 for MFCC without c0, got " + std::to_string(n_mels));
        if (n_mfcc <= 0 || n_mfcc > available)
            bad("n_mfcc", "must be in 1.." + std::to_string(available) + " for n_mels=" +
                              std::to_string(n_mels) + ", got " + std::to_string(n_mfcc));
    }
    if (has_block("prosody") && !YinPitch::fits(sample_rate, f0_min, frame_length)) {
        const int half = frame_length / 2;
        bad("f0_min", "must be >= " + num(half > 0 ? sample_rate / static_cast<double>(half) : HUGE_VAL) +
                          " Hz for the prosody block with frame_length=" + std::to_string(frame_length) + " at " +
                          std::to_string(sample_rate) +
                          " Hz (YIN needs frame_length >= 2 * ceil(sample_rate / f0_min): the lag range plus an "
                          "integration window as long); raise f0_min or use frame_length >= " +
                          num(2.0 * std::ceil(sample_rate / f0_min)) + ", got " + num(f0_min));
    }
}

bool FeatureConfig::has_block(const std::string& block) const {
    return std::find(blocks.begin(), blocks.end(), block) != blocks.end();
}

int FeatureConfig::block_dim(const std::string& block) const {
    if (block == "spectrogram") return n_bins();
    if (block == "logmel") return n_mels;
    if (block == "mfcc") return n_mfcc;
    if (block == "prosody") return 3;
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
           power_floor == o.power_floor && log_floor == o.log_floor && f0_min == o.f0_min &&
           f0_max == o.f0_max && blocks == o.blocks;
}

}  // namespace ser_edge
