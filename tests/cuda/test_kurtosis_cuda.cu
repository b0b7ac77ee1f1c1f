// Standalone test of csrc/kurtosis_cuda.cuh on a GPU, without Paddle.
//
//   nvcc -O2 -std=c++17 -arch=native -Xcompiler -fopenmp -Icsrc tests/cuda/test_kurtosis_cuda.cu -o test_kurtosis_cuda
//   (-fopenmp only parallelizes the host reference)
//   ./test_kurtosis_cuda [--quick] [--no-timing] [--require-gpu] [--markdown FILE]
//
// Checks kurtosis, kurtosis_grad and kurtosis_decay for float64, float32,
// float16 and bfloat16 against a long-double reference on the host (every
// element), against central finite differences (float64), for NaN/Inf
// propagation, the degenerate sizes (n = 1; n = 2 and 3, where K is the
// constant 1 and 1.5 and the gradient exactly 0; constant data), unaligned
// pointers and run-to-run determinism; then times the ops against a
// device-to-device cudaMemcpy of the same tensor. --quick runs a subset with
// n <= 1e5 and no timing (for compute-sanitizer). First, without a GPU too, the
// header's moment math is checked on the host. Exit status: 0 when every check
// passed (without --require-gpu, a missing GPU skips the GPU part, saying so).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kurtosis_cuda.cuh"

#define CUDA_OK(expr)                                                                      \
  do {                                                                                     \
    const cudaError_t err_ = (expr);                                                       \
    if (err_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,            \
                   cudaGetErrorString(err_));                                              \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

namespace {

using ld = long double;

// ---------------------------------------------------------------- dtypes
template <typename T>
struct Dtype;
template <>
struct Dtype<double> {
  static constexpr const char* name = "float64";
  static constexpr int mantissa = 52, min_exponent = -1022;
  static double from(double v) { return v; }
  static double to(double v) { return v; }
};
template <>
struct Dtype<float> {
  static constexpr const char* name = "float32";
  static constexpr int mantissa = 23, min_exponent = -126;
  static float from(double v) { return static_cast<float>(v); }
  static double to(float v) { return v; }
};
template <>
struct Dtype<__half> {
  static constexpr const char* name = "float16";
  static constexpr int mantissa = 10, min_exponent = -14;
  static __half from(double v) { return __double2half(v); }
  static double to(__half v) { return __half2float(v); }
};
template <>
struct Dtype<__nv_bfloat16> {
  static constexpr const char* name = "bfloat16";
  static constexpr int mantissa = 7, min_exponent = -126;
  static __nv_bfloat16 from(double v) { return __double2bfloat16(v); }
  static double to(__nv_bfloat16 v) { return __bfloat162float(v); }
};

// Spacing of T's values at v (subnormal spacing below the normal range).
template <typename T>
ld ulp(ld v) {
  int e = 0;
  std::frexp(static_cast<double>(std::fabs(v)), &e);  // |v| = f 2^e, f in [0.5, 1)
  const int exponent = v == 0 ? Dtype<T>::min_exponent : std::max(e - 1, Dtype<T>::min_exponent);
  return std::ldexp(1.0L, exponent - Dtype<T>::mantissa);
}

// ---------------------------------------------------------------- data
enum class Dist { kNormal, kUniform, kHeavyTailed, kShifted, kConstant };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kNormal: return "normal";
    case Dist::kUniform: return "uniform";
    case Dist::kHeavyTailed: return "student-t(3)";
    case Dist::kShifted: return "1e4+N(0,1)";
    case Dist::kConstant: return "constant";
  }
  return "?";
}

template <typename T>
std::vector<T> make_data(Dist dist, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::student_t_distribution<double> student(3.0);
  std::vector<T> x(n);
  for (int64_t i = 0; i < n; ++i) {
    double v = 0.7;
    switch (dist) {
      case Dist::kNormal: v = normal(rng); break;
      case Dist::kUniform: v = uniform(rng); break;
      case Dist::kHeavyTailed: v = student(rng); break;
      case Dist::kShifted: v = 1e4 + normal(rng); break;
      case Dist::kConstant: break;
    }
    x[i] = Dtype<T>::from(v);
  }
  return x;
}

// ---------------------------------------------------------------- reference
// Relative slack for what double accumulation may lose against long double.
constexpr ld kDoubleSlack = 1e-10L;

struct Reference {
  ld n = 0, mean = 0, m2 = 0, m3 = 0, kurtosis = 0;
  bool zero_gradient = true;
};

