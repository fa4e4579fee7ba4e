// Python bindings of the feature core: the only file that knows Python exists.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <optional>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "feature_config.hpp"
#include "feature_stream.hpp"
#include "fft.hpp"
#include "frame_processor.hpp"
#include "mel.hpp"
#include "samples.hpp"
#include "simd.hpp"
#include "window.hpp"

namespace py = pybind11;
using ser_edge::FeatureConfig;

namespace {

// ---------------------------------------------------------------- samples in

// A 1-D float32 view of the caller's samples: the caller's own buffer when it already is
// C-contiguous float32, otherwise a converted copy owned here.
struct Samples {
    py::array_t<float, py::array::c_style> owned;
    const float* data = nullptr;
    std::size_t size = 0;
};

Samples as_samples(const py::handle& obj, const char* what) {
    using Float32 = py::array_t<float, py::array::c_style>;
    if (Float32::check_(obj)) {  // the common case, taken without conversion or copy
        Samples s;
        s.owned = py::reinterpret_borrow<Float32>(obj);
        if (s.owned.ndim() == 1) {
            s.data = s.owned.data();
            s.size = static_cast<std::size_t>(s.owned.shape(0));
            return s;
        }
    }
    py::array arr;
    if (py::isinstance<py::array>(obj)) {
        arr = py::reinterpret_borrow<py::array>(obj);
    } else {
        const std::string not_samples = std::string(what) + " must be a 1-D numpy array of audio samples, got " +
                                        std::string(py::str(py::type::of(obj).attr("__name__")));
        try {
            arr = py::module_::import("numpy").attr("asarray")(obj);
        } catch (py::error_already_set&) {
            throw py::type_error(not_samples);
        }
        const char kind = arr.dtype().kind();
        if (kind != 'f' && kind != 'i' && kind != 'u') throw py::type_error(not_samples);
    }
    if (arr.ndim() != 1)
        throw py::type_error(std::string(what) + " must be 1-D (mono), got an array of shape " +
                             std::string(py::str(arr.attr("shape"))) +
                             "; mix channels to mono first (ser_edge.audio.to_mono)");
    Samples s;
    s.size = static_cast<std::size_t>(arr.shape(0));
    const auto kind = arr.dtype().kind();
    const auto bytes = arr.dtype().itemsize();
    if (kind == 'f' && bytes == 4) {
        s.owned = py::array_t<float, py::array::c_style>::ensure(arr);  // no copy when already contiguous
        if (!s.owned) throw py::error_already_set();
        s.data = s.owned.data();
    } else if (kind == 'f' && bytes == 8) {
        auto src = py::array_t<double, py::array::c_style>::ensure(arr);
        s.owned = py::array_t<float, py::array::c_style>(static_cast<py::ssize_t>(s.size));
        ser_edge::double_to_float(src.data(), s.size, s.owned.mutable_data());
        s.data = s.owned.data();
    } else if (kind == 'i' && bytes == 2) {
        auto src = py::array_t<std::int16_t, py::array::c_style>::ensure(arr);
        s.owned = py::array_t<float, py::array::c_style>(static_cast<py::ssize_t>(s.size));
        ser_edge::int16_to_float(src.data(), s.size, s.owned.mutable_data());
        s.data = s.owned.data();
    } else {
        throw py::type_error(std::string(what) + " must have dtype float32, float64 or int16 (scaled by 1/32768), got " +
                             std::string(py::str(arr.dtype())));
    }
    return s;
}

void check_finite(const Samples& s, const char* what) {
    std::size_t bad;
    {
        py::gil_scoped_release release;
        bad = ser_edge::first_non_finite(s.data, s.size);
    }
    if (bad < s.size) {
        const float v = s.data[bad];
        throw py::value_error(std::string(what) + " contains a non-finite value (" +
                              (std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf")) + ") at index " +
                              std::to_string(bad) + "; samples must be finite floats in [-1, 1]");
    }
}

// Releases the GIL around work big enough to be worth it. Releasing and re-taking it
// costs about as much as computing one frame, so a chunk that completes only a frame or
// two (the 10 ms chunks of a live stream) is computed while holding it: other threads
// wait a microsecond or two at most.
class ReleaseGilFor {
public:
    ReleaseGilFor(std::size_t n_frames, std::size_t n_samples) {
        if (n_frames >= 4 || n_samples >= 16384) release_.emplace();
    }

private:
    std::optional<py::gil_scoped_release> release_;
};

py::array_t<float> new_frames(std::size_t n_frames, int dim) {
    return py::array_t<float>({static_cast<py::ssize_t>(n_frames), static_cast<py::ssize_t>(dim)});
}

// ---------------------------------------------------------------- FeatureConfig <-> dict

py::dict config_to_dict(const FeatureConfig& c) {
    py::dict d;
    d["sample_rate"] = c.sample_rate;
    d["frame_length"] = c.frame_length;
    d["hop_length"] = c.hop_length;
    d["n_fft"] = c.n_fft;
    d["window"] = c.window;
    d["n_mels"] = c.n_mels;
    d["fmin"] = c.fmin;
    d["fmax"] = c.fmax;
    d["mel_scale"] = c.mel_scale;
    d["mel_norm"] = c.mel_norm;
    d["n_mfcc"] = c.n_mfcc;
    d["mfcc_include_c0"] = c.mfcc_include_c0;
    d["power_floor"] = c.power_floor;
    d["log_floor"] = c.log_floor;
    d["f0_min"] = c.f0_min;
    d["f0_max"] = c.f0_max;
    d["blocks"] = py::list(py::cast(c.blocks));
    return d;
}

template <typename T>
void take(py::dict& d, const char* key, T& field) {
    if (!d.contains(key)) return;
    py::object v = d[key];
    // No truthiness for flags and no bytes for names: a wrong type is a mistake to report.
    const bool wrong_type = (std::is_same<T, bool>::value && !py::isinstance<py::bool_>(v)) ||
                            (std::is_same<T, std::string>::value && !py::isinstance<py::str>(v));
    try {
        if (wrong_type) throw py::cast_error();
        field = v.cast<T>();
    } catch (py::cast_error&) {
        throw py::type_error(std::string("FeatureConfig.") + key + ": cannot use " + std::string(py::repr(v)));
    }
    PyDict_DelItemString(d.ptr(), key);
}

// Builds a validated config from `base` with the fields in `fields` replaced.
FeatureConfig config_from(const FeatureConfig& base, const py::dict& fields) {
    FeatureConfig c = base;
    py::dict d(fields);  // a copy: taken keys are removed to find unknown ones
    take(d, "sample_rate", c.sample_rate);
    take(d, "frame_length", c.frame_length);
    take(d, "hop_length", c.hop_length);
    take(d, "n_fft", c.n_fft);
    take(d, "window", c.window);
    take(d, "n_mels", c.n_mels);
    take(d, "fmin", c.fmin);
    take(d, "fmax", c.fmax);
    take(d, "mel_scale", c.mel_scale);
    take(d, "mel_norm", c.mel_norm);
    take(d, "n_mfcc", c.n_mfcc);
    take(d, "mfcc_include_c0", c.mfcc_include_c0);
    take(d, "power_floor", c.power_floor);
    take(d, "log_floor", c.log_floor);
    take(d, "f0_min", c.f0_min);
    take(d, "f0_max", c.f0_max);
    if (d.contains("blocks") && py::isinstance<py::str>(d["blocks"]))
        throw py::type_error("FeatureConfig.blocks: expected a list of block names, got a string");
    take(d, "blocks", c.blocks);
    c.fmin += 0.0;  // -0.0 -> 0.0, so that equal configs also serialise (and hash) equally
    c.fmax += 0.0;
    if (!d.empty()) {
        std::string keys;
        for (auto item : d) keys += (keys.empty() ? "" : ", ") + std::string(py::str(item.first));
        throw py::type_error("FeatureConfig: unknown field(s): " + keys);
    }
    c.validate();
    return c;
}

// ---------------------------------------------------------------- FeatureStream

// Guards a stream against use from two threads at once (its state is not shareable).
class StreamHandle {
public:
    explicit StreamHandle(const FeatureConfig& c) : stream_(c) {}

