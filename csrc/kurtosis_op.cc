// paddle_kure custom operators, CPU kernels and registration.
//
//   kurtosis(X) -> Out (0-D, dtype of X), Stats (float64 [5], saved for backward)
//   kurtosis_grad(X, Stats, Out@GRAD) -> X@GRAD
//   kurtosis_decay(X; coeff, target, l2_coeff) -> Out
//       Out = coeff * d/dX (K(X) - target)^2 + l2_coeff * X, the gradient term
//       added by paddle_kure.KurtosisDecay.
//
// Stats layout and the moment math: kurtosis_moments.h.
#include <algorithm>
#include <thread>
#include <vector>

#include "kurtosis_moments.h"
#include "paddle/extension.h"

namespace {

using paddle_kure::CentralMoments;
using paddle_kure::KurtosisStats;

using paddle_kure::kStatsSize;
// Values per cache-resident block: the block's mean is found first and its
// central sums second, both from cache, so memory is read once.
constexpr int64_t kBlock = 2048;
// Below this size one thread is faster than starting more.
constexpr int64_t kMinPerThread = 1 << 16;

int num_threads_for(int64_t n) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::max<int64_t>(1, std::min(hw, n / kMinPerThread)));
}

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per thread.
template <typename Fn>
void parallel_ranges(int64_t n, int threads, Fn fn) {
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t per = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t b = std::min(n, t * per), e = std::min(n, (t + 1) * per);
    pool.emplace_back(fn, b, e);
  }
  fn(0, std::min(n, per));
  for (auto& th : pool) th.join();
}

// Four-wide double vectors (GCC/Clang vector extension) as independent
// accumulators: they break the floating-point dependency chain and vectorize
// without reassociation (no -ffast-math), on any x86/ARM target.
typedef double double4 __attribute__((vector_size(32)));
constexpr int kLanes = 4;

template <typename T>
inline double4 load4(const T* x) {
  return double4{static_cast<double>(x[0]), static_cast<double>(x[1]),
                 static_cast<double>(x[2]), static_cast<double>(x[3])};
}

inline double lane_sum(double4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

template <typename T>
inline CentralMoments block_moments_impl(const T* __restrict__ x, int64_t n) {
  const int64_t vec_end = n - n % kLanes;
  double4 sum = {0, 0, 0, 0};
  for (int64_t i = 0; i < vec_end; i += kLanes) sum += load4(x + i);
  double total = lane_sum(sum);
  for (int64_t i = vec_end; i < n; ++i) total += static_cast<double>(x[i]);

  CentralMoments m{};
  m.n = static_cast<double>(n);
  m.mean = total / m.n;
  double4 s2 = {0, 0, 0, 0}, s3 = s2, s4 = s2;
  for (int64_t i = 0; i < vec_end; i += kLanes) {
    const double4 d = load4(x + i) - m.mean;
    const double4 d2 = d * d;
    s2 += d2;
    s3 += d2 * d;
    s4 += d2 * d2;
  }
  m.M2 = lane_sum(s2);
  m.M3 = lane_sum(s3);
  m.M4 = lane_sum(s4);
  for (int64_t i = vec_end; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - m.mean;
    m.M2 += d * d;
    m.M3 += d * d * d;
    m.M4 += d * d * d * d;
  }
  return m;
}

// The two hot loops get an AVX2 clone picked at load time where the CPU has it
// (about 2x faster here), and stay portable elsewhere.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KURE_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define KURE_MULTIVERSION
#endif

KURE_MULTIVERSION CentralMoments block_moments(const float* x, int64_t n) {
  return block_moments_impl(x, n);
}
KURE_MULTIVERSION CentralMoments block_moments(const double* x, int64_t n) {
  return block_moments_impl(x, n);
}

// out[i] = grad(x[i]) + l2 * x[i] for i in [begin, end)
template <typename T>
inline void scaled_grad_range_impl(const T* __restrict__ x, T* __restrict__ out, int64_t begin,
                                   int64_t end, const paddle_kure::KurtosisGrad grad, double l2) {
  for (int64_t i = begin; i < end; ++i) {
    const double xi = static_cast<double>(x[i]);
    out[i] = static_cast<T>(grad(xi) + l2 * xi);
  }
}
KURE_MULTIVERSION void scaled_grad_range(const float* x, float* out, int64_t begin, int64_t end,
                                         const paddle_kure::KurtosisGrad& grad, double l2) {
  scaled_grad_range_impl(x, out, begin, end, grad, l2);
}
KURE_MULTIVERSION void scaled_grad_range(const double* x, double* out, int64_t begin, int64_t end,
                                         const paddle_kure::KurtosisGrad& grad, double l2) {
  scaled_grad_range_impl(x, out, begin, end, grad, l2);
}

template <typename T>
KurtosisStats cpu_stats(const T* x, int64_t n) {
  const int threads = num_threads_for(n);
  std::vector<CentralMoments> partial(threads);
  const int64_t per = (n + threads - 1) / threads;
  parallel_ranges(n, threads, [&](int64_t begin, int64_t end) {
    CentralMoments acc{};
    for (int64_t b = begin; b < end; b += kBlock) {
      acc = paddle_kure::moments_merge(acc, block_moments(x + b, std::min(kBlock, end - b)));
    }
    partial[begin / std::max<int64_t>(per, 1)] = acc;
  });
  CentralMoments total{};
  for (const auto& p : partial) total = paddle_kure::moments_merge(total, p);
  return paddle_kure::kurtosis_stats(total);
}

// out[i] = factor * dK/dx_i + l2 * x[i]
template <typename T>
void cpu_scaled_grad(const T* x, T* out, int64_t n, const KurtosisStats& s, double factor,
                     double l2) {
  const paddle_kure::KurtosisGrad grad(s, factor);
  parallel_ranges(n, num_threads_for(n), [&](int64_t begin, int64_t end) {
    scaled_grad_range(x, out, begin, end, grad, l2);
  });
}

void check_floating(const paddle::Tensor& x, const char* op) {
  const auto dt = x.dtype();
  const bool ok = dt == paddle::DataType::FLOAT32 || dt == paddle::DataType::FLOAT64 ||
                  (x.is_gpu() && (dt == paddle::DataType::FLOAT16 ||
                                  dt == paddle::DataType::BFLOAT16));
  PD_CHECK(ok, op,
           ": input must be float32 or float64 (float16/bfloat16 on GPU), got ",
           phi::DataTypeToString(dt));
  // Static graphs learn the size only when they run: an empty tensor has no kurtosis.
  PD_CHECK(x.numel() > 0, op, ": input tensor is empty (0 elements); kurtosis needs at least one");
}

}  // namespace