// Two passes in long double: mean, then central moments.
template <typename T>
Reference reference_stats(const T* x, int64_t n) {
  Reference r;
  r.n = n;
  ld sum = 0, lo = Dtype<T>::to(x[0]), hi = lo;
#pragma omp parallel for reduction(+ : sum) reduction(min : lo) reduction(max : hi)
  for (int64_t i = 0; i < n; ++i) {
    const ld v = Dtype<T>::to(x[i]);
    sum += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  r.mean = sum / n;
  if (n < 2 || lo == hi) {  // exactly degenerate, whatever the rounding of sum / n
    r.mean = lo;
    return r;
  }
  ld s2 = 0, s3 = 0, s4 = 0;
#pragma omp parallel for reduction(+ : s2, s3, s4)
  for (int64_t i = 0; i < n; ++i) {
    const ld d = Dtype<T>::to(x[i]) - r.mean;
    s2 += d * d;
    s3 += d * d * d;
    s4 += d * d * d * d;
  }
  r.m2 = s2 / n;
  r.m3 = s3 / n;
  r.kurtosis = (s4 / n) / (r.m2 * r.m2);
  r.zero_gradient = n <= 3;  // K is constant (1 or 1.5) for n = 2, 3
  return r;
}

// factor * dK/dx_i + l2 * x_i, and the sum of its terms' magnitudes (for the
// tolerance); factor_size bounds the terms the factor is made of (2 coeff (K -
// target) is small where K is near the target, its error is not).
// tolerance() adds what rounding the mean to double costs the kernels: d = x -
// mean is off by eps |mean|, which matters where the values sit far from zero
// and close together (float16 1e4 + N(0, 1) is mostly one value).
struct GradRef {
  ld value, magnitude, mean_rounding;
  template <typename T>
  ld tolerance() const {
    return ulp<T>(value) + kDoubleSlack * magnitude + mean_rounding;
  }
};
GradRef reference_grad(const Reference& r, ld factor, ld factor_size, ld l2, ld x) {
  const ld d = x - r.mean;
  const ld unit = r.zero_gradient ? 0 : 4 / (r.n * r.m2 * r.m2);
  const ld value = factor * unit * (d * d * d - r.m3 - r.kurtosis * r.m2 * d) + l2 * x;
  const ld magnitude = factor_size * unit * (std::fabs(d * d * d) + std::fabs(r.m3) +
                                             r.kurtosis * r.m2 * std::fabs(d)) +
                       std::fabs(l2 * x);
  const ld slope = factor_size * unit * (3 * d * d + r.kurtosis * r.m2);  // |d value / d mean|
  return {value, magnitude, slope * std::fabs(r.mean) * 4 * DBL_EPSILON};
}

// ---------------------------------------------------------------- bookkeeping
struct Tally {
  int passed = 0, failed = 0;
  std::vector<std::string> failures;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
      return;
    }
    ++failed;
    if (failures.size() < 40) failures.push_back(what);
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list args;
  va_start(args, f);
  std::vsnprintf(buf, sizeof(buf), f, args);
  va_end(args);
  return buf;
}

bool close_to(ld got, ld want, ld tol) {
  if (std::isnan(want)) return std::isnan(got);
  return std::fabs(got - want) <= tol;
}

// Device buffers reused across cases (grown as needed).
struct Buffers {
  void* x = nullptr;
  void* out = nullptr;
  void* workspace = nullptr;
  double* stats = nullptr;
  double* stats2 = nullptr;
  void* scalar = nullptr;
  size_t x_bytes = 0, workspace_size = 0;
  cudaStream_t stream = nullptr;

  void reserve(size_t bytes, size_t workspace) {
    if (bytes > x_bytes) {
      CUDA_OK(cudaFree(x));
      CUDA_OK(cudaFree(out));
      CUDA_OK(cudaMalloc(&x, bytes));
      CUDA_OK(cudaMalloc(&out, bytes));
      x_bytes = bytes;
    }
    if (workspace > workspace_size) {
      CUDA_OK(cudaFree(this->workspace));
      CUDA_OK(cudaMalloc(&this->workspace, workspace));
      workspace_size = workspace;
    }
  }
};

constexpr double kCoeff = 0.5, kTarget = 1.8, kL2 = 1e-3, kGradOut = 0.37;