    py::array_t<float> accept(const py::handle& chunk) {
        Samples s = as_samples(chunk, "chunk");
        Busy busy(busy_);
        const std::size_t n_frames = stream_.frames_after(s.size);
        py::array_t<float> out = new_frames(n_frames, stream_.dim());
        float* dst = out.mutable_data();
        std::size_t bad;
        {
            ReleaseGilFor release(n_frames, s.size);
            bad = ser_edge::first_non_finite(s.data, s.size);
            if (bad == s.size) stream_.accept(s.data, s.size, dst);
        }
        if (bad < s.size) check_finite(s, "chunk");
        snapshot();
        return out;
    }

    void reset() {
        Busy busy(busy_);
        stream_.reset();
        snapshot();
    }

    const ser_edge::FeatureStream& stream() const { return stream_; }

    // Counters as of the last completed call, read under the GIL: reading the stream's own
    // while another thread runs accept() without the GIL would be a data race.
    std::size_t buffered_samples() const { return buffered_; }
    std::size_t frames_emitted() const { return emitted_; }
    std::size_t samples_accepted() const { return accepted_; }

private:
    struct Busy {
        explicit Busy(std::atomic<bool>& f) : flag(f) {
            if (flag.exchange(true))
                throw std::runtime_error(
                    "FeatureStream is in use by another thread; give each thread its own stream");
        }
        ~Busy() { flag.store(false); }
        std::atomic<bool>& flag;
    };
    void snapshot() {
        buffered_ = stream_.buffered_samples();
        emitted_ = stream_.frames_emitted();
        accepted_ = stream_.samples_accepted();
    }