#ifdef PADDLE_KURE_WITH_CUDA
std::vector<paddle::Tensor> kurtosis_cuda_forward(const paddle::Tensor& x);
paddle::Tensor kurtosis_cuda_backward(const paddle::Tensor& x, const paddle::Tensor& stats,
                                      const paddle::Tensor& grad_out);
paddle::Tensor kurtosis_decay_cuda(const paddle::Tensor& x, double coeff, double target,
                                   double l2_coeff);
#define KURE_DISPATCH_GPU(call) \
  if (x.is_gpu()) return call;
#else
#define KURE_DISPATCH_GPU(call) \
  PD_CHECK(!x.is_gpu(), "paddle_kure was built without CUDA; move the tensor to CPU");
#endif

std::vector<paddle::Tensor> KurtosisForward(const paddle::Tensor& x) {
  check_floating(x, "kurtosis");
  KURE_DISPATCH_GPU(kurtosis_cuda_forward(x));
  auto out = paddle::empty({}, x.dtype(), x.place());
  auto stats = paddle::empty({kStatsSize}, paddle::DataType::FLOAT64, x.place());
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_cpu", ([&] {
    const KurtosisStats s = cpu_stats(x.data<data_t>(), x.numel());
    paddle_kure::store_stats(s, stats.data<double>());
    *out.data<data_t>() = static_cast<data_t>(s.kurtosis);
  }));
  return {out, stats};
}

std::vector<paddle::Tensor> KurtosisBackward(const paddle::Tensor& x,
                                             const paddle::Tensor& stats,
                                             const paddle::Tensor& grad_out) {
  KURE_DISPATCH_GPU(std::vector<paddle::Tensor>{kurtosis_cuda_backward(x, stats, grad_out)});
  auto grad_x = paddle::empty(x.shape(), x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_grad_cpu", ([&] {
    const KurtosisStats s = paddle_kure::load_stats(stats.data<double>(), x.numel());
    const double g = static_cast<double>(*grad_out.data<data_t>());
    cpu_scaled_grad(x.data<data_t>(), grad_x.data<data_t>(), x.numel(), s, g, 0.0);
  }));
  return {grad_x};
}

std::vector<paddle::Tensor> KurtosisDecay(const paddle::Tensor& x, float coeff, float target,
                                          float l2_coeff) {
  check_floating(x, "kurtosis_decay");
  KURE_DISPATCH_GPU(std::vector<paddle::Tensor>{kurtosis_decay_cuda(x, coeff, target, l2_coeff)});
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_decay_cpu", ([&] {
    const data_t* px = x.data<data_t>();
    const KurtosisStats s = cpu_stats(px, x.numel());
    // d/dx (K - target)^2 = 2 (K - target) dK/dx
    const double factor = 2.0 * coeff * (s.kurtosis - target);
    cpu_scaled_grad(px, out.data<data_t>(), x.numel(), s, factor, l2_coeff);
  }));
  return {out};
}

std::vector<std::vector<int64_t>> KurtosisInferShape(const std::vector<int64_t>&) {
  return {{}, {kStatsSize}};
}

std::vector<paddle::DataType> KurtosisInferDtype(const paddle::DataType& x_dtype) {
  return {x_dtype, paddle::DataType::FLOAT64};
}

std::vector<std::vector<int64_t>> SameShape(const std::vector<int64_t>& x_shape) {
  return {x_shape};
}

std::vector<paddle::DataType> SameDtype(const paddle::DataType& x_dtype) { return {x_dtype}; }

PD_BUILD_OP(kurtosis)
    .Inputs({"X"})
    .Outputs({"Out", "Stats"})
    .SetKernelFn(PD_KERNEL(KurtosisForward))
    .SetInferShapeFn(PD_INFER_SHAPE(KurtosisInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(KurtosisInferDtype));

PD_BUILD_GRAD_OP(kurtosis)
    .Inputs({"X", "Stats", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(KurtosisBackward));

PD_BUILD_OP(kurtosis_decay)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"coeff: float", "target: float", "l2_coeff: float"})
    .SetKernelFn(PD_KERNEL(KurtosisDecay))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));