// Runs the three ops on x (placed `offset` elements into the device buffer, to
// test unaligned pointers) and checks every output against the reference.
template <typename T>
void check_case(Buffers& b, Tally& tally, const std::vector<T>& host, int64_t offset,
                const std::string& label) {
  const int64_t n = static_cast<int64_t>(host.size());
  b.reserve((n + offset) * sizeof(T), kure_cuda::workspace_bytes(n));
  T* x = static_cast<T*>(b.x) + offset;
  T* out = static_cast<T*>(b.out) + offset;
  T* scalar = static_cast<T*>(b.scalar);
  CUDA_OK(cudaMemcpyAsync(x, host.data(), n * sizeof(T), cudaMemcpyHostToDevice, b.stream));
  const T grad_out = Dtype<T>::from(kGradOut);
  CUDA_OK(cudaMemcpyAsync(scalar + 1, &grad_out, sizeof(T), cudaMemcpyHostToDevice, b.stream));

  const Reference r = reference_stats(host.data(), n);
  const ld k_tol_rel = kDoubleSlack;

  // kurtosis
  CUDA_OK(kure_cuda::kurtosis(x, n, scalar, b.stats, b.workspace, b.stream));
  T k_host;
  double stats[kure_cuda::kStatsSize];
  CUDA_OK(cudaMemcpyAsync(&k_host, scalar, sizeof(T), cudaMemcpyDeviceToHost, b.stream));
  CUDA_OK(cudaMemcpyAsync(stats, b.stats, sizeof(stats), cudaMemcpyDeviceToHost, b.stream));
  CUDA_OK(cudaStreamSynchronize(b.stream));
  const ld k = Dtype<T>::to(k_host);
  tally.check(close_to(k, r.kurtosis, ulp<T>(r.kurtosis) + k_tol_rel * r.kurtosis),
              fmt("%s kurtosis %.17Lg want %.17Lg", label.c_str(), k, r.kurtosis));
  const ld spread = std::sqrt(r.m2);
  tally.check(close_to(stats[0], r.mean, kDoubleSlack * (std::fabs(r.mean) + spread)),
              fmt("%s mean %.17g want %.17Lg", label.c_str(), stats[0], r.mean));
  tally.check(close_to(stats[1], r.m2, kDoubleSlack * r.m2),
              fmt("%s m2 %.17g want %.17Lg", label.c_str(), stats[1], r.m2));
  tally.check(close_to(stats[2], r.m3, kDoubleSlack * r.m2 * spread),
              fmt("%s m3 %.17g want %.17Lg", label.c_str(), stats[2], r.m3));
  tally.check(close_to(stats[3], r.kurtosis, kDoubleSlack * r.kurtosis),
              fmt("%s stats K %.17g want %.17Lg", label.c_str(), stats[3], r.kurtosis));
  tally.check((stats[4] != 0.0) == r.zero_gradient,
              fmt("%s zero_gradient flag %g want %d", label.c_str(), stats[4], r.zero_gradient));

  // Every element of both gradients against the reference.
  std::vector<T> got(n);
  auto check_grad = [&](const char* op, ld factor, ld factor_size, ld l2) {
    CUDA_OK(cudaMemcpyAsync(got.data(), out, n * sizeof(T), cudaMemcpyDeviceToHost, b.stream));
    CUDA_OK(cudaStreamSynchronize(b.stream));
    int64_t bad = 0, first_bad = n;
    ld worst = 0;
#pragma omp parallel for reduction(+ : bad) reduction(max : worst) reduction(min : first_bad)
    for (int64_t i = 0; i < n; ++i) {
      const ld xi = Dtype<T>::to(host[i]);
      const GradRef g = reference_grad(r, factor, factor_size, l2, xi);
      const ld err = std::fabs(Dtype<T>::to(got[i]) - g.value);
      const ld tol = g.tolerance<T>();
      if (!(err <= tol)) {
        ++bad;
        first_bad = std::min(first_bad, i);
      }
      worst = std::max(worst, err / tol);
    }
    std::string what = fmt("%s %s: %lld of %lld elements outside tolerance (worst err/tol %.3Lg)",
                           label.c_str(), op, static_cast<long long>(bad),
                           static_cast<long long>(n), worst);
    if (bad) {
      const ld xi = Dtype<T>::to(host[first_bad]);
      what += fmt("; first at %lld: got %.10g want %.10Lg", static_cast<long long>(first_bad),
                  Dtype<T>::to(got[first_bad]), reference_grad(r, factor, factor_size, l2, xi).value);
    }
    tally.check(bad == 0, what);
    if (r.zero_gradient && l2 == 0) {
      bool exact = true;
      for (int64_t i = 0; i < n; ++i) exact = exact && Dtype<T>::to(got[i]) == 0.0;
      tally.check(exact, label + " " + op + ": gradient not exactly 0 where K is constant");
    }
  };

  CUDA_OK(kure_cuda::kurtosis_grad(x, n, b.stats, scalar + 1, out, b.stream));
  check_grad("kurtosis_grad", Dtype<T>::to(grad_out), Dtype<T>::to(grad_out), 0);

  CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, kL2, out, b.stats2, b.workspace,
                                    b.stream));
  const ld decay_factor = 2 * kCoeff * (r.kurtosis - kTarget);
  const ld decay_factor_size = 2 * kCoeff * (r.kurtosis + kTarget);
  check_grad("kurtosis_decay", decay_factor, decay_factor_size, kL2);
  CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, 0.0, out, nullptr, b.workspace,
                                    b.stream));
  check_grad("kurtosis_decay(l2=0)", decay_factor, decay_factor_size, 0);
}

