// Streaming feature extraction: accepts chunks of any length and emits every frame as soon
// as its last sample arrives. Holds only the samples that future frames need (fewer than
// frame_length), so memory is bounded for an endless stream.
#pragma once

#include <cstddef>
#include <vector>

#include "feature_config.hpp"
#include "frame_processor.hpp"

namespace ser_edge {

class FeatureStream {
public:
    explicit FeatureStream(const FeatureConfig& config);

    const FeatureConfig& config() const { return processor_.config(); }
    int dim() const { return processor_.dim(); }

    // Frames that accept() of n more samples will emit.
    std::size_t frames_after(std::size_t n_samples) const;
    // Consumes n samples and writes frames_after(n) rows of dim() floats to out; returns that count.
    std::size_t accept(const float* samples, std::size_t n, float* out);
    // Forgets all buffered samples and counters, as if newly constructed.
    void reset();

    std::size_t buffered_samples() const { return buffer_.size(); }
    std::size_t frames_emitted() const { return frames_emitted_; }
    std::size_t samples_accepted() const { return samples_accepted_; }

private:
    FrameProcessor processor_;
    std::vector<float> buffer_;  // samples from the start of the next frame onward
    std::vector<float> joined_;  // one frame assembled from buffer_ and a new chunk
    std::size_t frames_emitted_ = 0;
    std::size_t samples_accepted_ = 0;
};

// One-shot extraction of every complete frame of a signal: out has config.num_frames(n) rows.
void extract(FrameProcessor& processor, const float* signal, std::size_t n, float* out);

}  // namespace ser_edge