    ser_edge::FeatureStream stream_;
    std::atomic<bool> busy_{false};
    std::size_t buffered_ = 0, emitted_ = 0, accepted_ = 0;
};

py::dict build_info() {
    py::dict d;
#if defined(__GNUC__) && !defined(__clang__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#else
    d["compiler"] = "unknown";
#endif
#if defined(SER_EDGE_NATIVE)
    d["native"] = true;
#else
    d["native"] = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
    d["sanitizers"] = true;
#else
    d["sanitizers"] = false;
#endif
    std::string isa = "baseline";
#if SER_EDGE_HAS_MULTIVERSION
    d["multiversion"] = true;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        isa = "x86-64-v4";
    else if (__builtin_cpu_supports("x86-64-v3"))
        isa = "x86-64-v3";
#else
    d["multiversion"] = false;
#endif
    d["kernels"] = isa;
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "ser-edge feature core: framing, window, real FFT, mel filterbank, DCT, YIN pitch, streaming.";

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });

    py::class_<FeatureConfig>(m, "FeatureConfig", R"doc(
What a frame's feature vector is: one immutable, validated value.

Defaults: 16 kHz, 25 ms frames (400 samples) every 10 ms (160), n_fft 512, symmetric
Hamming window, 40 HTK mel filters from 0 to 8000 Hz without area normalisation, MFCC
c1..c13 (orthonormal DCT-II of ln mel energies), blocks [spectrogram (dB), mfcc] = 270
values per frame. Create changed copies with replace(); serialise with to_json().

Blocks, concatenated per frame in the order listed: "spectrogram" (n_fft/2 + 1 values, dB),
"logmel" (n_mels, ln), "mfcc" (n_mfcc) and "prosody" (3 values from the raw, un-windowed
frame, no look-ahead):
  [0] ln F0, F0 in Hz estimated by YIN (threshold 0.1 on the cumulative-mean-normalised
      difference d', lags sample_rate/f0_max .. sample_rate/f0_min, parabolic refinement);
      ln(f0_min) when the frame is unvoiced (no lag's d' below 0.1: silence, noise);
  [1] voicing 1 - d' at the chosen lag, clipped to [0, 1] (1 = perfectly periodic);
  [2] ln(max(mean square of the frame, log_floor)).
f0_min (default 80 Hz) and f0_max (400 Hz) bound the F0 search; with prosody enabled
frame_length must be >= 2 * ceil(sample_rate / f0_min) (lags plus YIN's integration
window), which is why 80 Hz, not lower, is the default for 400-sample frames at 16 kHz.
A model file written before these fields existed loads with the defaults.
)doc")
        .def(py::init([](const py::kwargs& kw) { return config_from(FeatureConfig(), kw); }),
             "FeatureConfig(**fields): any field may be given by keyword; the rest keep their defaults.")
        .def_static("preset", &FeatureConfig::preset, py::arg("name"),
                    "A named preset: 'seed' (spectrogram + mfcc), 'logmel' or 'mfcc'.")
        .def_static("from_dict", [](const py::object& fields) { return config_from(FeatureConfig(), py::dict(fields)); },
                    py::arg("fields"), "From any mapping of field names to values (as to_dict() writes).")
        .def("to_dict", &config_to_dict)
        .def("to_json", [](const FeatureConfig& c) {
            return py::module_::import("json").attr("dumps")(config_to_dict(c), py::arg("sort_keys") = true).cast<std::string>();
        })
        .def_static("from_json", [](const std::string& s) {
            py::object d = py::module_::import("json").attr("loads")(s);
            if (!py::isinstance<py::dict>(d)) throw py::type_error("FeatureConfig JSON must be an object");
            return config_from(FeatureConfig(), d);
        }, py::arg("text"))
        .def("replace", [](const FeatureConfig& c, const py::kwargs& kw) { return config_from(c, kw); },
             "A copy with the given fields changed (validated).")
        .def_readonly("sample_rate", &FeatureConfig::sample_rate, "Hz")
        .def_readonly("frame_length", &FeatureConfig::frame_length, "samples per frame")
        .def_readonly("hop_length", &FeatureConfig::hop_length, "samples between frame starts")
        .def_readonly("n_fft", &FeatureConfig::n_fft)
        .def_readonly("window", &FeatureConfig::window)
        .def_readonly("n_mels", &FeatureConfig::n_mels)
        .def_readonly("fmin", &FeatureConfig::fmin, "Hz")
        .def_readonly("fmax", &FeatureConfig::fmax, "Hz")
        .def_readonly("mel_scale", &FeatureConfig::mel_scale)
        .def_readonly("mel_norm", &FeatureConfig::mel_norm)
        .def_readonly("n_mfcc", &FeatureConfig::n_mfcc)
        .def_readonly("mfcc_include_c0", &FeatureConfig::mfcc_include_c0)
        .def_readonly("power_floor", &FeatureConfig::power_floor)
        .def_readonly("log_floor", &FeatureConfig::log_floor)
        .def_readonly("f0_min", &FeatureConfig::f0_min, "Hz, lowest F0 of the prosody block; its unvoiced ln F0 is ln(f0_min)")
        .def_readonly("f0_max", &FeatureConfig::f0_max, "Hz, highest F0 of the prosody block")
        .def_property_readonly("blocks", [](const FeatureConfig& c) { return py::tuple(py::cast(c.blocks)); })
        .def_property_readonly("dim", &FeatureConfig::dim, "values per frame")
        .def_property_readonly("n_bins", &FeatureConfig::n_bins, "power-spectrum bins, n_fft/2 + 1")
        .def_property_readonly("frame_s", [](const FeatureConfig& c) { return double(c.frame_length) / c.sample_rate; },
                               "frame length in seconds")
        .def_property_readonly("hop_s", [](const FeatureConfig& c) { return double(c.hop_length) / c.sample_rate; },
                               "hop in seconds")
        .def("block_slices", [](const FeatureConfig& c) {
            py::dict d;
            int at = 0;
            for (const auto& b : c.blocks) {
                const int n = c.block_dim(b);
                d[py::str(b)] = py::slice(at, at + n, 1);
                at += n;
            }
            return d;
        }, "{block name: slice of the feature vector}")
        .def("num_frames", &FeatureConfig::num_frames, py::arg("n_samples"),
             "Complete frames in n samples: max(0, 1 + (n - frame_length) // hop_length).")
        .def("__eq__", [](const FeatureConfig& a, const py::object& b) {
            return py::isinstance<FeatureConfig>(b) && a == b.cast<FeatureConfig>();
        })
        .def("__hash__", [](const FeatureConfig& c) {
            return py::hash(py::str(py::module_::import("json").attr("dumps")(config_to_dict(c), py::arg("sort_keys") = true)));
        })
        .def("__repr__", [](const FeatureConfig& c) {
            std::string s = "FeatureConfig(";
            bool first = true;
            for (auto item : config_to_dict(c)) {
                s += (first ? "" : ", ") + std::string(py::str(item.first)) + "=" + std::string(py::repr(item.second));
                first = false;
            }
            return s + ")";
        })
        .def(py::pickle([](const FeatureConfig& c) { return config_to_dict(c); },
                        [](const py::dict& d) { return config_from(FeatureConfig(), d); }));

    py::class_<StreamHandle>(m, "FeatureStream", R"doc(
Streaming feature extraction. accept() takes chunks of any length (0 samples upward) and
returns, as a float32 array [frames, dim], every frame completed by that chunk. Chunking
never changes a value: the frames equal extract() of the concatenated signal bit for bit.
Holds fewer than frame_length samples between calls. One stream per thread.
)doc")
        .def(py::init([](const FeatureConfig& c) { return new StreamHandle(c); }),
             py::arg("config") = FeatureConfig())
        .def("accept", &StreamHandle::accept, py::arg("chunk"),
             "Push samples (1-D float32; float64 or int16 are converted) at config.sample_rate; "
             "returns the completed frames, shape [n, dim].")
        .def("reset", &StreamHandle::reset, "Drop buffered samples and counters; start a new stream.")
        .def_property_readonly("config", [](const StreamHandle& h) { return h.stream().config(); })
        .def_property_readonly("dim", [](const StreamHandle& h) { return h.stream().dim(); })
        .def_property_readonly("buffered_samples", &StreamHandle::buffered_samples,
                               "samples held for frames not yet complete (< frame_length)")
        .def_property_readonly("frames_emitted", &StreamHandle::frames_emitted)
        .def_property_readonly("samples_accepted", &StreamHandle::samples_accepted);

    m.def("extract", [](const py::handle& signal, const FeatureConfig& config) {
        Samples s = as_samples(signal, "signal");
        check_finite(s, "signal");
        ser_edge::FrameProcessor processor(config);
        py::array_t<float> out = new_frames(config.num_frames(s.size), processor.dim());
        float* dst = out.mutable_data();
        {
            py::gil_scoped_release release;
            ser_edge::extract(processor, s.data, s.size, dst);
        }
        return out;
    }, py::arg("signal"), py::arg("config") = FeatureConfig(),
    "Features of every complete frame of a 1-D signal at config.sample_rate: float32 [frames, dim].");

    m.def("mel_filters", [](const FeatureConfig& c) {
        ser_edge::MelFilterbank fb(c);
        py::array_t<float> out({fb.n_mels(), fb.n_bins()});
        const auto dense = fb.dense();
        std::memcpy(out.mutable_data(), dense.data(), dense.size() * sizeof(float));
        return out;
    }, py::arg("config") = FeatureConfig(), "The mel filter matrix [n_mels, n_bins] the features use.");

    m.def("analysis_window", [](const FeatureConfig& c) {
        const auto w = ser_edge::make_window(c.window, c.frame_length);
        py::array_t<float> out(static_cast<py::ssize_t>(w.size()));
        std::memcpy(out.mutable_data(), w.data(), w.size() * sizeof(float));
        return out;
    }, py::arg("config") = FeatureConfig(), "The analysis window [frame_length] the features use.");

    m.def("rfft", [](const py::handle& x) {
        Samples s = as_samples(x, "x");
        if (s.size > static_cast<std::size_t>(ser_edge::RealFft::kMaxSize) ||
            !ser_edge::RealFft::supported_size(static_cast<int>(s.size)))
            throw py::value_error("rfft: length must be a power of two from " + std::to_string(ser_edge::RealFft::kMinSize) +
                                  " to " + std::to_string(ser_edge::RealFft::kMaxSize) + ", got " + std::to_string(s.size));
        ser_edge::RealFft fft(static_cast<int>(s.size));
        std::vector<float> re(fft.n_bins()), im(fft.n_bins()), work(fft.workspace_size());
        fft.forward(s.data, re.data(), im.data(), work.data());
        py::array_t<std::complex<float>> out(fft.n_bins());
        auto* o = out.mutable_data();
        for (int k = 0; k < fft.n_bins(); ++k) o[k] = {re[k], im[k]};
        return out;
    }, py::arg("x"), "The core's real FFT of a power-of-two-length signal: complex64 [n/2 + 1].");

    m.def("build_info", &build_info, "How the core was built and which kernels this CPU runs.");
}
