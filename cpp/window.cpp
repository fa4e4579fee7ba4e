#include "window.hpp"

#include <cmath>
#include <stdexcept>

namespace ser_edge {

std::vector<float> make_window(const std::string& kind, int length) {
    double a0;
    if (kind == "hamming")
        a0 = 0.54;
    else if (kind == "hann")
        a0 = 0.5;
    else
        throw std::invalid_argument("unknown window '" + kind + "'; choose 'hamming' or 'hann'");
    std::vector<float> w(static_cast<std::size_t>(length));
    if (length == 1) {
        w[0] = 1.0f;
        return w;
    }
    const double step = 6.283185307179586476925286766559 / (length - 1);
    for (int n = 0; n < length; ++n) w[n] = static_cast<float>(a0 - (1.0 - a0) * std::cos(step * n));
    return w;
}

}  // namespace ser_edge