template <typename T>
void correctness_for(Buffers& b, Tally& tally, bool quick) {
  // Sizes around the pack width, the warp, the block, one block's share and
  // the tail; --quick (for compute-sanitizer, 10-100x slower) keeps a few.
  std::vector<int64_t> sizes = {1,    2,    3,    4,    5,    7,     8,     9,      31,
                                32,   33,   255,  256,  257,  1000,  1023,  1024,   1025,
                                4095, 4097, 8191, 8193, 65536, 100003, 1000003, 10000019};
  std::vector<Dist> dists = {Dist::kNormal, Dist::kUniform, Dist::kHeavyTailed, Dist::kShifted,
                             Dist::kConstant};
  if (quick) {
    sizes = {1, 2, 3, 5, 257, 1025, 4097, 8193, 100003};
    dists = {Dist::kHeavyTailed, Dist::kShifted, Dist::kConstant};
  }
  uint64_t seed = 1;
  for (int64_t n : sizes) {
    for (Dist dist : dists) {
      if (n <= 3 && (dist == Dist::kUniform || dist == Dist::kHeavyTailed)) continue;
      const auto host = make_data<T>(dist, n, seed++);
      const std::string label = fmt("%s n=%lld %s", Dtype<T>::name, static_cast<long long>(n),
                                    dist_name(dist));
      check_case(b, tally, host, 0, label);
      // One element in: the pointers lose their 16-byte alignment (scalar path).
      if (n == 1025 || n == 100003 || n == 1000003) {
        check_case(b, tally, host, 1, label + " (unaligned)");
      }
    }
  }
  // The largest size, where the grid is full and each thread holds many values.
  if (!quick && (std::is_same<T, float>::value || std::is_same<T, __half>::value)) {
    for (Dist dist : {Dist::kNormal, Dist::kShifted, Dist::kHeavyTailed}) {
      if (std::is_same<T, __half>::value && dist != Dist::kNormal) continue;
      const auto host = make_data<T>(dist, 100000000, seed++);
      check_case(b, tally, host, 0, fmt("%s n=1e8 %s", Dtype<T>::name, dist_name(dist)));
    }
  }
}

// ---------------------------------------------------------------- host check
// The kernels' moment math (the header's host-and-device functions) run on the
// host over fused_kernel's partition of x: packs of kVec elements dealt to
// `blocks` blocks grid-stride, each block's shift its first element, the tail
// to block 0, blocks merged pairwise. Needs no GPU, so it runs everywhere.
template <typename T>
void host_check(Tally& tally) {
  namespace d = kure_cuda::detail;
  constexpr int kVec = 16 / sizeof(T);
  const int threads = kure_cuda::kThreads;
  for (int64_t n : {1, 2, 3, 5, 1000, 4097, 100003}) {
    for (Dist dist : {Dist::kNormal, Dist::kHeavyTailed, Dist::kShifted, Dist::kConstant}) {
      const auto x = make_data<T>(dist, n, 300 + n);
      const Reference r = reference_stats(x.data(), n);
      for (int64_t blocks : {1, 3, 64}) {
        const int64_t nv = n / kVec, stride = blocks * threads;
        kure_cuda::Moments total{};
        for (int64_t b = 0; b < blocks; ++b) {
          const double c = d::to_double(x[std::min(b * threads * kVec, n - 1)]);
          kure_cuda::PowerSums sums{};
          for (int64_t t = 0; t < threads; ++t) {
            for (int64_t v = b * threads + t; v < nv; v += stride) {
              for (int k = 0; k < kVec; ++k) d::add_powers(&sums, d::to_double(x[v * kVec + k]) - c);
              sums.n += kVec;
            }
            if (b == 0 && nv * kVec + t < n) {
              d::add_powers(&sums, d::to_double(x[nv * kVec + t]) - c);
              sums.n += 1;
            }
          }
          total = d::merge(total, d::centre(sums, c));
        }
        const kure_cuda::Stats s = d::finalize(total);
        const std::string label = fmt("host math %s n=%lld %s blocks=%lld", Dtype<T>::name,
                                      static_cast<long long>(n), dist_name(dist),
                                      static_cast<long long>(blocks));
        tally.check(s.n == n, label + ": count");
        tally.check(close_to(s.kurtosis, r.kurtosis, kDoubleSlack * r.kurtosis),
                    fmt("%s: K %.17g want %.17Lg", label.c_str(), s.kurtosis, r.kurtosis));
        tally.check(s.zero_gradient == r.zero_gradient, label + ": zero_gradient");
        const ld factor = 2 * kCoeff * (r.kurtosis - kTarget), size = 2 * kCoeff * (r.kurtosis + kTarget);
        const d::ScaledGrad grad(s, 2 * kCoeff * (s.kurtosis - kTarget), kL2);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          const ld xi = Dtype<T>::to(x[i]);
          const GradRef g = reference_grad(r, factor, size, kL2, xi);
          bad += !(std::fabs(grad(d::to_double(x[i])) - g.value) <= g.tolerance<double>());
        }
        tally.check(bad == 0, fmt("%s: %lld gradient elements off", label.c_str(), static_cast<long long>(bad)));
      }
    }
  }
}

