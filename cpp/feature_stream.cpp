#include "feature_stream.hpp"

#include <algorithm>

namespace ser_edge {

FeatureStream::FeatureStream(const FeatureConfig& config) : processor_(config) {
    buffer_.reserve(static_cast<std::size_t>(config.frame_length));
    joined_.resize(static_cast<std::size_t>(config.frame_length));
}

std::size_t FeatureStream::frames_after(std::size_t n_samples) const {
    return config().num_frames(buffer_.size() + n_samples);
}

std::size_t FeatureStream::accept(const float* samples, std::size_t n, float* out) {
    const auto L = static_cast<std::size_t>(config().frame_length);
    const auto hop = static_cast<std::size_t>(config().hop_length);
    const std::size_t held = buffer_.size();
    const std::size_t n_frames = frames_after(n);
    const int dim = processor_.dim();

    std::size_t i = 0;
    // Frames that begin in the buffer and end in the new chunk.
    for (; i < n_frames && i * hop < held; ++i) {
        const std::size_t start = i * hop;
        const std::size_t from_buffer = held - start;
        std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(start), buffer_.end(), joined_.begin());
        std::copy(samples, samples + (L - from_buffer), joined_.begin() + static_cast<std::ptrdiff_t>(from_buffer));
        processor_.compute(joined_.data(), out + i * dim);
    }
    // Frames wholly inside the new chunk are read in place.
    if (i < n_frames) processor_.compute_frames(samples + (i * hop - held), n_frames - i, out + i * dim);

    // Keep the samples from the next frame's start onward (fewer than L: hop <= L).
    const std::size_t next = n_frames * hop;
    if (next < held) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(next));
        buffer_.insert(buffer_.end(), samples, samples + n);
    } else {
        buffer_.assign(samples + (next - held), samples + n);
    }
    frames_emitted_ += n_frames;
    samples_accepted_ += n;
    return n_frames;
}

void FeatureStream::reset() {
    buffer_.clear();
    frames_emitted_ = 0;
    samples_accepted_ = 0;
}

void extract(FrameProcessor& processor, const float* signal, std::size_t n, float* out) {
    processor.compute_frames(signal, processor.config().num_frames(n), out);
}

}  // namespace ser_edge
