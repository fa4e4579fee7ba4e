// Analysis windows.
#pragma once

#include <string>
#include <vector>

namespace ser_edge {

// Symmetric window of `length` samples: "hamming" 0.54 - 0.46 cos(2 pi n / (L-1)),
// "hann" 0.5 - 0.5 cos(2 pi n / (L-1)). Computed in double, stored as float.
std::vector<float> make_window(const std::string& kind, int length);

}  // namespace ser_edge