// ---------------------------------------------------------------- finite differences
// float64: K and the KURE objective coeff (K - target)^2 + l2/2 sum x^2 by central
// differences, against kurtosis_grad and kurtosis_decay.
void finite_differences(Buffers& b, Tally& tally, bool quick) {
  const std::vector<int64_t> sizes =
      quick ? std::vector<int64_t>{2, 3, 64, 4097} : std::vector<int64_t>{2, 3, 5, 64, 1000, 4097, 100003};
  for (int64_t n : sizes) {
    for (Dist dist : {Dist::kNormal, Dist::kHeavyTailed}) {
      auto host = make_data<double>(dist, n, 1000 + n);
      b.reserve(n * sizeof(double), kure_cuda::workspace_bytes(n));
      double* x = static_cast<double*>(b.x);
      double* out = static_cast<double*>(b.out);
      double* scalar = static_cast<double*>(b.scalar);
      auto kurtosis_of = [&](const std::vector<double>& v) {
        double k;
        CUDA_OK(cudaMemcpyAsync(x, v.data(), n * sizeof(double), cudaMemcpyHostToDevice, b.stream));
        CUDA_OK(kure_cuda::kurtosis(x, n, scalar, b.stats, b.workspace, b.stream));
        CUDA_OK(cudaMemcpyAsync(&k, scalar, sizeof(double), cudaMemcpyDeviceToHost, b.stream));
        CUDA_OK(cudaStreamSynchronize(b.stream));
        return k;
      };
      auto objective = [&](const std::vector<double>& v) {
        const double k = kurtosis_of(v);
        double sq = 0;
        for (double e : v) sq += e * e;
        return kCoeff * (k - kTarget) * (k - kTarget) + 0.5 * kL2 * sq;
      };
      kurtosis_of(host);
      const double one = 1.0;
      CUDA_OK(cudaMemcpyAsync(scalar + 1, &one, sizeof(double), cudaMemcpyHostToDevice, b.stream));
      std::vector<double> grad(n), decay(n);
      CUDA_OK(kure_cuda::kurtosis_grad(x, n, b.stats, scalar + 1, out, b.stream));
      CUDA_OK(cudaMemcpyAsync(grad.data(), out, n * sizeof(double), cudaMemcpyDeviceToHost, b.stream));
      CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, kL2, out, nullptr, b.workspace, b.stream));
      CUDA_OK(cudaMemcpyAsync(decay.data(), out, n * sizeof(double), cudaMemcpyDeviceToHost, b.stream));
      CUDA_OK(cudaStreamSynchronize(b.stream));
      double grad_scale = 1e-300, decay_scale = 1e-300;
      for (int64_t i = 0; i < n; ++i) {
        grad_scale = std::max(grad_scale, std::fabs(grad[i]));
        decay_scale = std::max(decay_scale, std::fabs(decay[i]));
      }
      if (n <= 3) grad_scale = decay_scale = 4.0 / n;  // the size of dK/dx's terms
      // Larger steps for larger n, where K's rounding (not the step) limits the difference.
      const double h = n > 10000 ? 1e-4 : 1e-5;
      double worst_k = 0, worst_f = 0;
      for (int64_t i : {int64_t{0}, n / 3, n / 2, n - 1}) {
        std::vector<double> plus = host, minus = host;
        plus[i] += h;
        minus[i] -= h;
        const double fd_k = (kurtosis_of(plus) - kurtosis_of(minus)) / (2 * h);
        const double fd_f = (objective(plus) - objective(minus)) / (2 * h);
        worst_k = std::max(worst_k, std::fabs(fd_k - grad[i]) / grad_scale);
        worst_f = std::max(worst_f, std::fabs(fd_f - decay[i]) / decay_scale);
      }
      const std::string label = fmt("float64 n=%lld %s finite differences",
                                    static_cast<long long>(n), dist_name(dist));
      tally.check(worst_k < 1e-6, fmt("%s of K: worst |fd - grad| / max|grad| = %.3g",
                                      label.c_str(), worst_k));
      tally.check(worst_f < 1e-6, fmt("%s of the KURE objective: worst %.3g", label.c_str(), worst_f));
    }
  }
}

// ---------------------------------------------------------------- NaN / Inf
template <typename T>
void non_finite(Buffers& b, Tally& tally, bool quick) {
  const std::vector<int64_t> sizes =
      quick ? std::vector<int64_t>{1, 100003} : std::vector<int64_t>{1, 2, 1000, 100003};
  for (int64_t n : sizes) {
    for (double bad : {std::nan(""), HUGE_VAL, -HUGE_VAL}) {
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        auto host = make_data<T>(Dist::kNormal, n, 7);
        host[at] = Dtype<T>::from(bad);
        b.reserve(n * sizeof(T), kure_cuda::workspace_bytes(n));
        T* x = static_cast<T*>(b.x);
        T* out = static_cast<T*>(b.out);
        T* scalar = static_cast<T*>(b.scalar);
        CUDA_OK(cudaMemcpyAsync(x, host.data(), n * sizeof(T), cudaMemcpyHostToDevice, b.stream));
        const T grad_out = Dtype<T>::from(1.0);
        CUDA_OK(cudaMemcpyAsync(scalar + 1, &grad_out, sizeof(T), cudaMemcpyHostToDevice, b.stream));
        CUDA_OK(kure_cuda::kurtosis(x, n, scalar, b.stats, b.workspace, b.stream));
        T k;
        CUDA_OK(cudaMemcpyAsync(&k, scalar, sizeof(T), cudaMemcpyDeviceToHost, b.stream));
        std::vector<T> grad(n), decay(n);
        CUDA_OK(kure_cuda::kurtosis_grad(x, n, b.stats, scalar + 1, out, b.stream));
        CUDA_OK(cudaMemcpyAsync(grad.data(), out, n * sizeof(T), cudaMemcpyDeviceToHost, b.stream));
        CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, kL2, out, nullptr, b.workspace, b.stream));
        CUDA_OK(cudaMemcpyAsync(decay.data(), out, n * sizeof(T), cudaMemcpyDeviceToHost, b.stream));
        CUDA_OK(cudaStreamSynchronize(b.stream));
        bool all_nan = std::isnan(Dtype<T>::to(k));
        for (int64_t i = 0; i < n; ++i) {
          all_nan = all_nan && std::isnan(Dtype<T>::to(grad[i])) && std::isnan(Dtype<T>::to(decay[i]));
        }
        tally.check(all_nan, fmt("%s n=%lld x[%lld]=%g: K, kurtosis_grad and kurtosis_decay should all be NaN",
                                 Dtype<T>::name, static_cast<long long>(n),
                                 static_cast<long long>(at), bad));
      }
    }
  }
}

// Same input, same bits: every block merges the partials in one fixed order.
void determinism(Buffers& b, Tally& tally, int64_t n) {
  const auto host = make_data<float>(Dist::kHeavyTailed, n, 99);
  b.reserve(n * sizeof(float), kure_cuda::workspace_bytes(n));
  float* x = static_cast<float*>(b.x);
  float* out = static_cast<float*>(b.out);
  CUDA_OK(cudaMemcpyAsync(x, host.data(), n * sizeof(float), cudaMemcpyHostToDevice, b.stream));
  std::vector<float> first(n), second(n);
  for (auto* dst : {&first, &second}) {
    CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, kL2, out, nullptr, b.workspace, b.stream));
    CUDA_OK(cudaMemcpyAsync(dst->data(), out, n * sizeof(float), cudaMemcpyDeviceToHost, b.stream));
  }
  CUDA_OK(cudaStreamSynchronize(b.stream));
  tally.check(std::memcmp(first.data(), second.data(), n * sizeof(float)) == 0,
              fmt("float32 n=%lld: kurtosis_decay differs between two runs", static_cast<long long>(n)));
}

// ---------------------------------------------------------------- timing
// Median over batches of the time per call of `op`, calls issued back to back
// on one stream (as a training step issues them), timed with CUDA events.
double time_per_call_us(cudaStream_t stream, int64_t bytes, const std::function<void()>& op) {
  // About 1 GiB of tensor per batch, between 3 and 500 calls.
  const int per_batch = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 30) / std::max<int64_t>(bytes, 1), 3, 500));
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) op();  // warm up (and settle clocks)
  std::vector<double> batch_us;
  for (int batch = 0; batch < 7; ++batch) {
    CUDA_OK(cudaEventRecord(start, stream));
    for (int i = 0; i < per_batch; ++i) op();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    batch_us.push_back(1000.0 * ms / per_batch);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  std::sort(batch_us.begin(), batch_us.end());
  return batch_us[batch_us.size() / 2];
}

template <typename T>
struct TimingRow {
  std::vector<double> copy_us, decay_us, forward_us, backward_us;
};

template <typename T>
TimingRow<T> time_ops(Buffers& b, const std::vector<int64_t>& sizes) {
  TimingRow<T> row;
  for (int64_t n : sizes) {
    const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
    b.reserve(bytes, kure_cuda::workspace_bytes(n));
    const auto host = make_data<T>(Dist::kNormal, n, 5);
    T* x = static_cast<T*>(b.x);
    T* out = static_cast<T*>(b.out);
    T* scalar = static_cast<T*>(b.scalar);
    CUDA_OK(cudaMemcpy(x, host.data(), bytes, cudaMemcpyHostToDevice));
    const T one = Dtype<T>::from(1.0);
    CUDA_OK(cudaMemcpy(scalar + 1, &one, sizeof(T), cudaMemcpyHostToDevice));
    row.copy_us.push_back(time_per_call_us(b.stream, bytes, [&] {
      CUDA_OK(cudaMemcpyAsync(out, x, bytes, cudaMemcpyDeviceToDevice, b.stream));
    }));
    row.decay_us.push_back(time_per_call_us(b.stream, bytes, [&] {
      CUDA_OK(kure_cuda::kurtosis_decay(x, n, kCoeff, kTarget, kL2, out, nullptr, b.workspace, b.stream));
    }));
    row.forward_us.push_back(time_per_call_us(b.stream, bytes, [&] {
      CUDA_OK(kure_cuda::kurtosis(x, n, scalar, b.stats, b.workspace, b.stream));
    }));
    row.backward_us.push_back(time_per_call_us(b.stream, bytes, [&] {
      CUDA_OK(kure_cuda::kurtosis_grad(x, n, b.stats, scalar + 1, out, b.stream));
    }));
  }
  return row;
}

std::string size_header(const std::vector<int64_t>& sizes) {
  std::string s = "| elements |";
  std::string rule = "|---|";
  for (int64_t n : sizes) {
    s += fmt(" %.0e |", static_cast<double>(n));
    rule += "---|";
  }
  return s + "\n" + rule + "\n";
}

std::string ratio_line(const char* name, const std::vector<double>& us,
                       const std::vector<double>& copy_us) {
  std::string s = fmt("| %s |", name);
  for (size_t i = 0; i < us.size(); ++i) s += fmt(" %.2f |", us[i] / copy_us[i]);
  return s + "\n";
}

template <typename T>
std::string timing_section(Buffers& b, const std::vector<int64_t>& sizes, bool with_targets) {
  const auto row = time_ops<T>(b, sizes);
  std::string md = fmt("\n### %s\n\n", Dtype<T>::name);
  md += size_header(sizes);
  md += "| device-to-device copy, us |";
  for (double us : row.copy_us) md += fmt(" %.2f |", us);
  md += "\n| copy bandwidth, GB/s (read + write) |";
  for (size_t i = 0; i < sizes.size(); ++i) {
    md += fmt(" %.0f |", 2.0 * sizes[i] * sizeof(T) / (row.copy_us[i] * 1e3));
  }
  md += "\n";
  md += ratio_line("kurtosis_decay / copy", row.decay_us, row.copy_us);
  md += ratio_line("kurtosis (forward) / copy", row.forward_us, row.copy_us);
  md += ratio_line("kurtosis_grad (backward) / copy", row.backward_us, row.copy_us);
  if (with_targets) {
    md += "| target for kurtosis_decay / copy |";
    int missed = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const double target = sizes[i] >= 10000000 ? 1.7 : 2.0;
      const bool met = row.decay_us[i] / row.copy_us[i] <= target;
      missed += !met;
      md += fmt(" <= %.1f %s |", target, met ? "met" : "**missed**");
    }
    md += fmt("\n\nSpeed targets missed: %d of %zu.\n", missed, sizes.size());
  }
  return md;
}

std::string device_description(int device) {
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, device));
  int driver = 0, runtime = 0;
  CUDA_OK(cudaDriverGetVersion(&driver));
  CUDA_OK(cudaRuntimeGetVersion(&runtime));
  return fmt("%s (compute capability %d.%d, %d SMs, %.1f GiB, L2 %.0f MiB), CUDA driver %d.%d, runtime %d.%d",
             prop.name, prop.major, prop.minor, prop.multiProcessorCount,
             prop.totalGlobalMem / 1073741824.0, prop.l2CacheSize / 1048576.0, driver / 1000,
             driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, timing = true, require_gpu = false;
  const char* markdown_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
      timing = false;
    } else if (arg == "--no-timing") {
      timing = false;
    } else if (arg == "--require-gpu") {
      require_gpu = true;
    } else if (arg == "--markdown" && i + 1 < argc) {
      markdown_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--no-timing] [--require-gpu] [--markdown FILE]\n", argv[0]);
      return 2;
    }
  }
  Tally host_tally;
  host_check<double>(host_tally);
  host_check<float>(host_tally);
  host_check<__half>(host_tally);
  host_check<__nv_bfloat16>(host_tally);
  std::printf("test_kurtosis_cuda: host check of the moment math: %d passed, %d failed\n",
              host_tally.passed, host_tally.failed);
  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  if (probe != cudaSuccess || devices == 0) {
    std::printf("test_kurtosis_cuda: SKIPPED the GPU run, no CUDA device (%s): the kernels were compiled, not run\n",
                probe != cudaSuccess ? cudaGetErrorString(probe) : "0 devices");
    return host_tally.failed != 0 || require_gpu ? 1 : 0;
  }

  Buffers b;
  CUDA_OK(cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking));
  CUDA_OK(cudaMalloc(&b.stats, kure_cuda::kStatsSize * sizeof(double)));
  CUDA_OK(cudaMalloc(&b.stats2, kure_cuda::kStatsSize * sizeof(double)));
  CUDA_OK(cudaMalloc(&b.scalar, 2 * sizeof(double)));

  Tally tally = host_tally;
  const auto started = std::chrono::steady_clock::now();
  auto progress = [&](const char* phase) {  // on stderr, for a run with a time limit
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;
    std::fprintf(stderr, "[%6.1f s] %s (%d passed, %d failed so far)\n", elapsed.count(), phase,
                 tally.passed, tally.failed);
  };
  correctness_for<double>(b, tally, quick);
  progress("float64 done");
  correctness_for<float>(b, tally, quick);
  progress("float32 done");
  correctness_for<__half>(b, tally, quick);
  progress("float16 done");
  correctness_for<__nv_bfloat16>(b, tally, quick);
  progress("bfloat16 done");
  finite_differences(b, tally, quick);
  non_finite<double>(b, tally, quick);
  non_finite<float>(b, tally, quick);
  non_finite<__half>(b, tally, quick);
  non_finite<__nv_bfloat16>(b, tally, quick);
  determinism(b, tally, quick ? 100003 : 10000019);
  progress("finite differences, NaN/Inf, determinism done");

  std::string md = "## Standalone CUDA test (`tests/cuda/test_kurtosis_cuda.cu`)\n\n";
  md += "Device: " + device_description(0) + ".\n\n";
  md += fmt("Correctness%s: %d checks passed, %d failed.\n", quick ? " (--quick: a subset, n <= 1e5)" : "",
            tally.passed, tally.failed);
  for (const auto& f : tally.failures) md += "- FAIL: " + f + "\n";
  if (timing) {
    const std::vector<int64_t> sizes = {1000, 100000, 1000000, 10000000, 100000000};
    md += "\n## Speed: time per call / time of a device-to-device cudaMemcpy of the same tensor\n\n"
          "CUDA events around back-to-back calls on one stream, median of 7 batches. "
          "kurtosis_decay must read x twice and write once: 1.5x copy is the floor "
          "(below it only where the second read hits L2).\n";
    md += timing_section<float>(b, sizes, true);
    md += timing_section<double>(b, sizes, false);
    md += timing_section<__half>(b, sizes, false);
    md += timing_section<__nv_bfloat16>(b, sizes, false);
  }
  std::printf("%s", md.c_str());
  if (markdown_path != nullptr) std::ofstream(markdown_path) << md;
  return tally.failed == 0 ? 0 : 1;
}
